//! provhost on a real 3-node MariaDB Galera cluster (started by `common::galera`, torn down
//! on drop): claims racing across nodes are each won exactly once, certification conflicts
//! (1213 at COMMIT) are retried by the claim's own protocol and never fail a claim; one
//! daemon per node serves 1,000 requests; a node killed -9 mid-run and its daemon's work
//! recovered by a daemon restarted against a surviving node. docs/galera.md.
//!
//! Skipped with a loud SKIP line only when mariadbd / galera-4 / rsync are missing or the
//! tests do not run as root. `PROVHOST_GALERA_N` sets the request count (default 1000).

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::galera::Galera;
use common::scale;
use provhost::db::{Db, DbOptions, RetryPolicy};

/// One cluster at a time: three mariadbd per test on 2 cores is enough.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn requests() -> usize {
    std::env::var("PROVHOST_GALERA_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(g: &Galera, i: usize, opts: DbOptions) -> Db {
    Db::connect_with(&g.url(i, "provhost"), opts)
        .await
        .unwrap_or_else(|e| panic!("connect to galera node {}: {e}", i + 1))
}

fn conflicts(g: &Galera) -> i64 {
    (0..3)
        .map(|i| g.status(i, "wsrep_local_cert_failures") + g.status(i, "wsrep_local_bf_aborts"))
        .sum()
}

#[test]
fn claims_race_across_three_galera_nodes_each_won_exactly_once() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = Galera::start("claims_race_across_three_galera_nodes_each_won_exactly_once")
    else {
        return;
    };
    g.sql(0, "CREATE DATABASE provhost")
        .expect("create database");
    let n = requests();
    runtime().block_on(async {
        let db0 = connect(&g, 0, DbOptions::default()).await;
        let site = scale::setup(&db0, 3, 0, 0.1).await;
        // The web front end's rows, all `new`: the three nodes race for every one.
        let stmt = format!(
            "INSERT INTO `request` (`stateid`, `userid`, `laststateid`, `start`, `end`, `daterequested`) \
             SELECT 13, 1, 13, NOW(), NOW() + INTERVAL 1 DAY, NOW() FROM seq_1_to_{n}"
        );
        if let provhost::db::pool::Pool::MySql(p) = db0.pool() {
            sqlx::query(&stmt).execute(p).await.expect("insert requests");
        }
        let ids: Vec<i64> = match db0.pool() {
            provhost::db::pool::Pool::MySql(p) => {
                sqlx::query_scalar::<_, i64>("SELECT CAST(`id` AS SIGNED) FROM `request` ORDER BY `id`")
                    .fetch_all(p)
                    .await
                    .expect("request ids")
            }
            _ => unreachable!("galera is MariaDB"),
        };
        assert_eq!(ids.len(), n);
        // Let every node apply the inserts before the race.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = conflicts(&g);
        let started = Instant::now();
        let mut racers = Vec::new();
        for (i, (_, node)) in site.nodes.iter().enumerate() {
            // Generous retries: a claim that keeps meeting conflicts must still end in a
            // clear won / lost, never an error.
            let db = connect(
                &g,
                i,
                DbOptions {
                    retry: RetryPolicy {
                        attempts: 20,
                        first_delay: Duration::from_millis(5),
                        max_delay: Duration::from_millis(200),
                    },
                    ..DbOptions::default()
                },
            )
            .await;
            let (ids, node) = (ids.clone(), *node);
            racers.push(tokio::spawn(async move {
                let mut won = HashMap::new();
                // Every racer in the same order: the worst case for conflicts.
                for id in ids {
                    match provhost::db::claim::claim(&db, id, "new", node).await {
                        Ok(Some(c)) => {
                            won.insert(id, c.token);
                        }
                        Ok(None) => {}
                        Err(e) => panic!("claim of request {id} by node {node} failed: {e}"),
                    }
                }
                (node, won)
            }));
        }
        let mut winner: HashMap<i64, (i64, String)> = HashMap::new();
        for r in racers {
            let (node, won) = r.await.expect("racer");
            eprintln!("node {node} won {} claims", won.len());
            for (id, token) in won {
                if let Some(prev) = winner.insert(id, (node, token)) {
                    panic!("request {id} claimed twice: by node {} and node {node}", prev.0);
                }
            }
        }
        let took = started.elapsed();
        let seen = conflicts(&g) - before;
        eprintln!(
            "claim race: {n} requests × 3 nodes in {took:.1?}; certification conflicts + BF aborts on the servers: {seen}"
        );
        assert_eq!(winner.len(), n, "every request claimed once");
        assert!(seen > 0, "the race produced no certification conflict, so it tested nothing of 1213");
        // The database agrees with the winners, on every node.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sums = Vec::new();
        for i in 0..3 {
            let db = connect(&g, i, DbOptions::default()).await;
            let rows: Vec<(i64, i64, String)> = match db.pool() {
                provhost::db::pool::Pool::MySql(p) => sqlx::query_as(
                    "SELECT CAST(`requestid` AS SIGNED), CAST(`managementnodeid` AS SIGNED), `token` FROM `provhost_claim`",
                )
                .fetch_all(p)
                .await
                .expect("claims"),
                _ => unreachable!(),
            };
            assert_eq!(rows.len(), n, "claim rows on node {}", i + 1);
            for (id, node, token) in rows {
                let (wn, wt) = &winner[&id];
                assert_eq!((node, &token), (*wn, wt), "request {id} on galera node {}", i + 1);
            }
            assert_eq!(
                scale::scalar(&db, "SELECT COUNT(*) FROM `request` WHERE `stateid` = 14").await,
                n as i64
            );
            sums.push(g.sql(i, "CHECKSUM TABLE provhost.provhost_claim").expect("checksum"));
            db.close().await;
        }
        assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
        db0.close().await;
    });
}

#[test]
fn one_daemon_per_galera_node_serves_every_request_once() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = Galera::start("one_daemon_per_galera_node_serves_every_request_once") else {
        return;
    };
    g.sql(0, "CREATE DATABASE provhost")
        .expect("create database");
    let n = requests();
    runtime().block_on(async {
        let db0 = connect(&g, 0, scale::daemon_options()).await;
        let site = scale::setup(&db0, 3, n, 0.2).await;
        let before = conflicts(&g);
        let mut daemons = Vec::new();
        for (i, (name, _)) in site.nodes.iter().enumerate() {
            let db = connect(&g, i, scale::daemon_options()).await;
            daemons.push(scale::spawn(db, &site.host, scale::config(name, n)).await);
        }
        // The web front ends: one on each Galera node, inserting while the daemons run.
        let mut webs = Vec::new();
        for i in 0..3 {
            webs.push(connect(&g, i, DbOptions::default()).await);
        }
        let inserted = scale::insert_from_web_front_ends(webs, &site.computers).await;
        let took = scale::wait_ready(&db0, n as i64, Duration::from_secs(600)).await;
        eprintln!(
            "{n} requests inserted through 3 galera nodes in {inserted:.1?}; all nodeready after {took:.1?}; \
             certification conflicts + BF aborts: {}",
            conflicts(&g) - before
        );
        for d in daemons {
            match scale::stop(d).await {
                Some(Ok(_)) => {}
                other => panic!("daemon did not stop cleanly: {other:?}"),
            }
        }
        assert_eq!(scale::scalar(&db0, scale::READY_ROWS).await, n as i64, "a load ran twice");
        assert_eq!(scale::scalar(&db0, scale::FAILED).await, 0);
        assert_eq!(scale::scalar(&db0, scale::FOREIGN_CLAIMS).await, 0);
        // Every computer's lock, and every request's claim, names its own node.
        assert_eq!(
            scale::scalar(
                &db0,
                "SELECT COUNT(*) FROM `provhost_computerlock` l JOIN `provhost_computer` pc ON pc.`computerid` = l.`computerid` \
                 WHERE pc.`managementnodeid` <> l.`managementnodeid`"
            )
            .await,
            0
        );
        db0.close().await;
    });
}

#[test]
fn a_galera_node_killed_mid_run_its_daemon_recovers_on_a_survivor() {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut g) =
        Galera::start("a_galera_node_killed_mid_run_its_daemon_recovers_on_a_survivor")
    else {
        return;
    };
    g.sql(0, "CREATE DATABASE provhost")
        .expect("create database");
    let n = (requests() / 3).max(30);
    runtime().block_on(async {
        let db0 = connect(&g, 0, scale::daemon_options()).await;
        // Loads of 2 s, so many are mid-load when the node goes.
        let site = scale::setup(&db0, 3, n, 2.0).await;
        let mut daemons = Vec::new();
        for (i, (name, _)) in site.nodes.iter().enumerate() {
            let db = connect(&g, i, scale::daemon_options()).await;
            daemons.push(Some(scale::spawn(db, &site.host, scale::config(name, n)).await));
        }
        for c in &site.computers {
            scale::request(&db0, c).await;
        }
        // Some loads done, the rest in flight: kill node 2 (daemon mn2's database).
        let deadline = Instant::now() + Duration::from_secs(120);
        while scale::scalar(&db0, scale::READY).await < (n / 6) as i64 {
            assert!(Instant::now() < deadline, "no progress before the kill");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mn2 = site.nodes[1].1;
        let in_flight = scale::scalar(
            &db0,
            &format!("SELECT COUNT(*) FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` WHERE r.`managementnodeid` = {mn2} AND rq.`stateid` = 14"),
        )
        .await;
        g.kill9(1);
        let killed = Instant::now();
        eprintln!("killed galera node 2 with {in_flight} of mn2's requests pending");
        // Its daemon can no longer write anything: stop it (its grace period ends the
        // retries; what it held stays pending for recovery).
        let old = daemons[1].take().expect("mn2's daemon");
        let stopped = scale::stop(old).await;
        eprintln!("mn2's old daemon stopped {:.1?} after the kill: {stopped:?}", killed.elapsed());
        // The restart against a surviving node: waits out the old lease, recovers.
        let db3 = connect(&g, 2, scale::daemon_options()).await;
        let cfg = provhost::daemon::DaemonConfig {
            lease_wait_secs: 30,
            ..scale::config(&site.nodes[1].0, n)
        };
        daemons[1] = Some(scale::spawn(db3, &site.host, cfg).await);
        let took = scale::wait_ready(&db0, n as i64, Duration::from_secs(300)).await;
        eprintln!(
            "all {n} nodeready {:.1?} after the kill (survivors kept serving; mn2 recovered on node 3)",
            killed.elapsed()
        );
        let _ = took;
        // The old daemon's abandoned routine calls end within its pool's acquire timeout
        // (5 s) after its stop; the runtime must outlive them.
        tokio::time::sleep(Duration::from_secs(15).saturating_sub(killed.elapsed())).await;
        for d in daemons.into_iter().flatten() {
            match scale::stop(d).await {
                Some(Ok(_)) => {}
                other => panic!("daemon did not stop cleanly: {other:?}"),
            }
        }
        assert_eq!(scale::scalar(&db0, scale::FAILED).await, 0, "no reservation failed");
        assert_eq!(scale::scalar(&db0, scale::FOREIGN_CLAIMS).await, 0);
        assert_eq!(
            scale::scalar(&db0, "SELECT COUNT(*) FROM `request` WHERE `stateid` NOT IN (3, 14)").await,
            0,
            "every request reserved (or in its acknowledgement wait)"
        );
        db0.close().await;
    });
}
