//! Capacity. More flows in flight than routine threads (a waiting flow holds none). And
//! the end of a reservation has capacity of its own: with every load slot (`max_flows`)
//! taken by loads waiting in a slow `post_load`, a reservation that ends is still moved to
//! `timeout` and reclaimed (`revoke_access` …) within a few polls, on its own routine
//! threads (`reclaim_flows`). The runtime gets only two blocking threads, so a routine call
//! that still used tokio's shared blocking pool would queue behind the loads.

mod common;

use std::time::{Duration, Instant};

use common::flows::{Rig, RECORDING_OS};
use provhost::db::Backend;

const T: Duration = Duration::from_secs(60);

/// The tests here count this process's routine threads: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A site hook that holds every load but lab4's in a bounded wait (90 s).
const SLOW_SITE: &str = r#"const MODULE = #{ kind: "site", name: "slow", version: "1" };
fn post_load(ctx) {
    if ctx.computer_hostname == "lab4.test" { return true; }
    ctx.loadlog("info", "slow post_load: waiting");
    wait::poll(|| false, #{ timeout: 90, interval: 0.2 });
    true
}
"#;

async fn reclaim_runs_while_loads_fill_max_flows() {
    let _serial = SERIAL.lock().await;
    let limits = provhost::host::Limits {
        call_timeout_secs: 120,
        ..common::scripts::test_limits()
    };
    let Some(rig) = Rig::with_limits(Backend::Sqlite, 4, RECORDING_OS, 0.1, &[], limits).await
    else {
        return;
    };
    rig.scripts.write("site/slow.rhai", SLOW_SITE);
    let errors = rig.host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let cfg = provhost::daemon::DaemonConfig {
        max_flows: 3,
        reclaim_flows: 2,
        ..rig.config()
    };
    let (daemon, stop) = rig.spawn(cfg).await;

    // The reservation that will end: lab4, in use.
    let lab4 = rig.world.computers[3];
    let r = rig.request("lab4.test", "debian12").await;
    rig.wait_log(r.reservation_id, "acknowledgetimeout", T)
        .await;
    rig.connect_from(r.reservation_id, "192.0.2.9").await;
    rig.wait_log(r.reservation_id, "connected", T).await;
    rig.wait_state(r.request_id, "inuse", T).await;

    // Three loads take every load slot and wait in post_load.
    let mut loads = Vec::new();
    for c in ["lab1.test", "lab2.test", "lab3.test"] {
        loads.push(rig.request(c, "debian12").await);
    }
    for l in &loads {
        rig.wait_log(l.reservation_id, "info", T).await;
    }

    // The reservation ends.
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `end` = '2000-01-01 00:00:00' WHERE `id` = {}",
            r.request_id
        ))
        .await;
    let ended = Instant::now();
    rig.wait_state(r.request_id, "complete", Duration::from_secs(20))
        .await;
    let took = ended.elapsed();
    let calls = rig.computer_var(lab4, "os_calls").await.unwrap_or_default();
    assert!(
        calls.ends_with("revoke_access,delete_user:ann,sanitize"),
        "{calls}"
    );
    // The loads are all still in their post_load: the reclaim did not wait for a slot.
    for l in &loads {
        assert_eq!(rig.request_state(l.request_id).await, "pending");
        assert!(
            !rig.names(l.reservation_id)
                .await
                .contains(&"nodeready".to_string()),
            "a load finished early"
        );
    }
    eprintln!("reclaim of the ended reservation finished {took:?} after its end, with 3 of 3 load slots busy");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // A stop cancels the waiting loads and hands them back.
    let _ = stop.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon stops within its grace period")
        .expect("daemon");
    assert!(summary.processed >= 4, "{summary:?}");
    for l in &loads {
        assert_eq!(rig.request_state(l.request_id).await, "new");
    }
}

#[test]
fn reclaim_runs_while_loads_fill_max_flows_sqlite() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(reclaim_runs_while_loads_fill_max_flows());
}

/// Most `provhost-call` threads (routine calls of the work lane) seen at once by sampling
/// `/proc/self/task` every 5 ms until `stop` is set.
fn sample_call_threads(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut most = 0;
        // Bounded: at most 10 minutes of samples.
        for _ in 0..120_000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let n = std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.flatten()
                        .filter(|t| {
                            std::fs::read_to_string(t.path().join("comm"))
                                .is_ok_and(|c| c.trim() == "provhost-call")
                        })
                        .count()
                })
                .unwrap_or(0);
            most = most.max(n);
            std::thread::sleep(Duration::from_millis(5));
        }
        most
    })
}

/// More flows in flight than routine threads: with `routine_threads = 2`, 24 loads all
/// run and all 24 reservations wait for Connect at the same time, while no more than two
/// routine calls ran at once (a waiting flow holds no thread).
async fn flows_in_flight_hold_no_thread_while_they_wait(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let Some(rig) = Rig::new(backend, 24, RECORDING_OS, 0.2).await else {
        return;
    };
    let mut cfg = provhost::daemon::DaemonConfig {
        max_flows: 24,
        routine_threads: 2,
        ..rig.config()
    };
    cfg.timings.acknowledgetimeout = 300;
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_call_threads(std::sync::Arc::clone(&stop_sampling));
    let (daemon, stop) = rig.spawn(cfg).await;
    let mut rs = Vec::new();
    for i in 1..=24 {
        rs.push(rig.request(&format!("lab{i}.test"), "debian12").await);
    }
    for r in &rs {
        rig.wait_log(r.reservation_id, "acknowledgetimeout", T)
            .await;
    }
    // All 24 wait for Connect now, each a flow of its own.
    for r in &rs {
        assert_eq!(rig.request_state(r.request_id).await, "pending");
    }
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
    eprintln!("24 reservations waiting for Connect at once; at most {most} routine threads ran at once (routine_threads = 2)");
    // A call's thread gives its permit back as its call returns and exits a moment
    // later, so a sample may also see the two that just finished: at most 2 × 2, never 24.
    assert!((1..=4).contains(&most), "{most} routine threads at once");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon stops within its grace period")
        .expect("daemon");
    for r in &rs {
        assert_eq!(rig.request_state(r.request_id).await, "reserved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_in_flight_hold_no_thread_while_they_wait_sqlite() {
    flows_in_flight_hold_no_thread_while_they_wait(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_in_flight_hold_no_thread_while_they_wait_mariadb() {
    flows_in_flight_hold_no_thread_while_they_wait(Backend::MySql).await;
}
