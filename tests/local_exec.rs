//! Local commands whose background jobs keep stdout/stderr open: the call returns shortly
//! after the command itself exits, the jobs holding the pipes are killed with the command's
//! process group, and no thread is left behind (a call starts none, also for input). One test function, so
//! this binary's thread count is its own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs;
use provhost::prim::host::Host;
use provhost::prim::ssh::{ExecOptions, SshConfig};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Wait (bounded) until no process's command line contains `needle`.
fn gone(needle: &str) -> bool {
    let t = Instant::now();
    while procs::running(needle) {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn background_jobs_holding_the_pipes_neither_hold_the_call_nor_outlive_it() {
    let h = Host::local(Arc::new(SshConfig::default()));
    let before = threads();

    // The job inherits stdout and stderr: the old reader threads waited on it for ever.
    let t = Instant::now();
    let o = h
        .run(
            "sleep 4323 & echo started; echo warn >&2",
            &ExecOptions::default(),
        )
        .expect("run");
    let took = t.elapsed();
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (0, "started\n", "warn\n")
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(gone("sleep 4323"), "the background job still runs");

    // One that ignores TERM is killed too (KILL 2 s later).
    let t = Instant::now();
    let o = h
        .run(
            "sh -c 'trap \"\" TERM; sleep 4324' & echo ok",
            &ExecOptions::default(),
        )
        .expect("run");
    assert_eq!(o.stdout, "ok\n");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    assert!(gone("sleep 4324"), "the TERM-proof job still runs");

    // A job that let go of the pipes is the script's business: the call does not wait for
    // it and leaves it running.
    let t = Instant::now();
    let o = h
        .run(
            "sleep 4325 >/dev/null 2>&1 & echo $!",
            &ExecOptions::default(),
        )
        .expect("run");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "took {:?}",
        t.elapsed()
    );
    let pid: i32 = o.stdout.trim().parse().expect("pid");
    assert!(procs::running("sleep 4325"));
    // SAFETY: killing the job this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(gone("sleep 4325"));

    // A timeout too large to add to a clock is capped, not a panic.
    let o = h
        .run(
            "echo fine",
            &ExecOptions {
                timeout: Some(Duration::from_secs(u64::MAX)),
                ..ExecOptions::default()
            },
        )
        .expect("huge timeout");
    assert_eq!(o.stdout, "fine\n");

    // Input goes in as the command reads it, without a writer thread: 4 MiB (far more
    // than a pipe holds), input a command never reads, and input a background job holds.
    let big = vec![b'x'; 4 << 20];
    let o = h
        .run_input("wc -c", Some(&big), &ExecOptions::default())
        .expect("big input");
    assert_eq!(o.stdout.trim(), (4u64 << 20).to_string());
    let t = Instant::now();
    let o = h
        .run_input("true", Some(&big), &ExecOptions::default())
        .expect("unread input");
    assert_eq!(o.code, 0);
    let o = h
        .run_input("sleep 4326 & echo bg", Some(&big), &ExecOptions::default())
        .expect("input held by a job");
    assert_eq!(o.stdout, "bg\n");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    assert!(gone("sleep 4326"), "the job holding stdin still runs");

    assert_eq!(threads(), before, "a local call left a thread behind");
}
