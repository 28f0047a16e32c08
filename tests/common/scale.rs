//! Several management nodes on one database (one MariaDB server or a Galera cluster): the
//! nodes' rows, simulated computers pinned to them round robin (as VCL assigns computers to
//! management nodes), the shipped `sim` modules, a daemon per node on its own pool, and the
//! counts the scale tests assert on.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::daemon::{Daemon, DaemonConfig, DaemonError, Summary};
use provhost::db::inventory::{
    add_computer, add_image, add_management_node, add_user, NewComputer,
};
use provhost::db::requests::{new_request, ComputerChoice, Created, NewRequest};
use provhost::db::{schema, Db, DbOptions, RetryPolicy};
use provhost::host::ScriptHost;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::flows::{fast_timings, sim_source};
use super::scripts::{test_limits, ScriptDir};

pub struct Site {
    pub scripts: ScriptDir,
    pub host: Arc<ScriptHost>,
    /// (hostname, id) of each management node, `mn1.scale` …
    pub nodes: Vec<(String, i64)>,
    /// Computer host names; computer `i` belongs to node `i % nodes`.
    pub computers: Vec<String>,
}

/// Pool options of one daemon: a few more connections than the default for many flows,
/// the default retries (a Galera node's stall on a peer's loss lasts ~3 s), and a 5 s
/// acquire timeout, so a daemon whose database node was killed gives up its calls soon
/// after its stop.
pub fn daemon_options() -> DbOptions {
    DbOptions {
        max_connections: 10,
        acquire_timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
        ..DbOptions::default()
    }
}

/// `db init`, `nodes` management nodes, user `ann`, image `debian12` (OS `sim`) and
/// `computers` sim computers pinned round robin to the nodes; each load sleeps `load_seconds`.
pub async fn setup(db: &Db, nodes: usize, computers: usize, load_seconds: f64) -> Site {
    schema::init(db, "mn1.scale").await.expect("db init");
    let mut ids = vec![(
        "mn1.scale".to_string(),
        provhost::db::inventory::management_node_id(db, "mn1.scale")
            .await
            .expect("mn1"),
    )];
    for n in 2..=nodes {
        let name = format!("mn{n}.scale");
        let id = add_management_node(db, &name, &format!("10.8.0.{n}"))
            .await
            .expect("add management node");
        ids.push((name, id));
    }
    add_user(db, "ann", Some(1500)).await.expect("user");
    add_image(db, "debian12", "Debian 12", "sim")
        .await
        .expect("image");
    let mut names = Vec::with_capacity(computers);
    for i in 0..computers {
        let name = format!("vm{i}.scale");
        let mut c = NewComputer::lab(&name, &format!("10.9.{}.{}", i / 250, i % 250 + 1));
        c.provisioning = "sim".into();
        c.computer_type = "virtualmachine".into();
        c.management_node_id = Some(ids[i % nodes].1);
        add_computer(db, &c).await.expect("add computer");
        names.push(name);
    }
    let scripts = ScriptDir::new();
    scripts.write("provisioning/sim.rhai", sim_source(load_seconds));
    scripts.write(
        "os/sim.rhai",
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/os/sim.rhai"))
            .expect("scripts/os/sim.rhai"),
    );
    let host = ScriptHost::new(
        provhost::host::HostOptions {
            scripts_dir: scripts.scripts.clone(),
            stdlib_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib").into(),
            limits: test_limits(),
        },
        &[],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    Site {
        scripts,
        host,
        nodes: ids,
        computers: names,
    }
}

/// A daemon's settings for these tests: short lease, 1 s polls, no removal of finished
/// requests, no acknowledgement timeout within a test (reservations stay `reserved`).
pub fn config(node: &str, max_flows: usize) -> DaemonConfig {
    DaemonConfig {
        node: node.into(),
        poll_interval_secs: 1,
        shutdown_grace_secs: 5,
        lease_secs: 3,
        heartbeat_secs: 1,
        remove_finished: false,
        max_flows,
        timings: provhost::state::Timings {
            acknowledgetimeout: 3600,
            // vcld's and provhost's default: the waiting flows' reads are most of the load.
            acknowledge_poll_ms: 1000,
            ..fast_timings()
        },
        ..DaemonConfig::default()
    }
}

pub type Running = (
    JoinHandle<Result<Summary, DaemonError>>,
    oneshot::Sender<()>,
);

/// Run a daemon on `db` in the background until the sender fires.
pub async fn spawn(db: Db, host: &Arc<ScriptHost>, cfg: DaemonConfig) -> Running {
    let d = Daemon::new(db, Arc::clone(host), cfg, None)
        .await
        .expect("daemon");
    let (tx, rx) = oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        d.run(
            async move {
                let _ = rx.await;
            },
            false,
        )
        .await
    });
    (h, tx)
}

/// Stop a daemon and wait (bounded) for its run to end.
pub async fn stop(r: Running) -> Option<Result<Summary, DaemonError>> {
    let _ = r.1.send(());
    tokio::time::timeout(Duration::from_secs(30), r.0)
        .await
        .ok()
        .and_then(|j| j.ok())
}

/// Web front ends inserting at once, one per connection in `webs`: front end `i` inserts
/// a request for every `webs.len()`-th computer from the `i`-th on. Returns how long the
/// inserts took.
pub async fn insert_from_web_front_ends(webs: Vec<Db>, computers: &[String]) -> Duration {
    let started = Instant::now();
    let k = webs.len();
    let mut tasks = Vec::new();
    for (i, db) in webs.into_iter().enumerate() {
        let mine: Vec<String> = computers.iter().skip(i).step_by(k).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for c in mine {
                request(&db, &c).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("web front end");
    }
    started.elapsed()
}

/// A request for `computer` starting now (what VCL's web front end inserts).
pub async fn request(db: &Db, computer: &str) -> Created {
    new_request(
        db,
        &NewRequest {
            image: "debian12".into(),
            computer: ComputerChoice::Named(computer.into()),
            user: "ann".into(),
            start: None,
            end: None,
        },
    )
    .await
    .expect("request new")
}

/// One integer from `sql`.
pub async fn scalar(db: &Db, sql: &str) -> i64 {
    match db.pool() {
        provhost::db::pool::Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        provhost::db::pool::Pool::MySql(p) => {
            sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS SIGNED)"))
                .fetch_one(p)
                .await
        }
    }
    .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"))
}

/// Reservations with a `nodeready` load-log row.
pub const READY: &str = "SELECT COUNT(DISTINCT l.`reservationid`) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'nodeready'";
/// `nodeready` rows in all (more than READY: a load ran twice).
pub const READY_ROWS: &str = "SELECT COUNT(*) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'nodeready'";
/// `failed` load-log rows.
pub const FAILED: &str = "SELECT COUNT(*) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'failed'";
/// Claims whose node is not the node the reservation is assigned to (must stay 0).
pub const FOREIGN_CLAIMS: &str = "SELECT COUNT(*) FROM `provhost_claim` c JOIN `reservation` r ON r.`requestid` = c.`requestid` WHERE c.`managementnodeid` <> r.`managementnodeid`";

/// Wait until `want` reservations reached `nodeready` (panics after `limit`, with the
/// counts), polling every 250 ms.
pub async fn wait_ready(db: &Db, want: i64, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let ready = scalar(db, READY).await;
        if ready >= want {
            return t.elapsed();
        }
        let failed = scalar(db, FAILED).await;
        assert_eq!(failed, 0, "a reservation failed ({ready} of {want} ready)");
        assert!(
            t.elapsed() < limit,
            "only {ready} of {want} reservations ready after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
