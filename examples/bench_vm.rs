//! Benchmark of VM control (`prim::vm`) on this machine as the VM host, under TCG.
//!
//! Run (as root): `cargo run --release --example bench_vm [IMAGE_DIR]`
//!
//! - cycle: a VM with no OS (QEMU in its firmware, 64 MB) started, its status read, and
//!   stopped (`quit`); the cost of provhost's process control around QEMU.
//! - qmp: one `query-status` on an open QMP session, and a whole `Vms::status` (the run
//!   directory checked by a shell command, a QMP connect, greeting, capabilities, query).
//! - disk: with `IMAGE_DIR` (a library image folder, e.g. the test image), a linked clone
//!   (`qemu-img create -b`) against a full copy (`cp --sparse=always`) of its disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::prim::host::Host;
use provhost::prim::ssh::SshConfig;
use provhost::prim::vm::{AccelChoice, VmConfig, VmSpec, Vms};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.1} ms, min {:.1} ms, max {:.1} ms (n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::local(Arc::new(SshConfig::default()));
    let vms = Vms::new(VmConfig {
        accel: AccelChoice::Tcg,
        ..VmConfig::default()
    });
    let mut spec = VmSpec::new("bench", &dir.path().join("bench").display().to_string());
    spec.memory_mb = 64;

    let (mut start, mut status, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let (r, d) = timed(|| vms.start(&host, &spec));
        r.expect("start");
        start.push(d);
        let (r, d) = timed(|| vms.status(&host, &spec.dir));
        assert_eq!(r.expect("status").state, "running");
        status.push(d);
        let (r, d) = timed(|| vms.stop(&host, &spec.dir, Duration::ZERO));
        assert_eq!(r.expect("stop"), "quit");
        stop.push(d);
    }
    println!("cycle: start {}", stats(start));
    println!("cycle: status {}", stats(status));
    println!("cycle: stop (quit) {}", stats(stop));

    vms.start(&host, &spec).expect("start");
    let mut q = vms.connect(&host, &spec.dir).expect("qmp");
    let mut one = Vec::new();
    for _ in 0..200 {
        let (r, d) = timed(|| q.execute("query-status", None));
        r.expect("query-status");
        one.push(d);
    }
    drop(q);
    println!("qmp: query-status on an open session {}", stats(one));
    let mut whole = Vec::new();
    for _ in 0..50 {
        let (r, d) = timed(|| vms.status(&host, &spec.dir));
        r.expect("status");
        whole.push(d);
    }
    println!(
        "qmp: Vms::status (check + connect + query) {}",
        stats(whole)
    );
    vms.kill(&host, &spec.dir).expect("kill");

    if let Some(image) = std::env::args().nth(1) {
        let base = format!("{image}/disk.qcow2");
        let sh = |cmd: &str| {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .expect("sh");
            assert!(st.success(), "{cmd}");
        };
        let out = dir.path().join("disk.qcow2").display().to_string();
        let (mut linked, mut full) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (_, d) = timed(|| {
                sh(&format!(
                    "qemu-img create -q -f qcow2 -b '{base}' -F qcow2 '{out}'"
                ))
            });
            linked.push(d);
            sh(&format!("rm -f '{out}'"));
            let (_, d) = timed(|| sh(&format!("cp --sparse=always '{base}' '{out}' && sync")));
            full.push(d);
            sh(&format!("rm -f '{out}'"));
        }
        let size = std::fs::metadata(&base).map(|m| m.len()).unwrap_or(0);
        println!("disk: linked clone {}", stats(linked));
        println!(
            "disk: full copy of {} MB (+ sync) {}",
            size / 1_000_000,
            stats(full)
        );
    }
}
