//! Per-computer variables (`provhost_computervar`) are one upsert: two management nodes
//! (two pools) setting the same variables at the same time never deadlock. The pools get
//! no retries, so a single deadlock (MariaDB 1213) or busy error would fail the test.

mod common;

use std::time::Duration;

use common::db::{test_options, TestDb};
use provhost::db::{flow, Backend, DbOptions, RetryPolicy};

const TASKS: i64 = 4;
const SETS: i64 = 150;

async fn two_nodes_set_the_same_variables_without_deadlocks(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let opts = DbOptions {
        retry: RetryPolicy {
            attempts: 1,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
        ..test_options()
    };
    let (a, b) = (t.connect_with(opts).await, t.connect_with(opts).await);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..TASKS {
        for db in [a.clone(), b.clone()] {
            tasks.spawn(async move {
                for i in 0..SETS {
                    let computer = (i + n) % 3 + 1;
                    let name = if i % 2 == 0 { "sim_power" } else { "os_calls" };
                    flow::set_computer_var(&db, computer, name, &format!("{n}-{i}"))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("a set failed without retries");
    }
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provhost_computervar`")
            .await,
        6,
        "one row per (computer, name)"
    );
}

on_both_backends!(two_nodes_set_the_same_variables_without_deadlocks);
