//! The state flows as a VCL site needs them, on SQLite and MariaDB with the simulated
//! provisioning module: cluster requests (several reservation rows, as VCL's web writes
//! them) load every reservation and are reserved only when all are, a failure of one
//! fails the request; a delete (the web's UPDATE) or `request cancel` / `request end`
//! during each wait is noticed within one poll and handed to the reclaim; a request
//! starting inside the preload window is loaded before its start and becomes reserved at
//! its start.

mod common;

use std::time::{Duration, Instant};

use common::flows::{Rig, RECORDING_OS};
use provhost::daemon::DaemonConfig;
use provhost::db::Backend;

const T: Duration = Duration::from_secs(60);

/// How often the waiting flows in these tests poll (`acknowledge_poll_ms`).
const POLL_MS: u64 = 500;

/// RECORDING_OS, plus: `post_load` takes 2 s on a computer whose variable `slow` is
/// "yes", fails on one whose `fail_post_load` is "yes", and the user counts as connected
/// unless the computer's `connected` is "no".
fn cluster_os() -> String {
    RECORDING_OS
        .replace(
            r#"fn post_load(ctx) { record(ctx, "post_load") }"#,
            r#"fn post_load(ctx) {
    if ctx.computer_var("slow") == "yes" { wait::sleep(2.0); }
    if ctx.computer_var("fail_post_load") == "yes" { throw "simulated post_load failure"; }
    record(ctx, "post_load")
}"#,
        )
        .replace(
            "fn is_user_connected(ctx) { true }",
            r#"fn is_user_connected(ctx) { ctx.computer_var("connected") != "no" }"#,
        )
}

fn config(rig: &Rig) -> DaemonConfig {
    let mut cfg = rig.config();
    cfg.timings.acknowledge_poll_ms = POLL_MS;
    cfg.timings.initialconnecttimeout = 60;
    cfg.timings.reconnecttimeout = 60;
    cfg.timings.computer_wait_secs = 60;
    cfg.timings.computer_wait_poll_ms = 2000;
    cfg
}

/// Add a reservation for `computer` to `request`, as VCL's web does for a cluster's
/// subimages (same image, revision and management node as its first reservation unless
/// `image` names another). Returns the reservation id.
async fn add_reservation(rig: &Rig, request: i64, computer: i64, image: Option<&str>) -> i64 {
    let first = rig
        .t
        .scalar(&format!(
            "SELECT MIN(`id`) FROM `reservation` WHERE `requestid` = {request}"
        ))
        .await;
    let (img, rev) = match image {
        None => (
            format!("(SELECT `imageid` FROM `reservation` WHERE `id` = {first})"),
            format!("(SELECT `imagerevisionid` FROM `reservation` WHERE `id` = {first})"),
        ),
        Some(name) => (
            format!("(SELECT `id` FROM `image` WHERE `name` = '{name}')"),
            format!("(SELECT MAX(ir.`id`) FROM `imagerevision` ir JOIN `image` i ON i.`id` = ir.`imageid` WHERE i.`name` = '{name}')"),
        ),
    };
    rig.t
        .exec(&format!(
            "INSERT INTO `reservation` (`requestid`, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid`) \
             SELECT {request}, {computer}, {img}, {rev}, `managementnodeid` FROM `reservation` WHERE `id` = {first}"
        ))
        .await;
    rig.t
        .scalar(&format!(
            "SELECT MAX(`id`) FROM `reservation` WHERE `requestid` = {request}"
        ))
        .await
}

async fn set_var(rig: &Rig, computer: i64, name: &str, value: &str) {
    provhost::db::flow::set_computer_var(&rig.t.db, computer, name, value)
        .await
        .expect("set computer var");
}

/// Which request holds `computer` by its lock row (0: none).
async fn lock_holder(rig: &Rig, computer: i64) -> i64 {
    rig.t
        .scalar(&format!(
            "SELECT COALESCE(MAX(`requestid`), 0) FROM `provhost_computerlock` WHERE `computerid` = {computer}"
        ))
        .await
}

/// Wait (bounded) until the reservation's load-log has an entry `name` whose text
/// contains `text`; returns how long that took.
async fn wait_entry(
    rig: &Rig,
    reservation: i64,
    name: &str,
    text: &str,
    timeout: Duration,
) -> Duration {
    let t = Instant::now();
    loop {
        if rig
            .log(reservation)
            .await
            .iter()
            .any(|(n, i)| n == name && i.contains(text))
        {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < timeout,
            "reservation {reservation} has no {name} entry with {text:?} after {timeout:?}: {:?}",
            rig.log(reservation).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The handover must come within one poll of the flow (plus a margin for the database
/// and the load-log write).
fn assert_within_one_poll(what: &str, took: Duration) {
    println!("{what}: noticed after {took:?} (poll {POLL_MS} ms)");
    assert!(
        took < Duration::from_millis(POLL_MS + 1500),
        "{what}: noticed only after {took:?}; the poll is {POLL_MS} ms"
    );
}

const HANDED_OVER: &str = "hands the request over";

async fn a_cluster_request_loads_every_reservation_and_is_reserved_when_all_are(backend: Backend) {
    let Some(rig) = Rig::new(backend, 2, &cluster_os(), 0.3).await else {
        return;
    };
    let (lab1, lab2) = (rig.world.computers[0], rig.world.computers[1]);
    // lab2 takes 2 s longer: the request must wait for it.
    set_var(&rig, lab2, "slow", "yes").await;
    let c = rig.request("lab1.test", "debian12").await;
    let second = add_reservation(&rig, c.request_id, lab2, None).await;
    let (daemon, stop) = rig.spawn(config(&rig)).await;

    rig.wait_log(c.reservation_id, "nodeready", T).await;
    let names2 = rig.names(second).await;
    assert!(
        !names2.contains(&"nodeready".to_string()),
        "lab2 was meant to be slower: {names2:?}"
    );
    assert_eq!(
        rig.request_state(c.request_id).await,
        "pending",
        "one reservation ready is not the request ready"
    );
    // `reserved` lasts only until the reserved flow claims it: its exit says so.
    wait_entry(&rig, c.reservation_id, "exited", "request reserved", T).await;
    for (res, comp) in [(c.reservation_id, lab1), (second, lab2)] {
        let names = rig.names(res).await;
        for want in [
            "begin",
            "statuscheck",
            "startload",
            "loadimagecomplete",
            "nodeready",
            "exited",
        ] {
            assert!(
                names.contains(&want.to_string()),
                "reservation {res} lacks {want}: {names:?}"
            );
        }
        assert_eq!(
            lock_holder(&rig, comp).await,
            c.request_id,
            "computer {comp}"
        );
    }
    // Both go reserved and wait for Connect on their own computer.
    rig.wait_log(second, "acknowledgetimeout", T).await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    for comp in [lab1, lab2] {
        assert_eq!(rig.computer_state(comp).await, "reserved");
    }
    // Connect (VCL's web writes the address into every reservation; one is enough here).
    rig.connect_from(c.reservation_id, "192.0.2.7").await;
    wait_entry(&rig, c.reservation_id, "exited", "request inuse", T).await;
    wait_entry(&rig, second, "exited", "request inuse", T).await;
    for comp in [lab1, lab2] {
        let calls = rig.computer_var(comp, "os_calls").await.unwrap_or_default();
        assert!(
            calls.contains("grant_access:192.0.2.7"),
            "computer {comp}: {calls}"
        );
        assert_eq!(rig.computer_state(comp).await, "inuse");
    }
    // The end reclaims both computers, each with its own reload.
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `end` = '2000-01-01 00:00:00' WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.wait_state(c.request_id, "complete", T).await;
    for comp in [lab1, lab2] {
        let calls = rig.computer_var(comp, "os_calls").await.unwrap_or_default();
        assert!(
            calls.contains("revoke_access") && calls.contains("sanitize"),
            "computer {comp}: {calls}"
        );
    }
    let reloads = rig
        .t
        .scalar(&format!(
            "SELECT COUNT(DISTINCT `requestid`) FROM `reservation` WHERE `requestid` > {} AND `computerid` IN ({lab1}, {lab2})",
            c.request_id
        ))
        .await;
    assert_eq!(reloads, 2, "one reload request per computer");
    let t = Instant::now();
    while rig.computer_state(lab1).await != "available"
        || rig.computer_state(lab2).await != "available"
    {
        assert!(
            t.elapsed() < T,
            "the reloads never made both computers available"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_failure_of_one_reservation_fails_the_cluster_request(backend: Backend) {
    let Some(rig) = Rig::new(backend, 2, &cluster_os(), 0.3).await else {
        return;
    };
    let (lab1, lab2) = (rig.world.computers[0], rig.world.computers[1]);
    set_var(&rig, lab2, "fail_post_load", "yes").await;
    let c = rig.request("lab1.test", "debian12").await;
    let second = add_reservation(&rig, c.request_id, lab2, None).await;
    let (daemon, stop) = rig.spawn(config(&rig)).await;

    rig.wait_state(c.request_id, "failed", T).await;
    let log2 = rig.log(second).await;
    assert!(
        log2.iter()
            .any(|(n, i)| n == "failed" && i.contains("simulated post_load failure")),
        "{log2:?}"
    );
    // The one that failed: failed; the other, loaded fine: available (vcld).
    assert_eq!(rig.computer_state(lab2).await, "failed");
    assert_eq!(rig.computer_state(lab1).await, "available");
    let names1 = rig.names(c.reservation_id).await;
    assert!(
        names1.contains(&"nodeready".to_string()) && !names1.contains(&"failed".to_string()),
        "{names1:?}"
    );
    assert!(names1.contains(&"exited".to_string()), "{names1:?}");
    for comp in [lab1, lab2] {
        assert_eq!(lock_holder(&rig, comp).await, 0, "computer {comp} released");
    }
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `request` WHERE `id` <> {} AND `stateid` NOT IN (5, 12)",
                c.request_id
            ))
            .await,
        0,
        "nothing else runs"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

/// The web front end's delete of a request a flow is processing (`pending`): state
/// deleted, laststate as VCL's `deleteRequest` writes it.
async fn web_delete(rig: &Rig, request: i64, laststate: i64) {
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `stateid` = 1, `laststateid` = {laststate} WHERE `id` = {request}"
        ))
        .await;
}

async fn a_delete_during_each_wait_is_noticed_within_one_poll(backend: Backend) {
    let Some(rig) = Rig::new(backend, 3, &cluster_os(), 0.2).await else {
        return;
    };
    let (lab1, lab2, lab3) = (
        rig.world.computers[0],
        rig.world.computers[1],
        rig.world.computers[2],
    );
    let (daemon, stop) = rig.spawn(config(&rig)).await;

    // 1. reserved, waiting for Connect (acknowledgetimeout 30 s).
    let a = rig.request("lab1.test", "debian12").await;
    rig.wait_log(a.reservation_id, "acknowledgetimeout", T)
        .await;
    let t = Instant::now();
    web_delete(&rig, a.request_id, 3).await;
    let took = t.elapsed() + wait_entry(&rig, a.reservation_id, "info", HANDED_OVER, T).await;
    assert_within_one_poll("delete while waiting for Connect", took);
    rig.wait_state(a.request_id, "complete", T).await;
    let names = rig.names(a.reservation_id).await;
    assert!(
        names.contains(&"deleted".to_string()),
        "the reclaim ran: {names:?}"
    );
    let calls = rig.computer_var(lab1, "os_calls").await.unwrap_or_default();
    assert!(calls.ends_with("sanitize"), "{calls}");

    // 2. reserved, waiting for the user to log in (initialconnecttimeout 60 s).
    set_var(&rig, lab2, "connected", "no").await;
    let b = rig.request("lab2.test", "debian12").await;
    rig.wait_log(b.reservation_id, "acknowledgetimeout", T)
        .await;
    rig.connect_from(b.reservation_id, "192.0.2.8").await;
    rig.wait_log(b.reservation_id, "postreserve", T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    web_delete(&rig, b.request_id, 3).await;
    let took = t.elapsed() + wait_entry(&rig, b.reservation_id, "info", HANDED_OVER, T).await;
    assert_within_one_poll("delete while waiting for the user to connect", took);
    rig.wait_state(b.request_id, "complete", T).await;

    // 3. inuse, waiting for a disconnected user to come back (reconnecttimeout 60 s).
    let c = rig.request("lab3.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    rig.connect_from(c.reservation_id, "192.0.2.9").await;
    wait_entry(&rig, c.reservation_id, "exited", "request inuse", T).await;
    set_var(&rig, lab3, "connected", "no").await;
    rig.wait_log(c.reservation_id, "reconnecttimeout", T).await;
    let t = Instant::now();
    web_delete(&rig, c.request_id, 8).await;
    let took = t.elapsed() + wait_entry(&rig, c.reservation_id, "info", HANDED_OVER, T).await;
    assert_within_one_poll("delete while waiting for a reconnect", took);
    rig.wait_state(c.request_id, "complete", T).await;

    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_delete_during_the_wait_for_the_computer_is_noticed_within_one_poll(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, &cluster_os(), 0.2).await else {
        return;
    };
    let lab1 = rig.world.computers[0];
    let (daemon, stop) = rig.spawn(config(&rig)).await;
    let a = rig.request("lab1.test", "debian12").await;
    rig.wait_log(a.reservation_id, "acknowledgetimeout", T)
        .await;
    // A second request for the same computer, as the web would write it (provhost's own
    // `request new` keeps windows apart): its flow waits for the computer.
    rig.t
        .exec(&format!(
            "INSERT INTO `request` (`stateid`, `laststateid`, `userid`, `forimaging`, `test`, `preload`, `start`, `end`, `daterequested`) \
             SELECT 13, 13, `userid`, 0, 0, 0, `start`, `end`, `daterequested` FROM `request` WHERE `id` = {}",
            a.request_id
        ))
        .await;
    let b = rig.t.scalar("SELECT MAX(`id`) FROM `request`").await;
    rig.t
        .exec(&format!(
            "INSERT INTO `reservation` (`requestid`, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid`) \
             SELECT {b}, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid` FROM `reservation` WHERE `id` = {}",
            a.reservation_id
        ))
        .await;
    let b_res = rig
        .t
        .scalar(&format!(
            "SELECT `id` FROM `reservation` WHERE `requestid` = {b}"
        ))
        .await;
    wait_entry(&rig, b_res, "info", "waiting up to", T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    // VCL's web: a pending request whose laststate is new becomes deleted/reserved.
    web_delete(&rig, b, 3).await;
    let took = t.elapsed() + wait_entry(&rig, b_res, "info", HANDED_OVER, T).await;
    assert_within_one_poll("delete while waiting for the computer", took);
    rig.wait_state(b, "complete", T).await;
    let log = rig.log(b_res).await;
    assert!(
        log.iter()
            .any(|(n, i)| n == "deleted" && i.contains("nothing to undo")),
        "{log:?}"
    );
    // The holder is untouched: still reserved, still holding the computer.
    assert_eq!(rig.request_state(a.request_id).await, "pending");
    assert_eq!(lock_holder(&rig, lab1).await, a.request_id);
    assert_eq!(rig.computer_state(lab1).await, "reserved");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn request_cancel_and_end_during_the_connect_wait_take_effect_within_one_poll(
    backend: Backend,
) {
    let Some(rig) = Rig::new(backend, 2, &cluster_os(), 0.2).await else {
        return;
    };
    let lab1 = rig.world.computers[0];
    let (daemon, stop) = rig.spawn(config(&rig)).await;
    let url = rig.t.url.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let provhost = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_provhost"))
            .args(args)
            .args(["--url", &url])
            .current_dir(dir.path())
            .env_remove("PROVHOST_CONFIG")
            .env_remove("PROVHOST_DATABASE_URL")
            .env_remove("PROVHOST_LOG")
            .output()
            .expect("run provhost")
    };

    // `provhost request cancel` while the flow waits for Connect.
    let a = rig.request("lab1.test", "debian12").await;
    rig.wait_log(a.reservation_id, "acknowledgetimeout", T)
        .await;
    let t = Instant::now();
    let out = provhost(&["request", "cancel", &a.request_id.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deleted (was pending (from reserved))"),
        "{stdout}"
    );
    let took = t.elapsed() + wait_entry(&rig, a.reservation_id, "info", HANDED_OVER, T).await;
    assert_within_one_poll("request cancel while waiting for Connect", took);
    rig.wait_state(a.request_id, "complete", T).await;
    assert!(rig
        .names(a.reservation_id)
        .await
        .contains(&"deleted".to_string()));
    let calls = rig.computer_var(lab1, "os_calls").await.unwrap_or_default();
    assert!(calls.ends_with("sanitize"), "{calls}");

    // `provhost request end` while the flow waits for Connect: a timeout within a poll.
    let b = rig.request("lab2.test", "debian12").await;
    rig.wait_log(b.reservation_id, "acknowledgetimeout", T)
        .await;
    let t = Instant::now();
    let out = provhost(&["request", "end", &b.request_id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took =
        t.elapsed() + wait_entry(&rig, b.reservation_id, "timeout", "end time came", T).await;
    assert_within_one_poll("request end while waiting for Connect", took);
    rig.wait_state(b.request_id, "complete", T).await;

    // A finished request is refused, naming its state.
    let out = provhost(&["request", "cancel", &b.request_id.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already complete"), "{err}");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_request_inside_the_preload_window_is_loaded_before_its_start(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, &cluster_os(), 0.3).await else {
        return;
    };
    let lab1 = rig.world.computers[0];
    let now = provhost::db::time::parse_datetime(&rig.t.db.now().await.expect("now")).expect("now");
    let start = now + chrono::Duration::seconds(8);
    let end = start + chrono::Duration::hours(1);
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let c = rig
        .request_window("lab1.test", &fmt(start), &fmt(end))
        .await
        .expect("request");
    let mut cfg = config(&rig);
    cfg.preload_secs = 60;
    cfg.preload_min_secs = 0;
    let (daemon, stop) = rig.spawn(cfg).await;

    // Loaded ahead of the start, and back to `new` with its preload flag set.
    let took = wait_entry(&rig, c.reservation_id, "info", "preload done", T).await;
    let loaded_at =
        provhost::db::time::parse_datetime(&rig.t.db.now().await.expect("now")).expect("now");
    println!(
        "preload done after {took:?}, {} s before the start",
        (start - loaded_at).num_seconds()
    );
    assert!(
        loaded_at < start,
        "the preload finished only at {loaded_at}, start {start}"
    );
    let names = rig.names(c.reservation_id).await;
    assert!(
        names.contains(&"loadimagecomplete".to_string()),
        "{names:?}"
    );
    let t = Instant::now();
    while rig.request_state(c.request_id).await != "new" {
        assert!(t.elapsed() < T, "the request never went back to new");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `preload` FROM `request` WHERE `id` = {}",
                c.request_id
            ))
            .await,
        1
    );
    assert_eq!(
        lock_holder(&rig, lab1).await,
        c.request_id,
        "the reservation keeps its computer"
    );
    assert_eq!(
        rig.computer_state(lab1).await,
        "available",
        "back to the state it had (vcld)"
    );

    // At the start: reserved without a second load.
    wait_entry(&rig, c.reservation_id, "exited", "request reserved", T).await;
    let at_or_after_start = rig
        .t
        .scalar(&format!(
            "SELECT COUNT(*) FROM `computerloadlog` WHERE `reservationid` = {} \
             AND `additionalinfo` LIKE '%request reserved%' AND `timestamp` >= '{}'",
            c.reservation_id,
            fmt(start)
        ))
        .await;
    assert_eq!(at_or_after_start, 1, "reserved before its start {start}");
    let names = rig.names(c.reservation_id).await;
    assert_eq!(
        names.iter().filter(|n| *n == "startload").count(),
        1,
        "loaded once: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "statuscheck").count(),
        2,
        "{names:?}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

on_both_backends!(a_cluster_request_loads_every_reservation_and_is_reserved_when_all_are);
on_both_backends!(a_failure_of_one_reservation_fails_the_cluster_request);
on_both_backends!(a_delete_during_each_wait_is_noticed_within_one_poll);
on_both_backends!(a_delete_during_the_wait_for_the_computer_is_noticed_within_one_poll);
on_both_backends!(request_cancel_and_end_during_the_connect_wait_take_effect_within_one_poll);
on_both_backends!(a_request_inside_the_preload_window_is_loaded_before_its_start);
