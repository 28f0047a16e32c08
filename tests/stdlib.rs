//! The shipped `stdlib/` modules: shell quoting survives a real `/bin/sh`, key=value
//! parsing reads real-world files, and retry is bounded and cannot swallow a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::host::engine::CallGuard;
use provhost::host::{HostOptions, Limits, ScriptHost};

fn host() -> Arc<ScriptHost> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ScriptHost::new(
        HostOptions {
            scripts_dir: root.join("scripts"),
            stdlib_dir: root.join("stdlib"),
            limits: Limits::default(),
        },
        &[],
    )
}

fn eval<T: Clone + Send + Sync + 'static>(script: &str) -> Result<T, String> {
    let _g = CallGuard::new(Duration::from_secs(10), None);
    host().engine().eval::<T>(script).map_err(|e| e.to_string())
}

#[test]
fn shell_quote_round_trips_through_a_real_shell() {
    let nasty = [
        "plain",
        "with space",
        "it's",
        "$(touch /tmp/provhost-pwned)",
        "`id`; rm -rf / & echo | cat > x",
        "new\nline",
        "tab\tand \\ backslash \"double\"",
        "*?[glob]~",
        "ünïcödé ✓",
        "-n",
        "",
        "'",
        "''\\''",
    ];
    for s in nasty {
        let quoted: String = eval(&format!(
            "import \"shell\" as shell; shell::quote({})",
            rhai_literal(s)
        ))
        .expect("quote");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s' {quoted}"))
            .output()
            .expect("run sh");
        assert!(out.status.success(), "sh failed for {quoted}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            s,
            "quoted as {quoted}"
        );
    }
    assert!(!std::path::Path::new("/tmp/provhost-pwned").exists());
    let joined: String =
        eval(r#"import "shell" as shell; shell::join(["useradd", "-m", "a b", "x'y"])"#)
            .expect("join");
    assert_eq!(joined, r#"useradd -m 'a b' 'x'\''y'"#);
    let err =
        eval::<String>(r#"import "shell" as shell; shell::quote("a\x00b")"#).expect_err("NUL");
    assert!(err.contains("NUL byte"), "{err}");
    let assign: String =
        eval(r#"import "shell" as shell; shell::assign("PW", "a b")"#).expect("assign");
    assert_eq!(assign, "PW='a b'");
    assert!(eval::<String>(r#"import "shell" as shell; shell::assign("1x;rm", "v")"#).is_err());
}

fn rhai_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn kv_parse_reads_os_release() {
    let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n# comment\n\nID=debian\nexport EXTRA = 'quoted value' \nHOME_URL=\"https://www.debian.org/\"\nnot a pair\nESC=\"say \\\"hi\\\"\"\n";
    let script = format!("import \"kv\" as kv; kv::parse({})", rhai_literal(text));
    let map: rhai::Map = eval(&script).expect("parse");
    let get = |k: &str| map.get(k).map(|v| v.to_string()).unwrap_or_default();
    assert_eq!(get("PRETTY_NAME"), "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(get("ID"), "debian");
    assert_eq!(get("VERSION_ID"), "12");
    assert_eq!(get("EXTRA"), "quoted value");
    assert_eq!(get("ESC"), "say \"hi\"");
    assert_eq!(map.len(), 7, "{map:?}");
}

#[test]
fn retry_is_bounded_and_reports_the_last_error() {
    let n: i64 = eval(r#"import "retry" as retry; let n = 0; retry::times(5, 0, || { n += 1; if n < 3 { throw "not yet" } n })"#).expect("retry");
    assert_eq!(n, 3);
    let err =
        eval::<i64>(r#"import "retry" as retry; retry::times(3, 0.01, || { throw "still down" })"#)
            .expect_err("gives up");
    assert!(
        err.contains("gave up after 3 attempt(s): still down"),
        "{err}"
    );
    let err = eval::<bool>(r#"import "retry" as retry; retry::times(3, 0, || false)"#)
        .expect_err("false is failure");
    assert!(err.contains("attempt 3 returned false"), "{err}");
    let err = eval::<i64>(r#"import "retry" as retry; retry::times(1000000, 0, || 1)"#)
        .expect_err("bound");
    assert!(err.contains("from 1 to 100"), "{err}");
}

#[test]
fn retry_cannot_swallow_the_routine_deadline() {
    let h = host();
    let _g = CallGuard::new(Duration::from_millis(200), None);
    let t = Instant::now();
    let err = h
        .engine()
        .eval::<i64>(r#"import "retry" as retry; retry::times(100, 1, || { throw "down" })"#)
        .expect_err("deadline");
    let mut inner = *err;
    while let rhai::EvalAltResult::ErrorInFunctionCall(_, _, e, _)
    | rhai::EvalAltResult::ErrorInModule(_, e, _) = inner
    {
        inner = *e;
    }
    assert!(
        matches!(&inner, rhai::EvalAltResult::ErrorTerminated(token, _) if token.to_string() == "provhost:deadline"),
        "{inner:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
