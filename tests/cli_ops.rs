//! The operator's commands around running a node, run as the binary: `init` (what it
//! makes, modes, idempotence, refusals), `completions`, `log --follow` (to the request's
//! end, `--timeout`, Ctrl-C, an unknown id), and `serve` under a stand-in for systemd — a
//! real datagram socket as `NOTIFY_SOCKET`, stderr a file named by `JOURNAL_STREAM` — with
//! READY/RELOADING/STOPPING, a SIGHUP reload and journal-style log lines; progress drawn
//! under a real pseudo-terminal (`script`) and plain lines in a pipe. Real SQLite, real
//! sim-module flows.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cmd(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_provhost"));
    c.current_dir(cwd)
        .env_remove("PROVHOST_CONFIG")
        .env_remove("PROVHOST_DATABASE_URL")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("PROVHOST_LOG", "info");
    c
}

fn provhost(cwd: &Path, args: &[&str]) -> Output {
    cmd(cwd).args(args).output().expect("run provhost")
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// A node made by `provhost init --dir` (run from the project, so its config points at
/// this checkout's scripts), with a sim computer, an image and a user; the config path.
fn sim_node(dir: &Path) -> String {
    let out = provhost(&root(), &["init", "--dir", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{}", shown(&out));
    let cfg = dir.join("provhost.toml").to_string_lossy().into_owned();
    for args in [
        vec!["add", "user", "ann"],
        vec!["add", "image", "deb", "--os", "sim"],
        vec![
            "add",
            "computer",
            "c1.sim",
            "--ip",
            "10.0.0.5",
            "--provisioning",
            "sim",
        ],
    ] {
        let mut a = vec!["--config", cfg.as_str()];
        a.extend(args);
        let out = provhost(dir, &a);
        assert!(out.status.success(), "{a:?}: {}", shown(&out));
    }
    cfg
}

fn new_request(dir: &Path, cfg: &str) {
    let out = provhost(
        dir,
        &[
            "--config",
            cfg,
            "request",
            "new",
            "--image",
            "deb",
            "--computer",
            "c1.sim",
            "--user",
            "ann",
        ],
    );
    assert!(out.status.success(), "{}", shown(&out));
}

/// Wait (bounded) for a child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {sig}");
}

/// Stdout lines of a child as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line containing `want` within `limit`; every line seen, for the message.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(want);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {want:?} within {limit:?}; saw {seen:#?}");
}

#[test]
fn init_makes_config_data_key_and_database_once_and_then_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let d = dir.to_string_lossy().into_owned();
    let out = provhost(&root(), &["init", "--dir", &d]);
    let text = shown(&out);
    assert!(out.status.success(), "{text}");
    for made in [
        format!("created  {d}/provhost.toml  configuration"),
        format!("created  {d}/data  data folder (0700)"),
        format!("created  {d}/data/ssh/id_ed25519  the management node's SSH key"),
        format!("created  {d}/data/provhost.db  SQLite database"),
    ] {
        assert!(text.contains(&made), "{made:?} in {text}");
    }
    let key = dir.join("data/ssh/id_ed25519");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("data/ssh")), 0o700);
    assert_eq!(mode(&dir.join("data")), 0o700);
    assert!(dir.join("data/ssh/id_ed25519.pub").is_file());
    let cfg = std::fs::read_to_string(dir.join("provhost.toml")).expect("config");
    let scripts = root().join("scripts").canonicalize().expect("scripts");
    assert!(
        cfg.contains(&format!("scripts = {:?}", scripts.display().to_string())),
        "{cfg}"
    );
    // The database is a real one the other commands open.
    let cfg_path = dir.join("provhost.toml").to_string_lossy().into_owned();
    let out = provhost(tmp.path(), &["--config", &cfg_path, "node", "list"]);
    assert!(out.status.success(), "{}", shown(&out));
    // What it wrote passes check.
    let out = provhost(tmp.path(), &["--config", &cfg_path, "check"]);
    assert!(out.status.success(), "{}", shown(&out));

    // Second run: everything kept, nothing changed.
    let key_before = std::fs::read(&key).expect("key");
    let cfg_before = std::fs::metadata(dir.join("provhost.toml"))
        .expect("stat")
        .mtime();
    let out = provhost(&root(), &["init", "--dir", &d]);
    let text = shown(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("created"), "{text}");
    assert_eq!(text.matches("exists   ").count(), 4, "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(std::fs::read(&key).expect("key"), key_before);
    assert_eq!(
        std::fs::metadata(dir.join("provhost.toml"))
            .expect("stat")
            .mtime(),
        cfg_before
    );
}

#[test]
fn init_refuses_to_replace_or_to_use_what_is_wrong_naming_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A folder where the configuration file goes.
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(dir.join("provhost.toml")).expect("mkdir");
    let out = provhost(&root(), &["init", "--dir", &dir.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists and is not a file"),
        "{}",
        shown(&out)
    );
    assert!(dir.join("provhost.toml").is_dir(), "left as it was");

    // A key others can read.
    let dir = tmp.path().join("b");
    let out = provhost(&root(), &["init", "--dir", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{}", shown(&out));
    let key = dir.join("data/ssh/id_ed25519");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = provhost(&root(), &["init", "--dir", &dir.to_string_lossy()]);
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())),
        "{text}"
    );
    assert_eq!(
        mode(&key),
        0o644,
        "init does not change the operator's file"
    );
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = provhost(&root(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", shown(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["provhost", "init", "completions", "follow", "request"] {
            assert!(script.contains(word), "{shell}: no {word:?}");
        }
        assert!(out.stderr.is_empty(), "{shell}: {}", shown(&out));
    }
    let out = provhost(&root(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
}

#[test]
fn log_follow_prints_until_the_request_completes_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = sim_node(tmp.path());
    new_request(tmp.path(), &cfg);
    let mut follow = cmd(tmp.path())
        .args(["--config", &cfg, "log", "1", "--follow", "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let rx = lines_of(&mut follow);
    expect_line(&rx, "-- request 1: new", Duration::from_secs(20));
    let out = provhost(tmp.path(), &["--config", &cfg, "request", "cancel", "1"]);
    assert!(out.status.success(), "{}", shown(&out));
    let out = provhost(tmp.path(), &["--config", &cfg, "serve", "--once"]);
    assert!(out.status.success(), "{}", shown(&out));
    let seen = expect_line(&rx, "request 1 ended: complete", Duration::from_secs(20));
    let all = seen.join("\n");
    assert!(all.contains("deleted"), "the load-log entries came: {all}");
    assert!(all.contains("exited"), "{all}");
    let status = wait_exit(&mut follow, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    // Not a terminal: no control codes in what a pipe got.
    assert!(!all.contains('\x1b'), "{all}");
}

#[test]
fn log_follow_ends_at_its_timeout_with_exit_1_and_at_ctrl_c_with_130() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = sim_node(tmp.path());
    new_request(tmp.path(), &cfg);
    let started = Instant::now();
    let out = provhost(
        tmp.path(),
        &["--config", &cfg, "log", "1", "--follow", "--timeout", "2"],
    );
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("request 1 still new after 2 s (--timeout)"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    let mut follow = cmd(tmp.path())
        .args(["--config", &cfg, "log", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let rx = lines_of(&mut follow);
    expect_line(&rx, "-- request 1: new", Duration::from_secs(20));
    signal(&follow, libc::SIGINT);
    let status = wait_exit(&mut follow, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");

    let out = provhost(tmp.path(), &["--config", &cfg, "log", "99", "--follow"]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no reservation 99"),
        "{}",
        shown(&out)
    );
}

/// The next notification on `sock` containing `want` (bounded).
fn expect_notify(sock: &UnixDatagram, want: &str) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains(want) {
                    return msg;
                }
                seen.push(msg);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no notification with {want:?}; got {seen:?}");
}

#[test]
fn serve_under_systemd_notifies_reloads_on_sighup_and_logs_for_the_journal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = sim_node(tmp.path());
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let log_path = tmp.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let meta = log.metadata().expect("stat");
    let mut serve = cmd(tmp.path())
        .args(["--config", &cfg, "serve"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn serve");

    let ready = expect_notify(&sock, "READY=1");
    assert!(ready.contains("STATUS=serving "), "{ready}");

    // A changed setting: named on reload, applied only by a restart.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("{text}poll_interval_secs = 7\n")).expect("edit config");
    signal(&serve, libc::SIGHUP);
    let reloading = expect_notify(&sock, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let again = expect_notify(&sock, "READY=1");
    assert!(again.contains("last reload: 0 error(s)"), "{again}");

    // A broken configuration is reported, and the daemon keeps running.
    std::fs::write(&cfg, format!("{text}poll_interval_secs = 0\n")).expect("break config");
    signal(&serve, libc::SIGHUP);
    expect_notify(&sock, "RELOADING=1");
    expect_notify(&sock, "READY=1");
    assert!(
        serve.try_wait().expect("try_wait").is_none(),
        "still running"
    );

    signal(&serve, libc::SIGTERM);
    expect_notify(&sock, "STOPPING=1");
    let status = wait_exit(&mut serve, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status:?}");

    let logged = std::fs::read_to_string(&log_path).expect("log");
    assert!(!logged.is_empty());
    for line in logged.lines() {
        assert!(
            line.starts_with("<3>")
                || line.starts_with("<4>")
                || line.starts_with("<6>")
                || line.starts_with("<7>"),
            "a journal line without its priority: {line:?}"
        );
    }
    assert!(!logged.contains('\x1b'), "{logged}");
    assert!(
        logged.contains("<6>  INFO") || logged.contains("<6> INFO"),
        "{logged}"
    );
    assert!(
        logged.contains("SIGHUP: reloaded the module scripts"),
        "{logged}"
    );
    assert!(
        logged.contains("changed [daemon]; these settings apply at the next restart"),
        "{logged}"
    );
    assert!(
        logged.contains("<3>") && logged.contains("poll_interval_secs = 0 is out of range"),
        "{logged}"
    );
    assert!(logged.contains("a restart would fail"), "{logged}");
}

/// `args` run by `script` under a pseudo-terminal (stdin, stdout and stderr a TTY); the
/// exit code and everything the terminal got.
fn at_terminal(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let line = std::iter::once(env!("CARGO_BIN_EXE_provhost"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(cwd)
        .env_remove("PROVHOST_CONFIG")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn progress_is_drawn_at_a_terminal_and_plain_lines_go_to_pipes() {
    use common::scripts::{provisioning, ScriptDir};
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            "fn copy_big(ctx, src, dst) { scp_between(local_host(), src, local_host(), dst) }",
        ),
    );
    let base = dir.scripts.parent().expect("parent").to_path_buf();
    let cfg = base.join("provhost.toml");
    std::fs::write(
        &cfg,
        "[paths]\nscripts = \"scripts\"\nstdlib = \"stdlib\"\n",
    )
    .expect("cfg");
    let cfg = cfg.to_string_lossy().into_owned();
    let src = base.join("big.bin");
    std::fs::write(&src, vec![7u8; 8 << 20]).expect("src");
    let src = src.to_string_lossy().into_owned();

    // A pipe: a line at the start and at the quarters, no control codes.
    let dst = base.join("copy1.bin").to_string_lossy().into_owned();
    let out = provhost(
        &base,
        &["--config", &cfg, "call", "p", "copy_big", &src, &dst],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}", shown(&out));
    assert!(err.contains(&format!("copy {dst}: 8388608 bytes")), "{err}");
    assert!(
        err.contains(&format!("copy {dst}: 100% (8388608 of 8388608 bytes)")),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "{err}");
    assert_eq!(std::fs::metadata(&dst).expect("copied").len(), 8 << 20);

    // A terminal: the bar instead of the lines.
    let dst2 = base.join("copy2.bin").to_string_lossy().into_owned();
    let (code, screen) = at_terminal(
        &base,
        &["--config", &cfg, "call", "p", "copy_big", &src, &dst2],
    );
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        !screen.contains("copy ") || !screen.contains("% ("),
        "no plain progress lines at a terminal: {screen}"
    );
    assert_eq!(std::fs::metadata(&dst2).expect("copied").len(), 8 << 20);

    // A long wait at a terminal: a spinner with the request's state, redrawn in place.
    let tmp = tempfile::tempdir().expect("tempdir");
    let node_cfg = sim_node(tmp.path());
    new_request(tmp.path(), &node_cfg);
    let (code, screen) = at_terminal(
        tmp.path(),
        &[
            "--config",
            &node_cfg,
            "log",
            "1",
            "--follow",
            "--timeout",
            "2",
        ],
    );
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains("following reservation 1: request 1 new ["),
        "{screen}"
    );
    assert!(
        screen.contains('\x1b'),
        "drawn with control codes: {screen:?}"
    );
    assert!(screen.contains("still new after 2 s"), "{screen}");
}
