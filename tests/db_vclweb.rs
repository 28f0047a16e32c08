//! What VCL's web front end needs in the database (issue 13 items 3-6, 9), on a VCL site's
//! database (tests/fixtures/vcl-subset.mysql.sql on MariaDB: VCL's definitions, foreign
//! keys and seed rows) and on provhost's own schema (SQLite and MariaDB): captured revisions
//! visible, `log`/`sublog`/`changelog` rows, `log.loaded`/`log.ending`,
//! `reservation.lastcheck`, `managementnode.lastcheckin`, finished requests removed as
//! vcld does, timings from the `variable` table, `resource` rows, VCL's OS names.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::db::{world, TestDb};
use common::flows::{Rig, RECORDING_OS};
use provhost::db::requests::{new_request, ComputerChoice, NewRequest};
use provhost::db::{bookkeeping, image, inventory, schema, variable, Backend};

fn request_on(image: &str, computer: &str, user: &str, start: Option<&str>) -> NewRequest {
    NewRequest {
        image: image.into(),
        computer: ComputerChoice::Named(computer.into()),
        user: user.into(),
        start: start.map(str::to_string),
        end: Some("+2h".into()),
    }
}

/// Item 3: "Create image" on VCL's web inserts the revision with deleted = 1, production
/// = 0 (as image.php does); a finished capture makes it visible and dated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_makes_the_webs_new_revision_visible_on_a_vcl_site_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    t.exec(
        "INSERT INTO `imagerevision` (`imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `comments`, `imagename`) \
         VALUES (7, 4, 4, NOW(), 1, 0, 'from the web', 'centos7-kvm-v4')",
    )
    .await;
    let rev = t
        .scalar("SELECT `id` FROM `imagerevision` WHERE `imagename` = 'centos7-kvm-v4'")
        .await;
    t.exec(&format!(
        "UPDATE `imagerevision` SET `datecreated` = '2020-01-01 00:00:00' WHERE `id` = {rev}"
    ))
    .await;
    image::record_capture(&t.db, 7, rev, 2048)
        .await
        .expect("record the capture");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `imagerevision` WHERE `id` = {rev} AND `deleted` = 0 AND `production` = 0 \
             AND `datecreated` > NOW() - INTERVAL 1 MINUTE"
        ))
        .await,
        1,
        "visible (deleted = 0), dated now, not made production"
    );
    assert_eq!(
        t.scalar("SELECT `size` FROM `image` WHERE `id` = 7").await,
        2048
    );
    // The other revisions are left as they were (revision 2 stays deleted).
    assert_eq!(
        t.scalar("SELECT `deleted` FROM `imagerevision` WHERE `id` = 12")
            .await,
        1
    );
}

/// Item 6: `request new` writes what the web's addRequest writes beside the request.
async fn request_new_writes_log_sublog_changelog(
    t: &TestDb,
    image: &str,
    computer: &str,
    user: &str,
) {
    let now = new_request(&t.db, &request_on(image, computer, user, None))
        .await
        .expect("request now");
    let logid = t
        .scalar(&format!(
            "SELECT `logid` FROM `request` WHERE `id` = {}",
            now.request_id
        ))
        .await;
    assert!(logid > 0, "request.logid set");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `log` WHERE `id` = {logid} AND `requestid` = {} AND `nowfuture` = 'now' \
             AND `ending` = 'none' AND `wasavailable` = 1 AND `loaded` IS NULL AND `imageid` = {} AND `initialend` = `finalend`",
            now.request_id, now.image_id
        ))
        .await,
        1
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `sublog` WHERE `logid` = {logid} AND `computerid` = {} AND `imagerevisionid` = {} \
             AND `managementnodeid` = {}",
            now.computer_id, now.imagerevision_id, now.management_node_id
        ))
        .await,
        1
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `changelog` WHERE `logid` = {logid} AND `end` IS NOT NULL"
        ))
        .await,
        1
    );
    let later = new_request(&t.db, &request_on(image, computer, user, Some("+1d")))
        .await
        .expect("request tomorrow");
    assert_eq!(
        t.text(&format!(
            "SELECT l.`nowfuture` FROM `log` l JOIN `request` rq ON rq.`logid` = l.`id` WHERE rq.`id` = {}",
            later.request_id
        ))
        .await
        .as_deref(),
        Some("future")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_new_writes_the_webs_log_rows_on_a_vcl_site_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    request_new_writes_log_sublog_changelog(&t, "centos7-kvm", "vm-01", "ann").await;
    // A VM: the web records its VM host's computer and the computer's predictive module.
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `sublog` WHERE `computerid` = 2 AND `hostcomputerid` = 1 AND `predictivemoduleid` = 9")
            .await,
        2
    );
}

async fn request_new_writes_log_rows(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    request_new_writes_log_sublog_changelog(&t, "debian12", "lab1.test", "ann").await;
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `sublog` WHERE `hostcomputerid` IS NULL")
            .await,
        2,
        "a lab computer has no VM host"
    );
}

/// Item 6: images and computers get the `resource` row VCL's web joins on; VCL's OS rows
/// are accepted by name or pretty name.
async fn add_writes_resource_rows(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 2).await;
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `resource` r JOIN `resourcetype` rt ON rt.`id` = r.`resourcetypeid` \
             WHERE rt.`name` = 'image' AND r.`subid` = {}",
            w.image
        ))
        .await,
        1
    );
    for c in &w.computers {
        assert_eq!(
            t.scalar(&format!(
                "SELECT COUNT(*) FROM `resource` r JOIN `resourcetype` rt ON rt.`id` = r.`resourcetypeid` \
                 WHERE rt.`name` = 'computer' AND r.`subid` = {c}"
            ))
            .await,
            1
        );
    }
    // By pretty name.
    let (img, _) = inventory::add_image(&t.db, "deb-pretty", "Deb pretty", "Linux (provhost)")
        .await
        .expect("OS by its pretty name");
    assert_eq!(
        t.scalar(&format!("SELECT `OSid` FROM `image` WHERE `id` = {img}"))
            .await,
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_on_a_vcl_site_accepts_vcls_os_names_and_writes_resources_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    let (img, _) = inventory::add_image(&t.db, "c7-lab", "CentOS 7 lab", "centos7")
        .await
        .expect("VCL's OS name");
    let (ubu, _) = inventory::add_image(&t.db, "ubu", "Ubuntu", "Ubuntu (Bare Metal)")
        .await
        .expect("VCL's OS pretty name");
    assert_eq!(
        t.scalar(&format!("SELECT `OSid` FROM `image` WHERE `id` = {img}"))
            .await,
        66
    );
    assert_eq!(
        t.scalar(&format!("SELECT `OSid` FROM `image` WHERE `id` = {ubu}"))
            .await,
        30
    );
    let c = inventory::add_computer(
        &t.db,
        &inventory::NewComputer::lab("lab9.vcl.example", "10.1.1.99"),
    )
    .await
    .expect("computer");
    // What the web lists: images and computers inner-joined with resource.
    for (kind, id) in [("image", img), ("image", ubu), ("computer", c)] {
        assert_eq!(
            t.scalar(&format!(
                "SELECT COUNT(*) FROM `{kind}` x JOIN `resource` r ON r.`subid` = x.`id` \
                 JOIN `resourcetype` rt ON rt.`id` = r.`resourcetypeid` AND rt.`name` = '{kind}' WHERE x.`id` = {id}"
            ))
            .await,
            1,
            "{kind} {id}"
        );
    }
    let oses = inventory::os_rows(&t.db).await.expect("OS rows");
    let ubuntu = inventory::find_os(&oses, "ubuntuimage").expect("ubuntu");
    assert_eq!(ubuntu.module, "os_linux_ubuntu");
    assert_eq!(ubuntu.perlpackage, "VCL::Module::OS::Linux::Ubuntu");
}

fn provhost_cli(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tmp");
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("PROVHOST_CONFIG")
        .env_remove("PROVHOST_DATABASE_URL")
        .output()
        .expect("run provhost")
}

/// Item 6 through the binary: `add image --os centos7` works on a VCL site and says which
/// module the OS maps to; `--os linux` (no such row there) names VCL's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_image_cli_says_which_os_module_on_a_vcl_site_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    let out = provhost_cli(&[
        "add",
        "image",
        "c7-cli",
        "--os",
        "centos7",
        "--no-script-check",
        "--url",
        &t.url,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OS centos7 (\"CentOS 7 (KVM)\") → module 5 \"os_linux\" (VCL::Module::OS::Linux) → scripts/os/linux.rhai"),
        "{stdout}"
    );
    let out = provhost_cli(&["add", "image", "x", "--os", "linux", "--url", &t.url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for word in ["no OS \"linux\"", "centos7", "ubuntuimage"] {
        assert!(stderr.contains(word), "{word:?} missing: {stderr}");
    }
}

/// Item 4 on VCL's rows: loaded, ending, lastcheck; removing a finished request as vcld's
/// delete_request does (its load-log and reservations go, the log history stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_and_removal_on_a_vcl_site_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    let c = new_request(&t.db, &request_on("centos7-kvm", "vm-01", "ann", None))
        .await
        .expect("request");
    bookkeeping::set_loaded(&t.db, c.request_id)
        .await
        .expect("loaded");
    let loaded = t
        .text(&format!(
            "SELECT l.`loaded` FROM `log` l JOIN `request` rq ON rq.`logid` = l.`id` WHERE rq.`id` = {}",
            c.request_id
        ))
        .await
        .expect("log.loaded set");
    // Only the first load counts (vcld: IF(loaded IS NULL, NOW(), loaded)).
    t.exec("UPDATE `log` SET `loaded` = '2020-01-01 00:00:00'")
        .await;
    bookkeeping::set_loaded(&t.db, c.request_id)
        .await
        .expect("loaded again");
    assert_eq!(
        t.text("SELECT MAX(`loaded`) FROM `log`").await.as_deref(),
        Some("2020-01-01 00:00:00"),
        "first value kept (was {loaded})"
    );
    bookkeeping::set_ending(&t.db, c.request_id, "noack")
        .await
        .expect("ending");
    assert_eq!(
        t.text("SELECT `ending` FROM `log`").await.as_deref(),
        Some("noack")
    );
    assert!(bookkeeping::set_ending(&t.db, c.request_id, "EXPIRED")
        .await
        .is_err());
    // lastcheck: set to now; never moved back from the future.
    bookkeeping::touch_lastcheck(&t.db, c.reservation_id)
        .await
        .expect("lastcheck");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `reservation` WHERE `id` = {} AND `lastcheck` > NOW() - INTERVAL 1 MINUTE",
            c.reservation_id
        ))
        .await,
        1
    );
    t.exec("UPDATE `reservation` SET `lastcheck` = '2099-01-01 00:00:00'")
        .await;
    bookkeeping::touch_lastcheck(&t.db, c.reservation_id)
        .await
        .expect("lastcheck");
    assert_eq!(
        t.text("SELECT `lastcheck` FROM `reservation`")
            .await
            .as_deref(),
        Some("2099-01-01 00:00:00")
    );

    provhost::db::loadlog::loadlog(&t.db, c.reservation_id, c.computer_id, "info", "x")
        .await
        .expect("loadlog");
    // Not finished: stays. Complete, end in the future, laststate reserved: stays.
    assert!(bookkeeping::removable(&t.db, 1, 0, 10)
        .await
        .expect("list")
        .is_empty());
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = 12, `laststateid` = 3 WHERE `id` = {}",
        c.request_id
    ))
    .await;
    assert!(bookkeeping::removable(&t.db, 1, 0, 10)
        .await
        .expect("list")
        .is_empty());
    // Its end 20 s ago: not yet (vcld removes from 30 s after the end) …
    t.exec(&format!(
        "UPDATE `request` SET `end` = NOW() - INTERVAL 20 SECOND WHERE `id` = {}",
        c.request_id
    ))
    .await;
    assert!(bookkeeping::removable(&t.db, 1, 0, 10)
        .await
        .expect("list")
        .is_empty());
    // … 40 s ago: removed, with its reservation and load-log; log/sublog history stays.
    t.exec(&format!(
        "UPDATE `request` SET `end` = NOW() - INTERVAL 40 SECOND WHERE `id` = {}",
        c.request_id
    ))
    .await;
    // With provhost's retention (`keep_finished_secs`, an hour here) it stays readable.
    assert!(bookkeeping::removable(&t.db, 1, 3600, 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        bookkeeping::remove_finished(&t.db, 1, 0, 10)
            .await
            .expect("remove"),
        vec![c.request_id]
    );
    for (table, key) in [("request", "id"), ("reservation", "requestid")] {
        assert_eq!(
            t.scalar(&format!(
                "SELECT COUNT(*) FROM `{table}` WHERE `{key}` = {}",
                c.request_id
            ))
            .await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `computerloadlog` WHERE `reservationid` = {}",
            c.reservation_id
        ))
        .await,
        0
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `log` WHERE `requestid` = {}",
            c.request_id
        ))
        .await,
        1,
        "VCL keeps the log"
    );
    // A finished reload goes at once, whatever its end.
    let r = new_request(&t.db, &request_on("centos7-kvm", "vm-01", "ann", None))
        .await
        .expect("request");
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = 12, `laststateid` = 19 WHERE `id` = {}",
        r.request_id
    ))
    .await;
    assert_eq!(
        bookkeeping::removable(&t.db, 1, 0, 10).await.expect("list"),
        vec![r.request_id]
    );
    // With a retention, a reload too stays until its end is that long past.
    assert!(bookkeeping::removable(&t.db, 1, 3600, 10)
        .await
        .expect("list")
        .is_empty());
    t.exec(&format!(
        "UPDATE `request` SET `end` = NOW() - INTERVAL 2 HOUR WHERE `id` = {}",
        r.request_id
    ))
    .await;
    assert_eq!(
        bookkeeping::removable(&t.db, 1, 3600, 10)
            .await
            .expect("list"),
        vec![r.request_id]
    );
    // Another node's request is not this node's to remove.
    assert!(bookkeeping::removable(&t.db, 2, 0, 10)
        .await
        .expect("list")
        .is_empty());
}

/// Item 5 on VCL's rows: the seeded `variable` rows, a per-affiliation override, values in
/// VCL's serializations; 0 means unset, as in vcld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timings_from_vcls_variable_rows_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    let vars = variable::timings(&t.db, Some("Local")).await.expect("vars");
    assert_eq!(vars.len(), variable::TIMING_NAMES.len(), "{vars:?}");
    assert!(vars.iter().all(|v| !v.row.contains('|')), "{vars:?}");
    t.exec(
        "INSERT INTO `variable` (`name`, `serialization`, `value`, `timestamp`) VALUES \
         ('acknowledgetimeout|Local', 'yaml', '--- 120\n', NOW()), ('reconnecttimeout|Local', 'none', '0', NOW())",
    )
    .await;
    t.exec("UPDATE `variable` SET `serialization` = 'phpserialize', `value` = 'i:240;' WHERE `name` = 'initialconnecttimeout'").await;
    t.exec("DELETE FROM `variable` WHERE `name` = 'general_end_notice_second'")
        .await;
    let vars = variable::timings(&t.db, Some("Local")).await.expect("vars");
    let get = |n: &str| vars.iter().find(|v| v.name == n).cloned();
    let ack = get("acknowledgetimeout").expect("ack");
    assert_eq!(
        (ack.value, ack.row.as_str()),
        (120, "acknowledgetimeout|Local")
    );
    assert_eq!(get("initialconnecttimeout").map(|v| v.value), Some(240));
    let re = get("reconnecttimeout").expect("reconnect");
    assert_eq!(
        (re.value, re.row.as_str()),
        (900, "reconnecttimeout"),
        "0 is unset"
    );
    assert_eq!(get("general_end_notice_second"), None);
    // Another affiliation does not get Local's value.
    let global = variable::timings(&t.db, Some("Global"))
        .await
        .expect("vars");
    assert_eq!(
        global
            .iter()
            .find(|v| v.name == "acknowledgetimeout")
            .map(|v| v.value),
        Some(900)
    );
    let base = provhost::state::Timings::default();
    let (merged, sources) = base.with_variables(&vars);
    assert_eq!(merged.acknowledgetimeout, 120);
    assert!(
        sources
            .iter()
            .any(|s| s == "general_end_notice_second=300 (provhost.toml)"),
        "{sources:?}"
    );
    assert!(
        sources
            .iter()
            .any(|s| s == "acknowledgetimeout=120 (variable \"acknowledgetimeout|Local\")"),
        "{sources:?}"
    );
}

/// Item 5 through the binary: `serve` says at start which source each timing came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_where_each_timing_came_from_mariadb() {
    let Some(t) = TestDb::vcl_site().await else {
        return;
    };
    t.exec("UPDATE `variable` SET `value` = '600' WHERE `name` = 'acknowledgetimeout'")
        .await;
    t.exec("DELETE FROM `variable` WHERE `name` = 'reconnecttimeout'")
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("scripts")).expect("scripts");
    std::fs::write(
        dir.path().join("provhost.toml"),
        format!(
            "[database]\nurl = \"{}\"\n[daemon]\nnode = \"mn.vcl.example\"\n[daemon.timings]\nreconnecttimeout = 77\n",
            t.url
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(["serve", "--once"])
        .current_dir(dir.path())
        .env_remove("PROVHOST_CONFIG")
        .env_remove("PROVHOST_DATABASE_URL")
        .env("PROVHOST_LOG", "info")
        .output()
        .expect("serve --once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("timings:"))
        .unwrap_or_else(|| panic!("no timings line:\n{stderr}"));
    for word in [
        "acknowledgetimeout=600 (variable \"acknowledgetimeout\")",
        "reconnecttimeout=77 (provhost.toml)",
        "general_inuse_check=300 (variable \"general_inuse_check\")",
    ] {
        assert!(line.contains(word), "{word:?} missing: {line}");
    }
    // The heartbeat the web reads: managementnode.lastcheckin is fresh.
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `managementnode` WHERE `id` = 1 AND `lastcheckin` > NOW() - INTERVAL 1 MINUTE")
            .await,
        1
    );
}

/// Items 4 and 5 through the daemon: a `variable` row (per affiliation) shortens the wait
/// for Connect; the request's log gets `loaded` and `ending = noack`; lastcheck is set;
/// the reload that follows is removed once complete, as vcld does.
async fn daemon_uses_variable_timings_and_keeps_vcls_books(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    variable::set_plain(&rig.t.db, "acknowledgetimeout", "60")
        .await
        .expect("variable");
    variable::set_plain(&rig.t.db, "acknowledgetimeout|Local", "2")
        .await
        .expect("variable");
    let mut cfg = rig.config();
    cfg.remove_finished = true;
    cfg.keep_finished_secs = 0; // vcld's own timing
    let (h, stop) = rig.spawn(cfg).await;
    let c = rig.request("lab1.test", "debian12").await;
    let started = Instant::now();
    let reached = |state: &'static str| {
        let rig = &rig;
        async move {
            let t = Instant::now();
            loop {
                let s = rig.request_state(c.request_id).await;
                if s == state {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(40),
                    "request {} stuck in {s}, waiting for {state}",
                    c.request_id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    reached("complete").await;
    // acknowledgetimeout|Local = 2 s won over 60 s (variable) and 30 s (config).
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let log = provhost::db::loadlog::timeline(&rig.t.db, c.reservation_id)
        .await
        .expect("timeline");
    assert!(
        log.iter()
            .any(|e| e.loadstatename == "acknowledgetimeout"
                && e.additionalinfo.contains("up to 2 s")),
        "{log:?}"
    );
    let log_row = |col: &str| {
        format!(
        "SELECT l.`{col}` FROM `log` l JOIN `request` rq ON rq.`logid` = l.`id` WHERE rq.`id` = {}",
        c.request_id
    )
    };
    assert!(rig.t.text(&log_row("loaded")).await.is_some(), "log.loaded");
    assert_eq!(
        rig.t.text(&log_row("ending")).await.as_deref(),
        Some("noack")
    );
    assert!(
        rig.t
            .text(&format!(
                "SELECT `lastcheck` FROM `reservation` WHERE `id` = {}",
                c.reservation_id
            ))
            .await
            .is_some(),
        "reservation.lastcheck"
    );
    // The reload request inserted by the reclaim: complete, then removed (laststate reload).
    let t = Instant::now();
    loop {
        let reloads = rig
            .t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `request` WHERE `id` > {}",
                c.request_id
            ))
            .await;
        let back = rig
            .t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `computer` WHERE `id` = {} AND `stateid` = 2",
                c.computer_id
            ))
            .await;
        if reloads == 0 && back == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "reload not removed: {reloads} left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The timed-out request itself stays until 30 s after its end (an hour away).
    assert_eq!(rig.request_state(c.request_id).await, "complete");
    let _ = stop.send(());
    h.await.expect("daemon");
}

/// Item 9/upgrade: a database made by an earlier provhost (no web tables) gets them from
/// `db init`, with resource rows for the images and computers it has.
async fn init_adds_the_web_tables_to_an_older_database(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 2).await;
    for table in provhost::db::schema::upgrade::WEB_TABLES {
        t.exec(&format!("DROP TABLE `{table}`")).await;
    }
    schema::init(&t.db, "mn1.test").await.expect("init again");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `resourcetype` WHERE `id` IN (12, 13)")
            .await,
        2
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `resource` WHERE (`resourcetypeid` = 13 AND `subid` = {}) OR `resourcetypeid` = 12",
            w.image
        ))
        .await,
        3
    );
    schema::verify(&t.db).await.expect("complete again");
    // And a request works on it.
    new_request(&t.db, &request_on("debian12", "lab1.test", "ann", None))
        .await
        .expect("request");
}

on_both_backends!(
    request_new_writes_log_rows,
    add_writes_resource_rows,
    daemon_uses_variable_timings_and_keeps_vcls_books,
    init_adds_the_web_tables_to_an_older_database,
);
