//! Claiming: two management nodes race over 1,000 new requests; every request is claimed
//! exactly once, and each ends `pending` with laststate `new` and one claim row.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::db::{world, TestDb};
use provhost::db::{claim, inventory, Backend, Db};

const REQUESTS: i64 = 1000;

async fn claim_all(db: Db, management_node: i64, ids: Vec<i64>) -> Vec<i64> {
    let mut won = Vec::new();
    for id in ids {
        if claim::claim(&db, id, "new", management_node)
            .await
            .expect("claim")
            .is_some()
        {
            won.push(id);
        }
    }
    won
}

async fn two_claimers_race_over_1000_requests(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 1).await;
    let mn2 = inventory::add_management_node(&t.db, "mn2.test", "127.0.0.2")
        .await
        .expect("second management node");
    let mn1 = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn1");
    let now = match backend {
        Backend::Sqlite => "datetime('now', 'localtime')",
        Backend::MySql => "NOW()",
    };
    let requests: Vec<String> = (1..=REQUESTS)
        .map(|i| format!("({i}, 13, {}, 13, {now}, {now}, {now})", w.user))
        .collect();
    t.exec(&format!(
        "INSERT INTO `request` (`id`, `stateid`, `userid`, `laststateid`, `start`, `end`, `daterequested`) VALUES {}",
        requests.join(", ")
    ))
    .await;
    let reservations: Vec<String> = (1..=REQUESTS)
        .map(|i| {
            format!(
                "({i}, {}, {}, {}, {mn1})",
                w.computers[0], w.image, w.imagerevision
            )
        })
        .collect();
    t.exec(&format!(
        "INSERT INTO `reservation` (`requestid`, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid`) VALUES {}",
        reservations.join(", ")
    ))
    .await;
    assert_eq!(
        claim::work_for(&t.db, mn1).await.expect("work").len() as i64,
        REQUESTS
    );

    // Two daemons: separate pools, the same order, so they collide on nearly every request.
    let ids: Vec<i64> = (1..=REQUESTS).collect();
    let other = t.connect_again().await;
    let started = Instant::now();
    let a = tokio::spawn(claim_all(t.db.clone(), mn1, ids.clone()));
    let b = tokio::spawn(claim_all(other, mn2, ids.clone()));
    let (a, b) = (a.await.expect("claimer A"), b.await.expect("claimer B"));
    let took = started.elapsed();
    eprintln!(
        "RACE {backend:?}: {REQUESTS} requests, 2 claimers, {} + {} claims in {took:.2?} ({:.0} attempts/s)",
        a.len(),
        b.len(),
        (2 * REQUESTS) as f64 / took.as_secs_f64()
    );

    let sa: HashSet<i64> = a.iter().copied().collect();
    let sb: HashSet<i64> = b.iter().copied().collect();
    assert!(
        sa.is_disjoint(&sb),
        "a request was claimed twice: {:?}",
        sa.intersection(&sb).take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        (a.len() + b.len()) as i64,
        REQUESTS,
        "every request claimed"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `request` WHERE `stateid` = 14 AND `laststateid` = 13")
            .await,
        REQUESTS
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_claim`").await,
        REQUESTS
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `provhost_claim` WHERE `managementnodeid` = {mn1}"
        ))
        .await,
        a.len() as i64
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `provhost_claim` WHERE `managementnodeid` = {mn2}"
        ))
        .await,
        b.len() as i64
    );
    assert!(
        claim::work_for(&t.db, mn1).await.expect("work").is_empty(),
        "nothing left to claim"
    );
}

crate::on_both_backends!(two_claimers_race_over_1000_requests);
