//! `provhost status [--json]`: the status page's data as tables — management nodes (with
//! the daemon holding each), reservations (with their last load-log step), computers and
//! modules — from the database and what a daemon on this machine publishes
//! (`<data_dir>/provhost.status.json`). Without a running daemon it says so, and shows no
//! module list (only a daemon has modules loaded).

use provhost::db::OpenMode;
use provhost::web::status::{self, Status};
use provhost::Config;

use super::list::{opt, table};
use super::{open_db, UrlArg};

/// Whether a daemon on this machine runs, and what that means for the module list.
fn daemon_note(config: &Config) -> (bool, Vec<status::ModuleStatus>, String) {
    let path = status::published_path(&config.paths.data_dir);
    match status::read_published(&path) {
        Some(p) if status::pid_alive(p.pid) => {
            let page = p
                .http
                .as_deref()
                .map(|u| format!("; status page {u}"))
                .unwrap_or_default();
            let note = format!(
                "a daemon runs on this machine (pid {}, since {}); modules as it published them at {}{page}",
                p.pid, p.started, p.updated
            );
            (true, p.modules, note)
        }
        Some(p) => (
            false,
            Vec::new(),
            format!(
                "no daemon runs on this machine: the last one (pid {}) is gone and left {} behind; its module list is not shown (`provhost check` compiles the scripts)",
                p.pid,
                path.display()
            ),
        ),
        None => (
            false,
            Vec::new(),
            format!(
                "no daemon runs on this machine (none published {}): modules are loaded only by a running daemon (`provhost serve`); `provhost check` compiles the scripts",
                path.display()
            ),
        ),
    }
}

pub async fn run(config: &Config, json: bool, url: UrlArg) -> anyhow::Result<()> {
    let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
    let (running, modules, note) = daemon_note(config);
    let s = status::gather(&db, modules, note).await;
    db.close().await;
    let s = s?;
    if json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("daemon_running".into(), running.into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render(&s));
    Ok(())
}

/// The tables.
fn render(s: &Status) -> String {
    let mut o = String::new();
    o.push_str("MANAGEMENT NODES\n");
    o.push_str(&table(
        &["NODE", "STATE", "LAST CHECK-IN", "DAEMON"],
        s.nodes
            .iter()
            .map(|n| {
                vec![
                    n.hostname.clone(),
                    n.state.clone(),
                    opt(&n.lastcheckin),
                    match (&n.lease_host, &n.lease_expires) {
                        (Some(h), Some(e)) if n.lease_live => {
                            format!("on {h}, lease until {e}")
                        }
                        (Some(h), Some(e)) => {
                            format!("none running (last on {h}, lease ended {e})")
                        }
                        _ => "none running".into(),
                    },
                ]
            })
            .collect(),
    ));
    o.push_str("\nRESERVATIONS (newest first)\n");
    if s.reservations.is_empty() {
        o.push_str("none\n");
    } else {
        o.push_str(&table(
            &[
                "RESV",
                "REQUEST",
                "STATE/LAST",
                "USER",
                "IMAGE",
                "COMPUTER",
                "LAST STEP",
            ],
            s.reservations
                .iter()
                .map(|r| {
                    vec![
                        r.row.reservation_id.to_string(),
                        r.row.request_id.to_string(),
                        format!("{}/{}", r.row.state, r.row.laststate),
                        r.row.user.clone(),
                        r.row.image.clone(),
                        r.row.computer.clone(),
                        match (&r.last_step, &r.last_info) {
                            (Some(st), Some(i)) if !i.is_empty() => {
                                format!("{st}: {}", i.chars().take(60).collect::<String>())
                            }
                            (Some(st), _) => st.clone(),
                            _ => "-".into(),
                        },
                    ]
                })
                .collect(),
        ));
    }
    o.push_str("\nCOMPUTERS\n");
    o.push_str(&table(
        &[
            "COMPUTER",
            "STATE",
            "IMAGE",
            "VM HOST",
            "PROVISIONING",
            "HELD BY",
        ],
        s.computers
            .iter()
            .map(|c| {
                vec![
                    c.hostname.clone(),
                    c.state.clone(),
                    c.current_image.clone(),
                    opt(&c.vmhost),
                    c.provisioning.clone(),
                    opt(&c.held_by_request.map(|r| format!("request {r}"))),
                ]
            })
            .collect(),
    ));
    o.push_str(&format!("\nMODULES ({})\n", s.modules_source));
    if !s.modules.is_empty() {
        o.push_str(&table(
            &[
                "MODULE",
                "VERSION",
                "LOADED",
                "LOADS",
                "FILE",
                "LAST RELOAD ERROR",
            ],
            s.modules
                .iter()
                .map(|m| {
                    vec![
                        m.module.clone(),
                        m.version.clone(),
                        opt(&m.loaded_at),
                        m.generation.to_string(),
                        m.file.clone(),
                        match (&m.last_error, &m.last_error_at) {
                            (Some(e), Some(at)) => format!("{at}: {e}"),
                            (Some(e), None) => e.clone(),
                            _ => "-".into(),
                        },
                    ]
                })
                .collect(),
        ));
    }
    o
}
