//! `provhost demo`: the whole reservation life cycle on the embedded default, with nothing
//! configured. By default on a **real VM** (`vm.rs`): the test image is built (or found) in
//! the image library, this machine is the management node and the VM host, a QEMU VM gets
//! its own address on a bridge in a network namespace, and a user in another namespace
//! connects over real SSH. `--sim` (or a machine that cannot run VMs, which the demo says)
//! runs it on a simulated computer instead (`sim.rs`). Both use a fresh SQLite database in
//! the data folder and an in-process daemon, play the web front end (Connect, End) and
//! print the load-log timeline as it grows (`lifecycle.rs`).
//!
//! Every wait is bounded; on any problem, and on Ctrl-C, the demo stops its daemon, removes
//! what it started (VMs, namespaces, processes) and says what failed.

mod lifecycle;
mod sim;
mod vm;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::{Daemon, DaemonConfig, DaemonError};
use crate::db::{Db, DbError};
use crate::host::ScriptHost;
use crate::state::Timings;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("scripts: {0}")]
    Scripts(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("{0}")]
    Setup(String),
    #[error("interrupted (Ctrl-C); everything the demo started has been removed")]
    Interrupted,
}

/// What `provhost demo` was asked for.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Run on the simulator even where real VMs work.
    pub sim: bool,
}

/// The management node the demo's database records and its daemon runs as: the name
/// `provhost serve` with the same configuration uses, so the commands the demo prints
/// afterwards work against its database as printed.
fn node_name(config: &Config) -> String {
    if config.daemon.node.is_empty() {
        crate::db::schema::local_hostname()
    } else {
        config.daemon.node.clone()
    }
}

/// How to run this very binary from the current folder: `provhost` when that name on `PATH`
/// is this binary, otherwise its path (relative to the current folder when it is below it,
/// e.g. `./target/debug/provhost`). The demo prints its next steps with it.
pub fn invocation() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "provhost".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                dir.join("provhost")
                    .canonicalize()
                    .is_ok_and(|found| found == exe)
            })
        })
        .unwrap_or(false);
    if on_path {
        return "provhost".into();
    }
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
    {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}

/// Prints load-log entries as they appear, with seconds since the demo's request.
pub(crate) struct Printer {
    shown: usize,
    started: Instant,
}

impl Printer {
    pub(crate) fn new(started: Instant) -> Printer {
        Printer { shown: 0, started }
    }

    async fn show(
        &mut self,
        db: &Db,
        reservation: i64,
        out: &mut impl Write,
    ) -> Result<Vec<String>, DemoError> {
        let entries = crate::db::loadlog::timeline(db, reservation).await?;
        for e in entries.iter().skip(self.shown) {
            writeln!(
                out,
                "  {:>6.1}s  {:<22} {}",
                self.started.elapsed().as_secs_f64(),
                e.loadstatename,
                e.additionalinfo
            )?;
            out.flush()?;
        }
        self.shown = entries.len();
        Ok(entries.into_iter().map(|e| e.loadstatename).collect())
    }

    /// Print new entries until `done` holds, bounded by `limit`.
    pub(crate) async fn until(
        &mut self,
        db: &Db,
        reservation: i64,
        out: &mut impl Write,
        what: &str,
        limit: Duration,
        done: impl AsyncFn(&[String]) -> Result<bool, DemoError>,
    ) -> Result<(), DemoError> {
        let t = Instant::now();
        loop {
            let names = self.show(db, reservation, out).await?;
            if done(&names).await? {
                return Ok(());
            }
            if names.iter().any(|n| n == "failed") {
                return Err(DemoError::Setup(format!(
                    "the reservation failed while waiting for {what}; see the load-log above"
                )));
            }
            if t.elapsed() > limit {
                return Err(DemoError::Timeout {
                    what: what.into(),
                    secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A fresh SQLite database `name` in the data folder, initialised for the demo's node.
async fn fresh_db(config: &Config, name: &str, out: &mut impl Write) -> Result<Db, DemoError> {
    let data = &config.paths.data_dir;
    std::fs::create_dir_all(data)?;
    let file = data.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let url = format!("sqlite://{}", file.display());
    writeln!(out, "provhost demo: a fresh database at {}", file.display())?;
    let db = Db::connect(&url).await?;
    crate::db::schema::init(&db, &node_name(config)).await?;
    Ok(db)
}

/// Load every module and make sure the ones the demo uses are there.
fn load_scripts(
    config: &Config,
    families: &[Arc<dyn crate::host::Primitives>],
    needed: &[(crate::host::Kind, &str)],
    out: &mut impl Write,
) -> Result<Arc<ScriptHost>, DemoError> {
    let host = ScriptHost::new(config.host_options(), families);
    for e in &host.load_all() {
        writeln!(out, "  script error (other modules still load): {e}")?;
    }
    for (kind, name) in needed {
        if host.module(&(*kind, name.to_string())).is_none() {
            return Err(DemoError::Scripts(format!(
                "module {kind}/{name} did not load from {}",
                config.paths.scripts.display()
            )));
        }
    }
    Ok(host)
}

/// An in-process daemon for the demo's node, stopped by dropping or sending on `stop`.
struct RunningDaemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<crate::daemon::Summary, DaemonError>>>,
}

impl RunningDaemon {
    async fn start(
        config: &Config,
        db: &Db,
        host: Arc<ScriptHost>,
        timings: Timings,
    ) -> Result<Self, DemoError> {
        let cfg = DaemonConfig {
            node: node_name(config),
            poll_interval_secs: 1,
            timings,
            // The demo shows each request's load-log to the end and prints `provhost log`
            // for it: keep finished requests (a site's daemon removes them as vcld does).
            remove_finished: false,
            ..DaemonConfig::default()
        };
        let daemon = Daemon::new(db.clone(), host, cfg, None).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            daemon
                .run(
                    async move {
                        let _ = stopped.await;
                    },
                    false,
                )
                .await
        });
        Ok(RunningDaemon {
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Run the demo, writing what happens to `out`.
pub async fn run(
    config: &Config,
    opts: &DemoOptions,
    out: &mut impl Write,
) -> Result<(), DemoError> {
    if !opts.sim {
        match vm::preflight() {
            Ok(()) => return vm::run(config, out).await,
            Err(why) => writeln!(
                out,
                "provhost demo: cannot run a real VM here ({why}); falling back to the simulator ({} demo --sim)\n",
                invocation()
            )?,
        }
    }
    sim::run(config, out).await
}
