//! Pickup across nodes: how long after another machine inserts a request (the web front end,
//! another node) its daemon claims it, with `--nodes` daemons (one per management node, each
//! its own pool, as separate processes would be) on one MariaDB, and what the waiting costs
//! the database. For each `--modes` value (`pickup_poll_ms`; 0 = full polls only, every
//! `--poll` seconds, as before issue 16), side by side in one run:
//!
//! - idle load: `SHOW GLOBAL STATUS` deltas (`Questions`, `Innodb_rows_read`) over
//!   `--idle-secs` with every daemon waiting (no flows but the background's), per node
//!   per second; handler reads are `Handler_read_key` + `_next` + `_rnd_next`;
//! - pickup latency: `--samples` requests inserted one at a time at random moments, each
//!   for a computer of node `i % nodes`; from the insert's commit to the request leaving
//!   `new` (read by primary key every 5 ms); p50 / p99 / max;
//! - per-query cost: the pickup check and the full poll's listing, each run 200 times with
//!   the daemons stopped: handler reads and time per call.
//!
//! Run: `cargo run --release --example bench_pickup -- [--nodes 10] [--samples 100]
//!       [--modes 0,250,500] [--poll 5] [--background 0] [--url mysql://root@127.0.0.1:3306]`
//! `--background N` puts N reservations per node in flight (in their acknowledgement wait)
//! first, so the checks run over a busy request table. The database
//! `provhost_bench_pickup_<pid>` is created and dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::daemon::{Daemon, DaemonConfig};
use provhost::db::inventory::{
    add_computer, add_image, add_management_node, add_user, NewComputer,
};
use provhost::db::requests::{new_request, ComputerChoice, NewRequest};
use provhost::db::{Db, DbOptions};
use provhost::host::{HostOptions, Limits, ScriptHost};
use provhost::state::Timings;
use sqlx::Connection;

struct Args {
    nodes: usize,
    samples: usize,
    modes: Vec<u64>,
    poll: u64,
    background: usize,
    idle_secs: u64,
    url: String,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 10,
        samples: 100,
        modes: vec![0, 250, 500],
        poll: 5,
        background: 0,
        idle_secs: 10,
        url: "mysql://root@127.0.0.1:3306".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--nodes" => a.nodes = v.parse().unwrap_or(a.nodes),
            "--samples" => a.samples = v.parse().unwrap_or(a.samples),
            "--modes" => a.modes = v.split(',').filter_map(|m| m.trim().parse().ok()).collect(),
            "--poll" => a.poll = v.parse().unwrap_or(a.poll),
            "--background" => a.background = v.parse().unwrap_or(a.background),
            "--idle-secs" => a.idle_secs = v.parse().unwrap_or(a.idle_secs),
            "--url" => a.url = v,
            _ => eprintln!("unknown argument {k}"),
        }
    }
    a
}

type BoxError = Box<dyn std::error::Error>;

/// One `EXPLAIN` row: id, table, type, key, Extra.
type PlanRow = (i64, String, String, Option<String>, Option<String>);

async fn status(c: &mut sqlx::MySqlConnection, name: &str) -> Result<i64, BoxError> {
    let v: Option<String> = sqlx::query_scalar(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut *c)
    .await?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Rows the server's handlers read (index lookups, index and table scans): MariaDB 10.11
/// has no `Innodb_rows_read` in GLOBAL_STATUS.
async fn reads(c: &mut sqlx::MySqlConnection) -> Result<i64, BoxError> {
    Ok(status(c, "Handler_read_key").await?
        + status(c, "Handler_read_next").await?
        + status(c, "Handler_read_rnd_next").await?)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Daemons(
    Vec<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
);

impl Daemons {
    async fn start(
        url: &str,
        host: &Arc<ScriptHost>,
        nodes: usize,
        cfg: &DaemonConfig,
    ) -> Result<Daemons, BoxError> {
        let mut out = Vec::new();
        for n in 1..=nodes {
            let db = Db::connect_with(url, DbOptions::default()).await?;
            let cfg = DaemonConfig {
                node: format!("mn{n}.bench"),
                ..cfg.clone()
            };
            let d = Daemon::new(db, Arc::clone(host), cfg, None).await?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let h = tokio::spawn(async move {
                if let Err(e) = d
                    .run(
                        async move {
                            let _ = rx.await;
                        },
                        false,
                    )
                    .await
                {
                    eprintln!("daemon: {e}");
                }
            });
            out.push((h, tx));
        }
        Ok(Daemons(out))
    }

    async fn stop(self) {
        for (h, tx) in self.0 {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(60), h).await;
        }
    }
}

async fn scalar(db: &Db, sql: &str) -> i64 {
    match db.pool() {
        provhost::db::pool::Pool::MySql(p) => {
            sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS SIGNED)"))
                .fetch_one(p)
                .await
                .unwrap_or(-1)
        }
        provhost::db::pool::Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(p)
            .await
            .unwrap_or(-1),
    }
}

fn main() -> Result<(), BoxError> {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let name = format!("provhost_bench_pickup_{}", std::process::id());
    let server = a.url.trim_end_matches('/').to_string();
    rt.block_on(async {
        let mut admin = sqlx::MySqlConnection::connect(&server).await?;
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut admin)
            .await?;
        let out = run(&a, &format!("{server}/{name}"), &mut admin).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
            .execute(&mut admin)
            .await?;
        out
    })
}

async fn run(a: &Args, url: &str, admin: &mut sqlx::MySqlConnection) -> Result<(), BoxError> {
    let web = Db::connect_with(url, DbOptions::default()).await?;
    provhost::db::schema::init(&web, "mn1.bench").await?;
    for n in 2..=a.nodes {
        add_management_node(&web, &format!("mn{n}.bench"), &format!("10.8.0.{n}")).await?;
    }
    let mut node_ids = Vec::new();
    for n in 1..=a.nodes {
        node_ids.push(
            provhost::db::inventory::management_node_id(&web, &format!("mn{n}.bench")).await?,
        );
    }
    add_user(&web, "ann", Some(1500)).await?;
    add_image(&web, "debian12", "Debian 12", "sim").await?;
    // Computers: the background's, then one per sample and mode.
    let per_mode = a.samples;
    let total = a.background * a.nodes + per_mode * a.modes.len();
    for i in 0..total {
        let mut c = NewComputer::lab(
            &format!("vm{i}.bench"),
            &format!("10.{}.{}.{}", 10 + i / 62500, (i / 250) % 250, i % 250 + 1),
        );
        c.provisioning = "sim".into();
        c.computer_type = "virtualmachine".into();
        c.management_node_id = Some(node_ids[i % a.nodes]);
        add_computer(&web, &c).await?;
    }
    let dir = tempfile::tempdir()?;
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(scripts.join("provisioning"))?;
    std::fs::create_dir_all(scripts.join("os"))?;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sim = std::fs::read_to_string(root.join("scripts/provisioning/sim.rhai"))?
        .replace("load_seconds: 3.0", "load_seconds: 0.05");
    std::fs::write(scripts.join("provisioning/sim.rhai"), sim)?;
    std::fs::copy(
        root.join("scripts/os/sim.rhai"),
        scripts.join("os/sim.rhai"),
    )?;
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: scripts,
            stdlib_dir: root.join("stdlib"),
            limits: Limits::default(),
        },
        &[],
    );
    let errors = host.load_all();
    if !errors.is_empty() {
        return Err(format!("{errors:?}").into());
    }
    let base = DaemonConfig {
        poll_interval_secs: a.poll,
        shutdown_grace_secs: 10,
        lease_secs: 10,
        heartbeat_secs: 2,
        lease_wait_secs: 30,
        remove_finished: false,
        max_flows: a.background + 100,
        timings: Timings {
            acknowledgetimeout: 3600,
            ..Timings::default()
        },
        ..DaemonConfig::default()
    };
    let ready_sql = "SELECT COUNT(DISTINCT l.`reservationid`) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'nodeready'";
    let mut next_computer = 0usize;
    if a.background > 0 {
        let d = Daemons::start(
            url,
            &host,
            a.nodes,
            &DaemonConfig {
                pickup_poll_ms: 250,
                ..base.clone()
            },
        )
        .await?;
        for _ in 0..a.background * a.nodes {
            new_request(&web, &req(next_computer)).await?;
            next_computer += 1;
        }
        let t = Instant::now();
        while scalar(&web, ready_sql).await < (a.background * a.nodes) as i64 {
            if t.elapsed() > Duration::from_secs(900) {
                return Err("background reservations not ready in 15 min".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "background: {} reservations in flight (waiting for acknowledgement) after {:.1?}",
            a.background * a.nodes,
            t.elapsed()
        );
        d.stop().await;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\npickup across nodes: {} daemons on one MariaDB, {} in flight per node, poll_interval_secs {}, {} samples per mode; load average at start: {}",
        a.nodes,
        a.background,
        a.poll,
        a.samples,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("\n| pickup_poll_ms | p50 | p99 | max | idle queries/s per node | idle handler reads/s per node |");
    println!("|---|---|---|---|---|---|");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for &mode in &a.modes {
        let cfg = DaemonConfig {
            pickup_poll_ms: mode,
            ..base.clone()
        };
        let d = Daemons::start(url, &host, a.nodes, &cfg).await?;
        // Let the daemons take their leases and settle (recovery of the background's hand-backs).
        tokio::time::sleep(Duration::from_secs(a.poll + 2)).await;
        let (q0, r0) = (status(admin, "Questions").await?, reads(admin).await?);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
        let secs = t0.elapsed().as_secs_f64();
        // Minus this connection's own two status queries.
        let q = (status(admin, "Questions").await? - q0 - 2) as f64 / secs / a.nodes as f64;
        let r = (reads(admin).await? - r0) as f64 / secs / a.nodes as f64;
        let mut lat = Vec::with_capacity(a.samples);
        let mut ids = Vec::with_capacity(a.samples);
        for _ in 0..a.samples {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tokio::time::sleep(Duration::from_millis(200 + seed % 1000)).await;
            let c = new_request(&web, &req(next_computer)).await?;
            next_computer += 1;
            ids.push(c.request_id.to_string());
            let t = Instant::now();
            let limit = Duration::from_secs(a.poll * 4 + 10);
            loop {
                let s = scalar(
                    &web,
                    &format!(
                        "SELECT `stateid` FROM `request` WHERE `id` = {}",
                        c.request_id
                    ),
                )
                .await;
                if s != 13 {
                    break;
                }
                if t.elapsed() > limit {
                    return Err(
                        format!("request {} not claimed after {limit:?}", c.request_id).into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} | {:.0} |",
            if mode == 0 {
                format!("0 (full poll every {} s)", a.poll)
            } else {
                mode.to_string()
            },
            pct(&lat, 0.50).as_secs_f64() * 1000.0,
            pct(&lat, 0.99).as_secs_f64() * 1000.0,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            q,
            r
        );
        d.stop().await;
        // The samples are done with: complete, so the next mode's idle load has no flows
        // of theirs waiting.
        if let provhost::db::pool::Pool::MySql(p) = web.pool() {
            sqlx::query(&format!(
                "UPDATE `request` SET `stateid` = 12 WHERE `id` IN ({})",
                ids.join(",")
            ))
            .execute(p)
            .await?;
        }
    }
    // Cost per query, daemons stopped.
    let in_flight = scalar(&web, "SELECT COUNT(*) FROM `request`").await;
    println!(
        "\nper-query cost over {in_flight} requests, node 1, 200 calls each, daemons stopped:\n"
    );
    println!("| query | handler reads per call | time per call |");
    println!("|---|---|---|");
    // One connection, so its session counters are exactly these calls' reads.
    let probe = Db::connect_with(
        url,
        DbOptions {
            max_connections: 1,
            ..DbOptions::default()
        },
    )
    .await?;
    let provhost::db::pool::Pool::MySql(pp) = probe.pool() else {
        return Err("bench_pickup runs on MariaDB".into());
    };
    for which in [
        "pickup check (pickup_fingerprint)",
        "full poll listing (work_for)",
    ] {
        sqlx::query("FLUSH STATUS").execute(pp).await?;
        let t = Instant::now();
        for _ in 0..200 {
            if which.starts_with("pickup") {
                provhost::db::claim::pickup_fingerprint(&probe, node_ids[0]).await?;
            } else {
                provhost::db::claim::work_for(&probe, node_ids[0]).await?;
            }
        }
        let el = t.elapsed();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SHOW SESSION STATUS LIKE 'Handler_read%'")
                .fetch_all(pp)
                .await?;
        let reads: i64 = rows
            .iter()
            .filter(|(k, _)| {
                [
                    "Handler_read_key",
                    "Handler_read_next",
                    "Handler_read_rnd_next",
                ]
                .contains(&k.as_str())
            })
            .filter_map(|(_, v)| v.parse::<i64>().ok())
            .sum();
        println!(
            "| {which} | {:.1} | {:.2} ms |",
            reads as f64 / 200.0,
            el.as_secs_f64() * 1000.0 / 200.0
        );
    }
    let plan: Vec<PlanRow> = sqlx::query(
        "EXPLAIN SELECT COUNT(*) FROM `request` rq FORCE INDEX (`stateid`) JOIN `reservation` r ON r.`requestid` = rq.`id` \
         WHERE rq.`stateid` IN (13, 19, 20, 18, 3, 11, 6, 16) AND r.`managementnodeid` = 1",
    )
    .fetch_all(pp)
    .await
    .map(|rows| {
        use sqlx::Row;
        rows.iter()
            .map(|r| {
                (
                    r.try_get::<i64, _>("id").unwrap_or(0),
                    r.try_get::<String, _>("table").unwrap_or_default(),
                    r.try_get::<String, _>("type").unwrap_or_default(),
                    r.try_get::<Option<String>, _>("key").unwrap_or(None),
                    r.try_get::<Option<String>, _>("Extra").unwrap_or(None),
                )
            })
            .collect()
    })?;
    println!(
        "
plan of the pickup check: {plan:?}"
    );
    probe.close().await;
    web.close().await;
    Ok(())
}

fn req(i: usize) -> NewRequest {
    NewRequest {
        image: "debian12".into(),
        computer: ComputerChoice::Named(format!("vm{i}.bench")),
        user: "ann".into(),
        start: None,
        end: None,
    }
}
