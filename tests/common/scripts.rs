//! Module scripts in a temp folder laid out like `scripts/` + `stdlib/`, and a host over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use provhost::host::{HostOptions, Limits, ReloadEvent, ScriptHost};
use tokio::sync::broadcast;

pub struct ScriptDir {
    _dir: tempfile::TempDir,
    pub scripts: PathBuf,
    pub stdlib: PathBuf,
}

impl ScriptDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let scripts = dir.path().join("scripts");
        let stdlib = dir.path().join("stdlib");
        for sub in ["provisioning", "os", "site"] {
            std::fs::create_dir_all(scripts.join(sub)).expect("mkdir");
        }
        std::fs::create_dir_all(&stdlib).expect("mkdir");
        ScriptDir {
            _dir: dir,
            scripts,
            stdlib,
        }
    }

    /// Write `content` to `scripts/<rel>` (or `stdlib/<rel>` when rel starts with `stdlib/`).
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::write(&path, content).expect("write script");
        path
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        match rel.strip_prefix("stdlib/") {
            Some(r) => self.stdlib.join(r),
            None => self.scripts.join(rel),
        }
    }

    pub fn host(&self, limits: Limits) -> Arc<ScriptHost> {
        ScriptHost::new(
            HostOptions {
                scripts_dir: self.scripts.clone(),
                stdlib_dir: self.stdlib.clone(),
                limits,
            },
            &[],
        )
    }
}

/// Limits small enough that runaway scripts stop in well under a second.
pub fn test_limits() -> Limits {
    Limits {
        max_operations: 2_000_000,
        max_call_levels: 32,
        max_string_size: 1 << 20,
        call_timeout_secs: 10,
        ..Limits::default()
    }
}

/// A complete provisioning module; `body` is appended (extra routines, helpers).
pub fn provisioning(name: &str, version: &str, body: &str) -> String {
    format!(
        r#"const MODULE = #{{ kind: "provisioning", name: "{name}", version: "{version}" }};
fn node_status(ctx) {{ "ready" }}
fn does_image_exist(ctx) {{ true }}
fn retrieve_image(ctx) {{ true }}
fn load(ctx) {{ true }}
fn capture(ctx) {{ true }}
fn control_vm(ctx, action) {{ if action == "status" {{ "running" }} else {{ true }} }}
fn get_image_size(ctx) {{ 1024 }}
{body}
"#
    )
}

/// Wait (bounded) for the first event about `path` matching `pred`.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<ReloadEvent>,
    path: &Path,
    timeout: Duration,
    pred: impl Fn(&ReloadEvent) -> bool,
) -> ReloadEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no matching reload event for {} within {timeout:?}",
                    path.display()
                )
            })
            .expect("event channel open");
        let about = match &ev {
            ReloadEvent::Loaded { path: p, .. }
            | ReloadEvent::Failed { path: p, .. }
            | ReloadEvent::Deleted { path: p, .. } => p,
        };
        if about == path && pred(&ev) {
            return ev;
        }
    }
}
