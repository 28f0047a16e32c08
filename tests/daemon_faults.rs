//! The daemon under faults and company: kill -9 in the middle of a load and a restart
//! (the request completes exactly once), several management nodes on one database (each
//! takes only its own), two daemons with the same node id (never double-processing), and
//! the database's connections dropped mid-flow.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::flows::{Rig, RECORDING_OS};
use provhost::daemon::DaemonConfig;
use provhost::db::Backend;

const T: Duration = Duration::from_secs(90);

/// The `provhost` binary as a child process, killed on drop.
type Serve = common::procs::KillOnDrop;

fn write_config(rig: &Rig, dir: &Path, ack_secs: u64) -> std::path::PathBuf {
    let cfg = dir.join("provhost.toml");
    let mut f = std::fs::File::create(&cfg).expect("config");
    writeln!(
        f,
        "[paths]\nscripts = {:?}\nstdlib = {:?}\ndata_dir = {:?}\n\n[database]\nurl = {:?}\n\n[daemon]\nnode = \"mn1.test\"\npoll_interval_secs = 1\nlease_secs = 3\nheartbeat_secs = 1\nlease_wait_secs = 30\n\n[daemon.timings]\nacknowledgetimeout = {ack_secs}\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 2\nconnect_poll = 1\n",
        rig.scripts.scripts, rig.scripts.stdlib, dir.join("data"), rig.t.url
    )
    .expect("write config");
    cfg
}

fn serve(cfg: &Path, once: bool, log: &Path) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provhost"));
    cmd.arg("--config").arg(cfg).arg("serve");
    if once {
        cmd.arg("--once");
    }
    let out = std::fs::File::create(log).expect("log file");
    let child = cmd
        .env("PROVHOST_LOG", "info")
        .env_remove("PROVHOST_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn provhost serve");
    common::procs::KillOnDrop(child)
}

async fn kill_9_mid_load_then_restart_completes_exactly_once(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 4.0).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(&rig, dir.path(), 2);
    let c = rig.request("lab1.test", "debian12").await;

    let mut first = serve(&cfg, false, &dir.path().join("first.log"));
    rig.wait_log(c.reservation_id, "transfervm", T).await;
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    assert_eq!(
        rig.request_state(c.request_id).await,
        "pending",
        "the dead daemon left its claim"
    );

    let mut second = serve(&cfg, true, &dir.path().join("second.log"));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = second.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < T,
            "serve --once did not finish; log:\n{}",
            std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log_text = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
    assert!(status.success(), "{log_text}");

    let log = rig.log(c.reservation_id).await;
    let count = |name: &str| log.iter().filter(|(n, _)| n == name).count();
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains("recovered after a daemon restart")),
        "{log:?}"
    );
    assert_eq!(count("nodeready"), 1, "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|(n, t)| n == "exited" && t.contains("request reserved"))
            .count(),
        1,
        "{log:?}"
    );
    // No acknowledgement (2 s): timeout, reclaim, one reload request, run to the end.
    assert_eq!(rig.request_state(c.request_id).await, "complete");
    let requests = rig
        .t
        .scalar(&format!(
            "SELECT COUNT(*) FROM `reservation` WHERE `computerid` = {}",
            c.computer_id
        ))
        .await;
    assert_eq!(requests, 2, "exactly one reload request");
    assert_eq!(rig.computer_state(c.computer_id).await, "available");
}

async fn each_node_takes_only_its_own_reservations(backend: Backend) {
    let Some(rig) = Rig::new(backend, 4, RECORDING_OS, 0.1).await else {
        return;
    };
    let mn2 = provhost::db::inventory::add_management_node(&rig.t.db, "mn2.test", "127.0.0.2")
        .await
        .expect("node 2");
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for i in 1..=4 {
        let c = rig.request(&format!("lab{i}.test"), "debian12").await;
        if i % 2 == 0 {
            rig.t
                .exec(&format!(
                    "UPDATE `reservation` SET `managementnodeid` = {mn2} WHERE `id` = {}",
                    c.reservation_id
                ))
                .await;
            theirs.push(c);
        } else {
            mine.push(c);
        }
    }
    let mut cfg = rig.config();
    cfg.timings.acknowledgetimeout = 1;
    let d1 = rig.daemon(cfg.clone()).await;
    d1.run(std::future::pending(), true)
        .await
        .expect("node 1 once");
    for c in &mine {
        assert_eq!(rig.request_state(c.request_id).await, "complete");
    }
    for c in &theirs {
        assert_eq!(
            rig.request_state(c.request_id).await,
            "new",
            "node 1 must not touch node 2's work"
        );
        assert!(rig.names(c.reservation_id).await.is_empty());
    }
    let d2 = rig
        .daemon(DaemonConfig {
            node: "mn2.test".into(),
            ..cfg
        })
        .await;
    d2.run(std::future::pending(), true)
        .await
        .expect("node 2 once");
    for c in &theirs {
        assert_eq!(rig.request_state(c.request_id).await, "complete");
    }
}

async fn two_daemons_with_one_node_id_never_double_process(backend: Backend) {
    const N: usize = 12;
    let Some(rig) = Rig::new(backend, N, RECORDING_OS, 0.2).await else {
        return;
    };
    let mut created = Vec::new();
    for i in 1..=N {
        created.push(rig.request(&format!("lab{i}.test"), "debian12").await);
    }
    let mut cfg = rig.config();
    cfg.timings.acknowledgetimeout = 1;
    // One live owner per node: the second waits for the first's lease (given up when
    // its `--once` run ends) instead of running beside it.
    cfg.lease_wait_secs = 120;
    let (a, b) = (rig.daemon(cfg.clone()).await, rig.daemon(cfg).await);
    let (ra, rb) = tokio::join!(
        a.run(std::future::pending(), true),
        b.run(std::future::pending(), true)
    );
    let (sa, sb) = (ra.expect("a"), rb.expect("b"));
    // Each request passes through four flows (new, reserved, timeout, reload), each claimed
    // once: any double claim would push the sum over 4 × N. (Which daemon wins how many
    // claims is up to the database: SQLite's single writer often lets one take them all.)
    assert_eq!(sa.processed + sb.processed, 4 * N, "{sa:?} {sb:?}");
    for c in &created {
        assert_eq!(rig.request_state(c.request_id).await, "complete");
        let log = rig.log(c.reservation_id).await;
        assert_eq!(
            log.iter().filter(|(n, _)| n == "nodeready").count(),
            1,
            "{log:?}"
        );
        assert_eq!(
            log.iter().filter(|(n, _)| n == "statuscheck").count(),
            1,
            "{log:?}"
        );
        let reloads = rig
            .t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `reservation` WHERE `computerid` = {}",
                c.computer_id
            ))
            .await;
        assert_eq!(
            reloads, 2,
            "one reservation and one reload for computer {}",
            c.computer
        );
    }
}

/// A request deleted before it was ever loaded (laststate new) and handed back at a stop
/// comes back exactly as it was, so the next reclaim still knows there is nothing to undo
/// and leaves the computer (maybe serving someone else by then) alone.
async fn a_hand_back_restores_state_and_laststate(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.1).await else {
        return;
    };
    let c = rig.request("lab1.test", "debian12").await;
    let (deleted, new) = (
        provhost::vcl::state_id("deleted").expect("id"),
        provhost::vcl::state_id("new").expect("id"),
    );
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `stateid` = {deleted}, `laststateid` = {new} WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.t
        .exec(&format!(
            "UPDATE `computer` SET `stateid` = 8 WHERE `id` = {}",
            c.computer_id
        ))
        .await;
    let claimed = provhost::db::claim::claim(
        &rig.t.db,
        c.request_id,
        "deleted",
        rig.daemon(rig.config()).await.node_id(),
    )
    .await
    .expect("claim");
    assert!(claimed.is_some());
    assert!(provhost::db::claim::release(&rig.t.db, c.request_id)
        .await
        .expect("release"));
    let last = rig
        .t
        .scalar(&format!(
            "SELECT `laststateid` FROM `request` WHERE `id` = {}",
            c.request_id
        ))
        .await;
    assert_eq!(
        (rig.request_state(c.request_id).await.as_str(), last),
        ("deleted", new)
    );

    let d = rig.daemon(rig.config()).await;
    d.run(std::future::pending(), true).await.expect("once");
    assert_eq!(rig.request_state(c.request_id).await, "complete");
    assert_eq!(
        rig.computer_state(c.computer_id).await,
        "inuse",
        "a never-loaded request leaves the computer alone"
    );
    let calls = rig
        .computer_var(c.computer_id, "os_calls")
        .await
        .unwrap_or_default();
    assert!(!calls.contains("sanitize"), "nothing to undo: {calls}");
}

on_both_backends!(
    a_hand_back_restores_state_and_laststate,
    kill_9_mid_load_then_restart_completes_exactly_once,
    each_node_takes_only_its_own_reservations,
    two_daemons_with_one_node_id_never_double_process,
);

/// MariaDB only (SQLite is a file, there is no server to lose): every connection of the
/// test database is killed while a load runs; the flow goes on over new connections and
/// nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_connections_killed_mid_flow() {
    let Some(rig) = Rig::new(Backend::MySql, 1, RECORDING_OS, 2.0).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "transfervm", T).await;

    let admin = provhost::db::Db::connect(&common::db::mariadb_server())
        .await
        .expect("admin connection");
    let provhost::db::pool::Pool::MySql(p) = admin.pool() else {
        unreachable!()
    };
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT `ID` FROM information_schema.PROCESSLIST WHERE `DB` = ?")
            .bind(&rig.t.name)
            .fetch_all(p)
            .await
            .expect("processlist");
    assert!(!ids.is_empty(), "the daemon holds connections");
    for id in &ids {
        let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(p)
            .await;
    }

    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    let log = rig.log(c.reservation_id).await;
    for name in [
        "machinebooted",
        "loadimagecomplete",
        "nodeready",
        "reserved",
    ] {
        assert_eq!(
            log.iter().filter(|(n, _)| n == name).count(),
            1,
            "{name} once: {log:?}"
        );
    }
    let _ = stop.send(());
    daemon.await.expect("daemon");
    admin.close().await;
}
