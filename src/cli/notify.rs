//! `provhost serve` under systemd: the service notifications of `Type=notify`
//! (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…`) sent to the datagram socket
//! `NOTIFY_SOCKET` names (nothing when it is unset: run by hand), and SIGHUP — systemd's
//! `ExecReload` — reloading what can be reloaded safely while flows run: every module
//! script and the stdlib. The configuration file is read again and checked; its settings
//! apply at the next start, and the reload names each section that changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use provhost::host::ScriptHost;
use provhost::Config;

/// Send `state` (newline-separated `KEY=VALUE` lines) to systemd; false when there is no
/// `NOTIFY_SOCKET` or the send failed (logged at debug: a missing manager is normal).
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sent = send(Path::new(&socket), state.as_bytes());
    if let Err(e) = &sent {
        tracing::debug!("sd_notify to {}: {e}", Path::new(&socket).display());
    }
    sent.is_ok()
}

fn send(socket: &Path, msg: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let raw = socket.as_os_str().as_bytes();
    let addr = match raw.strip_prefix(b"@") {
        // An abstract socket (`@name`): systemd's default for `Type=notify`.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(msg, &addr)
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd wants with `RELOADING=1`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The daemon is up (its node held): `READY=1` with a status line.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// The daemon is stopping (`STOPPING=1`).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping: handing running flows back");
}

/// The top-level sections of `provhost.toml` whose values differ between `a` and `b`.
pub fn changed_sections(a: &Config, b: &Config) -> Vec<&'static str> {
    // Every section by name: a section added to `Config` fails to compile here until it
    // is compared too.
    let Config {
        paths,
        scripts,
        database,
        daemon,
        ssh,
        vm,
        images,
        vmnet,
        http,
        trace,
    } = a;
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($field:ident),*) => {$(
            if *$field != b.$field {
                out.push(stringify!($field));
            }
        )*};
    }
    cmp!(paths, scripts, database, daemon, ssh, vm, images, vmnet, http, trace);
    out
}

/// On every SIGHUP (for as long as the daemon runs): tell systemd it reloads, load every
/// module script again (a broken file keeps its last good version, as with the watcher),
/// check the configuration file `file` again against `running` (naming what would change
/// at the next start), then tell systemd it is ready again.
pub fn reload_on_hup(
    host: Arc<ScriptHost>,
    file: Option<PathBuf>,
    running: Config,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            notify(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading scripts",
                monotonic_usec()
            ));
            let h = Arc::clone(&host);
            let errors = tokio::task::spawn_blocking(move || {
                let errors = h.load_all();
                (errors, h.modules().len())
            })
            .await;
            let status = match errors {
                Ok((errors, modules)) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::info!(
                        modules,
                        errors = errors.len(),
                        "SIGHUP: reloaded the module scripts{}",
                        if errors.is_empty() {
                            ""
                        } else {
                            " (files with errors keep their last good version)"
                        }
                    );
                    format!(
                        "serving {modules} module(s); last reload: {} error(s)",
                        errors.len()
                    )
                }
                Err(e) => {
                    tracing::error!("SIGHUP: the reload thread failed: {e}");
                    "reload failed; still serving the modules loaded before".to_string()
                }
            };
            check_config(file.as_deref(), &running);
            notify(&format!("READY=1\nSTATUS={status}"));
        }
    });
    Ok(())
}

/// Read the configuration again and say what a restart would change, or why it would fail.
fn check_config(file: Option<&Path>, running: &Config) {
    let shown = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "(built-in defaults)".into());
    match Config::load(file) {
        Ok(new) => {
            let changed = changed_sections(running, &new);
            if changed.is_empty() {
                tracing::info!("SIGHUP: {shown} unchanged");
            } else {
                tracing::warn!(
                    "SIGHUP: {shown} changed [{}]; these settings apply at the next restart (systemctl restart provhost), not to a running daemon",
                    changed.join("], [")
                );
            }
        }
        Err(e) => tracing::error!(
            "SIGHUP: {e}; the daemon keeps running with the configuration it started with, but a restart would fail until this is fixed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_listening_socket_and_is_quiet_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        send(&path, b"READY=1\nSTATUS=up").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
        assert!(send(&dir.path().join("absent.sock"), b"READY=1").is_err());
    }

    #[test]
    fn changed_sections_names_only_what_differs() {
        let a = Config::default();
        let mut b = Config::default();
        assert!(changed_sections(&a, &b).is_empty());
        b.daemon.poll_interval_secs += 1;
        b.ssh.port = 2222;
        assert_eq!(changed_sections(&a, &b), vec!["daemon", "ssh"]);
        // The status page's and the spans' sections too (they were not compared).
        let mut c = Config::default();
        c.http.listen = "127.0.0.1:8080".into();
        c.trace.max_rows = 500;
        assert_eq!(changed_sections(&a, &c), vec!["http", "trace"]);
    }

    #[test]
    fn the_monotonic_clock_moves() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() > a && a > 0);
    }
}
