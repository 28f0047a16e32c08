//! One live owner per management node (`provhost_nodelease`), with the real `provhost
//! serve` binary: a second daemon for a node refuses, naming the holder; a holder paused
//! with SIGSTOP keeps the node while its lease is fresh, loses it after expiry to a daemon
//! that waits, and when it wakes writes nothing and stops. Also: a routine that fails
//! with ~100 KB of text fails its reservation cleanly with the text cut (MariaDB's TEXT
//! column would refuse it whole).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::flows::{Rig, RECORDING_OS};
use provhost::db::Backend;

const T: Duration = Duration::from_secs(90);

type Serve = common::procs::KillOnDrop;

fn write_config(rig: &Rig, dir: &Path, name: &str, lease_wait_secs: u64) -> PathBuf {
    let cfg = dir.join(name);
    let mut f = std::fs::File::create(&cfg).expect("config");
    writeln!(
        f,
        "[paths]\nscripts = {:?}\nstdlib = {:?}\ndata_dir = {:?}\n\n[database]\nurl = {:?}\n\n[daemon]\nnode = \"mn1.test\"\npoll_interval_secs = 1\nlease_secs = 4\nheartbeat_secs = 1\nlease_wait_secs = {lease_wait_secs}\n\n[daemon.timings]\nacknowledgetimeout = 2\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 2\nconnect_poll = 1\n",
        rig.scripts.scripts, rig.scripts.stdlib, dir.join("data"), rig.t.url
    )
    .expect("write config");
    cfg
}

fn serve(cfg: &Path, log: &Path) -> Serve {
    let out = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .env("PROVHOST_LOG", "info")
        .env_remove("PROVHOST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn provhost serve");
    common::procs::KillOnDrop(child)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

async fn wait_text(log: &Path, text: &str) {
    let t = Instant::now();
    while !read(log).contains(text) {
        assert!(
            t.elapsed() < T,
            "{text:?} not in {}:\n{}",
            log.display(),
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait for a daemon to exit; its status.
async fn wait_exit(s: &mut Serve, log: &Path) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = s.0.try_wait().expect("wait") {
            return st;
        }
        assert!(t.elapsed() < T, "daemon did not exit; log:\n{}", read(log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(s: &Serve, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(s.0.id().to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig}");
}

async fn second_serve_refuses_naming_the_holder(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&rig, dir.path(), "provhost.toml", 0);
    let (l1, l2) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let first = serve(&cfg, &l1);
    wait_text(&l1, "holding the lease").await;
    let mut second = serve(&cfg, &l2);
    let st = wait_exit(&mut second, &l2).await;
    let text = read(&l2);
    assert!(!st.success(), "the second daemon must not start:\n{text}");
    assert!(
        text.contains("is held by another provhost daemon")
            && text.contains(&format!("pid {}", first.0.id()))
            && text.contains("since "),
        "the holder is named (host, pid, since):\n{text}"
    );
    assert!(
        dir.path().join("data/provhost.wake").exists(),
        "the first daemon's wake socket is still there"
    );
    // The first still works: a request goes through.
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "nodeready", T).await;
}

async fn paused_holder_keeps_its_node_while_fresh_and_writes_nothing_after_losing_it(
    backend: Backend,
) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 3.0).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let refuse = write_config(&rig, dir.path(), "refuse.toml", 0);
    let wait = write_config(&rig, dir.path(), "wait.toml", 30);
    let (l1, l2, l3) = (
        dir.path().join("first.log"),
        dir.path().join("second.log"),
        dir.path().join("third.log"),
    );
    let c = rig.request("lab1.test", "debian12").await;
    let mut first = serve(&refuse, &l1);
    rig.wait_log(c.reservation_id, "transfervm", T).await;
    signal(&first, "STOP");
    let paused_at = Instant::now();

    // While its lease is fresh, nobody takes the node.
    let mut second = serve(&refuse, &l2);
    let st = wait_exit(&mut second, &l2).await;
    assert!(!st.success(), "{}", read(&l2));
    assert!(
        read(&l2).contains(&format!("pid {}", first.0.id())),
        "{}",
        read(&l2)
    );
    assert!(
        paused_at.elapsed() < Duration::from_secs(4),
        "the refusal came within the lease (else this proves nothing)"
    );
    assert_eq!(rig.request_state(c.request_id).await, "pending");

    // A daemon that waits takes the node once the lease has expired, and recovers.
    let third = serve(&wait, &l3);
    wait_text(&l3, "holding the lease").await;
    assert!(
        paused_at.elapsed() >= Duration::from_secs(3),
        "took over only after expiry"
    );
    rig.wait_log(c.reservation_id, "nodeready", T).await;

    // The paused holder wakes: it must notice, write nothing and stop.
    signal(&first, "CONT");
    let st = wait_exit(&mut first, &l1).await;
    let text = read(&l1);
    assert!(!st.success(), "{text}");
    assert!(text.contains("lost the lease"), "{text}");
    assert!(
        text.contains("nothing was written"),
        "the woken holder's writes changed nothing and it says so:\n{text}"
    );

    rig.wait_state(c.request_id, "complete", T).await;
    let log = rig.log(c.reservation_id).await;
    let count = |name: &str| log.iter().filter(|(n, _)| n == name).count();
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains("recovered after a daemon restart")),
        "{log:?}"
    );
    assert_eq!(count("nodeready"), 1, "{log:?}");
    assert_eq!(count("failed"), 0, "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|(n, t)| n == "exited" && t.contains("request reserved"))
            .count(),
        1,
        "{log:?}"
    );
    drop(third);
}

/// An OS module whose `post_load` fails with ~100 KB of text (a user with root on the
/// computer can make a routine's stderr that long).
const LOUD_OS: &str = r#"const MODULE = #{ kind: "os", name: "linux", version: "1" };
fn post_load(ctx) {
    let s = "stderr line with ümlauts and € signs, over and over again: ";
    let out = "";
    for i in 0..1700 { out += s; }
    throw out;
}
fn add_user(ctx, user) { true }
fn delete_user(ctx, user) { true }
fn grant_access(ctx) { true }
fn revoke_access(ctx) { true }
fn set_password(ctx, user, password) { true }
fn sanitize(ctx) { true }
fn pre_capture(ctx) { true }
fn is_ready(ctx) { true }
fn is_user_connected(ctx) { true }
"#;

async fn a_100_kb_failure_fails_the_request_with_the_text_cut(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, LOUD_OS, 0.2).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    let failed: Vec<&String> = log
        .iter()
        .filter(|(n, _)| n == "failed")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(failed.len(), 1, "{log:?}");
    let text = failed[0];
    assert!(
        text.len() <= provhost::db::loadlog::MAX_TEXT_BYTES + 64,
        "{}",
        text.len()
    );
    assert!(
        text.contains("[... cut by provhost: "),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert!(text.contains("stderr line with"), "the start is kept");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn killed_holder_is_taken_over_after_its_lease_expires(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 3.0).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let refuse = write_config(&rig, dir.path(), "refuse.toml", 0);
    let wait = write_config(&rig, dir.path(), "wait.toml", 30);
    let (l1, l2) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let c = rig.request("lab1.test", "debian12").await;
    let mut first = serve(&refuse, &l1);
    rig.wait_log(c.reservation_id, "transfervm", T).await;
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    let killed_at = Instant::now();
    let _second = serve(&wait, &l2);
    wait_text(&l2, "holding the lease").await;
    let text = read(&l2);
    assert!(
        text.contains("is held by another daemon; waiting up to 30 s"),
        "the lease of the killed holder was still fresh at the start:\n{text}"
    );
    assert!(killed_at.elapsed() >= Duration::from_secs(2), "{text}");
    rig.wait_state(c.request_id, "complete", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains("recovered after a daemon restart")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|(n, _)| n == "nodeready").count(),
        1,
        "{log:?}"
    );
}

/// A request left `pending` under this node while the daemon runs (here: claimed behind
/// its back, as when its own exit could not be written) is handed back by the sweep.
async fn sweep_hands_back_pending_requests_no_flow_owns(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    // Starts in an hour: the daemon does not claim it itself.
    let c = rig
        .request_window("lab1.test", "+60m", "+120m")
        .await
        .expect("request");
    let mut cfg = rig.config();
    cfg.sweep_interval_secs = 1;
    let (daemon, stop) = rig.spawn(cfg).await;
    // Let recovery at start pass, then leave a claim no flow owns.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let node = rig
        .t
        .scalar("SELECT `id` FROM `managementnode` WHERE `hostname` = 'mn1.test'")
        .await;
    provhost::db::claim::claim(&rig.t.db, c.request_id, "new", node)
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(rig.request_state(c.request_id).await, "pending");
    rig.wait_state(c.request_id, "new", Duration::from_secs(20))
        .await;
    let claims = rig
        .t
        .scalar(&format!(
            "SELECT COUNT(*) FROM `provhost_claim` WHERE `requestid` = {}",
            c.request_id
        ))
        .await;
    assert_eq!(claims, 0, "the claim row went with the hand-back");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

/// Issue 11 item 4: the daemon's own log says a reservation failed, at WARN, with the
/// request, computer, module and reason (not only `processed=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reservation_is_logged_at_warn() {
    let Some(rig) = Rig::new(Backend::Sqlite, 1, LOUD_OS, 0.2).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&rig, dir.path(), "provhost.toml", 0);
    let l = dir.path().join("serve.log");
    let _serve = serve(&cfg, &l);
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_state(c.request_id, "failed", T).await;
    wait_text(&l, "reservation failed").await;
    let text = read(&l);
    let line = text
        .lines()
        .find(|l| l.contains("reservation failed"))
        .expect("line");
    assert!(line.contains(" WARN "), "{line}");
    for field in [
        format!("request={}", c.request_id),
        "computer=lab1".to_string(),
        "module=sim".to_string(),
        "reason=".to_string(),
        "post_load".to_string(),
    ] {
        assert!(
            line.contains(&field),
            "{field} in {}",
            &line[..line.len().min(600)]
        );
    }
}

/// A database made before the lease table existed: `serve` says to run `db init`.
async fn a_database_without_the_lease_table_says_run_db_init(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    rig.t.exec("DROP TABLE `provhost_nodelease`").await;
    let d = rig.daemon(rig.config()).await;
    let err = match d.run(std::future::pending(), true).await {
        Ok(s) => panic!("ran without a lease table: {s:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("provhost_nodelease") && err.contains("run `provhost db init`"),
        "{err}"
    );
}

/// A heartbeat that is not shorter than the lease would let the lease lapse between
/// beats: refused before anything is taken, saying what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_not_shorter_than_the_lease_is_refused() {
    let Some(rig) = Rig::new(Backend::Sqlite, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    let mut cfg = rig.config();
    cfg.lease_secs = 5;
    cfg.heartbeat_secs = 5;
    let db = rig.t.connect_again().await;
    let err = match provhost::daemon::Daemon::new(db, std::sync::Arc::clone(&rig.host), cfg, None)
        .await
    {
        Ok(_) => panic!("a heartbeat as long as the lease was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("heartbeat_secs (5) must be at least 1 and less than lease_secs (5)"),
        "{err}"
    );
}

on_both_backends!(
    a_database_without_the_lease_table_says_run_db_init,
    killed_holder_is_taken_over_after_its_lease_expires,
    sweep_hands_back_pending_requests_no_flow_owns,
    second_serve_refuses_naming_the_holder,
    paused_holder_keeps_its_node_while_fresh_and_writes_nothing_after_losing_it,
    a_100_kb_failure_fails_the_request_with_the_text_cut,
);
