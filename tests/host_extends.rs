//! Script inheritance (`MODULE.extends`, `super::`) through the script host and the
//! `provhost check` binary: a chain resolves whatever order its files load in, a child's
//! override and its call of the parent's version work and inherited code dispatches to the
//! child, an edit of the parent reaches its loaded children, and a cycle, a missing parent
//! and a parent of another kind are refused with messages naming the files; a site hook
//! inherits `on_failure`, and a parent others may write is refused like any script.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::scripts::{provisioning, test_limits, wait_event, ScriptDir};
use provhost::host::{
    AddUserAt, CallOptions, Ctx, Kind, MemoryBackend, OnFailure, ReloadEvent, ReservationData,
    ScriptHost,
};

/// A complete OS module named `name`: each routine records `name:routine` in the load-log;
/// `who()` is a helper children override; `hello(ctx)` calls it.
fn base_os(name: &str, version: &str) -> String {
    format!(
        r#"const MODULE = #{{ kind: "os", name: "{name}", version: "{version}", add_user_at: "ready" }};
const FLAVOUR = "{name}";
fn note(ctx, what) {{ ctx.loadlog("info", what); true }}
fn who() {{ "{name}" }}
fn hello(ctx) {{ `${{global::FLAVOUR}}/${{who()}}` }}
fn post_load(ctx) {{ note(ctx, "{name}:post_load:" + who()) }}
fn add_user(ctx, user) {{ note(ctx, "{name}:add_user") }}
fn delete_user(ctx, user) {{ note(ctx, "{name}:delete_user") }}
fn grant_access(ctx) {{ note(ctx, "{name}:grant_access") }}
fn revoke_access(ctx) {{ note(ctx, "{name}:revoke_access") }}
fn set_password(ctx, user, password) {{ note(ctx, "{name}:set_password") }}
fn sanitize(ctx) {{ note(ctx, "{name}:sanitize") }}
fn pre_capture(ctx) {{ note(ctx, "{name}:pre_capture") }}
fn is_ready(ctx) {{ true }}
fn boom(ctx) {{
    throw "base went boom";
}}
"#
    )
}

/// `mid` extends `base`: overrides post_load (calling the parent's) and the helper `who`.
const MID: &str = r#"const MODULE = #{ kind: "os", name: "mid", version: "1", extends: "base" };
const FLAVOUR = "mid";
fn who() { "mid>" + super::who() }
fn extra(ctx) { "mid-extra" }
fn post_load(ctx) {
    note(ctx, "mid:before");
    super::post_load(ctx)
}
"#;

/// `aleaf` extends `mid` (its file sorts before its parents: they load on demand).
const LEAF: &str = r#"const MODULE = #{ kind: "os", name: "aleaf", version: "7", extends: "os/mid" };
fn who() { "leaf>" + super::who() }
fn extra(ctx) { "leaf+" + super::extra(ctx) }
fn sanitize(ctx) {
    note(ctx, "leaf:sanitize");
    super::sanitize(ctx);
    true
}
"#;

struct Calls {
    host: Arc<ScriptHost>,
    backend: Arc<MemoryBackend>,
    /// Load-log entries already returned by `take`.
    seen: std::cell::Cell<usize>,
}

impl Calls {
    fn new(host: Arc<ScriptHost>) -> Self {
        Calls {
            host,
            backend: Arc::new(MemoryBackend::default()),
            seen: std::cell::Cell::new(0),
        }
    }

    fn call(&self, module: &str, routine: &str) -> Result<String, String> {
        let key = self.host.find_module(module).map_err(|e| e.to_string())?;
        let ctx = Ctx::new(
            ReservationData {
                reservation_id: 5,
                ..ReservationData::default()
            },
            self.backend.clone(),
        );
        self.host
            .call(&key, routine, Some(&ctx), vec![], &CallOptions::default())
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }

    /// Load-log texts since the last call of `take`.
    fn take(&self) -> Vec<String> {
        let all = self.backend.entries();
        let from = self.seen.get().min(all.len());
        self.seen.set(all.len());
        all[from..].iter().map(|(_, t)| t.clone()).collect()
    }
}

#[test]
fn an_extends_chain_resolves_overrides_and_calls_the_parent() {
    let dir = ScriptDir::new();
    dir.write("os/base.rhai", base_os("base", "1"));
    dir.write("os/mid.rhai", MID);
    let leaf_path = dir.write("os/aleaf.rhai", LEAF);
    let host = dir.host(test_limits());
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");

    let leaf = host
        .module(&(Kind::Os, "aleaf".into()))
        .expect("leaf loaded");
    // Defined only by base, yet the contract is met; add_user_at is inherited.
    assert_eq!(leaf.info.add_user_at, AddUserAt::Ready);
    assert_eq!(
        leaf.ancestors,
        vec![
            (Kind::Os, "mid".to_string()),
            (Kind::Os, "base".to_string())
        ]
    );
    assert!(host.has_routine(&(Kind::Os, "aleaf".into()), "grant_access", 1));

    let c = Calls::new(Arc::clone(&host));
    // Inherited hello() calls who(): the most derived one, which calls its parents'; the
    // nearest constant wins.
    assert_eq!(
        c.call("os/aleaf", "hello").expect("hello"),
        "mid/leaf>mid>base"
    );
    assert_eq!(c.call("os/mid", "hello").expect("hello"), "mid/mid>base");
    assert_eq!(c.call("os/base", "hello").expect("hello"), "base/base");

    // post_load: mid's override (inherited by the leaf) runs first, then base's via super.
    assert_eq!(c.call("os/aleaf", "post_load").expect("post_load"), "true");
    assert_eq!(c.take(), vec!["mid:before", "base:post_load:leaf>mid>base"]);
    // sanitize: the leaf's override, then (super) base's, skipping mid which has none.
    c.call("os/aleaf", "sanitize").expect("sanitize");
    assert_eq!(c.take(), vec!["leaf:sanitize", "base:sanitize"]);
    // An inherited routine no one overrides.
    c.call("os/aleaf", "grant_access").expect("grant");
    assert_eq!(c.take(), vec!["base:grant_access"]);

    // An error in inherited code names the file it was written in.
    let err = c.call("os/aleaf", "boom").expect_err("boom");
    let base_path = dir.path("os/base.rhai");
    assert!(
        err.starts_with(&format!(
            "{}:16: os/aleaf::boom: threw base went boom",
            base_path.display()
        )),
        "{err}"
    );
    let _ = leaf_path;
}

#[test]
fn a_super_call_the_parent_cannot_answer_is_refused_with_its_line() {
    let dir = ScriptDir::new();
    dir.write("os/base.rhai", base_os("base", "1"));
    let child = dir.write(
        "os/kid.rhai",
        r#"const MODULE = #{ kind: "os", name: "kid", version: "1", extends: "base" };
fn post_load(ctx) { super::post_load(ctx) && super::nothing(ctx) }
"#,
    );
    let host = dir.host(test_limits());
    let errs: Vec<String> = host
        .load_file(&child)
        .expect_err("refused")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errs,
        vec![format!(
            "{}:2: super::nothing() with 1 argument(s): the parent os/base ({}) has no such function",
            child.display(),
            dir.path("os/base.rhai").display()
        )]
    );
    // The parent loaded on demand and stays loaded.
    assert!(host.module(&(Kind::Os, "base".into())).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_edit_reaches_its_loaded_children() {
    let dir = ScriptDir::new();
    let base = dir.write("os/base.rhai", base_os("base", "1"));
    let mid = dir.write("os/mid.rhai", MID);
    let leaf = dir.write("os/aleaf.rhai", LEAF);
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let mut rx = host.subscribe();
    let _watch = host.watch().expect("watch");
    let c = Calls::new(Arc::clone(&host));
    assert_eq!(
        c.call("os/aleaf", "hello").expect("hello"),
        "mid/leaf>mid>base"
    );
    let leaf_gen = host.module_of_file(&leaf).expect("leaf").generation;

    // The grandparent changes its helper: the leaf (two levels down) gets the new code.
    std::fs::write(
        &base,
        base_os("base", "2").replace("fn who() { \"base\" }", "fn who() { \"BASE2\" }"),
    )
    .expect("edit base");
    wait_event(
        &mut rx,
        &leaf,
        Duration::from_secs(10),
        |e| matches!(e, ReloadEvent::Loaded { generation, .. } if *generation > leaf_gen),
    )
    .await;
    assert_eq!(
        c.call("os/aleaf", "hello").expect("hello"),
        "mid/leaf>mid>BASE2"
    );
    assert_eq!(c.call("os/mid", "hello").expect("hello"), "mid/mid>BASE2");

    // A parent edit that breaks a child's super:: call leaves the child on its earlier
    // composition, says why, and the parent's new version still serves the parent.
    std::fs::write(&mid, MID.replace("fn extra(ctx) { \"mid-extra\" }", "")).expect("edit mid");
    let ev = wait_event(&mut rx, &leaf, Duration::from_secs(10), |e| {
        matches!(e, ReloadEvent::Failed { .. })
    })
    .await;
    let ReloadEvent::Failed {
        errors, keeping, ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(keeping, Some((Kind::Os, "aleaf".to_string())));
    assert!(
        errors.iter().any(
            |e| e.contains("super::extra() with 1 argument(s): the parent os/mid")
                && e.contains("after its parent os/mid changed")
        ),
        "{errors:?}"
    );
    assert_eq!(
        c.call("os/aleaf", "hello").expect("hello"),
        "mid/leaf>mid>BASE2"
    );
    assert_eq!(
        c.call("os/aleaf", "extra").expect("extra"),
        "leaf+mid-extra"
    );
    assert!(
        c.call("os/mid", "extra").is_err(),
        "mid's new version has no extra()"
    );
}

#[test]
fn a_child_waiting_for_a_missing_parent_loads_when_the_parent_appears() {
    let dir = ScriptDir::new();
    let child = dir.write("os/mid.rhai", MID);
    let host = dir.host(test_limits());
    let errs = host.load_all();
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|e| e.contains(&format!(
            "{}:1: MODULE.extends \"base\": missing parent: no os module \"base\" is loaded and {} does not exist",
            child.display(),
            dir.path("os/base.rhai").display()
        ))),
        "{text:?}"
    );
    assert!(host.module_of_file(&child).is_none());
    let base = dir.write("os/base.rhai", base_os("base", "1"));
    host.load_file(&base).expect("base loads");
    assert!(
        host.module_of_file(&child).is_some(),
        "the waiting child loads with its parent"
    );
}

fn check(dir: &ScriptDir) -> (Option<i32>, String) {
    let cfg = dir.scripts.parent().expect("parent").join("provhost.toml");
    std::fs::write(
        &cfg,
        "[paths]\nscripts = \"scripts\"\nstdlib = \"stdlib\"\n",
    )
    .expect("cfg");
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(["--config", cfg.to_str().expect("utf8"), "check"])
        .current_dir(dir.scripts.parent().expect("parent"))
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run provhost check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn child_of(name: &str, parent: &str) -> String {
    format!(
        "const MODULE = #{{ kind: \"os\", name: \"{name}\", version: \"1\", extends: \"{parent}\" }};\nfn post_load(ctx) {{ super::post_load(ctx) }}\n"
    )
}

#[test]
fn check_fails_on_a_cycle() {
    let dir = ScriptDir::new();
    let a = dir.write("os/a.rhai", child_of("a", "b"));
    let b = dir.write("os/b.rhai", child_of("b", "a"));
    let (code, out) = check(&dir);
    assert_eq!(code, Some(3), "check exits 3 when it finds errors: {out}");
    // a's check loads b first (its parent), whose parent a is the file being loaded.
    assert!(
        out.contains(&format!(
            "{}:1: MODULE.extends \"a\": inheritance cycle: {} → {} → {} (each file extends the next)",
            b.display(),
            a.display(),
            b.display(),
            a.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error  {}:1: MODULE.extends \"b\": the parent os/b does not load",
            a.display()
        )),
        "{out}"
    );
    assert!(out.contains("0 file(s) ok"), "{out}");
}

#[test]
fn check_fails_on_a_missing_parent_and_a_parent_of_another_kind() {
    let dir = ScriptDir::new();
    dir.write("provisioning/sim.rhai", provisioning("sim", "1", ""));
    let orphan = dir.write("os/orphan.rhai", child_of("orphan", "nosuch"));
    let wrong = dir.write("os/wrong.rhai", child_of("wrong", "sim"));
    let explicit = dir.write("os/explicit.rhai", child_of("explicit", "provisioning/sim"));
    let (code, out) = check(&dir);
    assert_eq!(code, Some(3), "check exits 3 when it finds errors: {out}");
    assert!(
        out.contains(&format!(
            "error  {}:1: MODULE.extends \"nosuch\": missing parent: no os module \"nosuch\" is loaded and {} does not exist",
            orphan.display(),
            Path::new(&dir.path("os/nosuch.rhai")).display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error  {}:1: MODULE.extends \"sim\": kind mismatch: provisioning/sim is of another kind than os/wrong; a module extends one of its own kind",
            wrong.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error  {}:1: MODULE.extends \"provisioning/sim\": kind mismatch",
            explicit.display()
        )),
        "{out}"
    );
    assert!(out.contains("1 file(s) ok, 3 error(s)"), "{out}");
}

/// A site hook can extend another: the child takes its parent's `on_failure` unless it
/// gives its own, and its own hook calls the parent's through `super::`.
#[test]
fn a_site_hook_extending_another_inherits_on_failure_unless_it_gives_one() {
    let dir = ScriptDir::new();
    dir.write(
        "site/banner.rhai",
        r#"const MODULE = #{ kind: "site", name: "banner", version: "1", on_failure: "warn" };
fn post_load(ctx) { ctx.loadlog("info", "banner:post_load"); true }
"#,
    );
    dir.write(
        "site/banner_lab.rhai",
        r#"const MODULE = #{ kind: "site", name: "banner_lab", version: "1", extends: "banner" };
fn post_load(ctx) { ctx.loadlog("info", "lab:post_load"); super::post_load(ctx) }
"#,
    );
    dir.write(
        "site/banner_strict.rhai",
        r#"const MODULE = #{ kind: "site", name: "banner_strict", version: "1", extends: "site/banner", on_failure: "fail" };
"#,
    );
    let host = dir.host(test_limits());
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let info = |name: &str| {
        host.module(&(Kind::Site, name.to_string()))
            .unwrap_or_else(|| panic!("site/{name} loaded"))
            .info
            .clone()
    };
    assert_eq!(info("banner").on_failure, OnFailure::Warn);
    assert_eq!(info("banner_lab").on_failure, OnFailure::Warn, "inherited");
    assert_eq!(info("banner_strict").on_failure, OnFailure::Fail, "its own");
    // The strict child defines no hook of its own: the inherited post_load meets the
    // "at least one hook" rule.
    assert!(host.has_routine(&(Kind::Site, "banner_strict".into()), "post_load", 1));
    let c = Calls::new(Arc::clone(&host));
    assert_eq!(
        c.call("site/banner_lab", "post_load").expect("post_load"),
        "true"
    );
    assert_eq!(c.take(), vec!["lab:post_load", "banner:post_load"]);

    // on_failure stays a site-only key in a child too.
    let os_child = dir.write(
        "os/warner.rhai",
        "const MODULE = #{ kind: \"os\", name: \"warner\", version: \"1\", extends: \"base\", on_failure: \"warn\" };\n",
    );
    dir.write("os/base.rhai", base_os("base", "1"));
    let errs: Vec<String> = host
        .load_file(&os_child)
        .expect_err("on_failure in an os module")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("MODULE.on_failure is for site modules only")),
        "{errs:?}"
    );
}

/// A parent loaded from beside its child passes the same trust check as any script: a
/// parent file others may write is refused, and so is the child that needs it.
#[test]
fn a_parent_writable_by_others_is_refused_for_its_child() {
    use std::os::unix::fs::PermissionsExt;
    let dir = ScriptDir::new();
    let base = dir.write("os/base.rhai", base_os("base", "1"));
    let mid = dir.write("os/mid.rhai", MID);
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let host = dir.host(test_limits());
    let errs: Vec<String> = host
        .load_file(&mid)
        .expect_err("the parent is writable by everyone")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        errs.iter().any(|e| e.contains(&format!(
            "{}:1: MODULE.extends \"base\": the parent os/base does not load",
            mid.display()
        )) && e.contains("writable by everyone")),
        "{errs:?}"
    );
    assert!(host.module_of_file(&mid).is_none());
    assert!(host.module(&(Kind::Os, "base".into())).is_none());

    // Fixed permissions: both load.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    host.load_file(&mid).expect("mid loads with its parent");
    assert!(host.module(&(Kind::Os, "base".into())).is_some());
}
