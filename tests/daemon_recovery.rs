//! The daemon binary through a restart with a broken module file (the saved last good
//! version keeps in-use reservations going; fixing the file reloads it; with no saved copy
//! the reservation is held, not failed, until the file loads) and through a stop
//! during a real database outage (a TCP proxy in front of MariaDB, cut: the stop still
//! wins within `shutdown_grace_secs`).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::flows::{sim_source, Rig};
use common::procs::KillOnDrop;
use provhost::db::Backend;

const T: Duration = Duration::from_secs(60);

/// The recording OS module of the flow tests, with an in-use check that leaves a mark.
fn checking_os() -> String {
    common::flows::RECORDING_OS.replace(
        "fn is_user_connected(ctx) { true }",
        "fn is_user_connected(ctx) { record(ctx, \"inuse_check\") }",
    )
}

fn write_config(rig: &Rig, dir: &Path, url: &str, grace: u64) -> std::path::PathBuf {
    let cfg = dir.join("provhost.toml");
    let mut f = std::fs::File::create(&cfg).expect("config");
    writeln!(
        f,
        "[paths]\nscripts = {:?}\nstdlib = {:?}\ndata_dir = {:?}\n\n[database]\nurl = {url:?}\n\n\
         [daemon]\nnode = \"mn1.test\"\npoll_interval_secs = 1\nshutdown_grace_secs = {grace}\n\n\
         [daemon.timings]\nacknowledgetimeout = 30\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 2\n\
         connect_poll = 1\ngeneral_inuse_check = 1\n",
        rig.scripts.scripts,
        rig.scripts.stdlib,
        dir.join("data"),
    )
    .expect("write config");
    cfg
}

fn serve(cfg: &Path, log: &Path) -> KillOnDrop {
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
    KillOnDrop(child)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait (bounded) until the log has `needle`.
async fn wait_for_line(log: &Path, needle: &str, timeout: Duration) {
    let t = Instant::now();
    while !read(log).contains(needle) {
        assert!(
            t.elapsed() < timeout,
            "no {needle:?} in the log after {timeout:?}:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then wait (bounded by `limit`) for the exit; returns how long it took.
async fn stop(serve: &mut KillOnDrop, log: &Path, limit: Duration) -> Duration {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = serve.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < limit,
            "serve did not stop within {limit:?} of SIGTERM:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}:\n{}", read(log));
    t.elapsed()
}

async fn inuse_checks(rig: &Rig, computer: i64) -> usize {
    rig.computer_var(computer, "os_calls")
        .await
        .unwrap_or_default()
        .matches("inuse_check")
        .count()
}

/// Wait (bounded) until the in-use check has run more than `after` times.
async fn wait_inuse_check(rig: &Rig, computer: i64, after: usize, log: &Path) -> usize {
    let t = Instant::now();
    loop {
        let n = inuse_checks(rig, computer).await;
        if n > after {
            return n;
        }
        assert!(
            t.elapsed() < T,
            "no in-use check after {T:?}:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn restart_with_a_broken_module_serves_the_saved_good_version(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, &checking_os(), 0.1).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&rig, dir.path(), &rig.t.url, 10);
    let (log1, log2) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let c = rig.request("lab1.test", "debian12").await;

    let mut first = serve(&cfg, &log1);
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.9")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "inuse", T).await;
    let checked = wait_inuse_check(&rig, c.computer_id, 0, &log1).await;
    let saved = dir
        .path()
        .join("data/modules-good/provisioning/sim.rhai.json");
    assert!(saved.is_file(), "no saved good copy at {}", saved.display());
    stop(&mut first, &log1, T).await;

    // Broken while the daemon is down: a missing `}`.
    let sim = rig.scripts.scripts.join("provisioning/sim.rhai");
    let good = std::fs::read_to_string(&sim).expect("read sim");
    std::fs::write(
        &sim,
        good.replacen(
            "fn node_status(ctx) {",
            "fn node_status(ctx) {\n    if true {",
            1,
        ),
    )
    .expect("break sim");

    let mut second = serve(&cfg, &log2);
    wait_for_line(&log2, "SERVING ITS LAST GOOD VERSION v1", T).await;
    let text = read(&log2);
    assert!(
        text.contains("likely cause: unclosed `{`"),
        "the error says what is wrong:\n{text}"
    );
    // The reservation keeps going: its next checks pass.
    let checked = wait_inuse_check(&rig, c.computer_id, checked, &log2).await;
    wait_inuse_check(&rig, c.computer_id, checked, &log2).await;
    // That check's flow holds the request `pending` until it exits back to `inuse`.
    rig.wait_state(c.request_id, "inuse", T).await;
    assert!(
        !rig.names(c.reservation_id)
            .await
            .iter()
            .any(|n| n == "failed"),
        "{:?}",
        rig.log(c.reservation_id).await
    );

    // Fixed: the watcher loads it and it replaces the saved copy; the reservation ends
    // normally and the reload after it runs the fixed module.
    std::fs::write(
        &sim,
        sim_source(0.1).replace("version: \"1\"", "version: \"2\""),
    )
    .expect("fix sim");
    wait_for_line(&log2, "v2 replaces the saved last good copy", T).await;
    provhost::db::flow::end_now(&rig.t.db, c.request_id)
        .await
        .expect("end");
    rig.wait_state(c.request_id, "complete", T).await;
    let t = Instant::now();
    while rig.computer_state(c.computer_id).await != "available" {
        assert!(t.elapsed() < T, "computer not available:\n{}", read(&log2));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saved_text = std::fs::read_to_string(&saved).expect("saved copy");
    assert!(
        saved_text.contains("\"version\": \"2\""),
        "the fixed version is the new saved copy"
    );
    stop(&mut second, &log2, T).await;
}

on_both_backends!(restart_with_a_broken_module_serves_the_saved_good_version);

/// MariaDB only (a server to lose): the daemon's database connection goes through a proxy
/// that the test cuts; SIGTERM during the outage ends the daemon within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_database_outage_wins_within_the_grace_period() {
    const GRACE: u64 = 6;
    let Some(rig) = Rig::new(Backend::MySql, 1, &checking_os(), 0.1).await else {
        return;
    };
    let mut proxy = common::proxy::Proxy::start(common::proxy::target_of(&rig.t.url)).await;
    let url = common::proxy::via(&rig.t.url, proxy.addr);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&rig, dir.path(), &url, GRACE);
    let log = dir.path().join("serve.log");
    let mut serve = serve(&cfg, &log);
    wait_for_line(&log, "provhost daemon running", T).await;
    // One reservation in progress too: its flow waits for an acknowledgement.
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;

    proxy.cut();
    // The poll loop is in its retries now; two seconds more and it is in the middle of a
    // try waiting for a connection (the 3 s acquire timeout), where it used to sit.
    wait_for_line(&log, "check-in of management node 1: ", T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let took = stop(&mut serve, &log, Duration::from_secs(GRACE + 10)).await;
    let text = read(&log);
    eprintln!("stopped {took:?} after SIGTERM during the outage");
    assert!(
        took <= Duration::from_secs(GRACE),
        "stopped after {took:?}, grace is {GRACE} s:\n{text}"
    );
    assert!(text.contains("SIGTERM: stopping"), "{text}");
    assert!(text.contains("provhost daemon stopped"), "{text}");
    // Retry warnings say what was being done once, and why.
    for line in text.lines().filter(|l| l.contains("retrying in")) {
        assert!(
            line.contains("lost the connection to the database")
                || line.contains("no database connection within the acquire timeout"),
            "{line}"
        );
        let what = line
            .split(": ")
            .find(|p| p.contains("check-in") || p.contains("request") || p.contains("reading"))
            .unwrap_or("");
        assert!(
            what.is_empty() || line.matches(what).count() == 1,
            "context repeated: {line}"
        );
    }
    // No colour codes in a log file.
    assert!(!text.contains('\u{1b}'), "ANSI codes in the log:\n{text}");
}

/// A start with a broken module file and no saved copy (a host without a store): the
/// in-use reservation is not failed; its checks are handed back until the file loads, then
/// they run again.
async fn a_broken_module_without_a_saved_copy_holds_its_reservations(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, &checking_os(), 0.1).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.10")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "inuse", T).await;
    let nowhere = Path::new("/nonexistent");
    let checked = wait_inuse_check(&rig, c.computer_id, 0, nowhere).await;
    let _ = stop.send(());
    daemon.await.expect("daemon");

    let sim = rig.scripts.scripts.join("provisioning/sim.rhai");
    std::fs::write(&sim, "const MODULE = #{ kind: \"provisioning\", name: \"sim\", version: \"1\" };\nfn node_status(ctx) {\n")
        .expect("break sim");
    let host = provhost::host::ScriptHost::new(rig.host.options().clone(), &[]);
    assert_eq!(host.load_all().len(), 1, "sim does not load");
    let d = provhost::daemon::Daemon::new(
        rig.t.connect_again().await,
        host.clone(),
        rig.config(),
        None,
    )
    .await
    .expect("daemon");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(async move {
        d.run(
            async move {
                let _ = rx.await;
            },
            false,
        )
        .await
        .expect("run")
    });
    // Several polls and in-use checks are due meanwhile (general_inuse_check is 1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        inuse_checks(&rig, c.computer_id).await,
        checked,
        "no check ran"
    );
    assert_ne!(rig.request_state(c.request_id).await, "failed");
    assert!(
        !rig.names(c.reservation_id)
            .await
            .iter()
            .any(|n| n == "failed"),
        "{:?}",
        rig.log(c.reservation_id).await
    );

    std::fs::write(&sim, sim_source(0.1)).expect("fix sim");
    host.load_file(&sim).expect("fixed sim loads");
    wait_inuse_check(&rig, c.computer_id, checked, nowhere).await;
    // The check just seen runs inside a flow that holds the request `pending` until it
    // exits back to `inuse`.
    rig.wait_state(c.request_id, "inuse", Duration::from_secs(30))
        .await;
    let _ = tx.send(());
    second.await.expect("second daemon");
}

on_both_backends!(a_broken_module_without_a_saved_copy_holds_its_reservations);
