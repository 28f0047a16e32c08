//! Waiting flows' looks at their requests, gathered into shared reads
//! (`db::watchbatch::Watcher`): each look gets what a single read would have given it —
//! the request under its claim, a change by someone else, its end, the user's `remoteIP`,
//! a removed row — and looks asked for together share one statement.

mod common;

use common::db::{world, TestDb};
use provhost::db::requests::{self, ComputerChoice, NewRequest};
use provhost::db::watch::{self, Watched};
use provhost::db::watchbatch::{read_many, Watcher, CHUNK};
use provhost::db::{claim, inventory, Backend};

async fn looks_share_reads_and_see_what_one_read_sees(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 4).await;
    let mn = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn");
    let mut ids = Vec::new();
    for c in ["lab1.test", "lab2.test", "lab3.test", "lab4.test"] {
        let r = requests::new_request(
            &t.db,
            &NewRequest {
                image: "debian12".into(),
                computer: ComputerChoice::Named(c.into()),
                user: "ann".into(),
                start: None,
                end: None,
            },
        )
        .await
        .expect("request");
        ids.push(r);
    }
    // 1: claimed, acknowledged; 2: claimed, ended; 3: claimed, then deleted by the web;
    // 4: not claimed (still new); and a request id that does not exist.
    let mut tokens = Vec::new();
    for r in &ids[..3] {
        let won = claim::claim(&t.db, r.request_id, "new", mn)
            .await
            .expect("claim")
            .expect("won");
        tokens.push(won.token);
    }
    t.exec(&format!(
        "UPDATE `reservation` SET `remoteIP` = '192.0.2.7' WHERE `id` = {}",
        ids[0].reservation_id
    ))
    .await;
    t.exec(&format!(
        "UPDATE `request` SET `end` = '2000-01-01 00:00:00' WHERE `id` = {}",
        ids[1].request_id
    ))
    .await;
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = 1 WHERE `id` = {}", // deleted
        ids[2].request_id
    ))
    .await;
    let gone = ids[3].request_id + 1000;

    let watcher = Watcher::new(t.db.clone());
    // 200 looks asked for at once (40 rounds over the five requests).
    let mut wanted = Vec::new();
    for _ in 0..40 {
        for r in &ids {
            wanted.push(r.request_id);
        }
        wanted.push(gone);
    }
    let tasks: Vec<_> = wanted
        .iter()
        .map(|id| {
            let (w, id) = (std::sync::Arc::clone(&watcher), *id);
            tokio::spawn(async move { w.look(id).await })
        })
        .collect();
    let mut looks = Vec::new();
    for task in tasks {
        looks.push(task.await.expect("look task"));
    }
    assert_eq!(watcher.looks(), 200);
    assert!(
        watcher.statements() <= 2,
        "200 looks asked for together took {} statements",
        watcher.statements()
    );
    for (id, seen) in wanted.iter().zip(looks) {
        let seen = seen.expect("look");
        let single = read_many(&t.db, &[*id]).await.expect("read").remove(id);
        assert_eq!(
            seen, single,
            "request {id}: shared read differs from its own"
        );
    }
    let s0 = watcher_look(&t, ids[0].request_id)
        .await
        .expect("request 1 is there");
    assert_eq!(s0.for_claim(&tokens[0]), Watched::Mine { ended: false });
    assert_eq!(s0.remote_ip, "192.0.2.7");
    assert!(matches!(
        s0.for_claim("someone-else"),
        Watched::Changed { ref state, .. } if state == "pending"
    ));
    let s1 = watcher_look(&t, ids[1].request_id)
        .await
        .expect("request 2 is there");
    assert_eq!(s1.for_claim(&tokens[1]), Watched::Mine { ended: true });
    assert_eq!(s1.remote_ip, "");
    assert!(matches!(
        watcher_look(&t, ids[2].request_id).await.expect("request 3 is there").for_claim(&tokens[2]),
        Watched::Changed { ref state, .. } if state == "deleted"
    ));
    assert!(matches!(
        watcher_look(&t, ids[3].request_id).await.expect("request 4 is there").for_claim("any"),
        Watched::Changed { ref state, .. } if state == "new"
    ));
    assert_eq!(watcher.look(gone).await.expect("look"), None);
    // The single-read API gives the same.
    assert_eq!(
        watch::watch(&t.db, ids[0].request_id, &tokens[0])
            .await
            .expect("watch"),
        Watched::Mine { ended: false }
    );
    assert_eq!(
        watch::watch(&t.db, gone, "x").await.expect("watch"),
        Watched::Gone
    );

    // More requests than one statement takes: every one answered, in a few statements.
    let many: Vec<i64> = (0..(CHUNK as i64 * 2 + 7))
        .map(|i| ids[0].request_id + i)
        .collect();
    let seen = read_many(&t.db, &many).await.expect("read many");
    assert_eq!(seen.len(), 4, "only the four requests exist");
}

async fn watcher_look(t: &TestDb, id: i64) -> Option<provhost::db::watchbatch::Seen> {
    Watcher::new(t.db.clone()).look(id).await.expect("look")
}

#[tokio::test(flavor = "current_thread")]
async fn looks_share_reads_and_see_what_one_read_sees_sqlite() {
    looks_share_reads_and_see_what_one_read_sees(Backend::Sqlite).await;
}

#[tokio::test(flavor = "current_thread")]
async fn looks_share_reads_and_see_what_one_read_sees_mariadb() {
    looks_share_reads_and_see_what_one_read_sees(Backend::MySql).await;
}

/// A database that goes away: a look fails with the error of its own read (naming what
/// it read), not a hang.
#[tokio::test(flavor = "current_thread")]
async fn a_look_on_a_closed_database_is_a_clear_error() {
    let Some(t) = TestDb::initialized(Backend::Sqlite).await else {
        return;
    };
    let db = t.connect_again().await;
    let watcher = Watcher::new(db.clone());
    db.close().await;
    let err = tokio::time::timeout(std::time::Duration::from_secs(60), watcher.look(1))
        .await
        .expect("a look ends")
        .expect_err("closed pool");
    assert!(
        err.to_string().contains("watching 1 waiting requests"),
        "{err}"
    );
}
