//! The data of the operators' view, gathered once per request: management nodes with the
//! daemon holding each, computers, recent reservations with their last load-log step,
//! loaded modules (version, file, last reload, last reload error), and one reservation's
//! timeline and spans. The page, its JSON and `provhost status` all show this.
//!
//! Modules live only in the daemon's process: [`ModuleBook`] adds what the registry lacks
//! (when a file last failed to load, and why) from the host's reload events, and
//! [`publish`] writes the module list to `<data_dir>/provhost.status.json` on every change
//! so `provhost status` in another process can show it (marked stale when no daemon runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::db::listing::{ComputerRow, NodeRow};
use crate::db::requests::RequestRow;
use crate::db::{Db, DbError};
use crate::host::{FileState, ReloadEvent, ScriptHost};
use crate::trace::Span;

/// Reservations the overview shows (newest first).
pub const RECENT: i64 = 50;

/// `YYYY-MM-DD HH:MM:SS` UTC of `t`.
pub fn utc(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One loaded module, or a file that does not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// `provisioning/sim`; empty for a file that never loaded.
    pub module: String,
    pub version: String,
    pub file: String,
    /// When the version served now was loaded.
    pub loaded_at: Option<String>,
    /// Loads of this module since start (1: no reload yet).
    pub generation: u64,
    /// The last failed load of the file (the served version stays), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Served from the saved last good copy because the file did not load at start.
    pub restored_from: Option<String>,
}

/// When each file last failed to load (the registry keeps the errors, not the time).
#[derive(Debug, Default)]
pub struct ModuleBook {
    failed_at: Mutex<BTreeMap<PathBuf, SystemTime>>,
}

impl ModuleBook {
    /// A book fed by `host`'s reload events until the host is dropped; `on_change` runs
    /// after each event (the publisher).
    pub fn follow(
        host: &Arc<ScriptHost>,
        on_change: impl Fn(&ModuleBook) + Send + 'static,
    ) -> Arc<ModuleBook> {
        let book = Arc::new(ModuleBook::default());
        let mut rx = host.subscribe();
        let b = Arc::clone(&book);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ReloadEvent::Failed { path, .. }) => {
                        if let Ok(mut m) = b.failed_at.lock() {
                            m.insert(path, SystemTime::now());
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                on_change(&b);
            }
        });
        book
    }

    fn failed_at(&self, path: &Path) -> Option<SystemTime> {
        self.failed_at.lock().ok()?.get(path).copied()
    }
}

/// Every module `host` serves and every file that does not load, by file.
pub fn modules(host: &ScriptHost, book: Option<&ModuleBook>) -> Vec<ModuleStatus> {
    let mut out = Vec::new();
    for (path, state) in host.file_states() {
        let (errors, keeping) = match &state {
            FileState::Loaded { key, .. } => (None, Some(key.clone())),
            FileState::Failed { errors, keeping } => (Some(errors.join("; ")), keeping.clone()),
            FileState::Deleted { keeping } => {
                (Some("the file was deleted".to_string()), keeping.clone())
            }
        };
        let loaded = keeping.as_ref().and_then(|k| host.module(k));
        let failed_at = errors
            .as_ref()
            .and(book.and_then(|b| b.failed_at(&path)).map(utc));
        out.push(ModuleStatus {
            module: keeping.map(|(k, n)| format!("{k}/{n}")).unwrap_or_default(),
            version: loaded
                .as_ref()
                .map(|m| m.info.version.clone())
                .unwrap_or_default(),
            file: path.display().to_string(),
            loaded_at: loaded.as_ref().map(|m| utc(m.loaded_at)),
            generation: loaded.as_ref().map(|m| m.generation).unwrap_or(0),
            last_error: errors.map(|e| crate::host::secrets::redact(&e).into_owned()),
            last_error_at: failed_at,
            restored_from: loaded.and_then(|m| m.restored_from.clone()),
        });
    }
    out
}

/// What a running daemon publishes for other processes (`provhost status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub pid: u32,
    pub node: String,
    pub started: String,
    pub updated: String,
    /// The status page's address, when it serves one.
    pub http: Option<String>,
    pub modules: Vec<ModuleStatus>,
}

/// Where a daemon with `data_dir` publishes.
pub fn published_path(data_dir: &Path) -> PathBuf {
    data_dir.join("provhost.status.json")
}

/// Write `p` to `path` (temp file, then rename: a reader never sees half a file).
pub fn publish(path: &Path, p: &Published) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(p).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// What a daemon published, if the file is there and readable.
pub fn read_published(path: &Path) -> Option<Published> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Is process `pid` alive and a provhost (its name, `/proc/PID/comm`, starts with
/// `provhost`)? A pid a crashed daemon left behind may belong to another program by now
/// (after a reboot, or once pids wrap).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.trim_end().starts_with("provhost"))
}

/// One reservation on the overview: its `request list` row and its newest load-log step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReservationSummary {
    #[serde(flatten)]
    pub row: RequestRow,
    /// The newest load-log step and its text.
    pub last_step: Option<String>,
    pub last_info: Option<String>,
}

impl ReservationSummary {
    fn from_row(row: RequestRow, last: Option<(String, String)>) -> Self {
        let (last_step, last_info) = last.unzip();
        ReservationSummary {
            row,
            last_step,
            last_info,
        }
    }
}

/// The overview.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generated: String,
    pub nodes: Vec<NodeRow>,
    pub computers: Vec<ComputerRow>,
    pub reservations: Vec<ReservationSummary>,
    pub modules: Vec<ModuleStatus>,
    /// Where the module list comes from: `this daemon`, `published by pid N at …`, or why
    /// there is none.
    pub modules_source: String,
}

/// Gather the overview from the database; `modules` as the caller knows them.
pub async fn gather(
    db: &Db,
    modules: Vec<ModuleStatus>,
    modules_source: String,
) -> Result<Status, DbError> {
    let nodes = crate::db::listing::nodes(db).await?;
    let computers = crate::db::listing::computers(db).await?;
    let rows = crate::db::requests::list_requests(db, true, RECENT).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.reservation_id).collect();
    let mut last = crate::db::status::last_steps(db, &ids).await?;
    let reservations = rows
        .into_iter()
        .map(|r| {
            let l = last.remove(&r.reservation_id);
            ReservationSummary::from_row(r, l)
        })
        .collect();
    Ok(Status {
        generated: utc(SystemTime::now()),
        nodes,
        computers,
        reservations,
        modules,
        modules_source,
    })
}

/// One load-log step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub timestamp: String,
    pub elapsed_secs: i64,
    pub step_secs: i64,
    pub name: String,
    pub pretty: String,
    pub info: String,
    /// A failure (`failed`) or a warning the flow went on after.
    pub failed: bool,
}

/// One reservation's page.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub reservation_id: i64,
    pub summary: Option<ReservationSummary>,
    pub timeline: Vec<Step>,
    pub spans: Vec<Span>,
    /// Why there are no spans, when they could not be read (e.g. an old schema).
    pub spans_error: Option<String>,
}

/// Gather one reservation's timeline and spans.
pub async fn detail(db: &Db, reservation: i64) -> Result<Detail, DbError> {
    let summary = crate::db::status::reservation_row(db, reservation)
        .await?
        .map(|r| ReservationSummary::from_row(r, None));
    let timeline = crate::db::loadlog::timeline(db, reservation)
        .await?
        .into_iter()
        .map(|e| Step {
            failed: matches!(e.loadstatename.as_str(), "failed" | "WARNING" | "warning"),
            timestamp: e.timestamp,
            elapsed_secs: e.elapsed_secs,
            step_secs: e.step_secs,
            name: e.loadstatename,
            pretty: e.prettyname,
            info: e.additionalinfo,
        })
        .collect();
    let (mut spans, spans_error) = match crate::db::span::of_reservation(db, reservation).await {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // Routine calls still running in this process (the daemon's), drawn as open bars.
    spans.extend(crate::trace::running(reservation));
    spans.sort_by_key(|s| s.start_ms);
    Ok(Detail {
        reservation_id: reservation,
        summary,
        timeline,
        spans,
        spans_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_summary_is_its_request_row_plus_the_last_step_in_one_flat_object() {
        let row = RequestRow {
            request_id: 3,
            reservation_id: 4,
            state: "inuse".into(),
            laststate: "reserved".into(),
            user: "ann".into(),
            image: "deb".into(),
            computer: "vm1".into(),
            management_node: "mn1".into(),
            start: "s".into(),
            end: "e".into(),
        };
        let s = ReservationSummary::from_row(row, Some(("reserved".into(), "ready".into())));
        assert_eq!(
            serde_json::to_value(&s).expect("json"),
            serde_json::json!({
                "request_id": 3, "reservation_id": 4, "state": "inuse", "laststate": "reserved",
                "user": "ann", "image": "deb", "computer": "vm1", "management_node": "mn1",
                "start": "s", "end": "e", "last_step": "reserved", "last_info": "ready",
            })
        );
    }

    #[test]
    fn only_a_live_provhost_process_counts_as_the_daemon() {
        // This test runs in `provhost-HASH`, the library's test binary.
        assert!(pid_alive(std::process::id()));
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let reused = pid_alive(other.id());
        let _ = other.kill();
        let _ = other.wait();
        assert!(!reused, "a live process that is not provhost");
        assert!(!pid_alive(999_999_999), "no such process");
    }
}
