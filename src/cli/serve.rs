//! `provhost serve [--once] [--http ADDR]`: the management-node daemon in the foreground,
//! stopped by SIGTERM or SIGINT; SIGHUP reloads the scripts and checks the configuration
//! again, and systemd hears READY/RELOADING/STOPPING (`notify`). With `--http` (or
//! `[http] listen`) also the status page. It publishes its modules to
//! `<data_dir>/provhost.status.json` for `provhost status`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use provhost::host::ScriptHost;
use provhost::web::status;
use provhost::Config;

use super::UrlArg;

/// Run the daemon; `config_file` is the file `config` was read from (read again on SIGHUP).
pub async fn run(
    config: &Config,
    config_file: Option<std::path::PathBuf>,
    once: bool,
    url: UrlArg,
    http: Option<String>,
) -> anyhow::Result<ExitCode> {
    let url = url.resolve(config);
    let listen = http.unwrap_or_else(|| config.http.listen.clone());
    let token = config.http.token();
    if !listen.is_empty() {
        // A bind that would be refused fails now, before anything is claimed.
        provhost::web::bind(&listen, token.as_deref())
            .await
            .map(drop)
            .map_err(anyhow::Error::from)?;
    }
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
            host.clone(),
            config.daemon.clone(),
            Some(&config.paths.data_dir),
        ) => d?,
        _ = stopped() => {
            tracing::info!("stopped while looking up this management node");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let daemon = daemon.with_trace(config.trace.clone());
    // What `provhost status` in another process shows of this daemon: its modules.
    let published = status::published_path(&config.paths.data_dir);
    let http_url = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let publisher = {
        let (host, path, url) = (host.clone(), published.clone(), http_url.clone());
        let node = config.daemon.node.clone();
        let started = status::utc(std::time::SystemTime::now());
        move |book: &status::ModuleBook| {
            let p = status::Published {
                pid: std::process::id(),
                node: node.clone(),
                started: started.clone(),
                updated: status::utc(std::time::SystemTime::now()),
                http: url.lock().ok().and_then(|u| u.clone()),
                modules: status::modules(&host, Some(book)),
            };
            if let Err(e) = status::publish(&path, &p) {
                tracing::warn!(path = %path.display(), "could not publish the daemon's status for `provhost status`: {e}");
            }
        }
    };
    let book = status::ModuleBook::follow(&host, publisher.clone());
    let _web = if listen.is_empty() {
        None
    } else {
        let state = provhost::web::WebState::new(
            db.clone(),
            provhost::web::Modules::Live(host.clone(), book.clone()),
            token,
            config.http.refresh_secs,
        );
        let (addr, stop) = provhost::web::spawn(&listen, state).await?;
        let shown = format!("http://{addr}/");
        tracing::info!("status page at {shown} (metrics at {shown}metrics)");
        if let Ok(mut u) = http_url.lock() {
            *u = Some(shown);
        }
        Some(stop)
    };
    publisher(&book);
    tracing::info!(node_id = daemon.node_id(), once, "provhost daemon running");
    super::notify::ready(&format!(
        "serving {} module(s) as management node {}",
        modules.len(),
        daemon.node_id()
    ));
    let summary = daemon.run(stopped(), once).await;
    let _ = std::fs::remove_file(&published);
    let summary = summary?;
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
