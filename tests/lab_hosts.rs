//! Several machines at distinct addresses: lab hosts in network namespaces, each with its
//! own sshd. Commands run in parallel on all of them through one pool; an unplugged host
//! fails within the time-out; `wait_for_ssh` sees a host come back. Needs root and
//! iproute2 (skips loudly otherwise).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::LabHost;
use provhost::prim::host::Host;
use provhost::prim::ssh::{known_hosts, ExecOptions, HostKeyPolicy, Pool, SshConfig, SshError};

fn can_run(test: &str) -> bool {
    common::root_or_skip(test, "creates network namespaces") && common::tool_or_skip(test, "ip")
}

/// One pool for all lab hosts, with every host key trusted in one known_hosts file.
fn pool_for(labs: &[&LabHost], dir: &std::path::Path, connect_timeout_secs: u64) -> Arc<Pool> {
    let kh = dir.join("known_hosts");
    for l in labs {
        known_hosts::add_line(&kh, &l.addr, 22, l.sshd().host_public_key().trim()).expect("trust");
    }
    Pool::new(SshConfig {
        known_hosts: kh,
        connect_timeout_secs,
        ..SshConfig::default()
    })
}

#[test]
fn four_lab_hosts_answer_at_their_own_addresses_in_parallel() {
    if !can_run("four_lab_hosts_answer_at_their_own_addresses_in_parallel") {
        return;
    }
    let labs: Vec<LabHost> = (0..4).map(|_| LabHost::start()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = pool_for(&labs.iter().collect::<Vec<_>>(), dir.path(), 5);
    let mut handles = Vec::new();
    for l in &labs {
        for _ in 0..8 {
            let (p, t, addr) = (
                Arc::clone(&pool),
                l.sshd().target(HostKeyPolicy::Strict),
                l.addr.clone(),
            );
            handles.push(std::thread::spawn(move || {
                let o = p
                    .exec(&t, "ip -4 -o addr show", &ExecOptions::default())
                    .expect("run");
                assert!(
                    o.stdout.contains(&format!("inet {addr}/30")),
                    "{addr}: {}",
                    o.stdout
                );
            }));
        }
    }
    for h in handles {
        h.join().expect("command on a lab host");
    }
    assert!(pool.stats().connects <= 4 * 8);
}

#[test]
fn an_unplugged_lab_host_fails_within_the_connect_timeout() {
    if !can_run("an_unplugged_lab_host_fails_within_the_connect_timeout") {
        return;
    }
    let lab = LabHost::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = pool_for(&[&lab], dir.path(), 2);
    let t = lab.sshd().target(HostKeyPolicy::Strict);
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("reachable first");
    pool.close_idle();
    lab.unplug();
    let start = Instant::now();
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("unplugged");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        matches!(
            err,
            SshError::ConnectTimeout { .. } | SshError::Connect { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&lab.addr), "{err}");
}

#[test]
fn wait_for_ssh_sees_a_lab_host_come_back_and_gives_up_in_time() {
    if !can_run("wait_for_ssh_sees_a_lab_host_come_back_and_gives_up_in_time") {
        return;
    }
    let mut lab = LabHost::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = pool_for(&[&lab], dir.path(), 2);
    let h = Host::remote(Arc::clone(&pool), lab.sshd().target(HostKeyPolicy::Strict));
    lab.sshd_mut().kill();
    let start = Instant::now();
    assert!(!h
        .wait_for_ssh(Duration::from_secs(1), Duration::from_millis(200))
        .expect("wait"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let h2 = h.clone();
    let waiter = std::thread::spawn(move || {
        h2.wait_for_ssh(Duration::from_secs(20), Duration::from_millis(200))
    });
    std::thread::sleep(Duration::from_millis(700));
    lab.sshd_mut().restart();
    assert!(waiter.join().expect("thread").expect("wait"), "came back");
}
