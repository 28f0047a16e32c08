//! The `provhost` binary as an operator uses it: `check` on the shipped scripts and on a
//! broken copy, `call` printing a routine's result, secrets kept out of log output,
//! `docs` matching the committed reference, `--version`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::scripts::{provisioning, ScriptDir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn provhost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .env("PROVHOST_LOG", "info")
        .output()
        .expect("run provhost")
}

/// `scripts/` and `stdlib/` of this project copied into `dir` (a fresh machine's layout).
fn copy_project_scripts(dir: &Path) {
    for sub in ["scripts", "stdlib"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(root().join(sub))
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copying {sub}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config file pointing at a temp script dir.
fn config_for(dir: &ScriptDir) -> PathBuf {
    let cfg = dir.scripts.parent().expect("parent").join("provhost.toml");
    std::fs::write(
        &cfg,
        "[paths]\nscripts = \"scripts\"\nstdlib = \"stdlib\"\n",
    )
    .expect("config");
    cfg
}

#[test]
fn check_passes_on_the_shipped_scripts() {
    let out = provhost(&root(), &["check", "scripts", "stdlib"]);
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(", 0 error(s)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_fails_with_file_and_line_on_a_broken_copy() {
    let dir = ScriptDir::new();
    let good = dir.write("provisioning/good.rhai", provisioning("good", "1", ""));
    let broken = dir.write("os/broken.rhai", "const MODULE = #{ kind: \"os\", name: \"broken\", version: \"1\" };\nfn post_load(ctx) {\n  let = 3;\n}\n");
    let cfg = config_for(&dir);
    let out = provhost(
        dir.scripts.parent().expect("p"),
        &["--config", cfg.to_str().expect("utf8"), "check"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!("ok     {}  provisioning/good v1", good.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("error  {}:3: syntax error", broken.display())),
        "{stdout}"
    );
    assert!(stdout.contains("1 file(s) ok, 1 error(s)"), "{stdout}");
}

/// A missing `}` makes Rhai complain about a later line; `check` adds where the unclosed
/// brace was opened. With a saved good copy in the data folder, `check` also says that a
/// daemon started now would serve it.
#[test]
fn check_names_an_unclosed_brace_and_the_saved_good_copy() {
    let dir = ScriptDir::new();
    let body = "fn helper(ctx) {\n    if ctx.x {\n        1\n}\n\nfn other(ctx) {\n    2\n}\n";
    let good = provisioning("bad", "1", "");
    let path = dir.write("provisioning/bad.rhai", &good);
    let cfg = config_for(&dir);
    let root_dir = dir.scripts.parent().expect("p");
    // The saved copy a daemon would have made after the last successful load.
    let store =
        provhost::host::good::GoodStore::new(provhost::host::good::dir_in(&root_dir.join("data")));
    assert!(store
        .save(
            std::path::Path::new("provisioning/bad.rhai"),
            "provisioning/bad",
            "1",
            &good,
            &dir.stdlib
        )
        .expect("save"));
    std::fs::write(&path, format!("{good}\n{body}")).expect("break");
    let out = provhost(
        root_dir,
        &["--config", cfg.to_str().expect("utf8"), "check"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let lines = good.lines().count();
    assert!(
        stdout.contains(&format!(
            "likely cause: unclosed `{{` opened at line {}",
            lines + 3
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "a daemon started now would serve its last good version, provisioning/bad v1"
        ),
        "{stdout}"
    );
    // A tampered copy is refused with a message naming it.
    let entry = store.entry_path(std::path::Path::new("provisioning/bad.rhai"));
    let tampered =
        std::fs::read_to_string(&entry)
            .expect("read")
            .replacen("node_status", "node_statux", 1);
    std::fs::write(&entry, tampered).expect("tamper");
    let stdout = text(
        &provhost(
            root_dir,
            &["--config", cfg.to_str().expect("utf8"), "check"],
        )
        .stdout,
    );
    assert!(
        stdout.contains("does not match its recorded sha256")
            && stdout.contains("no usable saved good copy"),
        "{stdout}"
    );
}

#[test]
fn call_prints_the_result_and_keeps_secrets_out_of_logs() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            r#"fn hello(ctx, who) { ctx.loadlog("info", `hello ${who}`); #{ reservation: ctx.reservation_id, image: ctx.image_name, who: who } }
fn pw(ctx) { let p = secret::password(16); log::info(`generated ${p}`); ctx.loadlog("info", `root password ${p}`); p }"#,
        ),
    );
    let fixture = dir.scripts.parent().expect("p").join("ctx.toml");
    std::fs::write(&fixture, "reservation_id = 42\nimage_name = \"deb12-v3\"\n").expect("fixture");
    let cfg = config_for(&dir);
    let cfg = cfg.to_str().expect("utf8");
    let out = provhost(
        dir.scripts.parent().expect("p"),
        &[
            "--config",
            cfg,
            "call",
            "p",
            "hello",
            "--ctx",
            fixture.to_str().expect("utf8"),
            "ann",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json result");
    assert_eq!(
        v,
        serde_json::json!({ "reservation": 42, "image": "deb12-v3", "who": "ann" })
    );
    assert!(
        text(&out.stderr).contains("hello ann"),
        "load-log entry is shown: {}",
        text(&out.stderr)
    );

    let out = provhost(
        dir.scripts.parent().expect("p"),
        &["--config", cfg, "call", "provisioning/p", "pw"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pw: String = serde_json::from_slice(&out.stdout).expect("json string");
    assert_eq!(pw.len(), 16);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(&pw), "secret leaked into logs: {stderr}");
    assert!(
        stderr.contains("generated ********") && stderr.contains("root password ********"),
        "{stderr}"
    );

    let out = provhost(
        dir.scripts.parent().expect("p"),
        &["--config", cfg, "call", "p", "nope"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a routine that does not exist is a usage error"
    );
    assert!(
        text(&out.stderr).contains("has no routine nope() taking 0 argument(s)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn committed_script_api_reference_is_current() {
    let out = provhost(&root(), &["docs", "--out", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed =
        std::fs::read_to_string(root().join("docs/script-api.md")).expect("docs/script-api.md");
    assert!(
        text(&out.stdout) == committed,
        "docs/script-api.md is stale: run `make docs`"
    );
}

#[test]
fn version_is_printed() {
    let out = provhost(&root(), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("provhost {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn demo_sim_runs_the_life_cycle_on_a_fresh_machine() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_project_scripts(dir.path());
    let out = provhost(dir.path(), &["demo", "--sim"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for step in [
        "nodeready",
        "acknowledgetimeout",
        "connected",
        "loadimagevmware",
        "sim1.demo is available again",
    ] {
        assert!(stdout.contains(step), "demo output lacks {step}:\n{stdout}");
    }
    assert!(stdout.contains("post_load,grant_access:192.0.2.10,add_user:demo,revoke_access,delete_user:demo,sanitize,post_load"), "{stdout}");
}

/// Where real VMs cannot run (here: no QEMU on PATH), `provhost demo` says why and runs the
/// simulator instead, to the end.
#[test]
fn demo_falls_back_to_the_simulator_and_says_why() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_project_scripts(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("PROVHOST_CONFIG")
        .env("PATH", dir.path().join("no-tools"))
        .output()
        .expect("run provhost");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("cannot run a real VM here (")
            && stdout.contains("falling back to the simulator (")
            && stdout.contains(" demo --sim)"),
        "{stdout}"
    );
    assert!(stdout.contains("sim1.demo is available again"), "{stdout}");
}

/// The operator's path on the embedded default (SQLite in the data folder): `db init`,
/// `add`, `serve` in the background, `request new|connect|end`, `log`.
#[test]
fn serve_request_and_log_show_the_life_cycle() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_project_scripts(dir.path());
    // A long poll interval: the request commands wake the daemon through its socket.
    // Finished requests are kept: the test reads the finished reload's load-log.
    std::fs::write(
        dir.path().join("provhost.toml"),
        "[daemon]\npoll_interval_secs = 30\nremove_finished = false\n[daemon.timings]\nacknowledgetimeout = 60\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 10\nconnect_poll = 1\n",
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = provhost(dir.path(), args);
        assert!(
            out.status.success(),
            "provhost {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    run(&["db", "init"]);
    run(&["add", "user", "ann"]);
    run(&["add", "image", "deb", "--os", "sim"]);
    run(&[
        "add",
        "computer",
        "sim1",
        "--ip",
        "192.0.2.5",
        "--provisioning",
        "sim",
    ]);

    let log_file = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut serve = common::procs::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_provhost"))
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("PROVHOST_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("serve"),
    );
    // Wait for the wake socket: the daemon is up.
    let t = std::time::Instant::now();
    while !dir.path().join("data/provhost.wake").exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "serve did not start: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = run(&[
        "request",
        "new",
        "--image",
        "deb",
        "--computer",
        "sim1",
        "--user",
        "ann",
    ]);
    assert!(out.starts_with("request 1 (reservation 1)"), "{out}");
    let wait_for = |reservation: &str, word: &str| {
        let t = std::time::Instant::now();
        loop {
            // Until the daemon makes it, a reservation does not exist (exit 2).
            let log = text(&provhost(dir.path(), &["log", reservation]).stdout);
            if log.contains(word) {
                return log;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "no {word} in:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_for("1", "acknowledgetimeout");
    run(&["request", "connect", "1", "--ip", "192.0.2.9"]);
    wait_for("1", "connected");
    run(&["request", "end", "1"]);
    wait_for("2", "nodeready");
    let log = run(&["log", "1"]);
    let mut at = 0;
    for step in [
        "statuscheck",
        "startload",
        "nodeready",
        "reserved",
        "addinguser",
        "connected",
        "timeout",
        "loadimagevmware",
    ] {
        let found = log[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} missing after position {at}:\n{log}"));
        at += found;
    }
    // A clean stop: SIGTERM, exit 0, nothing left pending.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM) };
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = serve.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
    let list = run(&["request", "list", "--all"]);
    assert!(!list.contains("pending"), "{list}");
}
