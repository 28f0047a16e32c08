//! Many management nodes on one MariaDB (issue 16): ten daemons, one per node, each its own
//! pool (as ten processes would be), serving simulated reservations at once — no request
//! claimed by two nodes, each node serving only the computers VCL assigned to it — and a
//! request inserted by another machine claimed well within a second through the pickup
//! check (`[daemon] pickup_poll_ms`).
//!
//! `PROVHOST_MANY_NODES_N` reservations per node (default 30: 300 in all, for `make test`;
//! `make scale` runs 1,000 per node). The database's load is printed from `SHOW GLOBAL
//! STATUS` (Questions per node per second).

mod common;

use std::time::{Duration, Instant};

use common::db::TestDb;
use common::scale;
use provhost::db::Backend;

const NODES: usize = 10;

fn per_node() -> usize {
    std::env::var("PROVHOST_MANY_NODES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

async fn questions(t: &TestDb) -> i64 {
    t.scalar("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Questions'")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_daemons_on_one_mariadb_each_serve_only_their_own_computers() {
    let Some(t) = TestDb::empty(Backend::MySql).await else {
        return;
    };
    let n = per_node() * NODES;
    let site = scale::setup(&t.db, NODES, n, 0.2).await;
    let mut daemons = Vec::new();
    for (name, _) in &site.nodes {
        let db = t.connect_with(scale::daemon_options()).await;
        daemons.push(scale::spawn(db, &site.host, scale::config(name, per_node() + 10)).await);
    }
    let q0 = questions(&t).await;
    let started = Instant::now();
    // Four web front ends inserting at once.
    let mut webs = Vec::new();
    for _ in 0..4 {
        webs.push(t.connect_again().await);
    }
    let inserted = scale::insert_from_web_front_ends(webs, &site.computers).await;
    let after_inserts = scale::wait_ready(&t.db, n as i64, Duration::from_secs(1800)).await;
    let took = started.elapsed();
    let q = questions(&t).await - q0;
    eprintln!(
        "{NODES} daemons × {} reservations on one MariaDB: inserted in {inserted:.1?} by 4 web front ends, \
         all nodeready {after_inserts:.1?} after the last insert, {took:.1?} after the first ({:.0}/s); \
         {q} statements in all (inserts included), {:.0} per node per second",
        per_node(),
        n as f64 / took.as_secs_f64(),
        q as f64 / NODES as f64 / took.as_secs_f64()
    );
    // Every node holds its own share, in the acknowledgement wait (a request is
    // re-claimed for it right after its load's exit: wait for that, bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, id) in &site.nodes {
        loop {
            let served = t
                .scalar(&format!(
                    "SELECT COUNT(*) FROM `provhost_claim` WHERE `managementnodeid` = {id}"
                ))
                .await;
            if served == per_node() as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} holds {served} claims, not {}",
                per_node()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        t.scalar(scale::FOREIGN_CLAIMS).await,
        0,
        "a node claimed another node's request"
    );
    // What the waiting costs: every reservation of every node waits for Connect now.
    let (q0, at) = (questions(&t).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let q = questions(&t).await - q0;
    let secs = at.elapsed().as_secs_f64();
    eprintln!(
        "while all {n} wait for Connect (acknowledge_poll_ms 1000): {:.0} statements/s on the server, {:.1} per node per second",
        q as f64 / secs,
        q as f64 / secs / NODES as f64
    );
    for d in daemons {
        match scale::stop(d).await {
            Some(Ok(_)) => {}
            other => panic!("daemon did not stop cleanly: {other:?}"),
        }
    }
    assert_eq!(
        t.scalar(scale::READY_ROWS).await,
        n as i64,
        "a load ran twice"
    );
    assert_eq!(t.scalar(scale::FAILED).await, 0);
    assert_eq!(
        t.scalar(scale::FOREIGN_CLAIMS).await,
        0,
        "a node claimed another node's request"
    );
    assert_eq!(
        t.scalar(
            "SELECT COUNT(*) FROM `provhost_computerlock` l JOIN `provhost_computer` pc ON pc.`computerid` = l.`computerid` \
             WHERE pc.`managementnodeid` <> l.`managementnodeid`"
        )
        .await,
        0,
        "a node locked another node's computer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_another_machine_is_claimed_within_a_second_by_one_of_ten_nodes() {
    let Some(t) = TestDb::empty(Backend::MySql).await else {
        return;
    };
    let samples = 20;
    let site = scale::setup(&t.db, NODES, samples, 0.05).await;
    let mut daemons = Vec::new();
    for (name, _) in &site.nodes {
        let db = t.connect_with(scale::daemon_options()).await;
        let cfg = provhost::daemon::DaemonConfig {
            // Full polls far apart: only the pickup check can be this fast.
            poll_interval_secs: 30,
            pickup_poll_ms: 250,
            ..scale::config(name, 10)
        };
        daemons.push(scale::spawn(db, &site.host, cfg).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let web = t.connect_again().await;
    let mut lat = Vec::new();
    for (i, c) in site.computers.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 137) % 400)).await;
        let r = scale::request(&web, c).await;
        let at = Instant::now();
        loop {
            let s = t
                .scalar(&format!(
                    "SELECT `stateid` FROM `request` WHERE `id` = {}",
                    r.request_id
                ))
                .await;
            if s != 13 {
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "request {} not claimed in 10 s",
                r.request_id
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lat.push(at.elapsed());
    }
    lat.sort();
    eprintln!(
        "pickup with {NODES} daemons, pickup_poll_ms 250, poll_interval_secs 30: p50 {:?}, max {:?} over {samples}",
        lat[samples / 2],
        lat[samples - 1]
    );
    for d in daemons {
        let _ = scale::stop(d).await;
    }
    assert!(lat[samples - 2] < Duration::from_secs(1), "{lat:?}");
    assert!(lat[samples - 1] < Duration::from_secs(3), "{lat:?}");
}

/// The pickup check's fingerprint changes when a request is inserted for the node or moves
/// into or out of a claimable state, not for other nodes' requests or running (`pending`)
/// ones; on both backends (the embedded SQLite default runs it too).
async fn pickup_fingerprint_sees_inserts_and_state_changes_of_its_node_only(backend: Backend) {
    let Some(t) = TestDb::empty(backend).await else {
        return;
    };
    let site = scale::setup(&t.db, 2, 4, 0.05).await;
    let (n1, n2) = (site.nodes[0].1, site.nodes[1].1);
    let fp = |node| provhost::db::claim::pickup_fingerprint(&t.db, node);
    let empty = fp(n1).await.expect("check");
    assert_eq!(empty.count, 0);
    // vm0 and vm2 belong to node 1, vm1 to node 2.
    let r = scale::request(&t.db, "vm0.scale").await;
    let one = fp(n1).await.expect("check");
    assert_ne!(one, empty, "an insert for the node changes its fingerprint");
    assert_eq!(one.top, r.request_id);
    scale::request(&t.db, "vm1.scale").await;
    assert_eq!(
        fp(n1).await.expect("check"),
        one,
        "another node's request is not this node's change"
    );
    assert_eq!(fp(n2).await.expect("check").count, 1);
    // Claimed (pending): out of the set.
    let c = provhost::db::claim::claim(&t.db, r.request_id, "new", n1)
        .await
        .expect("claim")
        .expect("won");
    assert_eq!(fp(n1).await.expect("check"), empty);
    // Handed back: in again, same as before the claim.
    provhost::db::claim::release_claimed(&t.db, r.request_id, &c.token)
        .await
        .expect("release");
    assert_eq!(fp(n1).await.expect("check"), one);
    // A state change by the web front end (new → deleted) changes it.
    let deleted_id = provhost::vcl::state_id("deleted").expect("VCL state deleted");
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = {deleted_id} WHERE `id` = {}",
        r.request_id
    ))
    .await;
    let deleted = fp(n1).await.expect("check");
    assert_eq!(deleted.count, 1);
    assert_ne!(deleted, one);
}

on_both_backends!(pickup_fingerprint_sees_inserts_and_state_changes_of_its_node_only);
