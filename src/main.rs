//! The `provhost` command line: check, call and document module scripts (and, as the
//! project grows, run the daemon and manage the database).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use provhost::host::{CallOptions, Ctx, HostOptions, MemoryBackend, ReservationData, ScriptHost};
use provhost::Config;

#[derive(Parser)]
#[command(
    name = "provhost",
    version,
    about = "Provision computers for reservations; hypervisor and OS specifics live in Rhai scripts"
)]
struct Cli {
    /// Configuration file (default: ./provhost.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "PROVHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Compile every module script and check it against the routine contract; exit 1 and
    /// list every error if any fails.
    Check {
        /// Files or folders (default: the configured scripts folder).
        paths: Vec<PathBuf>,
    },
    /// Run one routine of one module and print what it returned (as JSON).
    Call {
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
    },
    /// The database: `db init`.
    Db {
        #[command(subcommand)]
        command: provhost::db::cli::DbCommand,
    },
    /// Add users, images and computers.
    Add {
        #[command(subcommand)]
        command: provhost::db::cli::AddCommand,
    },
    /// The image library: `image build-test`.
    Image {
        #[command(subcommand)]
        command: provhost::image::cli::ImageCommand,
    },
    /// Reservation requests: `request new`, `request list`.
    Request {
        #[command(subcommand)]
        command: provhost::db::cli::RequestCommand,
    },
    /// The load-log timeline of a reservation, with elapsed times.
    Log {
        /// `reservation.id`
        reservation: i64,
        #[command(flatten)]
        url: provhost::db::cli::UrlArg,
    },
    /// The reservation life cycle on a real VM (QEMU on this machine, the test image, a
    /// user logging in over SSH), start to end, with nothing configured (a fresh SQLite
    /// database `demo.db` in the data folder). Needs root; falls back to the simulator,
    /// saying why, where VMs cannot run.
    Demo {
        /// Use the simulated computer (no VM, no root needed).
        #[arg(long)]
        sim: bool,
    },
    /// Run the management-node daemon: poll, claim, run state flows, hot-reload scripts.
    Serve {
        /// Process what is due (and what that makes due) and exit when nothing is left.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        url: provhost::db::cli::UrlArg,
    },
    /// Generate the script API reference from the registered functions.
    Docs {
        /// Where to write it (`-` for standard output).
        #[arg(long, default_value = "docs/script-api.md")]
        out: PathBuf,
    },
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROVHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour codes only for a person at a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = match format {
        LogFormat::Text => provhost::prim::redact_log::Format::Text,
        LogFormat::Json => provhost::prim::redact_log::Format::Json,
    };
    provhost::prim::redact_log::init(format, filter, ansi);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` prints its own report; its log lines would only repeat it. The demo prints
    // the load-log timeline; only warnings (e.g. the KVM fallback) add to it.
    let default_level = match cli.command {
        Command::Check { .. } => "off",
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check { paths } => Ok(check(&config, paths)),
        Command::Call {
            module,
            routine,
            ctx,
            timeout,
            args,
        } => call(&config, module, routine, ctx, timeout, args).await,
        Command::Db { command } => {
            provhost::db::cli::db(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image { command } => {
            provhost::image::cli::run(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Request { command } => {
            provhost::db::cli::request(&config, command).await?;
            // A daemon on this machine picks the new request up at once.
            provhost::daemon::wake(&config.paths.data_dir);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { once, url } => serve(&config, once, url).await,
        Command::Add { command } => {
            provhost::db::cli::add(&config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { sim } => {
            let mut out = std::io::stdout();
            provhost::demo::run(&config, &provhost::demo::DemoOptions { sim }, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Log { reservation, url } => {
            provhost::db::cli::log(&config, reservation, url).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Docs { out } => {
            let host = ScriptHost::new(
                config.host_options(),
                &provhost::primitive_families(&config),
            );
            let text = provhost::host::docs::generate(&host).map_err(anyhow::Error::msg)?;
            if out.as_os_str() == "-" {
                print!("{text}");
            } else {
                if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(
    config: &Config,
    once: bool,
    url: provhost::db::cli::UrlArg,
) -> anyhow::Result<ExitCode> {
    let url = url
        .url
        .clone()
        .unwrap_or_else(|| config.database.url_or_default(&config.paths.data_dir));
    let stop = shutdown_signal()?;
    // The signal is watched from now on, so it is logged when it comes and wins over a
    // database that is slow to answer, here and in the daemon.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        stop_tx.send_replace(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let db = tokio::select! {
        db = provhost::db::Db::connect(&url) => db?,
        _ = stopped() => {
            tracing::info!("stopped while connecting to the database");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    host.use_good_store(provhost::host::good::GoodStore::new(
        provhost::host::good::dir_in(&config.paths.data_dir),
    ));
    let _watch = provhost::daemon::start_host(&host)?;
    let daemon = tokio::select! {
        d = provhost::daemon::Daemon::new(
            db.clone(),
            host,
            config.daemon.clone(),
            Some(&config.paths.data_dir),
        ) => d?,
        _ = stopped() => {
            tracing::info!("stopped while looking up this management node");
            return Ok(ExitCode::SUCCESS);
        }
    };
    tracing::info!(node_id = daemon.node_id(), once, "provhost daemon running");
    let summary = daemon.run(stopped(), once).await?;
    tracing::info!(
        recovered = summary.recovered,
        processed = summary.processed,
        "provhost daemon stopped"
    );
    // Closing waits for connections in use; one stuck on a dead database must not hold
    // the exit up.
    if tokio::time::timeout(Duration::from_secs(1), db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close within 1 s; exiting anyway");
    }
    // Routines abandoned after the grace period may still sit in a primitive (bounded by
    // its own timeout); their requests are already left to recovery, so do not wait for
    // them as the runtime's shutdown would.
    std::process::exit(0)
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are installed now, before the
/// daemon claims anything, so a signal never finds claimed work without a handler.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}

/// Every `.rhai` file under `path` (or `path` itself), sorted; at most 4 folders deep.
fn rhai_files(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        if depth > 4 {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() || p.extension().is_some_and(|e| e == "rhai") {
                rhai_files(&p, depth + 1, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn check(config: &Config, paths: Vec<PathBuf>) -> ExitCode {
    let opts: HostOptions = config.host_options();
    // The same primitive families as `serve`: module paths (`vm::`, `vmnet::`) resolve at compile time.
    let host = ScriptHost::new(opts.clone(), &provhost::primitive_families(config));
    // Read only: says what a daemon started now would serve for a broken file.
    host.use_good_store(provhost::host::good::GoodStore::read_only(
        provhost::host::good::dir_in(&config.paths.data_dir),
    ));
    let mut notes: Vec<String> = Vec::new();
    let roots = if paths.is_empty() {
        vec![opts.scripts_dir.clone()]
    } else {
        paths
    };
    let mut files = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for root in &roots {
        if !root.exists() {
            errors.push(format!("{}: no such file or folder", root.display()));
            continue;
        }
        if let Err(e) = rhai_files(root, 0, &mut files) {
            errors.push(format!("{}: {e}", root.display()));
        }
    }
    let stdlib = opts.stdlib_dir.canonicalize().ok();
    let mut ok = 0;
    for file in &files {
        let in_stdlib = match (&stdlib, file.canonicalize()) {
            (Some(s), Ok(f)) => f.starts_with(s),
            _ => false,
        };
        if in_stdlib {
            // Library code has no MODULE; it only has to compile.
            match std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|src| host.engine().compile(src).map_err(|e| e.to_string()))
            {
                Ok(_) => {
                    ok += 1;
                    println!("ok     {} (stdlib)", file.display());
                }
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
            continue;
        }
        match host.load_file(file) {
            Ok((kind, name)) => {
                ok += 1;
                let version = host
                    .module(&(kind, name.clone()))
                    .map(|m| m.info.version.clone())
                    .unwrap_or_default();
                println!("ok     {}  {kind}/{name} v{version}", file.display());
            }
            Err(errs) => {
                errors.extend(errs.iter().map(|e| e.to_string()));
                match host.module_of_file(file) {
                    Some(m) => notes.push(format!(
                        "{}: a daemon started now would serve its last good version, {}/{} v{}, from {}",
                        file.display(),
                        m.info.kind,
                        m.info.name,
                        m.info.version,
                        m.restored_from.as_deref().unwrap_or("memory")
                    )),
                    None => notes.push(format!(
                        "{}: no usable saved good copy; a daemon started now would not serve this module",
                        file.display()
                    )),
                }
            }
        }
    }
    for e in &errors {
        println!("error  {e}");
    }
    for n in &notes {
        println!("note   {n}");
    }
    println!("{ok} file(s) ok, {} error(s)", errors.len());
    if errors.is_empty() && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        if files.is_empty() && errors.is_empty() {
            println!(
                "error  no .rhai files found under {}",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ExitCode::from(1)
    }
}

fn parse_arg(s: &str) -> rhai::Dynamic {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) => rhai::serde::to_dynamic(v).unwrap_or_else(|_| s.into()),
        Err(_) => s.into(),
    }
}

async fn call(
    config: &Config,
    module: String,
    routine: String,
    ctx_file: Option<PathBuf>,
    timeout: Option<u64>,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
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
            let text = serde_json::to_string_pretty(&json)?;
            println!("{}", provhost::prim::secret::redact(&text));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", provhost::prim::secret::redact(&e.to_string()));
            Ok(ExitCode::from(1))
        }
    }
}
