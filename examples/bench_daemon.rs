//! Load benchmark of the daemon: N reservations in flight at once on one daemon with the
//! simulated provisioning module (each load sleeps `--load-seconds`), against VCL's model
//! of one Perl process per reservation.
//!
//! Run: `cargo run --release --example bench_daemon -- [--n 1000] [--load-seconds 3]
//!       [--url mysql://root@127.0.0.1/bench] [--trace off] [--hold 30] [--threads 1000]`
//!       (default: a SQLite file in a temp folder; `--trace off` records no spans, to
//!       measure what the waterfall costs; `--hold S`: after all are ready, keep all N
//!       waiting for Connect S seconds and measure the database load of that wait;
//!       `--threads`: `[daemon] routine_threads`).
//!
//! Measures: wall time from "all N requests inserted" to "all N reservations reached
//! `nodeready`", reservations per second, peak RSS of this process (daemon + harness, from
//! `/proc/self/status` VmHWM), failures; with `--hold`, the requests still in flight at its
//! end, the waiting flows' looks and the statements that answered them per second, and (on
//! MariaDB) the server's `Questions` per second. Anchor: `--perl 200` Perl processes that load DBI
//! (+ DBD::mysql when installed), connect to the database and wait like a vcld child; their
//! average RSS and PSS are measured and scaled to N.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::daemon::{Daemon, DaemonConfig};
use provhost::db::inventory::{add_computer, add_image, add_user, NewComputer};
use provhost::db::requests::{new_request, ComputerChoice, NewRequest};
use provhost::db::Db;
use provhost::host::{HostOptions, Limits, ScriptHost};
use provhost::state::Timings;

struct Args {
    n: usize,
    load_seconds: f64,
    url: Option<String>,
    perl: usize,
    /// `--trace off`: record no spans (the waterfall's cost, compared).
    trace: bool,
    /// `--hold S`: seconds to keep all N waiting for Connect after they are ready.
    hold: u64,
    /// `--threads`: `[daemon] routine_threads`.
    threads: usize,
}

/// What one run measured.
struct Outcome {
    elapsed: f64,
    peak_kb: u64,
    failed: i64,
    hold: Option<Hold>,
}

/// The `--hold` phase: N flows waiting for Connect.
struct Hold {
    secs: f64,
    in_flight: i64,
    looks_per_s: f64,
    reads_per_s: f64,
    questions_per_s: Option<f64>,
}

fn args() -> Args {
    let mut a = Args {
        n: 1000,
        load_seconds: 3.0,
        url: None,
        perl: 200,
        trace: true,
        hold: 0,
        threads: DaemonConfig::default().routine_threads,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--n" => a.n = v.parse().unwrap_or(a.n),
            "--load-seconds" => a.load_seconds = v.parse().unwrap_or(a.load_seconds),
            "--url" => a.url = Some(v),
            "--perl" => a.perl = v.parse().unwrap_or(a.perl),
            "--trace" => a.trace = v != "off",
            "--hold" => a.hold = v.parse().unwrap_or(a.hold),
            "--threads" => a.threads = v.parse().unwrap_or(a.threads),
            _ => eprintln!("unknown argument {k}"),
        }
    }
    a
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let result = rt.block_on(run(&a, dir.path().to_path_buf()))?;
    let perl = perl_anchor(a.perl, a.url.as_deref());
    println!(
        "\nprovhost daemon load benchmark: {} reservations in flight, sim load {:.1} s each\n",
        a.n, a.load_seconds
    );
    println!("| measure | provhost (one daemon, tokio tasks) | VCL model (one Perl process per reservation) |");
    println!("|---|---|---|");
    println!(
        "| wall time, all {} to nodeready | {:.1} s | — |",
        a.n, result.elapsed
    );
    println!(
        "| reservations per second | {:.0} | — |",
        a.n as f64 / result.elapsed
    );
    println!("| failed reservations | {} | — |", result.failed);
    if let Some(h) = &result.hold {
        println!(
            "| waiting for Connect ({:.0} s) | {} requests in flight; {:.0} looks/s answered by {:.1} statements/s{} | — |",
            h.secs,
            h.in_flight,
            h.looks_per_s,
            h.reads_per_s,
            h.questions_per_s
                .map(|q| format!("; server {q:.0} statements/s in all"))
                .unwrap_or_default()
        );
    }
    let result = (result.elapsed, result.peak_kb, result.failed);
    match perl {
        Some((rss, pss, count)) => {
            println!(
                "| peak memory for {} in flight | {:.0} MB RSS (whole process) | {:.0} MB RSS / {:.0} MB PSS ({count} processes measured, × {}) |",
                a.n,
                result.1 as f64 / 1024.0,
                rss * a.n as f64 / 1024.0,
                pss * a.n as f64 / 1024.0,
                a.n
            );
            println!(
                "| memory per reservation | {:.0} KB | {:.0} KB RSS / {:.0} KB PSS |",
                result.1 as f64 / a.n as f64,
                rss,
                pss
            );
        }
        None => println!(
            "| peak memory for {} in flight | {:.0} MB RSS | (perl not available) |",
            a.n,
            result.1 as f64 / 1024.0
        ),
    }
    Ok(())
}

/// (looks, reads) of waiting flows so far, from this process's metrics.
fn watch_counts() -> (f64, f64) {
    let text = provhost::metrics::encode(&[]);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("provhost_watch_looks_total "),
        value("provhost_watch_reads_total "),
    )
}

/// The server's `Questions` (MariaDB; `None` on SQLite).
async fn questions(db: &Db) -> Option<f64> {
    match db.pool() {
        provhost::db::pool::Pool::MySql(p) => {
            sqlx::query_as::<_, (String, String)>("SHOW GLOBAL STATUS LIKE 'Questions'")
                .fetch_one(p)
                .await
                .ok()
                .and_then(|(_, v)| v.parse().ok())
        }
        provhost::db::pool::Pool::Sqlite(_) => None,
    }
}

async fn run(a: &Args, dir: PathBuf) -> Result<Outcome, Box<dyn std::error::Error>> {
    let url = a
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let db = Db::connect(&url).await?;
    provhost::db::schema::init(&db, "bench-mn").await?;
    add_user(&db, "ann", Some(1500)).await?;
    add_image(&db, "debian12", "Debian 12", "sim").await?;
    for i in 0..a.n {
        let mut c = NewComputer::lab(
            &format!("vm{i}.bench"),
            &format!("10.9.{}.{}", i / 250, i % 250 + 1),
        );
        c.provisioning = "sim".into();
        c.computer_type = "virtualmachine".into();
        add_computer(&db, &c).await?;
    }
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(scripts.join("provisioning"))?;
    std::fs::create_dir_all(scripts.join("os"))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sim = std::fs::read_to_string(root.join("scripts/provisioning/sim.rhai"))?.replace(
        "load_seconds: 3.0",
        &format!("load_seconds: {:.2}", a.load_seconds),
    );
    std::fs::write(scripts.join("provisioning/sim.rhai"), sim)?;
    // The shipped simulated OS module: records calls, touches no machine.
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
    let mut reservations = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let c = new_request(
            &db,
            &NewRequest {
                image: "debian12".into(),
                computer: ComputerChoice::Named(format!("vm{i}.bench")),
                user: "ann".into(),
                start: None,
                end: None,
            },
        )
        .await?;
        reservations.push(c.reservation_id);
    }
    let cfg = DaemonConfig {
        node: "bench-mn".into(),
        poll_interval_secs: 1,
        max_flows: a.n + 10,
        routine_threads: a.threads,
        timings: Timings {
            acknowledgetimeout: 3600,
            ..Timings::default()
        },
        ..DaemonConfig::default()
    };
    let daemon = Daemon::new(db.clone(), Arc::clone(&host), cfg, None)
        .await?
        .with_trace(provhost::db::span::TraceConfig {
            enabled: a.trace,
            ..Default::default()
        });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let handle = tokio::spawn(async move {
        daemon
            .run(
                async move {
                    let _ = rx.await;
                },
                false,
            )
            .await
    });
    let ready_sql = "SELECT COUNT(*) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'nodeready'";
    let failed_sql = "SELECT COUNT(*) FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` WHERE s.`loadstatename` = 'failed'";
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            match db.pool() {
                provhost::db::pool::Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(p)
                    .await
                    .unwrap_or(0),
                provhost::db::pool::Pool::MySql(p) => sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(p)
                    .await
                    .unwrap_or(0),
            }
        }
    };
    let limit = Duration::from_secs(600);
    loop {
        let ready = count(ready_sql).await;
        let failed = count(failed_sql).await;
        if ready + failed >= a.n as i64 {
            break;
        }
        if started.elapsed() > limit {
            return Err(format!("only {ready} of {} ready after {limit:?}", a.n).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let failed = count(failed_sql).await;
    let mut hold = None;
    if a.hold > 0 {
        // First every reservation's flow waits for Connect (its request `pending`).
        let t = Instant::now();
        while count("SELECT COUNT(*) FROM `request` WHERE `stateid` = 14").await < a.n as i64 {
            if t.elapsed() > limit {
                return Err(format!("not all {} waiting for Connect after {limit:?}", a.n).into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "all {} waiting for Connect {:.1} s after all were ready",
            a.n,
            t.elapsed().as_secs_f64()
        );
        let (q0, (l0, r0), t0) = (questions(&db).await, watch_counts(), Instant::now());
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (q1, (l1, r1)) = (questions(&db).await, watch_counts());
        hold = Some(Hold {
            secs,
            in_flight: count("SELECT COUNT(*) FROM `request` WHERE `stateid` = 14").await,
            looks_per_s: (l1 - l0) / secs,
            reads_per_s: (r1 - r0) / secs,
            questions_per_s: q0.zip(q1).map(|(a, b)| (b - a) / secs),
        });
    }
    let peak_kb = status_kb("VmHWM:");
    let _ = tx.send(());
    let _ = handle.await;
    db.close().await;
    Ok(Outcome {
        elapsed,
        peak_kb,
        failed,
        hold,
    })
}

/// Start `n` Perl processes shaped like a vcld child (DBI loaded, DBD::mysql and a
/// database connection when available, then waiting), measure their RSS and PSS, stop
/// them. Returns average (RSS KB, PSS KB, processes measured).
fn perl_anchor(n: usize, url: Option<&str>) -> Option<(f64, f64, usize)> {
    let script = r#"
use strict; use warnings; use POSIX; use Socket; use IO::Socket::INET; use Data::Dumper;
use Time::Local; use Storable; use Getopt::Long; use File::Temp; use DBI;
my $dbh = eval { DBI->connect("DBI:mysql:host=127.0.0.1", "root", "", { PrintError => 0 }) };
$| = 1; print "ready\n"; sleep 30;
"#;
    let _ = url;
    let mut children = Vec::new();
    for _ in 0..n {
        match Command::new("perl")
            .arg("-e")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => children.push(c),
            Err(_) => break,
        }
    }
    if children.is_empty() {
        return None;
    }
    // Wait for each to be ready (bounded by its 30 s sleep).
    for c in children.iter_mut() {
        if let Some(out) = c.stdout.as_mut() {
            let mut buf = [0u8; 6];
            let _ = std::io::Read::read(out, &mut buf);
        }
    }
    let (mut rss, mut pss, mut measured) = (0u64, 0u64, 0usize);
    for c in &children {
        let pid = c.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        };
        if let (Some(r), Some(p)) = (field(&status, "VmRSS:"), field(&rollup, "Pss:")) {
            rss += r;
            pss += p;
            measured += 1;
        }
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    (measured > 0).then(|| {
        (
            rss as f64 / measured as f64,
            pss as f64 / measured as f64,
            measured,
        )
    })
}
