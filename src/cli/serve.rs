//! `provhost serve [--once]`: the management-node daemon in the foreground, stopped by
//! SIGTERM or SIGINT; SIGHUP reloads the scripts and checks the configuration again, and
//! systemd hears READY/RELOADING/STOPPING (`notify`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use provhost::host::ScriptHost;
use provhost::Config;

use super::UrlArg;

/// Run the daemon; `config_file` is the file `config` was read from (read again on SIGHUP).
pub async fn run(
    config: &Config,
    config_file: Option<std::path::PathBuf>,
    once: bool,
    url: UrlArg,
) -> anyhow::Result<ExitCode> {
    let url = url.resolve(config);
    let stop = shutdown_signal()?;
    // The signal is watched from now on, so it is logged when it comes and wins over a
    // database that is slow to answer, here and in the daemon.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        super::notify::stopping();
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
    // From now on SIGHUP reloads instead of ending the process (its default action).
    super::notify::reload_on_hup(std::sync::Arc::clone(&host), config_file, config.clone())?;
    let modules: Vec<String> = host
        .modules()
        .iter()
        .map(|k| {
            let version = host
                .module(k)
                .map(|m| m.info.version.clone())
                .unwrap_or_default();
            format!("{}/{} v{version}", k.0, k.1)
        })
        .collect();
    tracing::info!(
        database = %db.url(),
        scripts = %config.paths.scripts.display(),
        stdlib = %config.paths.stdlib.display(),
        data = %config.paths.data_dir.display(),
        "serving {} module(s): {}",
        modules.len(),
        if modules.is_empty() { "none".to_string() } else { modules.join(", ") }
    );
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
    super::notify::ready(&format!(
        "serving {} module(s) as management node {}",
        modules.len(),
        daemon.node_id()
    ));
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
