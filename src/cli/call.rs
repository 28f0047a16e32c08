//! `provhost call MODULE ROUTINE [ARGS…]`: run one routine by hand with a `ctx` built from
//! a fixture, and print what it returned as JSON. The computer's variables and the
//! notes are kept between calls in a state file (`host::fixture::CallState`), so `call …
//! load` then `call … node_status` see the same computer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use provhost::host::fixture::{CallState, Fixture};
use provhost::host::{CallOptions, Ctx, HostError, MemoryBackend, ModuleKey, ScriptHost};
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
    /// Where computer variables and notes are kept between calls (default:
    /// `<data_dir>/call-state/computer-<computer_id>.json`).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Start from the fixture's `computer_vars` and `notes` (or none), not from what
    /// earlier calls left.
    #[arg(long)]
    reset_state: bool,
    /// Neither read nor write a state file: the call starts from the fixture and leaves
    /// nothing behind.
    #[arg(long, conflicts_with_all = ["state", "reset_state"])]
    no_state: bool,
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
        state,
        reset_state,
        no_state,
        timeout,
        args,
    } = a;
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    for e in host.load_all() {
        // Other modules' errors do not stop a call to a good one; say them anyway.
        eprintln!("warning: {e}");
    }
    let key = resolve(&host, &module, &routine)?;
    let fixture = match &ctx_file {
        Some(f) => Fixture::from_file(f)?,
        None => Fixture::default(),
    };
    let computer_id = fixture.data.computer_id;
    let state_path = (!no_state).then(|| {
        state.unwrap_or_else(|| CallState::default_path(&config.paths.data_dir, computer_id))
    });
    // What earlier calls left, unless asked to start afresh: then the fixture's tables.
    let earlier = match &state_path {
        Some(p) if !reset_state => CallState::read(p)?,
        _ => None,
    };
    let start = match earlier {
        Some(s) if s.computer_id != computer_id => {
            return Err(Refused(format!(
                "state file {} holds computer {}, not the fixture's computer {computer_id}; pass another --state, or --reset-state to start it afresh",
                state_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                s.computer_id
            ))
            .into())
        }
        Some(s) => {
            if let Some(p) = &state_path {
                eprintln!(
                    "state: {} variable(s), {} note(s) from {} (--reset-state starts from the fixture)",
                    s.computer_vars.len(),
                    s.notes.len(),
                    p.display()
                );
            }
            s
        }
        None => CallState {
            computer_id,
            computer_vars: fixture.computer_vars.clone(),
            notes: fixture.notes.clone(),
        },
    };
    let backend = Arc::new(MemoryBackend::default());
    backend.set_computer_vars(computer_id, &start.computer_vars);
    let ctx = Ctx::new(fixture.data, backend.clone());
    for (k, v) in &start.notes {
        let v = rhai::serde::to_dynamic(v)
            .map_err(|e| Refused(format!("note {k:?} cannot be given to a routine: {e}")))?;
        ctx.set_note(k, v);
    }
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
    let call_ctx = ctx.clone();
    let result = tokio::task::spawn_blocking(move || {
        h.call(&key, &routine, takes_ctx.then_some(&call_ctx), args, &opts)
    })
    .await
    .context("routine thread")?;
    // Kept whether the routine returned or threw: the daemon's variables are written as
    // they are set, so a failed routine's changes stay too.
    if let Some(p) = &state_path {
        let notes = ctx
            .notes()
            .into_iter()
            .map(|(k, v)| {
                let json = rhai::serde::from_dynamic::<serde_json::Value>(&v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                (k.to_string(), json)
            })
            .collect();
        let after = CallState {
            computer_id,
            computer_vars: backend.computer_vars(computer_id),
            notes,
        };
        if after != start || reset_state {
            after
                .write(p)
                .with_context(|| format!("keeping the call's state in {}", p.display()))?;
        }
    }
    let value = result?;
    let json: serde_json::Value = rhai::serde::from_dynamic(&value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    let text = serde_json::to_string_pretty(&json)?;
    println!("{}", provhost::prim::secret::redact(&text));
    Ok(ExitCode::SUCCESS)
}
