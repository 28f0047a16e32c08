//! The Rhai binding of remote execution: the `Host` type (`h.run`, `h.upload`,
//! `h.download`, `h.wait_for_ssh`, `h.forget_host_key`, `h.session_ports`), its constructors (`ctx.computer()`,
//! `ctx.vmhost()`, `local_host()`, `remote_host(#{..})`) and `scp_between`. Registered by
//! [`RemotePrims`], the primitive family that owns the shared SSH [`Pool`].
//!
//! Errors end the routine (scripts may `try`/`catch` them) with a message that names the
//! host; a routine whose deadline passed or that was cancelled ends with that instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rhai::{
    Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, ImmutableString, Map,
    NativeCallContext,
};

use crate::budget::check_deadline;
use crate::prim::args::check_keys;
use crate::prim::family::{CtxMethod, Placement, Primitives};
use crate::prim::host::{scp_between, Host};
use crate::prim::scp::{CopyOptions, CopyReport, Progress};
use crate::prim::ssh::{ExecOptions, HostKeyPolicy, Output, Pool, SshConfig, Target};

/// The option keys `host.run(cmd, opts)` takes (the script-test fake takes the same).
pub const RUN_OPTIONS: &[&str] = &["timeout", "max_output", "kill_on_timeout", "stdin"];
/// The option keys of `host.upload`/`download`/`copy_to`.
pub const COPY_OPTIONS: &[&str] = &["timeout", "sha256", "progress"];
/// The keys of `remote_host(#{ … })`.
pub const REMOTE_HOST_KEYS: &[&str] = &["host", "port", "user", "key", "host_key"];
/// The option keys of `host.wait_for_ssh(opts)`.
pub const WAIT_FOR_SSH_OPTIONS: &[&str] = &["timeout", "interval"];

/// The remote-execution primitive family: give it to `ScriptHost::new`.
pub struct RemotePrims {
    cfg: Arc<SshConfig>,
    pool: Arc<Pool>,
}

impl RemotePrims {
    pub fn new(cfg: SshConfig) -> Self {
        RemotePrims {
            pool: Pool::new(cfg.clone()),
            cfg: Arc::new(cfg),
        }
    }
    /// The pool scripts' hosts share (for Rust callers in the same process).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The routine's own stop (deadline, cancel) wins over the primitive's error message.
fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    match check_deadline() {
        Err(stop) => stop,
        Ok(()) => e.to_string().into(),
    }
}

fn secs(v: &Dynamic, what: &str) -> Res<Duration> {
    crate::prim::args::seconds(v, what, false, Duration::from_secs(86_400))
}

fn output_map(o: Output) -> Map {
    let mut m = Map::new();
    m.insert("code".into(), Dynamic::from(o.code));
    m.insert("stdout".into(), o.stdout.into());
    m.insert("stderr".into(), o.stderr.into());
    m.insert("truncated".into(), Dynamic::from(o.truncated));
    m.insert(
        "signal".into(),
        o.signal.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    m
}

fn report_map(r: CopyReport) -> Map {
    let mut m = Map::new();
    m.insert("bytes".into(), Dynamic::from(r.bytes as i64));
    m.insert(
        "sha256".into(),
        r.sha256.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    m.insert("secs".into(), Dynamic::from(r.secs));
    m
}

/// `max_output` may not exceed the string size limit (the output becomes a script string).
fn check_max_output(opts: &Map, limit: usize) -> Res<()> {
    match opts.get("max_output").and_then(|v| v.as_int().ok()) {
        Some(n) if limit > 0 && usize::try_from(n).is_ok_and(|n| n > limit) => Err(format!(
            "run: max_output {n} is over the string size limit of {limit} bytes ([scripts] max_string_size)"
        )
        .into()),
        _ => Ok(()),
    }
}

fn run(h: &Host, cmd: &str, opts: Option<&Map>) -> Res<Map> {
    let mut o = ExecOptions::default();
    let mut input: Option<Vec<u8>> = None;
    if let Some(opts) = opts {
        check_keys(opts, RUN_OPTIONS, "run")?;
        if let Some(v) = opts.get("stdin") {
            let bytes = if v.is_string() {
                v.clone()
                    .into_immutable_string()
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default()
            } else if v.is_blob() {
                v.clone().cast::<rhai::Blob>()
            } else {
                return Err(
                    format!("stdin must be a string or a blob, got {}", v.type_name()).into(),
                );
            };
            if bytes.len() > crate::prim::ssh::exec::MAX_STDIN {
                return Err(format!(
                    "stdin of {} bytes is over the limit of {} bytes (copy the data with upload instead)",
                    bytes.len(),
                    crate::prim::ssh::exec::MAX_STDIN
                )
                .into());
            }
            input = Some(bytes);
        }
        if let Some(v) = opts.get("kill_on_timeout") {
            o.kill_on_timeout = v
                .as_bool()
                .map_err(|t| format!("kill_on_timeout must be a bool, got {t}"))?;
        }
        if let Some(v) = opts.get("timeout") {
            o.timeout = Some(secs(v, "timeout")?);
        }
        if let Some(v) = opts.get("max_output") {
            let n = v
                .as_int()
                .map_err(|t| format!("max_output must be an int, got {t}"))?;
            o.max_output =
                Some(usize::try_from(n).map_err(|_| format!("max_output must be >= 0, got {n}"))?);
        }
    }
    h.run_input(cmd, input.as_deref(), &o)
        .map(output_map)
        .map_err(fail)
}

/// Copy with options from a script map; `progress` (a function of `(done, total)`) is called
/// as the copy goes; its first error ends the copy's reporting, not the copy.
fn copy_with(
    ctx: &NativeCallContext,
    opts: Option<&Map>,
    f: impl FnOnce(
        &CopyOptions,
        &mut dyn FnMut(Progress),
    ) -> Result<CopyReport, crate::prim::scp::ScpError>,
) -> Res<Map> {
    let mut o = CopyOptions::default();
    let mut cb: Option<FnPtr> = None;
    if let Some(opts) = opts {
        check_keys(opts, COPY_OPTIONS, "copy")?;
        if let Some(v) = opts.get("timeout") {
            o.timeout = Some(secs(v, "timeout")?);
        }
        if let Some(v) = opts.get("sha256") {
            o.sha256 = v
                .as_bool()
                .map_err(|t| format!("sha256 must be a bool, got {t}"))?;
        }
        if let Some(v) = opts.get("progress") {
            cb = Some(
                v.clone()
                    .try_cast::<FnPtr>()
                    .ok_or("progress must be a function |done, total|")?,
            );
        }
    }
    let mut cb_err: Option<Box<EvalAltResult>> = None;
    let mut progress = |p: Progress| {
        if let (Some(f), None) = (&cb, &cb_err) {
            if let Err(e) = f.call_within_context::<Dynamic>(ctx, (p.done as i64, p.total as i64)) {
                cb_err = Some(e);
            }
        }
    };
    let report = f(&o, &mut progress).map_err(fail)?;
    if let Some(e) = cb_err {
        return Err(e);
    }
    Ok(report_map(report))
}

impl RemotePrims {
    fn target(&self, host: &str, port: u16, policy: HostKeyPolicy) -> Target {
        Target {
            host: host.to_string(),
            port,
            user: self.cfg.user.clone(),
            identity: self.cfg.identity.clone(),
            host_key: policy,
        }
    }

    fn computer(&self, d: &Placement) -> Res<Host> {
        let addr = [&d.private_ip, &d.ip, &d.hostname]
            .into_iter()
            .find(|a| !a.is_empty())
            .ok_or("ctx.computer(): the reservation has no computer address (computer_private_ip, computer_ip and computer_hostname are empty)")?;
        let port = match u16::try_from(d.ssh_port) {
            Ok(p) if p > 0 => p,
            _ => self.cfg.port,
        };
        Ok(Host::remote(
            Arc::clone(&self.pool),
            self.target(addr, port, HostKeyPolicy::AcceptNew),
        ))
    }

    fn vmhost(&self, d: &Placement) -> Res<Host> {
        match d.vmhost.as_str() {
            "" => Err("ctx.vmhost(): the reservation's computer has no VM host (vmhost_hostname is empty)".into()),
            // Only provhost.toml makes a VM host the management node itself: a name in the
            // database (which the web front end's admins write) never does.
            name if !self.cfg.local_vmhost.is_empty() && name == self.cfg.local_vmhost => {
                Ok(Host::local(Arc::clone(&self.cfg)))
            }
            "local" => Err("ctx.vmhost(): the VM host's hostname is \"local\", but no VM host is configured as this management node; set `[ssh] local_vmhost = \"local\"` in provhost.toml if it really is (a database name alone never runs commands on the management node)".into()),
            name => Ok(Host::remote(Arc::clone(&self.pool), self.target(name, self.cfg.port, HostKeyPolicy::Strict))),
        }
    }

    fn remote_host(&self, m: &Map) -> Res<Host> {
        check_keys(m, REMOTE_HOST_KEYS, "remote_host")?;
        let host = m
            .get("host")
            .and_then(|v| v.clone().into_immutable_string().ok())
            .filter(|s| !s.is_empty())
            .ok_or("remote_host: #{ host: \"name or address\" } is required")?;
        let port = match m.get("port") {
            Some(v) => {
                let p = v
                    .as_int()
                    .map_err(|t| format!("remote_host: port must be an int, got {t}"))?;
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("remote_host: port {p} out of range"))?
            }
            None => self.cfg.port,
        };
        let string = |k: &str| -> Res<Option<String>> {
            match m.get(k) {
                Some(v) => v
                    .clone()
                    .into_immutable_string()
                    .map(|s| Some(s.to_string()))
                    .map_err(|t| format!("remote_host: {k} must be a string, got {t}").into()),
                None => Ok(None),
            }
        };
        let policy = match string("host_key")? {
            Some(p) => HostKeyPolicy::parse(&p).ok_or_else(|| {
                format!("remote_host: host_key must be \"strict\" or \"accept-new\", got {p:?}")
            })?,
            None => HostKeyPolicy::Strict,
        };
        let mut t = self.target(&host, port, policy);
        if let Some(u) = string("user")? {
            t.user = u;
        }
        if let Some(k) = string("key")? {
            t.identity = k.into();
        }
        Ok(Host::remote(Arc::clone(&self.pool), t))
    }
}

impl Primitives for RemotePrims {
    fn register(&self, engine: &mut Engine) {
        engine.register_type_with_name::<Host>("Host");
        engine.register_fn("to_string", |h: &mut Host| h.label());
        engine.register_fn("to_debug", |h: &mut Host| format!("Host({})", h.label()));
        engine.register_get("name", |h: &mut Host| ImmutableString::from(h.label()));
        engine.register_get("is_local", |h: &mut Host| h.is_local());

        let me = Arc::new(RemotePrims {
            cfg: Arc::clone(&self.cfg),
            pool: Arc::clone(&self.pool),
        });

        let p = Arc::clone(&me);
        FuncRegistration::new("local_host")
            .with_comments([
                "/// The management node itself: `run` spawns `sh -c CMD` locally, with the same result shape and time-out.",
                "/// Commands run in provhost's own working directory (the folder it was started in), as the",
                "/// user provhost runs as; build paths from `config::data_dir` and the other absolute",
                "/// `config::` paths rather than relying on it.",
            ])
            .with_params_info(["Host"])
            .register_into_engine(engine, move || Host::local(Arc::clone(&p.cfg)));
        let p = Arc::clone(&me);
        FuncRegistration::new("remote_host")
            .with_comments([
                "/// Any machine over SSH: `#{ host: \"10.0.0.5\", port: 22, user: \"root\", key: \"/path/id\",",
                "/// host_key: \"strict\" }`. Only `host` is required; the rest default to `[ssh]` settings and",
                "/// the strict host key policy (`\"accept-new\"` records an unknown host's key).",
            ])
            .with_params_info(["opts: Map", "Host"])
            .register_into_engine(engine, move |m: Map| p.remote_host(&m));

        FuncRegistration::new("run")
            .with_comments([
                "/// Run a shell command on the host; returns `#{ code, stdout, stderr, truncated, signal }`.",
                "/// A non-zero exit code is not an error (check `code`); not reaching the host, or the",
                "/// command running past its time-out (`[ssh] command_timeout_secs`, default 30 s), is:",
                "/// the command's process group is killed. Put values into commands with `shell::quote`.",
                "///",
                "/// ```rhai",
                "/// let r = ctx.computer().run(\"uname -r\");",
                "/// if r.code != 0 { throw `uname failed: ${r.stderr}`; }",
                "/// ```",
            ])
            .with_params_info(["host: Host", "cmd: &str", "Map"])
            .register_into_engine(engine, |h: &mut Host, cmd: &str| run(h, cmd, None));
        FuncRegistration::new("run")
            .with_comments([
                "/// `run` with options: `timeout` (seconds, also capped by the routine's deadline) and",
                "/// `max_output` (bytes kept of stdout and of stderr each; the rest is dropped, the text ends",
                "/// with a `[provhost: output truncated …]` line and `truncated` is true), and",
                "/// `kill_on_timeout: false` for hosts whose login shell is not POSIX (the command is sent",
                "/// verbatim; on time-out the session is closed instead of the command's process group killed),",
                "/// and `stdin` (a string or blob of at most 1 MiB, written to the command's stdin, then EOF).",
                "/// Give secrets through `stdin`, never in `cmd`: a command line is readable by every local",
                "/// user of the host (`/proc/PID/cmdline`, `ps`) and by execve auditing.",
                "///",
                "/// ```rhai",
                "/// h.run(\"chpasswd\", #{ stdin: `${login}:${password}\\n`, timeout: 30 });",
                "/// ```",
            ])
            .with_params_info(["host: Host", "cmd: &str", "opts: Map", "Map"])
            .register_into_engine(engine, |nc: NativeCallContext, h: &mut Host, cmd: &str, opts: Map| {
                check_max_output(&opts, nc.engine().max_string_size())?;
                run(h, cmd, Some(&opts))
            });

        let copy_doc = [
            "/// Options: `timeout` (seconds; default `[ssh] copy_timeout_secs`), `sha256: true` (compare",
            "/// checksums end to end), `progress: |done, total| …` (called at most every 200 ms).",
            "/// Returns `#{ bytes, sha256, secs }`. The file appears under its final name only when",
            "/// complete and verified; a failed copy leaves no partial file under that name.",
        ];
        FuncRegistration::new("upload")
            .with_comments([
                "/// Copy a file from the management node to the host (a temp name, then renamed).",
            ])
            .with_params_info(["host: Host", "local: &str", "remote: &str", "Map"])
            .register_into_engine(
                engine,
                |ctx: NativeCallContext, h: &mut Host, local: &str, remote: &str| {
                    copy_with(&ctx, None, |o, p| h.upload(Path::new(local), remote, o, p))
                },
            );
        FuncRegistration::new("upload")
            .with_comments(copy_doc)
            .with_params_info([
                "host: Host",
                "local: &str",
                "remote: &str",
                "opts: Map",
                "Map",
            ])
            .register_into_engine(
                engine,
                |ctx: NativeCallContext, h: &mut Host, local: &str, remote: &str, opts: Map| {
                    copy_with(&ctx, Some(&opts), |o, p| {
                        h.upload(Path::new(local), remote, o, p)
                    })
                },
            );
        FuncRegistration::new("download")
            .with_comments([
                "/// Copy a file from the host to the management node (a temp name, then renamed).",
            ])
            .with_params_info(["host: Host", "remote: &str", "local: &str", "Map"])
            .register_into_engine(
                engine,
                |ctx: NativeCallContext, h: &mut Host, remote: &str, local: &str| {
                    copy_with(&ctx, None, |o, p| {
                        h.download(remote, Path::new(local), o, p)
                    })
                },
            );
        FuncRegistration::new("download")
            .with_comments(copy_doc)
            .with_params_info([
                "host: Host",
                "remote: &str",
                "local: &str",
                "opts: Map",
                "Map",
            ])
            .register_into_engine(
                engine,
                |ctx: NativeCallContext, h: &mut Host, remote: &str, local: &str, opts: Map| {
                    copy_with(&ctx, Some(&opts), |o, p| {
                        h.download(remote, Path::new(local), o, p)
                    })
                },
            );
        FuncRegistration::new("scp_between")
            .with_comments([
                "/// Copy `path_a` on host `a` to `path_b` on host `b`, streamed through this node (e.g. an",
                "/// image from another management node's image library).",
            ])
            .with_params_info(["a: Host", "path_a: &str", "b: Host", "path_b: &str", "Map"])
            .register_into_engine(engine, |ctx: NativeCallContext, a: Host, pa: &str, b: Host, pb: &str| {
                copy_with(&ctx, None, |o, p| scp_between(&a, pa, &b, pb, o, p))
            });
        FuncRegistration::new("scp_between")
            .with_comments(copy_doc)
            .with_params_info([
                "a: Host",
                "path_a: &str",
                "b: Host",
                "path_b: &str",
                "opts: Map",
                "Map",
            ])
            .register_into_engine(
                engine,
                |ctx: NativeCallContext, a: Host, pa: &str, b: Host, pb: &str, opts: Map| {
                    copy_with(&ctx, Some(&opts), |o, p| scp_between(&a, pa, &b, pb, o, p))
                },
            );

        FuncRegistration::new("wait_for_ssh")
            .with_comments([
                "/// Wait until the host answers over SSH (connects, authenticates, runs `true`): tries every",
                "/// `interval` seconds (default 2) for at most `timeout` seconds (required). Returns `true`",
                "/// when it answered, `false` on time-out. A changed host key is an error at once.",
                "///",
                "/// ```rhai",
                "/// if !ctx.computer().wait_for_ssh(#{ timeout: 300 }) { return \"failed\"; }",
                "/// ```",
            ])
            .with_params_info(["host: Host", "opts: Map", "bool"])
            .register_into_engine(engine, |h: &mut Host, opts: Map| -> Res<bool> {
                check_keys(&opts, WAIT_FOR_SSH_OPTIONS, "wait_for_ssh")?;
                let timeout = match opts.get("timeout") {
                    Some(v) => secs(v, "timeout")?,
                    None => return Err("wait_for_ssh needs #{ timeout: SECONDS } (waits are always bounded)".into()),
                };
                let interval = match opts.get("interval") {
                    Some(v) => secs(v, "interval")?,
                    None => Duration::from_secs(2),
                };
                h.wait_for_ssh(timeout, interval).map_err(fail)
            });
        FuncRegistration::new("session_ports")
            .with_comments([
                "/// The local TCP ports of every SSH session this provhost process holds to this host's",
                "/// address and port: idle, in use, or being connected, under any user or host key policy",
                "/// (empty for the local host). Unless a NAT between rewrites source ports, the host sees",
                "/// them as the source ports of provhost's connections, which tells them from a user's",
                "/// connection from the same address. Sessions of other processes are not included.",
            ])
            .with_params_info(["host: Host", "Array"])
            .register_into_engine(engine, |h: &mut Host| -> rhai::Array {
                h.session_ports()
                    .into_iter()
                    .map(|p| Dynamic::from(i64::from(p)))
                    .collect()
            });
        FuncRegistration::new("forget_host_key")
            .with_comments([
                "/// Forget the host's recorded SSH host keys (before reinstalling it); returns how many",
                "/// known_hosts lines were removed.",
            ])
            .with_params_info(["host: Host", "int"])
            .register_into_engine(engine, |h: &mut Host| -> Res<i64> {
                h.forget_host_key().map(|n| n as i64).map_err(fail)
            });
        FuncRegistration::new("trust_host_key")
            .with_comments([
                "/// Pin `public_key` (`\"ssh-ed25519 AAAA…\"`, a `.pub` line the module knows, e.g. the",
                "/// one its image build made) as the host's only acceptable key: other recorded keys",
                "/// are removed and from now on any other key is refused, whatever the policy. Pin",
                "/// right after `forget_host_key()` when reinstalling, so no one else's key is trusted.",
            ])
            .with_params_info(["host: Host", "public_key: &str", "()"])
            .register_into_engine(engine, |h: &mut Host, public_key: &str| -> Res<()> {
                h.trust_host_key(public_key).map_err(fail)
            });
    }

    fn ctx_methods(&self) -> Vec<CtxMethod> {
        let me = Arc::new(RemotePrims {
            cfg: Arc::clone(&self.cfg),
            pool: Arc::clone(&self.pool),
        });
        let (p, q) = (Arc::clone(&me), me);
        vec![
            CtxMethod {
                name: "computer",
                comments: &[
                    "/// The reservation's computer as a `Host`, reached over SSH at `computer_private_ip`",
                    "/// (else `computer_ip`, else `computer_hostname`) on `computer_ssh_port` (else `[ssh] port`),",
                    "/// as `[ssh] user` with `[ssh] identity`. Host key policy: accept-new (a reloaded computer's",
                    "/// first key is recorded; call `h.forget_host_key()` before reinstalling it).",
                ],
                returns: "Host",
                call: Arc::new(move |d| p.computer(d).map(Dynamic::from)),
            },
            CtxMethod {
                name: "vmhost",
                comments: &[
                    "/// The computer's VM host as a `Host`: `vmhost_hostname` over SSH on `[ssh] port`, strict",
                    "/// host key policy (its key must be in provhost's known_hosts). The VM host named by",
                    "/// `[ssh] local_vmhost` in provhost.toml (e.g. `\"local\"`) is the management node itself",
                    "/// (commands run as local processes); no name in the database alone is.",
                ],
                returns: "Host",
                call: Arc::new(move |d| q.vmhost(d).map(Dynamic::from)),
            },
        ]
    }
}
