//! Load benchmark of the daemon: N reservations in flight at once on one daemon with the
//! simulated provisioning module (each load sleeps `--load-seconds`), against VCL's model
//! of one Perl process per reservation.
//!
//! Run: `cargo run --release --example bench_daemon -- [--n 1000] [--load-seconds 3]
//!       [--url mysql://root@127.0.0.1/bench] [--trace off]` (default: a SQLite file in a
//!       temp folder; `--trace off` records no spans, to measure what the waterfall costs).
//!
//! Measures: wall time from "all N requests inserted" to "all N reservations reached
//! `nodeready`", reservations per second, peak RSS of this process (daemon + harness, from
//! `/proc/self/status` VmHWM), failures. Anchor: `--perl 200` Perl processes that load DBI
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
}

fn args() -> Args {
    let mut a = Args {
        n: 1000,
        load_seconds: 3.0,
        url: None,
        perl: 200,
        trace: true,
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
        .max_blocking_threads(a.n + 64)
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
        a.n, result.0
    );
    println!(
        "| reservations per second | {:.0} | — |",
        a.n as f64 / result.0
    );
    println!("| failed reservations | {} | — |", result.2);
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

async fn run(a: &Args, dir: PathBuf) -> Result<(f64, u64, i64), Box<dyn std::error::Error>> {
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
    let peak = status_kb("VmHWM:");
    let _ = tx.send(());
    let _ = handle.await;
    db.close().await;
    Ok((elapsed, peak, failed))
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
