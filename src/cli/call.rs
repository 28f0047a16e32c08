//! `provhost call MODULE ROUTINE [ARGS…]`: run one routine by hand with a `ctx` built from
//! a fixture, and print what it returned as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use provhost::host::{
    CallOptions, Ctx, HostError, MemoryBackend, ModuleKey, ReservationData, ScriptHost,
};
use provhost::Config;

use super::exit::Refused;

#[derive(Args)]
pub struct CallArgs {
    /// `kind/name` (e.g. `os/linux`), or a name: the module of that name, or of the kinds
    /// using it the one that defines ROUTINE.
    module: String,
    /// The routine, e.g. `node_status`.
    routine: String,
    /// Reservation fixture (TOML or JSON) to build `ctx` from; default: an empty one.
    #[arg(long)]
    ctx: Option<PathBuf>,
    /// Deadline for the call in seconds (default: scripts.call_timeout_secs).
    #[arg(long)]
    timeout: Option<u64>,
    /// Further arguments after `ctx`: JSON values (`42`, `true`, `{"login":"ann"}`) or
    /// plain strings; text starting with `{`, `[` or `"` must be valid JSON.
    args: Vec<String>,
}

/// One command-line argument as a Rhai value: JSON when it is JSON, else the plain string.
/// Text that looks like JSON (it starts with `{`, `[` or `"`) but does not parse is an
/// error, not silently a string.
fn parse_arg(n: usize, s: &str) -> Result<rhai::Dynamic, Refused> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => rhai::serde::to_dynamic(v).map_err(|e| {
            Refused(format!("argument {n} ({s}): cannot pass this JSON to a routine: {e}"))
        }),
        Err(e) if s.trim_start().starts_with(['{', '[', '"']) => Err(Refused(format!(
            "argument {n} ({s}) looks like JSON but does not parse: {e}. Fix it (keys and strings in double quotes: '{{\"login\":\"ann\"}}'), or pass plain text that does not start with {{, [ or \""
        ))),
        Err(_) => Ok(s.into()),
    }
}

/// The module `spec` names. A bare name that more than one kind uses (`sim`: provisioning
/// and os) is the one of them that defines `routine`, when only one does.
fn resolve(host: &ScriptHost, spec: &str, routine: &str) -> Result<ModuleKey, HostError> {
    match host.find_module(spec) {
        Err(HostError::AmbiguousModule { .. }) if !spec.contains('/') => {
            let defining: Vec<ModuleKey> = host
                .modules()
                .into_iter()
                .filter(|(_, n)| n == spec)
                .filter(|k| {
                    host.module(k)
                        .is_some_and(|m| m.ast.iter_functions().any(|f| f.name == routine))
                })
                .collect();
            match defining.as_slice() {
                [one] => Ok(one.clone()),
                _ => host.find_module(spec),
            }
        }
        other => other,
    }
}

pub async fn run(config: &Config, a: CallArgs) -> anyhow::Result<ExitCode> {
    let CallArgs {
        module,
        routine,
        ctx: ctx_file,
        timeout,
        args,
    } = a;
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    for e in host.load_all() {
        // Other modules' errors do not stop a call to a good one; say them anyway.
        eprintln!("warning: {e}");
    }
    let key = resolve(&host, &module, &routine)?;
    let data = match &ctx_file {
        Some(f) => Ctx::data_from_file(f)?,
        None => ReservationData::default(),
    };
    let backend = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(data, backend.clone());
    let args = args
        .iter()
        .enumerate()
        .map(|(i, a)| parse_arg(i + 1, a))
        .collect::<Result<Vec<rhai::Dynamic>, Refused>>()?;
    // Pass ctx when the routine's first parameter is `ctx` (every contract routine's is).
    let takes_ctx = host
        .module(&key)
        .map(|m| {
            m.ast.iter_functions().any(|f| {
                f.name == routine
                    && f.params.len() == args.len() + 1
                    && f.params.first() == Some(&"ctx")
            })
        })
        .unwrap_or(false);
    let opts = CallOptions {
        timeout: timeout.map(Duration::from_secs),
        cancel: None,
    };
    let h = Arc::clone(&host);
    let result = tokio::task::spawn_blocking(move || {
        h.call(&key, &routine, takes_ctx.then_some(&ctx), args, &opts)
    })
    .await
    .context("routine thread")?;
    let value = result?;
    let json: serde_json::Value = rhai::serde::from_dynamic(&value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    let text = serde_json::to_string_pretty(&json)?;
    println!("{}", provhost::prim::secret::redact(&text));
    Ok(ExitCode::SUCCESS)
}
