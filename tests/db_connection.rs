//! A connection that dies in the middle of a state change. On MariaDB the test kills the
//! daemon's connection (`KILL CONNECTION`) while its `state_exit` transaction waits on a
//! row lock: the transaction is rolled back, provhost reconnects and runs it again, and
//! the request ends in its new state with exactly one `exited` row. When the connection is
//! killed every time, the error says the database is unavailable and the request stays
//! `pending` (claimed; recovery returns it). SQLite has no connections to kill; its
//! counterpart is a database held locked by another writer.

mod common;

use std::time::{Duration, Instant};

use common::db::{test_options, world, TestDb};
use provhost::db::requests::{self, ComputerChoice, NewRequest};
use provhost::db::state::{self, Ids};
use provhost::db::{
    claim, inventory, loadlog, reservation, Backend, Db, DbError, DbOptions, RetryPolicy,
};
use sqlx::{Connection, Row};

/// A claimed request on lab1.test: (ids, reservation id).
async fn claimed(t: &TestDb) -> (Ids, i64) {
    world(&t.db, 1).await;
    let mn = inventory::management_node_id(&t.db, "mn1.test")
        .await
        .expect("mn");
    let req = NewRequest {
        image: "debian12".into(),
        computer: ComputerChoice::Any,
        user: "ann".into(),
        start: None,
        end: None,
    };
    let c = requests::new_request(&t.db, &req).await.expect("request");
    claim::claim(&t.db, c.request_id, "new", mn)
        .await
        .expect("claim")
        .expect("won");
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    (Ids::from(&data), c.reservation_id)
}

async fn exited_rows(t: &TestDb, reservation: i64) -> usize {
    loadlog::timeline(&t.db, reservation)
        .await
        .expect("timeline")
        .iter()
        .filter(|e| e.loadstatename == "exited")
        .count()
}

/// Kill every connection of database `db` that is running `UPDATE \`computer\``, for at
/// most `max` kills or `limit` time. Returns how many it killed.
async fn killer(db_name: String, max: usize, limit: Duration) -> usize {
    let mut admin = sqlx::MySqlConnection::connect(&common::db::mariadb_server())
        .await
        .expect("admin connection");
    let started = Instant::now();
    let mut killed = 0;
    while killed < max && started.elapsed() < limit {
        let rows = sqlx::query(
            "SELECT CAST(`ID` AS SIGNED) AS `id` FROM `information_schema`.`PROCESSLIST` WHERE `DB` = ? AND `INFO` LIKE 'UPDATE `computer`%'",
        )
        .bind(&db_name)
        .fetch_all(&mut admin)
        .await
        .expect("processlist");
        for r in rows {
            let id: i64 = r.get("id");
            if sqlx::query(&format!("KILL CONNECTION {id}"))
                .execute(&mut admin)
                .await
                .is_ok()
            {
                killed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_mid_state_exit_mariadb() {
    let Some(t) = TestDb::initialized(Backend::MySql).await else {
        return;
    };
    let (ids, resv) = claimed(&t).await;

    // Another session holds the computer row, so state_exit stops halfway: request row
    // already updated in its transaction, computer row waiting.
    let mut blocker = sqlx::MySqlConnection::connect(&t.url)
        .await
        .expect("blocker");
    let mut lock = blocker.begin().await.expect("begin");
    sqlx::query("SELECT `id` FROM `computer` WHERE `id` = ? FOR UPDATE")
        .bind(ids.computer)
        .fetch_all(&mut *lock)
        .await
        .expect("lock row");

    // Once: killed mid-transaction, then the lock goes away; the retry succeeds.
    let db = t.db.clone();
    let exit = tokio::spawn(async move {
        state::state_exit(&db, ids, "reserved", "new", Some("reserved")).await
    });
    let killed = killer(t.name.clone(), 1, Duration::from_secs(20)).await;
    assert_eq!(killed, 1, "the state_exit connection was found and killed");
    lock.rollback().await.expect("release the row");
    exit.await
        .expect("task")
        .expect("state_exit survives a killed connection");
    assert_eq!(
        state::request_state(&t.db, ids.request)
            .await
            .expect("state"),
        Some(("reserved".into(), "new".into()))
    );
    assert_eq!(
        state::computer_state(&t.db, ids.computer)
            .await
            .expect("state")
            .as_deref(),
        Some("reserved")
    );
    assert_eq!(exited_rows(&t, resv).await, 1, "nothing doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_every_time_is_a_clear_error_mariadb() {
    let Some(t) = TestDb::initialized(Backend::MySql).await else {
        return;
    };
    let (ids, resv) = claimed(&t).await;
    let mut blocker = sqlx::MySqlConnection::connect(&t.url)
        .await
        .expect("blocker");
    let mut lock = blocker.begin().await.expect("begin");
    sqlx::query("SELECT `id` FROM `computer` WHERE `id` = ? FOR UPDATE")
        .bind(ids.computer)
        .fetch_all(&mut *lock)
        .await
        .expect("lock row");

    let opts = DbOptions {
        retry: RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
        ..test_options()
    };
    let db: Db = t.connect_with(opts).await;
    let exit = tokio::spawn(async move {
        state::state_exit(&db, ids, "reserved", "new", Some("reserved")).await
    });
    let killed = killer(t.name.clone(), 4, Duration::from_secs(30)).await;
    let err = exit.await.expect("task").expect_err("every attempt killed");
    assert_eq!(killed, 4);
    assert!(
        matches!(err, DbError::Unavailable { attempts: 4, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("state exit to reserved/new")
            && text.contains("database unavailable after 4 attempts"),
        "{text}"
    );
    // Defined state: still claimed by this node, nothing half-written.
    assert_eq!(
        state::request_state(&t.db, ids.request)
            .await
            .expect("state"),
        Some(("pending".into(), "new".into()))
    );
    assert_eq!(
        state::computer_state(&t.db, ids.computer)
            .await
            .expect("state")
            .as_deref(),
        Some("available")
    );
    assert_eq!(exited_rows(&t, resv).await, 0);
    lock.rollback().await.expect("release");
    // The daemon's next try works, once.
    state::state_exit(&t.db, ids, "reserved", "new", Some("reserved"))
        .await
        .expect("after the outage");
    assert_eq!(exited_rows(&t, resv).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_is_waited_out_then_a_clear_error_sqlite() {
    let Some(t) = TestDb::initialized(Backend::Sqlite).await else {
        return;
    };
    let (ids, resv) = claimed(&t).await;
    let opts = DbOptions {
        sqlite_busy_timeout: Duration::from_millis(100),
        retry: RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
        ..test_options()
    };
    let db = t.connect_with(opts).await;

    // Another writer holds the database for longer than all retries take.
    let mut blocker = sqlx::SqliteConnection::connect(&t.url)
        .await
        .expect("blocker");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("write lock");
    let err = state::state_exit(&db, ids, "reserved", "new", Some("reserved"))
        .await
        .expect_err("locked throughout");
    assert!(
        matches!(err, DbError::Unavailable { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("database is locked"), "{err}");
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release");
    assert_eq!(
        state::request_state(&t.db, ids.request)
            .await
            .expect("state"),
        Some(("pending".into(), "new".into()))
    );
    assert_eq!(exited_rows(&t, resv).await, 0);

    // Held for less than the retries take: waited out, written once.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("write lock");
    let db2 = db.clone();
    let exit = tokio::spawn(async move {
        state::state_exit(&db2, ids, "reserved", "new", Some("reserved")).await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release");
    exit.await.expect("task").expect("waited out");
    assert_eq!(
        state::request_state(&t.db, ids.request)
            .await
            .expect("state"),
        Some(("reserved".into(), "new".into()))
    );
    assert_eq!(exited_rows(&t, resv).await, 1);
}

/// The server drops every connection of the pool (a restart, an idle timeout): the next
/// operation reconnects and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_reconnects_after_all_connections_are_killed_mariadb() {
    let Some(t) = TestDb::initialized(Backend::MySql).await else {
        return;
    };
    let (ids, _) = claimed(&t).await;
    let mut admin = sqlx::MySqlConnection::connect(&common::db::mariadb_server())
        .await
        .expect("admin");
    let rows = sqlx::query("SELECT CAST(`ID` AS SIGNED) AS `id` FROM `information_schema`.`PROCESSLIST` WHERE `DB` = ?")
        .bind(&t.name)
        .fetch_all(&mut admin)
        .await
        .expect("processlist");
    assert!(!rows.is_empty(), "the pool has open connections");
    for r in &rows {
        let id: i64 = r.get("id");
        sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(&mut admin)
            .await
            .expect("kill");
    }
    state::state_exit(&t.db, ids, "reserved", "new", Some("reserved"))
        .await
        .expect("works on new connections");
    assert_eq!(
        state::request_state(&t.db, ids.request)
            .await
            .expect("state"),
        Some(("reserved".into(), "new".into()))
    );
}
