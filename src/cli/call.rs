//! `provhost call MODULE ROUTINE [ARGS…]`: run one routine by hand with a `ctx` built from
//! a fixture, and print what it returned as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use provhost::host::{CallOptions, Ctx, MemoryBackend, ReservationData, ScriptHost};
use provhost::Config;

#[derive(Args)]
pub struct CallArgs {
    /// `kind/name` (e.g. `os/linux`) or a name that only one kind has.
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
    /// plain strings.
    args: Vec<String>,
}

fn parse_arg(s: &str) -> rhai::Dynamic {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => rhai::serde::to_dynamic(v).unwrap_or_else(|_| s.into()),
        Err(_) => s.into(),
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
    let key = host.find_module(&module)?;
    let data = match &ctx_file {
        Some(f) => Ctx::data_from_file(f)?,
        None => ReservationData::default(),
    };
    let backend = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(data, backend.clone());
    let args: Vec<rhai::Dynamic> = args.iter().map(|a| parse_arg(a)).collect();
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
    match result {
        Ok(value) => {
            let json: serde_json::Value = rhai::serde::from_dynamic(&value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
