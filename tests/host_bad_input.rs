//! Bad scripts give clear errors naming the file (and line), and the host keeps serving
//! the last good code: syntax errors, missing routines, wrong arity, endless loops, endless
//! recursion, huge strings, throws, wrong return shapes, non-UTF-8 and empty files.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripts::{provisioning, test_limits, ScriptDir};
use provhost::host::{
    CallOptions, Ctx, HostError, Kind, MemoryBackend, ReservationData, ScriptHost,
};

fn key() -> (Kind, String) {
    (Kind::Provisioning, "p".to_string())
}

fn ctx() -> Ctx {
    Ctx::new(
        ReservationData {
            reservation_id: 1,
            ..Default::default()
        },
        Arc::new(MemoryBackend::default()),
    )
}

fn call(host: &ScriptHost, routine: &str) -> Result<rhai::Dynamic, HostError> {
    host.call(
        &key(),
        routine,
        Some(&ctx()),
        vec![],
        &CallOptions::default(),
    )
}

/// A host serving a good `p` module (marker "good"), and the path of its file.
fn good_host(dir: &ScriptDir) -> (Arc<ScriptHost>, std::path::PathBuf) {
    let path = dir.write(
        "provisioning/p.rhai",
        provisioning("p", "1", r#"fn marker(ctx) { "good" }"#),
    );
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    (host, path)
}

/// Replace the file with `bad`, load it, return the error texts; the good version must
/// still answer.
fn break_with(bad: &[u8]) -> Vec<String> {
    let dir = ScriptDir::new();
    let (host, path) = good_host(&dir);
    std::fs::write(&path, bad).expect("write");
    let errs = host.load_file(&path).expect_err("bad file must not load");
    assert_eq!(
        call(&host, "marker")
            .expect("last good version still serves")
            .to_string(),
        "good"
    );
    errs.iter().map(|e| e.to_string()).collect()
}

#[test]
fn syntax_error_names_file_and_line() {
    let src = provisioning("p", "2", "fn marker(ctx) {\n  let x = ;\n}");
    let errs = break_with(src.as_bytes());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let line = src
        .lines()
        .position(|l| l.contains("let x = ;"))
        .expect("line")
        + 1;
    assert!(
        errs[0].contains(&format!("p.rhai:{line}: syntax error")),
        "{errs:?}"
    );
}

#[test]
fn missing_routine_and_wrong_arity_are_listed_together() {
    let src = provisioning("p", "2", "")
        .replace("fn capture(ctx) { true }\n", "")
        .replace("fn load(ctx)", "fn load(ctx, extra)");
    let errs = break_with(src.as_bytes());
    assert!(
        errs.iter().any(|e| e
            .ends_with("p.rhai: missing routine capture(ctx) required for kind \"provisioning\"")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains(
            "p.rhai:5: routine load takes 2 parameter(s); kind \"provisioning\" expects load(ctx)"
        )),
        "{errs:?}"
    );
}

#[test]
fn non_utf8_and_empty_files_are_refused() {
    let mut bytes = provisioning("p", "2", "").into_bytes();
    bytes.extend_from_slice(b"\n// caf\xe9\n");
    let errs = break_with(&bytes);
    assert!(errs[0].contains("p.rhai: not valid UTF-8"), "{errs:?}");
    let errs = break_with(b"  \n\n");
    assert!(errs[0].contains("p.rhai: empty file"), "{errs:?}");
}

#[test]
fn endless_loop_stops_at_the_operation_budget() {
    let dir = ScriptDir::new();
    let (host, path) = good_host(&dir);
    std::fs::write(
        &path,
        provisioning(
            "p",
            "2",
            "fn marker(ctx) { \"new\" }\nfn spin(ctx) { let i = 0; loop { i += 1; } }",
        ),
    )
    .expect("write");
    host.load_file(&path).expect("loads");
    let t = Instant::now();
    let err = call(&host, "spin").expect_err("must stop");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let text = err.to_string();
    assert!(
        text.contains("p.rhai:10: provisioning/p::spin: exceeded its operation budget"),
        "{text}"
    );
    assert_eq!(
        call(&host, "marker").expect("host still works").to_string(),
        "new"
    );
}

#[test]
fn endless_loop_stops_at_the_call_deadline() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning("p", "1", "fn spin(ctx) { loop { } }"),
    );
    let mut limits = test_limits();
    limits.max_operations = 0; // unlimited: only the deadline can stop it
    let host = dir.host(limits);
    assert!(host.load_all().is_empty());
    let t = Instant::now();
    let opts = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        cancel: None,
    };
    let err = host
        .call(&key(), "spin", Some(&ctx()), vec![], &opts)
        .expect_err("deadline");
    assert!(matches!(err, HostError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        err.to_string()
            .contains("did not finish within its deadline"),
        "{err}"
    );
}

#[test]
fn endless_recursion_stops_at_the_call_depth() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            "fn down(n) { down(n + 1) }\nfn dive(ctx) { down(0) }",
        ),
    );
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let err = call(&host, "dive").expect_err("depth");
    assert!(
        err.to_string()
            .contains("exceeded the function call depth limit"),
        "{err}"
    );
    assert!(err.to_string().contains("p.rhai:"), "{err}");
}

#[test]
fn huge_string_is_refused() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            "fn grow(ctx) { let s = \"x\"; for i in 0..64 { s += s; } s.len() }",
        ),
    );
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let err = call(&host, "grow").expect_err("size");
    let text = err.to_string();
    assert!(
        text.contains("p.rhai:9") && text.to_lowercase().contains("string"),
        "{text}"
    );
}

#[test]
fn a_throw_names_file_line_and_value() {
    let dir = ScriptDir::new();
    dir.write(
        "provisioning/p.rhai",
        provisioning(
            "p",
            "1",
            "fn helper() {\n  throw \"disk full on /var\";\n}\nfn load2(ctx) { helper() }",
        ),
    );
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let err = call(&host, "load2").expect_err("throws");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:10: provisioning/p::load2: threw disk full on /var (via helper)",
            dir.path("provisioning/p.rhai").display()
        )
    );
}

#[test]
fn wrong_return_shape_fails_the_call_with_what_was_expected() {
    let dir = ScriptDir::new();
    let src = provisioning("p", "1", "").replace(
        "fn node_status(ctx) { \"ready\" }",
        "fn node_status(ctx) { 42 }",
    );
    dir.write("provisioning/p.rhai", src);
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let err = call(&host, "node_status").expect_err("shape");
    assert!(err.to_string().ends_with("p.rhai:2: provisioning/p::node_status returned 42 (i64), expected \"ready\", \"post_load\" or \"reload\""), "{err}");
}

#[test]
fn unknown_routine_and_module_are_clear() {
    let dir = ScriptDir::new();
    let (host, _) = good_host(&dir);
    let err = host
        .call(&key(), "load", None, vec![], &CallOptions::default())
        .expect_err("arity");
    assert!(
        err.to_string()
            .contains("has no routine load() taking 0 argument(s); it defines load(ctx)"),
        "{err}"
    );
    let err = host.find_module("qemu").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no module \"qemu\" is loaded (loaded: provisioning/p)"
    );
}

#[test]
fn two_files_cannot_claim_one_module_name() {
    let dir = ScriptDir::new();
    let (host, _) = good_host(&dir);
    let other = dir.write("provisioning/q.rhai", provisioning("p", "9", ""));
    let errs = host.load_file(&other).expect_err("duplicate");
    assert!(
        errs[0]
            .to_string()
            .contains("module provisioning/p is already defined by"),
        "{}",
        errs[0]
    );
    // q.rhai is not named after the module it claims: the likely copy, with the fix.
    assert!(
        errs[0].to_string().contains(
            "q.rhai is a copy that still says name: \"p\" in its const MODULE: give it its own, name: \"q\")"
        ),
        "{}",
        errs[0]
    );
    assert_eq!(host.module(&key()).expect("p").info.version, "1");
}
