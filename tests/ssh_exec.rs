//! Remote commands against a real OpenSSH sshd: results, session reuse, host key policy,
//! and every fault the issue lists for commands (unreachable host, wrong key, changed host
//! key, sshd killed mid-command, never-ending command, huge output), plus the unix-socket
//! forward and the local host.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs;
use common::sshd::Sshd;
use provhost::prim::host::{Host, RunError};
use provhost::prim::local::LocalError;
use provhost::prim::ssh::{ExecOptions, HostKeyPolicy, Pool, SshConfig, SshError};

fn opts(timeout_ms: u64) -> ExecOptions {
    ExecOptions {
        timeout: Some(Duration::from_millis(timeout_ms)),
        ..ExecOptions::default()
    }
}

#[test]
fn run_returns_code_stdout_and_stderr_and_reuses_one_session() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let o = pool
        .exec(
            &t,
            "echo out; echo err >&2; exit 3",
            &ExecOptions::default(),
        )
        .expect("run");
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str(), o.truncated),
        (3, "out\n", "err\n", false)
    );
    assert_eq!(o.signal, None);
    for i in 0..20 {
        let o = pool
            .exec(&t, &format!("echo {i}"), &ExecOptions::default())
            .expect("run");
        assert_eq!(o.stdout, format!("{i}\n"));
    }
    assert_eq!(
        pool.stats().connects,
        1,
        "every command reused the pooled session"
    );
    let o = pool
        .exec(&t, "kill -TERM $$", &ExecOptions::default())
        .expect("run");
    assert_eq!((o.code, o.signal.as_deref()), (143, Some("TERM")));
}

#[test]
fn unknown_host_key_is_refused_when_strict_and_recorded_when_accept_new() {
    let s = Sshd::start();
    let pool = Pool::new(s.config());
    let err = pool
        .exec(
            &s.target(HostKeyPolicy::Strict),
            "true",
            &ExecOptions::default(),
        )
        .expect_err("strict");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
    assert!(err.to_string().contains("known_hosts"), "{err}");
    pool.exec(
        &s.target(HostKeyPolicy::AcceptNew),
        "true",
        &ExecOptions::default(),
    )
    .expect("accept-new");
    let kh = std::fs::read_to_string(&s.known_hosts).expect("known_hosts written");
    assert!(kh.contains(&format!("[127.0.0.1]:{}", s.port)), "{kh}");
    // Now known: strict accepts it too (new pool, so a new connect).
    Pool::new(s.config())
        .exec(
            &s.target(HostKeyPolicy::Strict),
            "true",
            &ExecOptions::default(),
        )
        .expect("strict after record");
}

#[test]
fn changed_host_key_is_refused_until_forgotten() {
    let mut s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::AcceptNew);
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("first");
    s.new_host_key();
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("changed key");
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
    assert!(err.to_string().contains("HOST KEY CHANGED"), "{err}");
    let host = Host::remote(Arc::clone(&pool), t.clone());
    assert_eq!(host.forget_host_key().expect("forget"), 1);
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("accepted after forget");
}

#[test]
fn pinned_host_key_mismatch_refuses_to_connect_with_a_clear_message() {
    let mut s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::AcceptNew);
    let host = Host::remote(Arc::clone(&pool), t.clone());
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("first");
    // The module knows the key the reinstalled host will have (the image build made it)…
    let image_key_dir = tempfile::tempdir().expect("tempdir");
    let image_key = image_key_dir.path().join("image_host_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "image", "-f"])
        .arg(&image_key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let image_pub = std::fs::read_to_string(image_key.with_extension("pub")).expect("pub");
    // …but whoever answers for the address after the reinstall has another one.
    s.new_host_key();
    host.forget_host_key().expect("forget");
    host.trust_host_key(image_pub.trim()).expect("pin");
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("an impostor's key is refused, though the policy is accept-new");
    assert!(matches!(err, SshError::PinnedKeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("does not match the key pinned") && msg.contains("trust_host_key"),
        "{msg}"
    );
    // Nothing was recorded for the impostor; the pin stays the only key.
    let kh = std::fs::read_to_string(&s.known_hosts).expect("known_hosts");
    assert!(!kh.contains("accept-new"), "{kh}");
    // Pinning the key the host really has lets it in.
    host.trust_host_key(s.host_public_key().trim())
        .expect("pin the real key");
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("pinned key matches");
    // A garbage key is refused at pin time, naming what is expected.
    let err = host.trust_host_key("ssh-ed25519").expect_err("garbage");
    assert!(err.to_string().contains("public key to pin"), "{err}");
}

#[test]
fn wrong_key_is_an_authentication_error_naming_the_key() {
    let s = Sshd::start();
    let other = s.path("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let pool = s.pool();
    let mut t = s.target(HostKeyPolicy::Strict);
    t.identity = other.clone();
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("wrong key");
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
    assert!(
        err.to_string().contains(&other.display().to_string()),
        "{err}"
    );
    t.identity = s.path("missing_key");
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("missing key");
    assert!(matches!(err, SshError::Identity { .. }), "{err}");
}

#[test]
fn refused_port_fails_at_once_with_a_clear_error() {
    let s = Sshd::start();
    let pool = s.pool();
    let mut t = s.target(HostKeyPolicy::Strict);
    t.port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let start = Instant::now();
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("refused");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{}", t.port)),
        "{err}"
    );
}

#[test]
fn silent_host_times_out_within_the_connect_timeout() {
    // Accepts TCP (the kernel does) but never speaks SSH: a hung machine.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s = Sshd::start();
    let mut cfg = s.config();
    cfg.connect_timeout_secs = 1;
    let pool = Pool::new(cfg);
    let mut t = s.target(HostKeyPolicy::AcceptNew);
    t.port = port;
    let start = Instant::now();
    let err = pool
        .exec(&t, "true", &ExecOptions::default())
        .expect_err("silent");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err}");
    assert!(err.to_string().contains("no answer within 1.0 s"), "{err}");
    drop(listener);
}

#[test]
fn never_ending_command_times_out_is_killed_and_the_session_stays_usable() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let start = Instant::now();
    let err = pool
        .exec(&t, "sleep 4321; echo never", &opts(700))
        .expect_err("timeout");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 0.7 s"), "{err}");
    let gone = Instant::now() + Duration::from_secs(5);
    while procs::running("sleep 4321") && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !procs::running("sleep 4321"),
        "the remote command was killed"
    );
    let o = pool
        .exec(&t, "echo still", &ExecOptions::default())
        .expect("next");
    assert_eq!(o.stdout, "still\n");
    assert_eq!(
        pool.stats().connects,
        1,
        "the session survived the time-out"
    );
}

#[test]
fn huge_output_is_truncated_and_marked() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let o = pool
        .exec(
            &t,
            "head -c 50000000 /dev/zero | tr '\\0' x; echo done >&2",
            &ExecOptions {
                max_output: Some(1 << 20),
                timeout: Some(Duration::from_secs(30)),
                ..ExecOptions::default()
            },
        )
        .expect("run");
    assert_eq!(o.code, 0);
    assert!(o.truncated);
    assert!(o.stdout.starts_with("xxxx"));
    assert!(o.stdout.len() < (1 << 20) + 200, "{}", o.stdout.len());
    assert!(
        o.stdout.ends_with(&format!(
            "[provhost: output truncated: {} more bytes not kept]\n",
            50_000_000 - (1 << 20)
        )),
        "{}",
        &o.stdout[o.stdout.len() - 100..]
    );
    assert_eq!(o.stderr, "done\n");
}

#[test]
fn lots_of_stderr_and_stdout_together_do_not_stall() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let o = pool
        .exec(
            &t,
            "head -c 8000000 /dev/zero >&2; head -c 8000000 /dev/zero; echo end",
            &opts(20_000),
        )
        .expect("run");
    assert_eq!(o.code, 0);
    assert!(o.truncated);
    assert!(o.stdout.contains("more bytes not kept"));
}

#[test]
fn sshd_killed_mid_command_is_an_error_and_the_pool_recovers() {
    let mut s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("warm");
    let (p2, t2) = (Arc::clone(&pool), t.clone());
    let running = std::thread::spawn(move || {
        let start = Instant::now();
        (
            p2.exec(&t2, "echo started; sleep 20", &opts(30_000)),
            start.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    s.restart(); // kill sshd with all its connections, start it again on the same port
    let (res, took) = running.join().expect("thread");
    let err = res.expect_err("connection died");
    assert!(matches!(err, SshError::SessionLost { .. }), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let o = pool
        .exec(&t, "echo back", &ExecOptions::default())
        .expect("pool recovers");
    assert_eq!(o.stdout, "back\n");
}

#[test]
fn parallel_commands_share_a_bounded_number_of_sessions() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (p, t) = (Arc::clone(&pool), t.clone());
            std::thread::spawn(move || {
                p.exec(&t, &format!("echo {i}"), &opts(30_000))
                    .map(|o| o.stdout)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().expect("thread").expect("run"), format!("{i}\n"));
    }
    let st = pool.stats();
    assert!(st.connects <= 8 && st.open <= 8, "{st:?}");
}

/// Idle sessions are bounded across all targets (`max_idle_sessions`): the longest-idle
/// one is closed when another would go over, so many targets cannot use up the file
/// descriptors; a session that stays idle is reused.
#[test]
fn idle_sessions_are_bounded_across_targets_oldest_closed_first() {
    let s = Sshd::start();
    s.trust();
    let pool = Pool::new(SshConfig {
        max_idle_sessions: 3,
        ..s.config()
    });
    // Two targets on one server (the host key policy is part of a target).
    let a = s.target(HostKeyPolicy::Strict);
    let b = s.target(HostKeyPolicy::AcceptNew);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (p, t) = (Arc::clone(&pool), a.clone());
            std::thread::spawn(move || p.exec(&t, "sleep 0.5", &opts(30_000)).map(|o| o.code))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread").expect("run"), 0);
    }
    let st = pool.stats();
    assert_eq!((st.connects, st.open, st.idle), (4, 3, 3), "{st:?}");
    // A session to the other target pushes the oldest idle one of the first out.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        pool.exec(&b, "echo b", &opts(30_000)).expect("b").stdout,
        "b\n"
    );
    let st = pool.stats();
    assert_eq!((st.connects, st.open, st.idle), (5, 3, 3), "{st:?}");
    // Still-idle sessions are reused: no new connect.
    for t in [&a, &b] {
        pool.exec(t, "true", &opts(30_000)).expect("reuse");
    }
    assert_eq!(pool.stats().connects, 5, "{:?}", pool.stats());
}

#[test]
fn a_unix_socket_on_the_remote_host_is_reachable_over_ssh() {
    let s = Sshd::start();
    let sock = s.path("qmp.sock");
    let listener = UnixListener::bind(&sock).expect("bind unix socket");
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut line = String::new();
        let mut r = BufReader::new(conn.try_clone().expect("clone"));
        r.read_line(&mut line).expect("read");
        let mut w = conn;
        w.write_all(format!("echo:{line}").as_bytes())
            .expect("write");
    });
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let mut stream = pool
        .open_unix_socket(&t, &sock.display().to_string(), Duration::from_secs(5))
        .expect("open");
    stream
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .expect("write");
    stream.flush().expect("flush");
    let mut reply = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut reply)
        .expect("read");
    assert_eq!(reply, "echo:{\"execute\":\"qmp_capabilities\"}\n");
    drop(stream);
    server.join().expect("server");
    let err = pool
        .open_unix_socket(&t, "/nonexistent/provhost.sock", Duration::from_secs(5))
        .err()
        .expect("missing socket");
    assert!(matches!(err, SshError::Channel { .. }), "{err}");
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("session still fine");
}

#[test]
fn the_local_host_gives_the_same_result_shape_and_time_out() {
    let h = Host::local(Arc::new(SshConfig::default()));
    let o = h
        .run("echo out; echo err >&2; exit 4", &ExecOptions::default())
        .expect("run");
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (4, "out\n", "err\n")
    );
    let o = h
        .run(
            "head -c 3000000 /dev/zero",
            &ExecOptions {
                max_output: Some(1000),
                ..ExecOptions::default()
            },
        )
        .expect("run");
    assert!(
        o.truncated && o.stdout.contains("2999000 more bytes"),
        "{}",
        o.stdout
    );
    let start = Instant::now();
    let err = h.run("sleep 4322", &opts(300)).expect_err("timeout");
    assert!(
        matches!(err, RunError::Local(LocalError::Timeout { .. })),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(!procs::running("sleep 4322"));
    // The shell forks here (a command follows): the grandchild is gone too when run returns.
    let err = h
        .run("sleep 4323; echo after", &opts(300))
        .expect_err("timeout");
    assert!(
        matches!(err, RunError::Local(LocalError::Timeout { .. })),
        "{err}"
    );
    assert!(!procs::running("sleep 4323"));
}

#[test]
fn async_callers_get_results_without_blocking_workers() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outs = rt.block_on(async {
        let a = pool
            .clone()
            .exec_async(t.clone(), "echo a".into(), ExecOptions::default());
        let b = pool
            .clone()
            .exec_async(t.clone(), "echo b".into(), ExecOptions::default());
        let ticker = async {
            // The single worker keeps running while both commands are in flight.
            tokio::time::sleep(Duration::from_millis(1)).await;
            true
        };
        tokio::join!(a, b, ticker)
    });
    assert_eq!(outs.0.expect("a").stdout, "a\n");
    assert_eq!(outs.1.expect("b").stdout, "b\n");
    assert!(outs.2);
}

#[test]
fn without_kill_on_timeout_the_command_runs_verbatim_and_the_session_is_replaced() {
    let s = Sshd::start();
    let pool = s.pool();
    let t = s.target(HostKeyPolicy::Strict);
    let raw = ExecOptions {
        kill_on_timeout: false,
        ..opts(500)
    };
    let o = pool.exec(&t, "echo verbatim", &raw).expect("run");
    assert_eq!(o.stdout, "verbatim\n");
    // Short sleep: with no pid to kill it ends by itself, leaving nothing behind.
    let err = pool.exec(&t, "sleep 2", &raw).expect_err("timeout");
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    pool.exec(&t, "true", &ExecOptions::default())
        .expect("next call");
    assert_eq!(
        pool.stats().connects,
        2,
        "the timed-out session was closed and replaced"
    );
}

/// `run_input`: the input reaches the command's stdin, then EOF (so `cat` ends), on a
/// remote and on the local host; the local ports of the pooled sessions are known.
#[test]
fn input_goes_to_stdin_then_eof_and_session_ports_are_known() {
    let s = Sshd::start();
    let pool = s.pool();
    let remote = Host::remote(Arc::clone(&pool), s.target(HostKeyPolicy::Strict));
    let local = Host::local(Arc::new(s.config()));
    let input = b"line one\nsecret: 'x' \"y\" $(z)\n".repeat(2000);
    for h in [&remote, &local] {
        let o = h
            .run_input("wc -c; true", Some(&input), &opts(10_000))
            .expect("run with input");
        assert_eq!(o.code, 0, "{h}: {o:?}");
        assert_eq!(o.stdout.trim(), input.len().to_string(), "{h}");
        let o = h
            .run_input("cat", Some(b"abc"), &opts(10_000))
            .expect("cat");
        assert_eq!(o.stdout, "abc", "{h}");
    }
    let ports = remote.session_ports();
    assert_eq!(ports.len(), pool.stats().open, "{ports:?}");
    assert!(ports.iter().all(|p| *p > 0), "{ports:?}");
    let seen = remote
        .run("printf '%s' \"$SSH_CLIENT\"", &opts(10_000))
        .expect("SSH_CLIENT");
    let port: u16 = seen
        .stdout
        .split(' ')
        .nth(1)
        .expect("port")
        .parse()
        .expect("int");
    assert!(
        remote.session_ports().contains(&port),
        "{port} not in {:?}",
        remote.session_ports()
    );
    assert!(local.session_ports().is_empty());
    // Too much input is refused before anything runs.
    let big = vec![b'x'; provhost::prim::ssh::exec::MAX_STDIN + 1];
    let err = remote
        .run_input("cat", Some(&big), &opts(10_000))
        .expect_err("too big");
    assert!(err.to_string().contains("over the limit"), "{err}");
}
