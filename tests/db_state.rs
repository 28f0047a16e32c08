//! State changes as a state flow makes them: claim, `state_exit`, `reservation_failed`,
//! `insert_reload_request`, and recovery of requests a dead daemon left `pending`.

mod common;

use common::db::{world, TestDb};
use provhost::db::requests::{self, ComputerChoice, NewRequest};
use provhost::db::state::{self, Ids};
use provhost::db::{claim, inventory, loadlog, reservation, Backend, DbError};

async fn new_request(t: &TestDb, computer: &str) -> requests::Created {
    let req = NewRequest {
        image: "debian12".into(),
        computer: ComputerChoice::Named(computer.into()),
        user: "ann".into(),
        start: None,
        end: None,
    };
    requests::new_request(&t.db, &req)
        .await
        .expect("request new")
}

async fn names(t: &TestDb, reservation: i64) -> Vec<String> {
    loadlog::timeline(&t.db, reservation)
        .await
        .expect("timeline")
        .into_iter()
        .map(|e| e.loadstatename)
        .collect()
}

async fn claim_then_exit(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    let mn = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn");
    let c = new_request(&t, "lab1.test").await;
    let work = claim::work_for(&t.db, mn).await.expect("work");
    assert_eq!(work.len(), 1);
    assert_eq!(
        (
            work[0].request_id,
            work[0].reservation_id,
            work[0].state.as_str()
        ),
        (c.request_id, c.reservation_id, "new")
    );

    let won = claim::claim(&t.db, c.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("first claim wins");
    assert_eq!(won.from_state, "new");
    assert!(
        claim::claim(&t.db, c.request_id, "new", mn)
            .await
            .expect("claim")
            .is_none(),
        "a second claim loses"
    );
    assert!(
        claim::work_for(&t.db, mn).await.expect("work").is_empty(),
        "pending is not work"
    );
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    assert_eq!(
        (data.request_state.as_str(), data.request_laststate.as_str()),
        ("pending", "new")
    );

    loadlog::loadlog(
        &t.db,
        c.reservation_id,
        c.computer_id,
        "nodeready",
        "resource ready",
    )
    .await
    .expect("loadlog");
    state::set_computer_image(
        &t.db,
        c.request_id,
        c.computer_id,
        c.image_id,
        c.imagerevision_id,
    )
    .await
    .expect("image on computer");
    state::state_exit(&t.db, Ids::from(&data), "reserved", "new", Some("reserved"))
        .await
        .expect("state exit");
    assert_eq!(
        state::request_state(&t.db, c.request_id)
            .await
            .expect("state"),
        Some(("reserved".into(), "new".into()))
    );
    assert_eq!(
        state::computer_state(&t.db, c.computer_id)
            .await
            .expect("state")
            .as_deref(),
        Some("reserved")
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT `currentimageid` FROM `computer` WHERE `id` = {}",
            c.computer_id
        ))
        .await,
        c.image_id
    );
    // Run again (as after a lost answer): nothing is written twice.
    state::state_exit(&t.db, Ids::from(&data), "reserved", "new", Some("reserved"))
        .await
        .expect("same exit again");
    assert_eq!(
        names(&t, c.reservation_id).await,
        vec!["nodeready", "exited"]
    );
    // This node no longer holds the request: another exit is a conflict.
    let err = state::state_exit(&t.db, Ids::from(&data), "complete", "reserved", None)
        .await
        .expect_err("not pending");
    assert!(matches!(err, DbError::StateConflict { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("expected state pending, found reserved"),
        "{err}"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_claim`").await,
        0,
        "the claim ends with the exit"
    );

    // Unknown names are errors before anything is written.
    assert!(matches!(
        state::set_computer_state(&t.db, c.computer_id, "napping").await,
        Err(DbError::UnknownState(_))
    ));
    assert!(matches!(
        state::set_computer_state(&t.db, 4242, "available").await,
        Err(DbError::NotFound { .. })
    ));
    assert!(claim::claim(&t.db, c.request_id, "pending", mn)
        .await
        .is_err());
}

async fn failure_and_reload(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 2).await;
    let mn = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn");

    // A load that fails: request failed (laststate new), computer failed, `failed` + `exited`.
    let c = new_request(&t, "lab1.test").await;
    claim::claim(&t.db, c.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    state::reservation_failed(&t.db, Ids::from(&data), "load() returned false", "failed")
        .await
        .expect("failed");
    assert_eq!(
        state::request_state(&t.db, c.request_id)
            .await
            .expect("state"),
        Some(("failed".into(), "new".into()))
    );
    assert_eq!(
        state::computer_state(&t.db, c.computer_id)
            .await
            .expect("state")
            .as_deref(),
        Some("failed")
    );
    let log = loadlog::timeline(&t.db, c.reservation_id)
        .await
        .expect("timeline");
    assert_eq!(
        log.iter()
            .map(|e| e.loadstatename.as_str())
            .collect::<Vec<_>>(),
        vec!["failed", "exited"]
    );
    assert_eq!(log[0].additionalinfo, "load() returned false");

    // A reservation that ends: the reclaim inserts a reload request for vclreload.
    let c2 = new_request(&t, "lab2.test").await;
    claim::claim(&t.db, c2.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let d2 = reservation::load_reservation(&t.db, c2.reservation_id)
        .await
        .expect("load");
    let (reload_request, reload_reservation) = state::insert_reload_request(&t.db, &d2)
        .await
        .expect("reload")
        .expect("inserted");
    assert!(
        state::insert_reload_request(&t.db, &d2)
            .await
            .expect("again")
            .is_none(),
        "one reload per computer"
    );
    assert_eq!(
        state::computer_state(&t.db, c2.computer_id)
            .await
            .expect("state")
            .as_deref(),
        Some("reload")
    );
    let r = reservation::load_reservation(&t.db, reload_reservation)
        .await
        .expect("load the reload");
    assert_eq!(
        (
            r.request_id,
            r.request_state.as_str(),
            r.request_laststate.as_str()
        ),
        (reload_request, "reload", "new")
    );
    assert_eq!(
        (r.user_login_id.as_str(), r.computer_id, r.imagerevision_id),
        ("vclreload", c2.computer_id, c2.imagerevision_id)
    );
    assert_eq!(names(&t, c2.reservation_id).await, vec!["info", "info"]);
    let work = claim::work_for(&t.db, mn).await.expect("work");
    assert_eq!(
        work.iter()
            .map(|w| (w.request_id, w.state.as_str()))
            .collect::<Vec<_>>(),
        vec![(reload_request, "reload")]
    );
}

async fn recovery_returns_only_this_nodes_requests(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 3).await;
    let mn1 = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn1");
    let mn2 = inventory::add_management_node(&t.db, "mn2.test", "127.0.0.2")
        .await
        .expect("mn2");
    let a = new_request(&t, "lab1.test").await;
    let b = new_request(&t, "lab2.test").await;
    let c = new_request(&t, "lab3.test").await;
    claim::claim(&t.db, a.request_id, "new", mn1)
        .await
        .expect("claim")
        .expect("won");
    claim::claim(&t.db, b.request_id, "new", mn2)
        .await
        .expect("claim")
        .expect("won");
    claim::claim(&t.db, c.request_id, "new", mn1)
        .await
        .expect("claim")
        .expect("won");
    // mn1's daemon died; at its restart:
    let back = claim::recover_pending(&t.db, mn1).await.expect("recover");
    assert_eq!(back, vec![a.request_id, c.request_id]);
    assert_eq!(
        state::request_state(&t.db, a.request_id).await.expect("a"),
        Some(("new".into(), "new".into()))
    );
    assert_eq!(
        state::request_state(&t.db, b.request_id)
            .await
            .expect("b")
            .map(|s| s.0),
        Some("pending".into())
    );
    assert!(claim::recover_pending(&t.db, mn1)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(
        claim::work_for(&t.db, mn1).await.expect("work").len(),
        2,
        "a and c are work again"
    );
}

/// `reservation.pw` (the user's password in clear, for VCL's web front end) lives as long as
/// the reservation: an exit that keeps the request going keeps it; the exit that ends the
/// request (`complete`) and a failure clear it in their transaction.
async fn the_users_password_goes_when_the_request_ends(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 3).await;
    let mn = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn");
    let pw_of = |r: i64| {
        let db = t.db.clone();
        async move {
            provhost::db::flow::reservation_password(&db, r)
                .await
                .expect("pw")
        }
    };
    let pw = "Clear-pw-for-the-web-0123456789";
    let c = new_request(&t, "lab1.test").await;
    provhost::db::flow::set_reservation_password(&t.db, c.reservation_id, pw)
        .await
        .expect("set pw");
    claim::claim(&t.db, c.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    state::state_exit(&t.db, Ids::from(&data), "reserved", "new", Some("reserved"))
        .await
        .expect("exit to reserved");
    assert_eq!(pw_of(c.reservation_id).await, pw, "live: the web shows it");
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = (SELECT `id` FROM `state` WHERE `name` = 'deleted') WHERE `id` = {}",
        c.request_id
    ))
    .await;
    claim::claim(&t.db, c.request_id, "deleted", mn)
        .await
        .expect("claim")
        .expect("won");
    state::state_exit(&t.db, Ids::from(&data), "complete", "deleted", None)
        .await
        .expect("exit to complete");
    assert_eq!(pw_of(c.reservation_id).await, "", "ended: cleared");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `reservation` WHERE `id` = {} AND `pw` IS NULL",
            c.reservation_id
        ))
        .await,
        1
    );

    // A failed request takes its password with it too; another reservation's stays.
    let keep = new_request(&t, "lab3.test").await;
    provhost::db::flow::set_reservation_password(&t.db, keep.reservation_id, pw)
        .await
        .expect("set pw");
    let c = new_request(&t, "lab2.test").await;
    provhost::db::flow::set_reservation_password(&t.db, c.reservation_id, pw)
        .await
        .expect("set pw");
    claim::claim(&t.db, c.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    state::reservation_failed(&t.db, Ids::from(&data), "load failed", "failed")
        .await
        .expect("failed");
    assert_eq!(pw_of(c.reservation_id).await, "", "failed: cleared");
    assert_eq!(
        pw_of(keep.reservation_id).await,
        pw,
        "another reservation's"
    );
}

crate::on_both_backends!(
    the_users_password_goes_when_the_request_ends,
    claim_then_exit,
    failure_and_reload,
    recovery_returns_only_this_nodes_requests
);
