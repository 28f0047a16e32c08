//! Hot reload: a `notify` watcher on `scripts/` and `stdlib/`, a debounce, then
//! compile → contract-check → swap for each changed module file.
//!
//! Debounce: after the first event, changes are gathered until the tree has been quiet for
//! [`QUIET`] (bounded by [`MAX_GATHER`], so a file rewritten without pause still reloads).
//! A change under `stdlib/` recompiles every module, since imports are compiled in.
//! A failed edit keeps the last good version; a deleted file keeps its module loaded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use crate::host::{HostError, ScriptHost};

/// How long the tree must be quiet before a reload.
pub const QUIET: Duration = Duration::from_millis(50);
/// Longest a burst of changes can delay a reload.
pub const MAX_GATHER: Duration = Duration::from_millis(500);

/// The running watcher; dropping it stops the watch and joins its thread.
pub struct Watcher {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Dropping the notify watcher closes the event channel, which ends the thread.
        self.watcher.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ScriptHost {
    /// Start watching `scripts_dir` and `stdlib_dir` (if it exists) for changes.
    pub fn watch(self: &Arc<Self>) -> Result<Watcher, HostError> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)?;
        let scripts = canonical(&self.options().scripts_dir);
        let stdlib = canonical(&self.options().stdlib_dir);
        watcher.watch(&scripts, RecursiveMode::Recursive)?;
        if stdlib.is_dir() && !stdlib.starts_with(&scripts) {
            watcher.watch(&stdlib, RecursiveMode::Recursive)?;
        }
        let host = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("provhost-reload".into())
            .spawn(move || run(host, rx, scripts, stdlib))
            .map_err(|e| HostError::Io {
                path: PathBuf::from("<reload thread>"),
                source: e,
            })?;
        Ok(Watcher {
            watcher: Some(watcher),
            thread: Some(thread),
        })
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn run(
    host: Arc<ScriptHost>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    scripts: PathBuf,
    stdlib: PathBuf,
) {
    // Paths under `scripts` are reported canonical; the registry knows them as the host was
    // configured. Map back so both name the same file.
    let configured = host.options().scripts_dir.clone();
    let to_configured = |p: &Path| match p.strip_prefix(&scripts) {
        Ok(rel) => configured.join(rel),
        Err(_) => p.to_path_buf(),
    };
    loop {
        let first = match rx.recv() {
            Ok(ev) => ev,
            Err(_) => return,
        };
        let mut changed = BTreeSet::new();
        let take = |ev: notify::Result<notify::Event>, changed: &mut BTreeSet<PathBuf>| match ev {
            Ok(ev) => {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    changed.extend(
                        ev.paths
                            .into_iter()
                            .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
                            .filter(|p| !crate::host::scripttest::is_test_file(p)),
                    );
                }
            }
            Err(e) => tracing::warn!("file watcher error: {e}"),
        };
        take(first, &mut changed);
        let started = Instant::now();
        loop {
            let left = MAX_GATHER.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(QUIET.min(left)) {
                Ok(ev) => take(ev, &mut changed),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if changed.is_empty() {
            continue;
        }
        if changed.iter().any(|p| p.starts_with(&stdlib)) {
            tracing::info!("stdlib changed; recompiling every module");
            let mut files: BTreeSet<PathBuf> = host
                .module_files()
                .unwrap_or_default()
                .into_iter()
                .collect();
            files.extend(
                changed
                    .iter()
                    .filter(|p| p.starts_with(&scripts))
                    .map(|p| to_configured(p)),
            );
            for p in files {
                apply(&host, &p);
            }
        } else {
            for p in changed.iter().map(|p| to_configured(p)) {
                apply(&host, &p);
            }
        }
    }
}

fn apply(host: &ScriptHost, path: &Path) {
    if crate::host::Kind::from_path(path).is_none() {
        tracing::debug!(path = %path.display(), "not in a module folder (provisioning/, os/, site/); ignored");
        return;
    }
    if path.exists() {
        // Errors are logged and broadcast by load_file; a good load is said at info, so a
        // fixed file's earlier ERROR is not the last word.
        if let Ok(key) = host.load_file(path) {
            let version = host
                .module(&key)
                .map(|m| m.info.version.clone())
                .unwrap_or_default();
            tracing::info!(path = %path.display(), "reloaded {}/{} v{version}", key.0, key.1);
        }
    } else {
        host.forget_file(path);
    }
}
