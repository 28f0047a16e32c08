//! Remote execution benchmark (issue 4), everything against a real loopback sshd started
//! here (and 4 lab hosts in network namespaces when run as root):
//!
//! - 500 × `true`: provhost's pool vs a fresh `ssh host true` per command vs OpenSSH
//!   ControlMaster/ControlPersist;
//! - 64 parallel commands to one host and spread over 4 lab hosts;
//! - a 1 GiB copy each way and per cipher: provhost through OpenSSH's `ssh`
//!   (`[ssh] copy_transport = "openssh"`) and through libssh2, vs OpenSSH `scp`, interleaved,
//!   medians of a few rounds; each copy runs in its own child process so its peak RSS and
//!   CPU (with the `ssh` it starts) are its own.
//!
//! Run: `cargo run --release --example bench_ssh` (env `BENCH_N` = commands per sequential
//! case, default 500; `BENCH_COPY_MB` = copy size, default 1024; `BENCH_COPY_RUNS` = rounds
//! per copy case, default 3; `BENCH_ONLY=copies` runs only the copies).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::LabHost;
use common::sshd::Sshd;
use provhost::prim::host::Host;
use provhost::prim::scp::CopyOptions;
use provhost::prim::ssh::{
    known_hosts, CopyTransport, ExecOptions, HostKeyPolicy, Pool, SshConfig,
};

/// Copy ciphers compared: OpenSSH's default, and the AES-GCM mode.
const CIPHERS: [&str; 2] = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"];

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    case: String,
    how: String,
    value: String,
    note: String,
}

fn ssh_cmd(s: &Sshd, extra: &[&str], cmd: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(s.ssh_args())
        .args(extra)
        .arg(format!("{}@{}", s.user, s.addr))
        .arg(cmd);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn run_ok(mut c: Command, what: &str) {
    let st = c.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(st.success(), "{what} failed: {st}");
}

/// Wait for `pid` and return (success, peak RSS in KiB, CPU seconds user+system of the
/// child and its reaped children) from wait4's rusage.
fn wait_rss(child: std::process::Child) -> (bool, i64, f64) {
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; pointers valid for the call.
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    std::mem::forget(child);
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        rc > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        ru.ru_maxrss,
        cpu(ru.ru_utime) + cpu(ru.ru_stime),
    )
}

fn per_sec(n: usize, d: Duration) -> String {
    format!(
        "{:.0} cmd/s ({:.2} ms/cmd)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1000.0 / n as f64
    )
}

fn sequential(s: &Sshd, n: usize, rows: &mut Vec<Row>) -> (f64, f64, f64) {
    // provhost pool (includes opening the one session).
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let start = Instant::now();
    for _ in 0..n {
        let o = pool
            .exec(&t, "true", &ExecOptions::default())
            .expect("provhost true");
        assert_eq!(o.code, 0);
    }
    let ours = start.elapsed();
    rows.push(Row {
        case: format!("{n} × true, sequential"),
        how: "provhost pool".into(),
        value: per_sec(n, ours),
        note: format!("{} session(s) opened", pool.stats().connects),
    });

    let start = Instant::now();
    for _ in 0..n {
        run_ok(ssh_cmd(s, &[], "true"), "ssh true");
    }
    let fresh = start.elapsed();
    rows.push(Row {
        case: format!("{n} × true, sequential"),
        how: "fresh `ssh host true`".into(),
        value: per_sec(n, fresh),
        note: "OpenSSH defaults".into(),
    });

    let cp = s.path("cm-%C");
    let cpo = format!("ControlPath={}", cp.display());
    let cm = [
        "-o",
        "ControlMaster=auto",
        "-o",
        &cpo,
        "-o",
        "ControlPersist=300",
    ];
    let start = Instant::now();
    for _ in 0..n {
        run_ok(ssh_cmd(s, &cm, "true"), "ssh ControlMaster true");
    }
    let master = start.elapsed();
    rows.push(Row {
        case: format!("{n} × true, sequential"),
        how: "ssh ControlMaster/ControlPersist".into(),
        value: per_sec(n, master),
        note: "includes starting the master".into(),
    });
    (
        ours.as_secs_f64(),
        fresh.as_secs_f64(),
        master.as_secs_f64(),
    )
}

fn parallel_one(s: &Sshd, rows: &mut Vec<Row>) {
    let t = s.target(HostKeyPolicy::Strict);
    for warm in [false, true] {
        let pool = s.pool();
        if warm {
            // Open the 8 sessions first.
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let (p, t) = (Arc::clone(&pool), t.clone());
                    std::thread::spawn(move || {
                        p.exec(&t, "sleep 0.2", &ExecOptions::default()).map(|_| ())
                    })
                })
                .collect();
            hs.into_iter()
                .for_each(|h| h.join().expect("thread").expect("warm"));
        }
        let start = Instant::now();
        let hs: Vec<_> = (0..64)
            .map(|_| {
                let (p, t) = (Arc::clone(&pool), t.clone());
                std::thread::spawn(move || {
                    p.exec(&t, "true", &ExecOptions::default()).map(|o| o.code)
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().expect("thread").expect("parallel true"), 0);
        }
        let d = start.elapsed();
        rows.push(Row {
            case: "64 parallel true, 1 host".into(),
            how: format!(
                "provhost pool ({})",
                if warm { "8 sessions open" } else { "cold" }
            ),
            value: format!("{:.1} ms wall", d.as_secs_f64() * 1000.0),
            note: format!("{} session(s) opened", pool.stats().connects),
        });
    }
    let start = Instant::now();
    let children: Vec<_> = (0..64)
        .map(|_| ssh_cmd(s, &[], "true").spawn().expect("ssh"))
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "parallel ssh");
    }
    let d = start.elapsed();
    rows.push(Row {
        case: "64 parallel true, 1 host".into(),
        how: "64 × fresh ssh".into(),
        value: format!("{:.1} ms wall", d.as_secs_f64() * 1000.0),
        note: String::new(),
    });
    let cpo = format!("ControlPath={}", s.path("cm-%C").display());
    let cm = [
        "-o",
        "ControlMaster=auto",
        "-o",
        &cpo,
        "-o",
        "ControlPersist=300",
    ];
    run_ok(ssh_cmd(s, &cm, "true"), "master");
    let start = Instant::now();
    let children: Vec<_> = (0..64)
        .map(|_| ssh_cmd(s, &cm, "true").spawn().expect("ssh"))
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "parallel ssh cm");
    }
    let d = start.elapsed();
    rows.push(Row {
        case: "64 parallel true, 1 host".into(),
        how: "64 × ssh via ControlMaster".into(),
        value: format!("{:.1} ms wall", d.as_secs_f64() * 1000.0),
        note: "master already up".into(),
    });
}

fn parallel_labs(rows: &mut Vec<Row>) {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP 64 parallel commands to 4 lab hosts: needs root (network namespaces)");
        return;
    }
    let labs: Vec<LabHost> = (0..4).map(|_| LabHost::start()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let kh = dir.path().join("known_hosts");
    for l in &labs {
        known_hosts::add_line(&kh, &l.addr, 22, l.sshd().host_public_key().trim()).expect("trust");
        l.sshd().trust();
    }
    let pool = Pool::new(SshConfig {
        known_hosts: kh.clone(),
        ..SshConfig::default()
    });
    let start = Instant::now();
    let hs: Vec<_> = (0..64)
        .map(|i| {
            let (p, t) = (
                Arc::clone(&pool),
                labs[i % 4].sshd().target(HostKeyPolicy::Strict),
            );
            std::thread::spawn(move || p.exec(&t, "true", &ExecOptions::default()).map(|o| o.code))
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().expect("thread").expect("lab true"), 0);
    }
    let d = start.elapsed();
    rows.push(Row {
        case: "64 parallel true, 4 lab hosts".into(),
        how: "provhost pool (cold)".into(),
        value: format!("{:.1} ms wall", d.as_secs_f64() * 1000.0),
        note: format!("{} sessions opened", pool.stats().connects),
    });
    let start = Instant::now();
    let children: Vec<_> = (0..64)
        .map(|i| {
            let s = labs[i % 4].sshd();
            ssh_cmd(s, &[], "true").spawn().expect("ssh")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "lab ssh");
    }
    let d = start.elapsed();
    rows.push(Row {
        case: "64 parallel true, 4 lab hosts".into(),
        how: "64 × fresh ssh".into(),
        value: format!("{:.1} ms wall", d.as_secs_f64() * 1000.0),
        note: String::new(),
    });
}

/// Child mode: one provhost copy, so its peak RSS is measured alone.
fn copy_child(args: &[String]) {
    let [_, dir, port, direction, src, dst, cipher, transport] = args else {
        panic!("usage: --copy-child DIR PORT up|down SRC DST CIPHER openssh|libssh2");
    };
    let copy_transport = match transport.as_str() {
        "openssh" => CopyTransport::Openssh,
        "libssh2" => CopyTransport::Libssh2,
        other => panic!("transport {other:?}: openssh or libssh2"),
    };
    let dir = PathBuf::from(dir);
    let cfg = SshConfig {
        user: String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
            .trim()
            .to_string(),
        identity: dir.join("client_key"),
        known_hosts: dir.join("known_hosts"),
        port: port.parse().expect("port"),
        ciphers: cipher.clone(),
        copy_transport,
        ..SshConfig::default()
    };
    let target = provhost::prim::ssh::Target {
        host: "127.0.0.1".into(),
        port: cfg.port,
        user: cfg.user.clone(),
        identity: cfg.identity.clone(),
        host_key: HostKeyPolicy::Strict,
    };
    let h = Host::remote(Pool::new(cfg), target);
    let opts = CopyOptions::default();
    let rep = if direction == "up" {
        h.upload(Path::new(src), dst, &opts, &mut |_| {})
    } else {
        h.download(src, Path::new(dst), &opts, &mut |_| {})
    }
    .expect("copy");
    println!("{}", rep.secs);
}

/// One timed copy in a child process: (seconds, peak RSS KiB, client CPU seconds).
fn timed(mut c: Command, what: &str) -> (f64, i64, f64) {
    let child = c.stdout(Stdio::null()).spawn().expect(what);
    let start = Instant::now();
    let (ok, rss, cpu) = wait_rss(child);
    assert!(ok, "{what} failed");
    (start.elapsed().as_secs_f64(), rss, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The copy methods compared: provhost through each transport, and OpenSSH's scp.
const METHODS: [&str; 3] = ["openssh", "libssh2", "scp"];

/// 1 GiB (BENCH_COPY_MB) each way per cipher: provhost through OpenSSH's ssh, through
/// libssh2, and scp, interleaved (BENCH_COPY_RUNS rounds, the order rotated each round),
/// every copy to a destination that does not exist yet, after a `sync` (so one copy's
/// dirty pages are not the next one's write-back); medians reported.
fn copies(s: &Sshd, mb: usize, runs: usize, rows: &mut Vec<Row>) -> Vec<(String, f64, f64)> {
    let src = s.path("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).expect("create"));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mb {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).expect("write");
        }
    }
    let bytes = (mb as f64) * 1024.0 * 1024.0;
    let exe = std::env::current_exe().expect("exe");
    let remote = |p: &Path| format!("{}@{}:{}", s.user, s.addr, p.display());
    let mut ratios = Vec::new();
    for (cipher, dir) in CIPHERS.iter().flat_map(|c| [(*c, "up"), (*c, "down")]) {
        eprintln!("  {dir} {cipher} …");
        // method → (seconds, rss, cpu) per round
        let mut got: Vec<Vec<(f64, i64, f64)>> = vec![Vec::new(); METHODS.len()];
        for round in 0..runs {
            for k in 0..METHODS.len() {
                let m = (k + round) % METHODS.len();
                let method = METHODS[m];
                let dst = s.path(&format!("{dir}-{method}.bin"));
                let _ = std::fs::remove_file(&dst);
                // SAFETY: no preconditions.
                unsafe { libc::sync() };
                let cmd = if method == "scp" {
                    let (a, b) = if dir == "up" {
                        (src.display().to_string(), remote(&dst))
                    } else {
                        (remote(&src), dst.display().to_string())
                    };
                    let mut port_args = s.ssh_args();
                    port_args[0] = "-P".into();
                    let mut c = Command::new("scp");
                    c.arg("-q")
                        .args(&port_args)
                        .args(["-o", &format!("Ciphers={cipher}")])
                        .args([a, b]);
                    c
                } else {
                    let mut c = Command::new(&exe);
                    c.args([
                        "--copy-child",
                        &s.dir.path().display().to_string(),
                        &s.port.to_string(),
                        dir,
                        &src.display().to_string(),
                        &dst.display().to_string(),
                        cipher,
                        method,
                    ]);
                    c
                };
                got[m].push(timed(cmd, method));
            }
        }
        let med: Vec<(f64, i64, f64)> = got
            .iter()
            .map(|v| {
                (
                    median(v.iter().map(|x| x.0).collect()),
                    v.iter().map(|x| x.1).max().unwrap_or(0),
                    median(v.iter().map(|x| x.2).collect()),
                )
            })
            .collect();
        let (scp_secs, _, scp_cpu) = med[2];
        for (m, method) in METHODS.iter().enumerate() {
            let (secs, rss, cpu) = med[m];
            let all: Vec<String> = got[m].iter().map(|x| format!("{:.2}", x.0)).collect();
            rows.push(Row {
                case: format!("{mb} MiB copy {dir}"),
                how: match *method {
                    "scp" => format!("OpenSSH scp ({cipher})"),
                    t => format!("provhost via {t} ({cipher})"),
                },
                value: format!("{:.0} MB/s ({secs:.2} s)", bytes / secs / 1e6),
                note: format!(
                    "client CPU {cpu:.2} s{}, peak RSS {} MiB; runs {} s",
                    match *method {
                        "scp" => " (scp + ssh)",
                        "openssh" => " (provhost + ssh)",
                        _ => "",
                    },
                    rss / 1024,
                    all.join(" / ")
                ),
            });
            if *method != "scp" {
                ratios.push((
                    format!("{dir} {cipher} via {method}"),
                    scp_secs / secs,
                    cpu / scp_cpu,
                ));
            }
        }
        for method in METHODS {
            let _ = std::fs::remove_file(s.path(&format!("{dir}-{method}.bin")));
        }
    }
    ratios
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--copy-child") {
        copy_child(&args);
        return;
    }
    let n = env_num("BENCH_N", 500);
    let mb = env_num("BENCH_COPY_MB", 1024);
    let s = Sshd::start();
    s.trust();
    let mut rows = Vec::new();
    let copies_only = std::env::var("BENCH_ONLY").as_deref() == Ok("copies");
    let (ours, fresh, master) = if copies_only {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        eprintln!("sequential {n} × true …");
        let r = sequential(&s, n, &mut rows);
        eprintln!("parallel …");
        parallel_one(&s, &mut rows);
        parallel_labs(&mut rows);
        r
    };
    eprintln!("copies ({mb} MiB) …");
    let runs = env_num("BENCH_COPY_RUNS", 3).max(1);
    let ratios = copies(&s, mb, runs, &mut rows);
    // Stop the ControlMaster we started.
    let cpo = format!("ControlPath={}", s.path("cm-%C").display());
    let mut c = ssh_cmd(&s, &["-o", &cpo, "-O", "exit"], "");
    let _ = c.status();

    println!("| case | how | result | note |\n|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.case, r.how, r.value, r.note);
    }
    println!();
    println!(
        "goals: pool vs fresh ssh {:.1}× (goal ≥ 20×); pool vs ControlMaster {:.2}× (goal ≥ 1.5×)",
        fresh / ours,
        master / ours
    );
    println!(
        "copies vs scp, same cipher, medians of {runs} (goal: throughput ≥ 95%, client CPU ≤ 100%):"
    );
    for (k, r, c) in &ratios {
        println!(
            "  {k}: throughput {:.0}%, client CPU {:.0}%",
            r * 100.0,
            c * 100.0
        );
    }
}
