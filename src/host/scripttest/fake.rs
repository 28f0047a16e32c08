//! The recording fake host's primitives: a primitive family ([`FakePrims`]) that registers
//! the same script API as the real ones — the `Host` type (`h.run`, `h.upload`,
//! `h.download`, `h.wait_for_ssh`, …), `ctx.computer()`, `ctx.vmhost()`, `local_host()`,
//! `remote_host()`, `scp_between`, the `vm`, `vmnet` and `wait` modules — over a
//! [`Recorder`] instead of the world, plus the test API (`fake()`, `fixture()`, `assert*`).
//! Only `provhost test` builds an engine with it; the daemon never does.
//!
//! Every command and primitive call is recorded. `run` and the `vm`/`vmnet` calls must
//! match an expectation (`fake().expect(pattern, answer)`) or they fail with the command
//! shown; copies, `wait_for_ssh` and host-key calls succeed unless an expectation says
//! otherwise. `wait::sleep` advances a virtual clock; `wait::poll` polls on it.

use std::sync::Arc;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, ImmutableString, Map, Module,
    NativeCallContext,
};

use super::recorder::{Answer, Call, Expectation, Pattern, Recorder, Reply};
use crate::host::ctx::{Ctx, ReservationData};
use crate::prim::args::{check_keys, seconds};
use crate::prim::family::{CtxMethod, Placement, Primitives};
use crate::prim::remote;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A fake machine: commands on it go to the recorder under its label.
#[derive(Clone)]
pub struct FakeHost {
    label: String,
    local: bool,
    rec: Arc<Recorder>,
}

/// The test's handle on the recorder (`fake()` in a test).
#[derive(Clone)]
pub struct Fake {
    rec: Arc<Recorder>,
}

impl Fake {
    /// The handle a test function taking one parameter receives.
    pub fn handle(rec: &Arc<Recorder>) -> Fake {
        Fake {
            rec: Arc::clone(rec),
        }
    }
}

/// The fake primitive family of `provhost test`.
pub struct FakePrims {
    rec: Arc<Recorder>,
}

impl FakePrims {
    pub fn new(rec: Arc<Recorder>) -> Self {
        FakePrims { rec }
    }
}

/// The reservation `fixture()` starts from (then the test's map is laid over it).
pub fn default_fixture() -> ReservationData {
    ReservationData {
        reservation_id: 1,
        request_id: 1,
        request_state: "new".into(),
        computer_id: 1,
        computer_node_name: "vm1".into(),
        computer_hostname: "vm1.example.org".into(),
        computer_ip: "192.0.2.10".into(),
        computer_private_ip: "10.0.0.10".into(),
        computer_ssh_port: 22,
        computer_type: "virtualmachine".into(),
        computer_state: "reload".into(),
        vmhost_id: 1,
        vmhost_hostname: "vmhost1.example.org".into(),
        image_id: 2,
        image_name: "test-image".into(),
        image_pretty_name: "Test image".into(),
        imagerevision_id: 2,
        image_os_type: "linux".into(),
        user_id: 3,
        user_login_id: "ann".into(),
        user_uid: 1001,
        management_node_id: 1,
        management_node_hostname: "mn1.example.org".into(),
        image_library_path: "/var/lib/provhost/images".into(),
        ..ReservationData::default()
    }
}

fn script_err(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    e.to_string().into()
}

fn string_of(v: &Dynamic) -> String {
    if v.is_string() {
        v.clone()
            .into_immutable_string()
            .map(|s| s.to_string())
            .unwrap_or_default()
    } else {
        v.to_string()
    }
}

/// Ask the recorder; an unexpected call is an error naming the host and the command.
fn ask(h: &FakeHost, text: &str, stdin: Option<String>, args: Array) -> Res<Reply> {
    match h.rec.call(&h.label, text, stdin, args, false).map_err(script_err)? {
        Answer::Reply(r) => match &r.error {
            Some(e) => Err(format!("{} ({}): {e}", h.label, text).into()),
            None => Ok(r),
        },
        Answer::Unexpected => Err(format!(
            "{UNEXPECTED}{}: `{text}` (declare it in the test: fake().expect(\"PATTERN\", #{{ stdout: \"…\", code: 0 }}))",
            h.label
        )
        .into()),
    }
}

/// A call that succeeds with `default` when no expectation matches (copies, host keys).
fn ask_or(h: &FakeHost, text: &str, args: Array, default: Dynamic) -> Res<Dynamic> {
    match h
        .rec
        .call(&h.label, text, None, args, true)
        .map_err(script_err)?
    {
        Answer::Reply(r) => match r.error {
            Some(e) => Err(format!("{} ({}): {e}", h.label, text).into()),
            None => Ok(r.returns.unwrap_or(default)),
        },
        Answer::Unexpected => Ok(default),
    }
}

/// A primitive with a return value that must be declared (`vm::status` → `returns`).
fn ask_value(h: &FakeHost, text: &str, args: Array, default: Option<Dynamic>) -> Res<Dynamic> {
    let r = ask(h, text, None, args)?;
    match (r.returns, default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!(
            "{}: the expectation matching `{text}` needs `returns: VALUE` (what the primitive gives back)",
            h.label
        )
        .into()),
    }
}

fn output_map(r: &Reply) -> Map {
    let mut m = Map::new();
    m.insert("code".into(), Dynamic::from(r.code));
    m.insert("stdout".into(), r.stdout.clone().into());
    m.insert("stderr".into(), r.stderr.clone().into());
    m.insert("truncated".into(), Dynamic::FALSE);
    m.insert("signal".into(), Dynamic::UNIT);
    m
}

fn copy_report(local: Option<&str>) -> Dynamic {
    let bytes = local
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as i64)
        .unwrap_or(0);
    let mut m = Map::new();
    m.insert("bytes".into(), Dynamic::from(bytes));
    m.insert("sha256".into(), Dynamic::UNIT);
    m.insert("secs".into(), Dynamic::from(0.0_f64));
    m.into()
}

fn run(h: &FakeHost, cmd: &str, opts: Option<&Map>) -> Res<Map> {
    let mut stdin = None;
    if let Some(opts) = opts {
        check_keys(opts, remote::RUN_OPTIONS, "run")?;
        if let Some(v) = opts.get("stdin") {
            if v.is_string() {
                stdin = Some(string_of(v));
            } else if v.is_blob() {
                stdin = Some(String::from_utf8_lossy(&v.clone().cast::<rhai::Blob>()).into_owned());
            } else {
                return Err(
                    format!("stdin must be a string or a blob, got {}", v.type_name()).into(),
                );
            }
        }
        if let Some(v) = opts.get("timeout") {
            seconds(v, "timeout", false, std::time::Duration::from_secs(86_400))?;
        }
    }
    let r = ask(h, cmd, stdin, Array::new())?;
    Ok(output_map(&r))
}

fn copy_opts(opts: &Map) -> Res<()> {
    check_keys(opts, remote::COPY_OPTIONS, "copy")
}

/// A map into text for a recorded call (keys sorted, strings quoted).
fn compact(m: &Map) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!("#{{{}}}", parts.join(", "))
}

impl FakeHost {
    fn new(label: &str, local: bool, rec: &Arc<Recorder>) -> Self {
        FakeHost {
            label: label.to_string(),
            local,
            rec: Arc::clone(rec),
        }
    }
}

fn fixture(rec: &Arc<Recorder>, over: &Map) -> Res<Ctx> {
    let mut base = serde_json::to_value(default_fixture()).map_err(script_err)?;
    let over: serde_json::Value =
        rhai::serde::from_dynamic(&Dynamic::from_map(over.clone())).map_err(script_err)?;
    if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
    let data: ReservationData = serde_json::from_value(base).map_err(|e| {
        script_err(format!(
            "fixture: {e} (keys are the ctx properties of docs/script-api.md)"
        ))
    })?;
    Ok(Ctx::new(
        data,
        Arc::clone(rec) as Arc<dyn crate::host::CtxBackend>,
    ))
}

fn expectation(pattern: &str, m: &Map) -> Res<Expectation> {
    check_keys(
        m,
        &[
            "stdout", "stderr", "code", "on", "times", "returns", "error",
        ],
        "expect",
    )?;
    let text = |k: &str| m.get(k).map(string_of);
    let code = match m.get("code") {
        Some(v) => v
            .as_int()
            .map_err(|t| format!("expect: code must be an int, got {t}"))?,
        None => 0,
    };
    let times = match m.get("times") {
        Some(v) => {
            let n = v
                .as_int()
                .map_err(|t| format!("expect: times must be an int, got {t}"))?;
            Some(u64::try_from(n).map_err(|_| format!("expect: times must be >= 0, got {n}"))?)
        }
        None => None,
    };
    Ok(Expectation {
        pattern: Pattern::parse(pattern).map_err(script_err)?,
        on: text("on"),
        times,
        used: 0,
        reply: Reply {
            code,
            stdout: text("stdout").unwrap_or_default(),
            stderr: text("stderr").unwrap_or_default(),
            returns: m.get("returns").cloned(),
            error: text("error"),
        },
    })
}

fn call_map(c: &Call) -> Dynamic {
    let mut m = Map::new();
    m.insert("host".into(), c.host.clone().into());
    m.insert("cmd".into(), c.text.clone().into());
    m.insert(
        "stdin".into(),
        c.stdin.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    m.insert("args".into(), Dynamic::from_array(c.args.clone()));
    m.insert("expected".into(), Dynamic::from(c.expected));
    m.into()
}

/// `a == b` for test values: equal JSON forms (maps, arrays, strings, numbers), else
/// equal text.
pub fn same(a: &Dynamic, b: &Dynamic) -> bool {
    let j = |v: &Dynamic| rhai::serde::from_dynamic::<serde_json::Value>(v).ok();
    match (j(a), j(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.type_name() == b.type_name() && a.to_string() == b.to_string(),
    }
}

/// How a value reads in an assertion message.
fn show(v: &Dynamic) -> String {
    if v.is_string() {
        format!("{:?}", string_of(v))
    } else {
        rhai::serde::from_dynamic::<serde_json::Value>(v)
            .map(|j| j.to_string())
            .unwrap_or_else(|_| v.to_string())
    }
}

/// The text of an unexpected command's error starts with this.
pub const UNEXPECTED: &str = "unexpected command on ";

/// The text a failed assertion throws starts with this, so the runner reports it as is.
pub const ASSERT: &str = "assertion failed: ";

fn failed(msg: String) -> Box<EvalAltResult> {
    format!("{ASSERT}{msg}").into()
}

impl Primitives for FakePrims {
    fn register(&self, engine: &mut Engine) {
        self.register_host(engine);
        self.register_vm(engine);
        self.register_vmnet(engine);
        self.register_wait(engine);
        self.register_test_api(engine);
    }

    fn ctx_methods(&self) -> Vec<CtxMethod> {
        let (r1, r2) = (Arc::clone(&self.rec), Arc::clone(&self.rec));
        vec![
            CtxMethod {
                name: "computer",
                comments: &["/// The reservation's computer (fake: recorded under `computer`)."],
                returns: "Host",
                call: Arc::new(move |d: &Placement| {
                    if d.private_ip.is_empty() && d.ip.is_empty() && d.hostname.is_empty() {
                        return Err("ctx.computer(): the reservation has no computer address (computer_private_ip, computer_ip and computer_hostname are empty)".into());
                    }
                    Ok(Dynamic::from(FakeHost::new("computer", false, &r1)))
                }),
            },
            CtxMethod {
                name: "vmhost",
                comments: &["/// The computer's VM host (fake: recorded under `vmhost`)."],
                returns: "Host",
                call: Arc::new(move |d: &Placement| {
                    if d.vmhost.is_empty() {
                        return Err("ctx.vmhost(): the reservation's computer has no VM host (vmhost_hostname is empty)".into());
                    }
                    Ok(Dynamic::from(FakeHost::new("vmhost", false, &r2)))
                }),
            },
        ]
    }
}

impl FakePrims {
    fn register_host(&self, engine: &mut Engine) {
        engine.register_type_with_name::<FakeHost>("Host");
        engine.register_fn("to_string", |h: &mut FakeHost| h.label.clone());
        engine.register_fn("to_debug", |h: &mut FakeHost| format!("Host({})", h.label));
        engine.register_get("name", |h: &mut FakeHost| {
            ImmutableString::from(h.label.as_str())
        });
        engine.register_get("is_local", |h: &mut FakeHost| h.local);

        let rec = Arc::clone(&self.rec);
        engine.register_fn("local_host", move || FakeHost::new("local", true, &rec));
        let rec = Arc::clone(&self.rec);
        engine.register_fn("remote_host", move |m: Map| -> Res<FakeHost> {
            check_keys(&m, remote::REMOTE_HOST_KEYS, "remote_host")?;
            let host = m
                .get("host")
                .map(string_of)
                .filter(|s| !s.is_empty())
                .ok_or("remote_host: #{ host: \"name or address\" } is required")?;
            Ok(FakeHost::new(&host, false, &rec))
        });
        engine.register_fn("run", |h: &mut FakeHost, cmd: &str| run(h, cmd, None));
        engine.register_fn("run", |h: &mut FakeHost, cmd: &str, opts: Map| {
            run(h, cmd, Some(&opts))
        });
        engine.register_fn("upload", |h: &mut FakeHost, local: &str, remote: &str| {
            let args = vec![local.into(), remote.into()];
            ask_or(
                h,
                &format!("upload {local} {remote}"),
                args,
                copy_report(Some(local)),
            )
        });
        engine.register_fn(
            "upload",
            |h: &mut FakeHost, local: &str, remote: &str, opts: Map| {
                copy_opts(&opts)?;
                let args = vec![local.into(), remote.into()];
                ask_or(
                    h,
                    &format!("upload {local} {remote}"),
                    args,
                    copy_report(Some(local)),
                )
            },
        );
        engine.register_fn("download", |h: &mut FakeHost, remote: &str, local: &str| {
            let args = vec![remote.into(), local.into()];
            ask_or(
                h,
                &format!("download {remote} {local}"),
                args,
                copy_report(None),
            )
        });
        engine.register_fn(
            "download",
            |h: &mut FakeHost, remote: &str, local: &str, opts: Map| {
                copy_opts(&opts)?;
                let args = vec![remote.into(), local.into()];
                ask_or(
                    h,
                    &format!("download {remote} {local}"),
                    args,
                    copy_report(None),
                )
            },
        );
        fn between(a: &FakeHost, pa: &str, b: &FakeHost, pb: &str) -> Res<Dynamic> {
            let text = format!("scp_between {}:{pa} {}:{pb}", a.label, b.label);
            let args = vec![pa.into(), b.label.clone().into(), pb.into()];
            ask_or(a, &text, args, copy_report(None))
        }
        engine.register_fn(
            "scp_between",
            |a: FakeHost, pa: &str, b: FakeHost, pb: &str| between(&a, pa, &b, pb),
        );
        engine.register_fn(
            "scp_between",
            |a: FakeHost, pa: &str, b: FakeHost, pb: &str, opts: Map| {
                copy_opts(&opts)?;
                between(&a, pa, &b, pb)
            },
        );
        engine.register_fn("wait_for_ssh", |h: &mut FakeHost, opts: Map| -> Res<bool> {
            check_keys(&opts, remote::WAIT_FOR_SSH_OPTIONS, "wait_for_ssh")?;
            if !opts.contains_key("timeout") {
                return Err(
                    "wait_for_ssh needs #{ timeout: SECONDS } (waits are always bounded)".into(),
                );
            }
            let v = ask_or(h, "wait_for_ssh", Array::new(), Dynamic::TRUE)?;
            v.as_bool()
                .map_err(|t| format!("wait_for_ssh: returns must be a bool, got {t}").into())
        });
        engine.register_fn("session_ports", |_h: &mut FakeHost| Array::new());
        engine.register_fn("forget_host_key", |h: &mut FakeHost| -> Res<i64> {
            let v = ask_or(h, "forget_host_key", Array::new(), Dynamic::from(0_i64))?;
            Ok(v.as_int().unwrap_or(0))
        });
        engine.register_fn("trust_host_key", |h: &mut FakeHost, key: &str| -> Res<()> {
            let _ = ask_or(
                h,
                &format!("trust_host_key {key}"),
                vec![key.into()],
                Dynamic::UNIT,
            )?;
            Ok(())
        });
    }

    fn register_vm(&self, engine: &mut Engine) {
        let mut m = Module::new();
        let rec = Arc::clone(&self.rec);
        m.set_native_fn("defaults", move || -> Res<Map> {
            let h = FakeHost::new("local", true, &rec);
            let mut d = Map::new();
            d.insert("library".into(), "/var/lib/provhost/images".into());
            d.insert("vm_root".into(), "/var/lib/provhost/vms".into());
            d.insert("accel".into(), "tcg".into());
            d.insert("image_sources".into(), Dynamic::from_array(Array::new()));
            d.insert("boot_timeout".into(), Dynamic::from(300_i64));
            let v = ask_or(&h, "vm::defaults", Array::new(), d.into())?;
            v.try_cast::<Map>()
                .ok_or_else(|| "vm::defaults: returns must be a map".into())
        });
        m.set_native_fn("start", |h: &mut FakeHost, spec: Map| -> Res<Map> {
            let s = crate::prim::vm::bind::spec_from_map(&spec)?;
            let v = ask_value(
                h,
                &format!("vm::start {}", s.dir),
                vec![spec.clone().into()],
                Some({
                    let mut r = Map::new();
                    r.insert("pid".into(), Dynamic::from(4242_i64));
                    r.insert("accel".into(), "tcg".into());
                    r.insert("accel_reason".into(), "fake host".into());
                    r.into()
                }),
            )?;
            v.try_cast::<Map>()
                .ok_or_else(|| "vm::start: returns must be a map".into())
        });
        m.set_native_fn(
            "status",
            |h: &mut FakeHost, dir: &str| -> Res<ImmutableString> {
                let v = ask_value(h, &format!("vm::status {dir}"), vec![dir.into()], None)?;
                Ok(string_of(&v).into())
            },
        );
        m.set_native_fn("info", |h: &mut FakeHost, dir: &str| -> Res<Map> {
            let v = ask_value(h, &format!("vm::info {dir}"), vec![dir.into()], None)?;
            if v.is_string() {
                // `returns: "running"`: the state alone.
                let mut m = Map::new();
                m.insert("dir".into(), dir.into());
                m.insert("state".into(), v);
                m.insert("pid".into(), Dynamic::UNIT);
                m.insert("name".into(), "".into());
                m.insert("reason".into(), "".into());
                return Ok(m);
            }
            v.try_cast::<Map>()
                .ok_or_else(|| "vm::info: returns must be a map or a state".into())
        });
        m.set_native_fn(
            "qmp",
            |h: &mut FakeHost, dir: &str, cmd: Map| -> Res<Dynamic> {
                let exec = cmd.get("execute").map(string_of).unwrap_or_default();
                ask_value(
                    h,
                    &format!("vm::qmp {dir} {exec}"),
                    vec![dir.into(), cmd.clone().into()],
                    Some(Dynamic::from_map(Map::new())),
                )
            },
        );
        fn stop(h: &FakeHost, dir: &str) -> Res<ImmutableString> {
            let v = ask_value(
                h,
                &format!("vm::stop {dir}"),
                vec![dir.into()],
                Some("quit".into()),
            )?;
            Ok(string_of(&v).into())
        }
        m.set_native_fn("stop", |h: &mut FakeHost, dir: &str| stop(h, dir));
        m.set_native_fn("stop", |h: &mut FakeHost, dir: &str, opts: Map| {
            check_keys(&opts, &["grace"], "vm::stop")?;
            stop(h, dir)
        });
        m.set_native_fn("kill", |h: &mut FakeHost, dir: &str| -> Res<bool> {
            let v = ask_value(
                h,
                &format!("vm::kill {dir}"),
                vec![dir.into()],
                Some(Dynamic::TRUE),
            )?;
            Ok(v.as_bool().unwrap_or(true))
        });
        m.set_native_fn("list", |h: &mut FakeHost, root: &str| -> Res<Array> {
            let v = ask_value(
                h,
                &format!("vm::list {root}"),
                vec![root.into()],
                Some(Dynamic::from_array(Array::new())),
            )?;
            v.try_cast::<Array>()
                .ok_or_else(|| "vm::list: returns must be an array".into())
        });
        m.set_native_fn(
            "wait_console",
            |h: &mut FakeHost, dir: &str, text: &str, opts: Map| -> Res<bool> {
                check_keys(&opts, &["timeout"], "vm::wait_console")?;
                if !opts.contains_key("timeout") {
                    return Err("vm::wait_console needs #{ timeout: SECONDS }".into());
                }
                let v = ask_value(
                    h,
                    &format!("vm::wait_console {dir} {text}"),
                    vec![dir.into(), text.into()],
                    Some(Dynamic::TRUE),
                )?;
                Ok(v.as_bool().unwrap_or(false))
            },
        );
        m.set_native_fn("mac_for_ip", |ip: &str| -> Res<ImmutableString> {
            crate::prim::vm::bind::mac_for_ip(ip)
                .map(Into::into)
                .map_err(script_err)
        });
        engine.register_static_module("vm", m.into());
    }

    fn register_vmnet(&self, engine: &mut Engine) {
        use crate::prim::vmnet::KEYS as NET;
        let mut m = Module::new();
        let rec = Arc::clone(&self.rec);
        m.set_native_fn("defaults", move || -> Res<Map> {
            let h = FakeHost::new("local", true, &rec);
            let mut d = Map::new();
            d.insert("netns".into(), "provhost-vmh".into());
            d.insert("bridge".into(), "pvbr0".into());
            d.insert("gateway".into(), "10.77.0.1/24".into());
            d.insert("uplink".into(), "10.77.255.1/30".into());
            d.insert("uplink_dev".into(), "pv-up".into());
            d.insert("timeout".into(), Dynamic::from(30_i64));
            let v = ask_or(&h, "vmnet::defaults", Array::new(), d.into())?;
            v.try_cast::<Map>()
                .ok_or_else(|| "vmnet::defaults: returns must be a map".into())
        });
        for op in ["up", "down"] {
            m.set_native_fn(op, move |h: &mut FakeHost, net: Map| -> Res<()> {
                check_keys(&net, NET, &format!("vmnet::{op}"))?;
                ask(
                    h,
                    &format!("vmnet::{op} {}", compact(&net)),
                    None,
                    vec![net.into()],
                )?;
                Ok(())
            });
        }
        for op in ["add_tap", "del_tap"] {
            m.set_native_fn(
                op,
                move |h: &mut FakeHost, net: Map, tap: &str| -> Res<()> {
                    check_keys(&net, NET, &format!("vmnet::{op}"))?;
                    if tap.is_empty() || tap.len() > 15 {
                        return Err(
                            format!("vmnet::{op}: tap {tap:?} must be 1-15 characters").into()
                        );
                    }
                    ask(
                        h,
                        &format!("vmnet::{op} {tap}"),
                        None,
                        vec![net.into(), tap.into()],
                    )?;
                    Ok(())
                },
            );
        }
        m.set_native_fn("status", |h: &mut FakeHost, net: Map| -> Res<Map> {
            check_keys(&net, NET, "vmnet::status")?;
            let v = ask_value(
                h,
                &format!("vmnet::status {}", compact(&net)),
                vec![net.into()],
                None,
            )?;
            v.try_cast::<Map>()
                .ok_or_else(|| "vmnet::status: returns must be a map".into())
        });
        engine.register_static_module("vmnet", m.into());
    }

    fn register_wait(&self, engine: &mut Engine) {
        let cap = crate::prim::wait::MAX_SLEEP;
        let mut m = Module::new();
        let rec = Arc::clone(&self.rec);
        m.set_native_fn("sleep", move |secs: Dynamic| -> Res<()> {
            let d = seconds(&secs, "seconds", true, cap)?;
            rec.advance(d.as_secs_f64());
            Ok(())
        });
        let rec = Arc::clone(&self.rec);
        m.set_native_fn(
            "poll",
            move |ctx: NativeCallContext, f: FnPtr, opts: Map| -> Res<bool> {
                check_keys(&opts, crate::prim::wait::POLL_OPTIONS, "wait::poll")?;
                let timeout = match opts.get("timeout") {
                    Some(v) => seconds(v, "timeout", true, cap)?.as_secs_f64(),
                    None => {
                        return Err(
                            "wait::poll needs #{ timeout: SECONDS } (waits are always bounded)"
                                .into(),
                        )
                    }
                };
                let interval = match opts.get("interval") {
                    Some(v) => seconds(v, "interval", true, cap)?.as_secs_f64(),
                    None => 1.0,
                }
                .max(0.01);
                let start = rec.clock();
                for _ in 0..crate::prim::wait::MAX_CHECKS {
                    let got: Dynamic = f.call_within_context(&ctx, ())?;
                    if got.as_bool().unwrap_or(!got.is_unit()) {
                        return Ok(true);
                    }
                    let spent = rec.clock() - start;
                    if spent >= timeout {
                        return Ok(false);
                    }
                    rec.advance(interval.min(timeout - spent));
                }
                Ok(false)
            },
        );
        engine.register_static_module("wait", m.into());
    }

    /// The test API: `fake()`, `fixture()`, the `Fake` methods and the assertions.
    pub fn register_test_api(&self, engine: &mut Engine) {
        engine.register_type_with_name::<Fake>("Fake");
        let rec = Arc::clone(&self.rec);
        FuncRegistration::new("fake")
            .with_comments(["/// The recording fake host of this test (also given to `fn test_NAME(host)`): declare the commands a test expects, read what ran."])
            .with_params_info(["Fake"])
            .register_into_engine(engine, move || Fake {
                rec: Arc::clone(&rec),
            });
        let rec = Arc::clone(&self.rec);
        FuncRegistration::new("fixture")
            .with_comments(["/// A reservation with the default fixture values (docs/script-tests.md), its writes (load-log, computer variables) kept by the fake."])
            .with_params_info(["Ctx"])
            .register_into_engine(engine, move || fixture(&rec, &Map::new()));
        let rec = Arc::clone(&self.rec);
        FuncRegistration::new("fixture")
            .with_comments([
                "/// A reservation whose `ctx` properties are the defaults with `values` laid over them",
                "/// (`#{ image_name: \"win10\", vmhost_hostname: \"esx1\" }`); an unknown key is an error.",
            ])
            .with_params_info(["values: Map", "Ctx"])
            .register_into_engine(engine, move |m: Map| fixture(&rec, &m));

        FuncRegistration::new("expect")
            .with_comments(["/// Declare a command that answers exit 0 with no output: `pattern` is a glob over the whole command (`*`, `?`) or `/regex/`."])
            .with_params_info(["fake: Fake", "pattern: &str", "()"])
            .register_into_engine(engine, |f: &mut Fake, pattern: &str| -> Res<()> {
                let e = expectation(pattern, &Map::new())?;
                f.rec.expect(e).map_err(script_err)
            });
        FuncRegistration::new("expect")
            .with_comments([
                "/// Declare a command and its answer: `#{ stdout, stderr, code, on, times, returns, error }`.",
                "/// `on`: only on that host (`\"computer\"`, `\"vmhost\"`, `\"local\"`, a `remote_host` name);",
                "/// `times`: answers at most that often, then the next matching declaration answers;",
                "/// `returns`: the value of a primitive other than `run` (`vm::status` → `\"running\"`);",
                "/// `error`: the primitive fails with this text (an unreachable host). Declarations are",
                "/// tried in the order written.",
            ])
            .with_params_info(["fake: Fake", "pattern: &str", "answer: Map", "()"])
            .register_into_engine(engine, |f: &mut Fake, pattern: &str, m: Map| -> Res<()> {
                let e = expectation(pattern, &m)?;
                f.rec.expect(e).map_err(script_err)
            });
        FuncRegistration::new("ran")
            .with_comments([
                "/// Did a command (or primitive call) matching `pattern` run, on any host?",
            ])
            .with_params_info(["fake: Fake", "pattern: &str", "bool"])
            .register_into_engine(engine, |f: &mut Fake, pattern: &str| -> Res<bool> {
                let p = Pattern::parse(pattern).map_err(script_err)?;
                Ok(f.rec.calls().iter().any(|c| p.matches(&c.text)))
            });
        FuncRegistration::new("ran")
            .with_comments(["/// Did a command matching `pattern` run on host `on`?"])
            .with_params_info(["fake: Fake", "on: &str", "pattern: &str", "bool"])
            .register_into_engine(
                engine,
                |f: &mut Fake, on: &str, pattern: &str| -> Res<bool> {
                    let p = Pattern::parse(pattern).map_err(script_err)?;
                    Ok(f.rec
                        .calls()
                        .iter()
                        .any(|c| c.host == on && p.matches(&c.text)))
                },
            );
        FuncRegistration::new("count")
            .with_comments(["/// How many commands matching `pattern` ran."])
            .with_params_info(["fake: Fake", "pattern: &str", "int"])
            .register_into_engine(engine, |f: &mut Fake, pattern: &str| -> Res<i64> {
                let p = Pattern::parse(pattern).map_err(script_err)?;
                Ok(f.rec.calls().iter().filter(|c| p.matches(&c.text)).count() as i64)
            });
        FuncRegistration::new("commands")
            .with_comments(["/// Every command and primitive call so far, in order, as text (`vm::status DIR`, `upload LOCAL REMOTE`)."])
            .with_params_info(["fake: Fake", "Array"])
            .register_into_engine(engine, |f: &mut Fake| -> Array {
                f.rec.calls().into_iter().map(|c| c.text.into()).collect()
            });
        FuncRegistration::new("commands")
            .with_comments(["/// The commands that ran on host `on`."])
            .with_params_info(["fake: Fake", "on: &str", "Array"])
            .register_into_engine(engine, |f: &mut Fake, on: &str| -> Array {
                f.rec
                    .calls()
                    .into_iter()
                    .filter(|c| c.host == on)
                    .map(|c| c.text.into())
                    .collect()
            });
        FuncRegistration::new("calls")
            .with_comments(["/// Every call as `#{ host, cmd, stdin, args, expected }` (`args`: a primitive's arguments, e.g. the spec given to `vm::start`)."])
            .with_params_info(["fake: Fake", "Array"])
            .register_into_engine(engine, |f: &mut Fake| -> Array {
                f.rec.calls().iter().map(call_map).collect()
            });
        FuncRegistration::new("loadlog")
            .with_comments([
                "/// The load-log entries written through `ctx.loadlog`, as `#{ name, text }`.",
            ])
            .with_params_info(["fake: Fake", "Array"])
            .register_into_engine(engine, |f: &mut Fake| -> Array {
                f.rec
                    .loadlog()
                    .into_iter()
                    .map(|(name, text)| {
                        let mut m = Map::new();
                        m.insert("name".into(), name.into());
                        m.insert("text".into(), text.into());
                        Dynamic::from_map(m)
                    })
                    .collect()
            });
        FuncRegistration::new("loadlogged")
            .with_comments(["/// Was a load-log entry of this load-state name written?"])
            .with_params_info(["fake: Fake", "name: &str", "bool"])
            .register_into_engine(engine, |f: &mut Fake, name: &str| -> bool {
                f.rec.loadlog().iter().any(|(n, _)| n == name)
            });
        FuncRegistration::new("computer_var")
            .with_comments([
                "/// A computer variable (as `ctx.computer_var` reads it); `()` when unset.",
            ])
            .with_params_info(["fake: Fake", "name: &str", "Dynamic"])
            .register_into_engine(engine, |f: &mut Fake, name: &str| -> Dynamic {
                f.rec.var(name).map(Dynamic::from).unwrap_or(Dynamic::UNIT)
            });
        FuncRegistration::new("set_computer_var")
            .with_comments([
                "/// Set a computer variable before calling a routine (stored as a string).",
            ])
            .with_params_info(["fake: Fake", "name: &str", "value: Dynamic", "()"])
            .register_into_engine(engine, |f: &mut Fake, name: &str, value: Dynamic| {
                f.rec.set_var(name, &value.to_string())
            });
        FuncRegistration::new("computer_vars")
            .with_comments(["/// Every computer variable as a map."])
            .with_params_info(["fake: Fake", "Map"])
            .register_into_engine(engine, |f: &mut Fake| f.rec.vars());
        FuncRegistration::new("image_size")
            .with_comments(["/// The size given to `ctx.set_image_size`, or `()`."])
            .with_params_info(["fake: Fake", "Dynamic"])
            .register_into_engine(engine, |f: &mut Fake| -> Dynamic {
                f.rec
                    .image_size()
                    .map(Dynamic::from)
                    .unwrap_or(Dynamic::UNIT)
            });
        FuncRegistration::new("clock")
            .with_comments(["/// Seconds the test's waits slept on the virtual clock (`wait::sleep`, `wait::poll`)."])
            .with_params_info(["fake: Fake", "float"])
            .register_into_engine(engine, |f: &mut Fake| f.rec.clock());

        FuncRegistration::new("assert")
            .with_comments(["/// Fail the test unless `cond` is true."])
            .with_params_info(["cond: bool", "()"])
            .register_into_engine(engine, |cond: bool| -> Res<()> {
                if cond {
                    Ok(())
                } else {
                    Err(failed("assert(false)".into()))
                }
            });
        FuncRegistration::new("assert")
            .with_comments(["/// Fail the test with `msg` unless `cond` is true."])
            .with_params_info(["cond: bool", "msg: &str", "()"])
            .register_into_engine(engine, |cond: bool, msg: &str| -> Res<()> {
                if cond {
                    Ok(())
                } else {
                    Err(failed(msg.to_string()))
                }
            });
        fn eq(a: Dynamic, b: Dynamic, msg: &str) -> Res<()> {
            if same(&a, &b) {
                Ok(())
            } else {
                Err(failed(format!(
                    "{msg}left {} != right {}",
                    show(&a),
                    show(&b)
                )))
            }
        }
        FuncRegistration::new("assert_eq")
            .with_comments(["/// Fail the test unless `left` and `right` are equal (maps and arrays by content)."])
            .with_params_info(["left: Dynamic", "right: Dynamic", "()"])
            .register_into_engine(engine, |a: Dynamic, b: Dynamic| eq(a, b, ""));
        FuncRegistration::new("assert_eq")
            .with_comments(["/// `assert_eq` with a message saying what was checked."])
            .with_params_info(["left: Dynamic", "right: Dynamic", "msg: &str", "()"])
            .register_into_engine(engine, |a: Dynamic, b: Dynamic, msg: &str| {
                eq(a, b, &format!("{msg}: "))
            });
        FuncRegistration::new("assert_ne")
            .with_comments(["/// Fail the test when `left` and `right` are equal."])
            .with_params_info(["left: Dynamic", "right: Dynamic", "()"])
            .register_into_engine(engine, |a: Dynamic, b: Dynamic| -> Res<()> {
                if same(&a, &b) {
                    Err(failed(format!("both are {}", show(&a))))
                } else {
                    Ok(())
                }
            });
        FuncRegistration::new("assert_contains")
            .with_comments(["/// Fail the test unless the text `hay` contains `needle` (an array: has it as an element)."])
            .with_params_info(["hay: Dynamic", "needle: &str", "()"])
            .register_into_engine(engine, |hay: Dynamic, needle: &str| -> Res<()> {
                let text = if hay.is_array() {
                    let a = hay.clone().cast::<Array>();
                    if a.iter().any(|x| string_of(x) == needle) {
                        return Ok(());
                    }
                    show(&hay)
                } else {
                    string_of(&hay)
                };
                if text.contains(needle) {
                    Ok(())
                } else {
                    Err(failed(format!("{} does not contain {needle:?}", show(&hay))))
                }
            });
        FuncRegistration::new("fail")
            .with_comments([
                "/// Fail the test with `msg` (e.g. after a call that should have thrown).",
            ])
            .with_params_info(["msg: &str", "()"])
            .register_into_engine(engine, |msg: &str| -> Res<()> {
                Err(failed(msg.to_string()))
            });
    }
}

/// An engine with only the test API registered, for the generated reference.
pub fn test_api_engine() -> Engine {
    let mut e = Engine::new();
    FakePrims::new(Arc::new(Recorder::default())).register_test_api(&mut e);
    e
}
