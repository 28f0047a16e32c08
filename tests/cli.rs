//! The `provhost` binary as an operator uses it: `check` on the shipped scripts and on a
//! broken copy, `call` printing a routine's result, secrets kept out of log output,
//! `docs` matching the committed reference, `--version`, a listing whose reader is gone.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::{copy_project, root};
use common::scripts::{provisioning, ScriptDir};

fn provhost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .env("PROVHOST_LOG", "info")
        .output()
        .expect("run provhost")
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
fn the_example_site_hooks_pass_check() {
    let out = provhost(&root(), &["check", "examples/site"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    for hook in [
        "site/login_banner",
        "site/install_package",
        "site/image_timezone",
        "site/audit_log",
    ] {
        assert!(stdout.contains(hook), "{stdout}");
    }
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
    // The routine's result is the password: `call` prints it redacted too.
    let shown: String = serde_json::from_slice(&out.stdout).expect("json string");
    assert_eq!(shown, "********");
    let stderr = text(&out.stderr);
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
    copy_project(dir.path());
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
    copy_project(dir.path());
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
    copy_project(dir.path());
    // A long poll interval: the request commands wake the daemon through its socket.
    // The default keeps finished requests a day (`keep_finished_secs`): the test reads the
    // finished reload's load-log, as the README's example does.
    std::fs::write(
        dir.path().join("provhost.toml"),
        "[daemon]\npoll_interval_secs = 30\n[daemon.timings]\nacknowledgetimeout = 60\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 10\nconnect_poll = 1\n",
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

/// Secrets with `"`, `\` and `'`, and a short one: a script logs them raw, shell-quoted and
/// inside a debug-formatted value, returns one and throws one.
const LEAKY: &str = r#"
fn secrets() { [`pa"ss\wo'rd-X1`, `k7Q`] }
fn leak(ctx) {
    let s = secrets()[0];
    secret::remember(s);
    secret::remember(secrets()[1]);
    let inner = s;
    inner.replace("'", "'\\''");
    let q = "'" + inner + "'";
    log::info(`raw ${s}`);
    log::info(`quoted: echo ${q} | chpasswd`);
    log::info(`short pin k7Q here`);
    log::warn(`as debug ${[s]}`);
    ctx.loadlog("info", `load-log ${s}`);
    s
}
fn leak_throw(ctx) {
    let s = secrets()[0];
    secret::remember(s);
    throw `failed with ${s}`;
}
"#;

fn leak_forms() -> Vec<String> {
    let s = r#"pa"ss\wo'rd-X1"#;
    let json = serde_json::to_string(s).expect("json");
    vec![
        s.to_string(),
        json.trim_matches('"').to_string(),
        s.replace('\'', "'\\''"),
        format!("{s:?}").trim_matches('"').to_string(),
        "k7Q".to_string(),
    ]
}

#[test]
fn secrets_with_quotes_and_backslashes_stay_out_of_text_and_json_logs_and_call_output() {
    let dir = ScriptDir::new();
    dir.write("provisioning/p.rhai", provisioning("p", "1", LEAKY));
    let cfg = config_for(&dir);
    let cfg = cfg.to_str().expect("utf8");
    let cwd = dir.scripts.parent().expect("p");
    for format in ["text", "json"] {
        let out = provhost(
            cwd,
            &["--log-format", format, "--config", cfg, "call", "p", "leak"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        for form in leak_forms() {
            assert!(
                !stderr.contains(&form),
                "{format}: {form:?} leaked into the log: {stderr}"
            );
            assert!(
                !stdout.contains(&form),
                "{format}: {form:?} leaked into call output: {stdout}"
            );
        }
        assert!(stdout.contains("********"), "{stdout}");
        for want in [
            "raw ********",
            "echo '********' | chpasswd",
            "short pin ******** here",
            "load-log ********",
        ] {
            assert!(
                stderr.contains(want),
                "{format}: {want:?} missing: {stderr}"
            );
        }
        if format == "json" {
            for line in stderr.lines().filter(|l| l.starts_with('{')) {
                let v: serde_json::Value =
                    serde_json::from_str(line).expect("each log line is JSON");
                assert!(v["fields"].is_object() && v["level"].is_string(), "{line}");
            }
        }
        let out = provhost(
            cwd,
            &[
                "--log-format",
                format,
                "--config",
                cfg,
                "call",
                "p",
                "leak_throw",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("failed with ********"), "{stderr}");
        for form in leak_forms() {
            assert!(
                !stderr.contains(&form),
                "{format}: {form:?} leaked into the error: {stderr}"
            );
        }
    }
}

#[test]
fn notes_over_the_string_limit_fail_cleanly_and_memory_stays_bounded() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            r#"fn hoard(ctx) {
    let s = "x";
    while s.len() < 16 * 1024 * 1024 { s += s; }
    for i in 0..20 { ctx.note(`n${i}`, s.sub_string(i, s.len() - 20)); }
    "kept all"
}
fn big_output(ctx) { local_host().run("true", #{ max_output: 1024 * 1024 * 1024 }) }"#,
        ),
    );
    let cfg = config_for(&dir);
    // Reaped by wait4 below (which also gives its peak RSS).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args([
            "--config",
            cfg.to_str().expect("utf8"),
            "call",
            "p",
            "hoard",
        ])
        .current_dir(dir.scripts.parent().expect("p"))
        .env_remove("PROVHOST_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn provhost");
    let pid = child.id() as libc::pid_t;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.expect("stderr"), &mut stderr).expect("read");
    let mut status = 0;
    // SAFETY: waiting for our own child; rusage is a plain struct filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1,
        "status {status}: {stderr}"
    );
    assert!(
        stderr.contains("notes would hold") && stderr.contains("max_string_size"),
        "{stderr}"
    );
    let max_rss_mb = usage.ru_maxrss / 1024;
    eprintln!("provhost call hoard: max RSS {max_rss_mb} MB");
    assert!(
        max_rss_mb < 200,
        "RSS {max_rss_mb} MB: notes are not bounded"
    );

    let out = provhost(
        dir.scripts.parent().expect("p"),
        &[
            "--config",
            cfg.to_str().expect("utf8"),
            "call",
            "p",
            "big_output",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_output 1073741824 is over the string size limit"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_scripts_folder_writable_by_others_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = ScriptDir::new();
    dir.write("provisioning/p.rhai", provisioning("p", "1", ""));
    let cfg = config_for(&dir);
    let os_dir = dir.scripts.join("provisioning");
    std::fs::set_permissions(&os_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = provhost(
        dir.scripts.parent().expect("p"),
        &["--config", cfg.to_str().expect("utf8"), "check"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "check exits 3 when it finds errors"
    );
    let stdout = text(&out.stdout) + text(&out.stderr).as_str();
    assert!(
        stdout.contains("writable by everyone")
            && stdout.contains(&format!("chmod go-w {}", os_dir.display())),
        "{stdout}"
    );
    std::fs::set_permissions(&os_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = provhost(
        dir.scripts.parent().expect("p"),
        &["--config", cfg.to_str().expect("utf8"), "check"],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// docs/customizing-post-load.md, followed while `provhost serve` runs: a hook copied into
/// `scripts/site/` runs after the OS module's post_load; an edit goes live without a
/// restart and the next load (the reload after the reservation) uses it; a hook with
/// `on_failure: "warn"` that throws leaves a warning and the load goes on.
#[test]
fn a_site_hook_edited_while_serve_runs_is_used_by_the_next_reservation() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_project(dir.path());
    std::fs::write(
        dir.path().join("provhost.toml"),
        "[daemon]\npoll_interval_secs = 30\n[daemon.timings]\nacknowledgetimeout = 60\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 10\nconnect_poll = 1\n",
    )
    .expect("config");
    let hook = dir.path().join("scripts/site/banner.rhai");
    std::fs::create_dir_all(hook.parent().expect("site")).expect("site dir");
    let hook_v1 = r#"const MODULE = #{ kind: "site", name: "banner", version: "1" };
fn post_load(ctx) { ctx.loadlog("info", `banner v1 on ${ctx.computer_node_name} (${ctx.image_name})`); true }
"#;
    std::fs::write(&hook, hook_v1).expect("hook v1");
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
    let serve_log = dir.path().join("serve.log");
    let log_file = std::fs::File::create(&serve_log).expect("log");
    let _serve = common::procs::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_provhost"))
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("PROVHOST_CONFIG")
            .env("PROVHOST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("serve"),
    );
    let wait = |what: &str, check: &dyn Fn() -> Option<String>| {
        let t = std::time::Instant::now();
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(60),
                "waited 60 s for {what}; daemon log:\n{}",
                std::fs::read_to_string(&serve_log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // `log` of a reservation that does not exist yet (the reload's) exits non-zero: not yet.
    let log_has = |reservation: &'static str, word: &'static str| {
        let dir = dir.path();
        move || {
            let out = provhost(dir, &["log", reservation]);
            let log = text(&out.stdout);
            (out.status.success() && log.contains(word)).then_some(log)
        }
    };
    wait("the wake socket", &|| {
        dir.path()
            .join("data/provhost.wake")
            .exists()
            .then_some(String::new())
    });
    run(&[
        "request",
        "new",
        "--image",
        "deb",
        "--computer",
        "sim1",
        "--user",
        "ann",
    ]);
    let log1 = wait("reservation 1 ready", &log_has("1", "acknowledgetimeout"));
    assert!(log1.contains("banner v1 on sim1"), "{log1}");

    // The site edits its hook while the daemon runs: a new message, and a failure that
    // should only warn.
    std::fs::write(
        &hook,
        r#"const MODULE = #{ kind: "site", name: "banner", version: "2", on_failure: "warn" };
fn post_load(ctx) {
    ctx.loadlog("info", `banner v2 on ${ctx.computer_node_name}`);
    throw "the banner server is down";
}
"#,
    )
    .expect("hook v2");
    wait("the reload of the hook", &|| {
        let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
        log.lines()
            .find(|l| {
                l.contains("module reloaded")
                    && l.contains("site/banner")
                    && l.contains("version=\"2\"")
            })
            .map(str::to_string)
    });
    run(&["request", "connect", "1", "--ip", "192.0.2.9"]);
    wait("reservation 1 in use", &log_has("1", "connected"));
    run(&["request", "end", "1"]);
    // The next load of the computer (the reload VCL inserts after a reservation) runs v2.
    let log2 = wait("the reload's nodeready", &log_has("2", "nodeready"));
    assert!(log2.contains("banner v2 on sim1"), "{log2}");
    assert!(
        log2.contains("site hook site/banner post_load failed (on_failure: warn)")
            && log2.contains("the banner server is down"),
        "{log2}"
    );
    assert!(!log2.contains("banner v1"), "{log2}");
}

/// A listing piped into a reader that stops early (`provhost log 1 | grep -q …`, `| head`)
/// ends as Unix tools do — by SIGPIPE, quietly — instead of panicking on the closed pipe.
#[test]
fn a_listing_whose_reader_is_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("loadstates")
        .current_dir(root())
        .env_remove("PROVHOST_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run provhost loadstates");
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
