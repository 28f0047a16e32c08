//! Benchmark of the scripting host: routine dispatch cost and save-to-live reload latency.
//!
//! Run: `cargo run --release --example bench_host`
//!
//! - dispatch: a trivial contract routine (`is_ready(ctx) { true }`) called through
//!   `ScriptHost::call` (module lookup, arity check, deadline guard, top-level eval,
//!   return-shape check), next to the raw `Engine::call_fn` floor and the same call from a
//!   tokio task through `spawn_blocking` (how the daemon calls routines). Target < 20 µs.
//! - reload: write a new version of a module with the watcher running, then call in a
//!   tight loop until the new code answers; the time from the write to that call. Target
//!   < 250 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::host::{
    CallOptions, Ctx, HostOptions, Kind, Limits, MemoryBackend, ReservationData, ScriptHost,
};

const OS_MODULE: &str = r#"const MODULE = #{ kind: "os", name: "bench", version: "VERSION" };
fn post_load(ctx) { true }
fn add_user(ctx, user) { true }
fn delete_user(ctx, user) { true }
fn grant_access(ctx) { true }
fn revoke_access(ctx) { true }
fn set_password(ctx, user, password) { true }
fn sanitize(ctx) { true }
fn pre_capture(ctx) { true }
fn is_ready(ctx) { true }
fn marker(ctx) { "VERSION" }
"#;

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.99), v[v.len() - 1])
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(scripts.join("os"))?;
    let path = scripts.join("os").join("bench.rhai");
    std::fs::write(&path, OS_MODULE.replace("VERSION", "0"))?;
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: scripts.clone(),
            stdlib_dir: dir.path().join("stdlib"),
            limits: Limits::default(),
        },
        &[],
    );
    let errors = host.load_all();
    if !errors.is_empty() {
        return Err(format!("{errors:?}").into());
    }
    let key = (Kind::Os, "bench".to_string());
    let ctx = Ctx::new(
        ReservationData {
            reservation_id: 1,
            ..Default::default()
        },
        Arc::new(MemoryBackend::default()),
    );
    let opts = CallOptions::default();
    const N: usize = 50_000;

    // Warm up.
    for _ in 0..1000 {
        let _ = host.call(&key, "is_ready", Some(&ctx), vec![], &opts)?;
    }
    let mut host_calls = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let v = host.call(&key, "is_ready", Some(&ctx), vec![], &opts)?;
        host_calls.push(t.elapsed());
        assert!(v.as_bool().unwrap_or(false));
    }

    let module = host.module(&key).ok_or("module")?;
    let mut raw = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let mut scope = rhai::Scope::new();
        let _: bool = host
            .engine()
            .call_fn(&mut scope, &module.ast, "is_ready", (ctx.clone(),))?;
        raw.push(t.elapsed());
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let blocking = rt.block_on(async {
        let mut out = Vec::with_capacity(N / 5);
        for _ in 0..N / 5 {
            let (h, k, c) = (Arc::clone(&host), key.clone(), ctx.clone());
            let t = Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                h.call(&k, "is_ready", Some(&c), vec![], &CallOptions::default())
            })
            .await;
            out.push(t.elapsed());
            if !matches!(r, Ok(Ok(_))) {
                return Err("blocking call failed".to_string());
            }
        }
        Ok(out)
    })?;

    // Reload latency.
    let watch = host.watch()?;
    const ROUNDS: usize = 30;
    let mut reloads = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        std::thread::sleep(Duration::from_millis(100));
        let version = round.to_string();
        let t = Instant::now();
        std::fs::write(&path, OS_MODULE.replace("VERSION", &version))?;
        loop {
            let v = host.call(&key, "marker", Some(&ctx), vec![], &opts)?;
            if v.to_string() == version {
                reloads.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err(format!("round {round}: new code not live after 5 s").into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(watch);

    println!("provhost scripting host benchmark ({N} calls per dispatch row, {ROUNDS} reloads)\n");
    println!("| case | median | p99 | max | target |");
    println!("|---|---|---|---|---|");
    let (m, p, x) = stats(raw);
    println!(
        "| raw Engine::call_fn (floor) | {} | {} | {} | |",
        us(m),
        us(p),
        us(x)
    );
    let (m, p, x) = stats(host_calls);
    println!(
        "| ScriptHost::call, contract routine | {} | {} | {} | < 20 µs median |",
        us(m),
        us(p),
        us(x)
    );
    let (m, p, x) = stats(blocking);
    println!(
        "| same via tokio spawn_blocking | {} | {} | {} | |",
        us(m),
        us(p),
        us(x)
    );
    let (m, p, x) = stats(reloads);
    println!(
        "| save → first call on new code | {} | {} | {} | < 250 ms |",
        ms(m),
        ms(p),
        ms(x)
    );
    Ok(())
}
