//! State flows against a real machine: a lab host (a network namespace with its own
//! sshd) is the computer, and the shipped `os/linux.rhai` does the remote steps over SSH:
//! the reservation user is really created and removed, and the user's address really
//! enters and leaves the nftables set of the host's namespace. The lab hosts are isolated
//! (their own /etc, /home, host name: `LabHost::start_isolated`), so root's password and
//! accounts change there, never on this machine.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::flows::Rig;
use common::netns::LabHost;
use provhost::db::Backend;
use provhost::prim::remote::RemotePrims;

const T: Duration = Duration::from_secs(90);

/// One test at a time (they share the test user names).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn user_exists(lab: &LabHost, login: &str) -> bool {
    lab.sh(&format!("id -u {login}")).status.success()
}

fn connect_set(lab: &LabHost) -> String {
    String::from_utf8_lossy(&lab.sh("nft list set inet provhost connect").stdout).into_owned()
}

/// A rig whose one computer is `lab` (type lab), reached over SSH, with the shipped
/// os/linux.rhai.
async fn lab_rig(backend: Backend, lab: &LabHost) -> Option<Rig> {
    let ssh = RemotePrims::new(lab.sshd().config());
    let linux = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/os/linux.rhai"
    ))
    .expect("linux.rhai");
    let rig = Rig::with_families(backend, 1, &linux, 0.1, &[Arc::new(ssh)]).await?;
    rig.t
        .exec(&format!(
            "UPDATE `computer` SET `IPaddress` = '{0}', `privateIPaddress` = '{0}', `type` = 'lab'",
            lab.addr
        ))
        .await;
    Some(rig)
}

async fn lab_host_user_and_firewall_follow_the_reservation(backend: Backend) {
    if !common::root_or_skip(
        "lab_host_user_and_firewall_follow_the_reservation",
        "network namespaces, useradd",
    ) || !common::tool_or_skip("lab_host_user_and_firewall_follow_the_reservation", "nft")
        || !common::tool_or_skip(
            "lab_host_user_and_firewall_follow_the_reservation",
            "useradd",
        )
    {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let login = format!(
        "pht{}{}",
        std::process::id() % 100_000,
        if backend == Backend::Sqlite { "s" } else { "m" }
    );
    // A uid no account of this machine has: users' processes are killed by uid, and lab
    // hosts share this machine's process table.
    let uid =
        62_000 + i64::from(std::process::id() % 1000) * 2 + i64::from(backend == Backend::Sqlite);
    provhost::db::inventory::add_user(&rig.t.db, &login, Some(uid))
        .await
        .expect("user");

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request_for("lab1.test", "debian12", &login).await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    assert!(
        !user_exists(&lab, &login),
        "no user before the acknowledgement (Linux adds users at Connect)"
    );
    assert!(
        !connect_set(&lab).contains("192.0.2.55"),
        "no access before Connect"
    );

    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.55")
        .await
        .expect("ack");
    rig.wait_log(c.reservation_id, "connected", T).await;
    assert!(
        user_exists(&lab, &login),
        "user {login} created on the lab host"
    );
    assert!(
        connect_set(&lab).contains("192.0.2.55"),
        "firewall opened for the user: {}",
        connect_set(&lab)
    );

    provhost::db::flow::end_now(&rig.t.db, c.request_id)
        .await
        .expect("end");
    rig.wait_state(c.request_id, "complete", T).await;
    assert!(
        !user_exists(&lab, &login),
        "user {login} removed from the lab host"
    );
    assert!(
        !connect_set(&lab).contains("192.0.2.55"),
        "firewall closed again: {}",
        connect_set(&lab)
    );
    let log = rig.log(c.reservation_id).await;
    assert!(log.iter().all(|(n, _)| n != "failed"), "{log:?}");
    // The reclaim timeline says the user was removed.
    assert!(
        log.iter().any(|(n, i)| n == "info"
            && i.starts_with(&format!("reclaim: user {login} deleted from lab1"))),
        "{log:?}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn shell_metacharacters_in_a_user_name_fail_the_reservation_safely(backend: Backend) {
    let test = "shell_metacharacters_in_a_user_name_fail_the_reservation_safely";
    if !common::root_or_skip(test, "network namespaces") || !common::tool_or_skip(test, "nft") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let marker = format!(
        "/tmp/provhost-pwned-{}-{}",
        std::process::id(),
        if backend == Backend::Sqlite { "s" } else { "m" }
    );
    let evil = format!("x$(touch {marker});id");
    provhost::db::inventory::add_user(&rig.t.db, &evil, None)
        .await
        .expect("user");

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request_for("lab1.test", "debian12", &evil).await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.56")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "failed"
                && t.contains("os/linux::add_user: threw refusing user name")),
        "{log:?}"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the user name was executed as a command"
    );
    assert_eq!(rig.computer_state(c.computer_id).await, "failed");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_remote_ip_that_is_not_an_address_never_reaches_nft(backend: Backend) {
    let test = "a_remote_ip_that_is_not_an_address_never_reaches_nft";
    if !common::root_or_skip(test, "network namespaces") || !common::tool_or_skip(test, "nft") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    // (VCL's remoteIP is varchar(15): the injection has to be short.)
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "1.2.3.4};flush")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "failed" && t.contains("is not an IPv4 address")),
        "{log:?}"
    );
    let rules = Command::new("ip")
        .args([
            "netns", "exec", &lab.ns, "nft", "list", "table", "inet", "provhost",
        ])
        .output()
        .expect("nft");
    assert!(
        rules.status.success()
            && String::from_utf8_lossy(&rules.stdout).contains("tcp dport 22 drop"),
        "the firewall is intact"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

on_both_backends!(
    a_remote_ip_that_is_not_an_address_never_reaches_nft,
    lab_host_user_and_firewall_follow_the_reservation,
    shell_metacharacters_in_a_user_name_fail_the_reservation_safely,
);

/// `provhost serve` (the binary) for the rig, logging at debug in `format` to `log`.
fn serve(
    rig: &Rig,
    lab: &LabHost,
    dir: &std::path::Path,
    format: &str,
    log: &std::path::Path,
) -> common::procs::KillOnDrop {
    let ssh = lab.sshd().config();
    let cfg = dir.join(format!("provhost-{format}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nscripts = {:?}\nstdlib = {:?}\ndata_dir = {:?}\n\n[database]\nurl = {:?}\n\n\
             [ssh]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\nconnect_timeout_secs = 5\n\n\
             [daemon]\nnode = \"mn1.test\"\npoll_interval_secs = 1\nlease_secs = 3\nheartbeat_secs = 1\nlease_wait_secs = 30\n\n\
             [daemon.timings]\nacknowledgetimeout = 60\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 5\nconnect_poll = 1\n",
            rig.scripts.scripts, concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib"), dir.join("data"), rig.t.url,
            ssh.user, ssh.identity, ssh.known_hosts
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("--config")
        .arg(&cfg)
        .args(["--log-format", format, "serve"])
        .env("PROVHOST_LOG", "debug")
        .env_remove("PROVHOST_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("provhost serve");
    common::procs::KillOnDrop(child)
}

/// Every command line on this machine (the lab host shares its process table), sampled
/// until `stop` is set.
fn sample_cmdlines(
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for e in dir.flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        seen.insert(String::from_utf8_lossy(&c).replace('\0', " "));
                    }
                }
            }
        }
        seen.into_iter().collect()
    })
}

/// A whole reservation through `provhost serve` on an isolated lab host (SSH on port 2222),
/// once with text logs and once with JSON logs: the user's password (reservation.pw) is in
/// no log line, no load-log row, no database value once the reservation ended (provhost
/// clears reservation.pw then), and on no command line on the computer at any time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reservation_never_shows_the_users_password() {
    let test = "a_full_reservation_never_shows_the_users_password";
    if !common::root_or_skip(test, "network namespaces, useradd")
        || !common::tool_or_skip(test, "nft")
        || !common::tool_or_skip(test, "nsenter")
    {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(2222);
    lab.sshd().trust();
    let Some(rig) = lab_rig(Backend::Sqlite, &lab).await else {
        return;
    };
    rig.t
        .exec("INSERT INTO `provhost_computer` (`computerid`, `sshport`) SELECT `id`, 2222 FROM `computer`")
        .await;
    let login = format!("phpw{}", std::process::id() % 100_000);
    let uid = 63_000 + i64::from(std::process::id() % 1000);
    provhost::db::inventory::add_user(&rig.t.db, &login, Some(uid))
        .await
        .expect("user");
    let dir = tempfile::tempdir().expect("tmp");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_cmdlines(Arc::clone(&stop));
    let mut passwords = Vec::new();
    let mut logs = Vec::new();
    let mut reservations = Vec::new();
    for format in ["text", "json"] {
        let log = dir.path().join(format!("serve-{format}.log"));
        let daemon = serve(&rig, &lab, dir.path(), format, &log);
        let c = rig.request_for("lab1.test", "debian12", &login).await;
        rig.t
            .exec(&format!(
                "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
                c.request_id
            ))
            .await;
        rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
            .await;
        provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.57")
            .await
            .expect("ack");
        rig.wait_log(c.reservation_id, "connected", T).await;
        assert!(user_exists(&lab, &login), "user {login} created");
        assert!(
            lab.sh_ok("nft list table inet provhost")
                .contains("tcp dport 2222 drop"),
            "the firewall guards the computer's SSH port"
        );
        let pw = provhost::db::flow::reservation_password(&rig.t.db, c.reservation_id)
            .await
            .expect("pw");
        assert!(
            pw.len() >= 8,
            "a password was generated: {} chars",
            pw.len()
        );
        provhost::db::flow::end_now(&rig.t.db, c.request_id)
            .await
            .expect("end");
        rig.wait_state(c.request_id, "complete", T).await;
        assert!(!user_exists(&lab, &login), "user removed at the end");
        // The reservation ended: its clear password went with it (the exit transaction).
        let left = provhost::db::flow::reservation_password(&rig.t.db, c.reservation_id)
            .await
            .expect("pw after the end");
        assert!(
            left.is_empty(),
            "reservation.pw kept after the reservation ended"
        );
        // The reclaim's reload of the computer finishes before the next reservation.
        let reload = rig.t.scalar("SELECT MAX(`id`) FROM `request`").await;
        if reload != c.request_id {
            rig.wait_state(reload, "complete", T).await;
        }
        drop(daemon);
        passwords.push(pw);
        logs.push((format, std::fs::read_to_string(&log).expect("log")));
        reservations.push(c.reservation_id);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cmdlines = sampler.join().expect("sampler");

    for (format, text) in &logs {
        assert!(
            text.lines().count() > 20,
            "{format} log too short to mean anything:\n{text}"
        );
        for pw in &passwords {
            // Second assertion, marked: JSON logs hold the password only escaped if it has
            // `"` or `\` — generated ones do not, so a plain search is complete here.
            assert!(!text.contains(pw.as_str()), "password in the {format} log");
        }
    }
    for r in &reservations {
        for (name, info) in rig.log(*r).await {
            for pw in &passwords {
                assert!(
                    !info.contains(pw.as_str()),
                    "password in load-log row {name}: {info}"
                );
            }
        }
    }
    for pw in &passwords {
        let hits: Vec<&String> = cmdlines
            .iter()
            .filter(|c| c.contains(pw.as_str()))
            .collect();
        assert!(hits.is_empty(), "password on a command line: {hits:?}");
    }
    assert!(
        cmdlines.iter().any(|c| c.contains("chpasswd")),
        "the sampler never saw chpasswd run ({} command lines)",
        cmdlines.len()
    );
    // The database: reservation.pw is VCL's column the web front end shows the user while
    // the reservation is live; provhost cleared it when each reservation ended. Compact the
    // file (an overwritten value can linger in free pages) and search every byte.
    rig.t.exec("VACUUM").await;
    rig.t.exec("PRAGMA wal_checkpoint(TRUNCATE)").await;
    let path = rig.t.url.trim_start_matches("sqlite://").to_string();
    let mut bytes = std::fs::read(&path).expect("db file");
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    for pw in &passwords {
        assert!(
            !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
            "password stored elsewhere in the database"
        );
    }
}
