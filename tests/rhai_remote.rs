//! Scripts using remote execution: a routine reaches the reservation's computer through
//! `ctx.computer()`, runs commands, copies files; the routine's deadline stops a long
//! remote command; `provhost call` runs such a routine against a real sshd.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs;
use common::sshd::Sshd;
use provhost::host::{
    CallOptions, Ctx, HostError, HostOptions, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::remote::RemotePrims;

const SCRIPT: &str = r#"
const MODULE = #{ kind: "site", name: "remote", version: "1" };

fn post_load(ctx) { true }

fn probe(ctx) {
    let h = ctx.computer();
    let r = h.run("echo hi; echo err >&2; exit 2");
    let t = "none";
    try { h.run("sleep 4324", #{ timeout: 0.5 }); } catch (e) { t = e; }
    let local = local_host().run("echo local");
    let raw = h.run("echo raw", #{ kill_on_timeout: false, max_output: 100 });
    if raw.stdout != "raw\n" { throw `raw: ${raw.stdout}`; }
    #{ code: r.code, out: r.stdout, err: r.stderr, timeout: t, local: local.stdout, name: h.name,
       up: h.wait_for_ssh(#{ timeout: 5 }) }
}

fn copy(ctx, src, dst) {
    let h = ctx.computer();
    let seen = [];
    let rep = h.upload(src, dst, #{ sha256: true, progress: |done, total| seen.push(done) });
    #{ bytes: rep.bytes, sha: rep.sha256, calls: seen.len(), last: seen[seen.len() - 1] }
}

fn long(ctx) { ctx.computer().run("sleep 4325", #{ timeout: 60 }) }

fn bad_option(ctx) { ctx.computer().run("true", #{ timeoot: 5 }) }
"#;

fn setup(s: &Sshd) -> (Arc<ScriptHost>, Ctx, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts/site")).expect("mkdir");
    std::fs::write(dir.path().join("scripts/site/remote.rhai"), SCRIPT).expect("script");
    s.trust();
    let opts = HostOptions {
        scripts_dir: dir.path().join("scripts"),
        stdlib_dir: dir.path().join("stdlib"),
        limits: Limits::default(),
    };
    let host = ScriptHost::new(opts, &[Arc::new(RemotePrims::new(s.config()))]);
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let ctx = Ctx::new(
        ReservationData {
            computer_private_ip: "127.0.0.1".into(),
            computer_ssh_port: i64::from(s.port),
            ..ReservationData::default()
        },
        Arc::new(MemoryBackend::default()),
    );
    (host, ctx, dir)
}

#[test]
fn a_routine_runs_commands_and_copies_on_the_reservations_computer() {
    let s = Sshd::start();
    let (host, ctx, _dir) = setup(&s);
    let key = host.find_module("site/remote").expect("module");
    let v = host
        .call(&key, "probe", Some(&ctx), vec![], &CallOptions::default())
        .expect("probe");
    let m = v.cast::<rhai::Map>();
    let get = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
    assert_eq!(get("code"), "2");
    assert_eq!(get("out"), "hi\n");
    assert_eq!(get("err"), "err\n");
    assert!(
        get("timeout").contains("timed out after 0.5 s"),
        "{}",
        get("timeout")
    );
    assert_eq!(get("local"), "local\n");
    assert_eq!(get("up"), "true");
    assert_eq!(get("name"), format!("{}@127.0.0.1:{}", s.user, s.port));

    let src = s.path("payload.bin");
    std::fs::write(&src, vec![7u8; 3 << 20]).expect("payload");
    let dst = s.path("copied payload.bin");
    let v = host
        .call(
            &key,
            "copy",
            Some(&ctx),
            vec![
                src.display().to_string().into(),
                dst.display().to_string().into(),
            ],
            &CallOptions::default(),
        )
        .expect("copy");
    let m = v.cast::<rhai::Map>();
    assert_eq!(
        m.get("bytes").map(|v| v.to_string()),
        Some((3 << 20).to_string())
    );
    assert_eq!(
        m.get("last").map(|v| v.to_string()),
        Some((3 << 20).to_string())
    );
    assert_eq!(m.get("sha").map(|v| v.to_string().len()), Some(64));
    assert_eq!(std::fs::read(&dst).expect("dst").len(), 3 << 20);

    let err = host
        .call(
            &key,
            "bad_option",
            Some(&ctx),
            vec![],
            &CallOptions::default(),
        )
        .expect_err("typo");
    assert!(
        err.to_string().contains("unknown option \"timeoot\""),
        "{err}"
    );
}

#[test]
fn the_routine_deadline_stops_a_long_remote_command() {
    let s = Sshd::start();
    let (host, ctx, _dir) = setup(&s);
    let key = host.find_module("site/remote").expect("module");
    let start = Instant::now();
    let err = host
        .call(
            &key,
            "long",
            Some(&ctx),
            vec![],
            &CallOptions {
                timeout: Some(Duration::from_millis(800)),
                cancel: None,
            },
        )
        .expect_err("deadline");
    assert!(matches!(err, HostError::Timeout { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let gone = Instant::now() + Duration::from_secs(5);
    while procs::running("sleep 4325") && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!procs::running("sleep 4325"), "remote command killed");
}

#[test]
fn provhost_call_runs_a_routine_against_a_real_host() {
    let s = Sshd::start();
    s.trust();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts/site")).expect("mkdir");
    std::fs::write(dir.path().join("scripts/site/remote.rhai"), SCRIPT).expect("script");
    let config = format!(
        "[paths]\nscripts = \"scripts\"\nstdlib = \"stdlib\"\n\n[ssh]\nuser = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n",
        s.user,
        s.client_key.display(),
        s.known_hosts.display()
    );
    std::fs::write(dir.path().join("provhost.toml"), config).expect("config");
    std::fs::write(
        dir.path().join("ctx.toml"),
        format!(
            "computer_private_ip = \"127.0.0.1\"\ncomputer_ssh_port = {}\n",
            s.port
        ),
    )
    .expect("ctx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_provhost"))
        .current_dir(dir.path())
        .args([
            "--config",
            "provhost.toml",
            "call",
            "site/remote",
            "probe",
            "--ctx",
            "ctx.toml",
        ])
        .output()
        .expect("provhost call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON result");
    assert_eq!(v["out"], "hi\n");
    assert_eq!(v["code"], 2);
}

#[test]
fn a_vm_host_named_local_in_the_database_is_the_management_node_only_by_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts/site")).expect("mkdir");
    std::fs::write(
        dir.path().join("scripts/site/vmh.rhai"),
        r#"const MODULE = #{ kind: "site", name: "vmh", version: "1" };
fn post_load(ctx) { true }
fn where_(ctx) { let h = ctx.vmhost(); `${h.is_local}` }"#,
    )
    .expect("script");
    let host_with = |local_vmhost: &str| {
        let opts = HostOptions {
            scripts_dir: dir.path().join("scripts"),
            stdlib_dir: dir.path().join("stdlib"),
            limits: Limits::default(),
        };
        let cfg = provhost::prim::ssh::SshConfig {
            local_vmhost: local_vmhost.into(),
            ..Default::default()
        };
        let host = ScriptHost::new(opts, &[Arc::new(RemotePrims::new(cfg))]);
        assert!(host.load_all().is_empty());
        host
    };
    let ctx = Ctx::new(
        ReservationData {
            vmhost_hostname: "local".into(),
            ..ReservationData::default()
        },
        Arc::new(MemoryBackend::default()),
    );
    let call = |host: &ScriptHost| {
        let key = host.find_module("site/vmh").expect("module");
        host.call(&key, "where_", Some(&ctx), vec![], &CallOptions::default())
    };
    // Not configured: the database name alone is refused, saying what to configure.
    let err = call(&host_with("")).expect_err("refused").to_string();
    assert!(
        err.contains("local_vmhost = \\\"local\\\"") || err.contains("local_vmhost = \"local\""),
        "{err}"
    );
    // Configured in provhost.toml: the management node.
    assert_eq!(
        call(&host_with("local")).expect("local").to_string(),
        "true"
    );
    // Another configured name: "local" in the database is still refused.
    assert!(call(&host_with("vmh-self")).is_err());
}
