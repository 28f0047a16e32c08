//! `provhost node list`: the management nodes, and which daemon holds each (its lease).

use clap::Subcommand;
use provhost::db::{listing, OpenMode};
use provhost::Config;

use super::list::{self, opt, Format};
use super::{open_db, UrlArg};

#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// List the management nodes: state, last check-in, the daemon holding it and until when.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost node …`.
pub async fn run(config: &Config, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List { format, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = listing::nodes(&db).await?;
            db.close().await;
            list::print(
                &format,
                &rows,
                &["ID", "HOSTNAME", "IP", "STATE", "LAST CHECK-IN", "DAEMON"],
                |n| {
                    vec![
                        n.id.to_string(),
                        n.hostname.clone(),
                        n.ip.clone(),
                        n.state.clone(),
                        opt(&n.lastcheckin),
                        match (&n.lease_host, &n.lease_since, &n.lease_expires) {
                            (Some(h), Some(s), Some(e)) if n.lease_live => {
                                format!("on {h} since {s}, lease until {e}")
                            }
                            (Some(h), _, Some(e)) => format!("none (last: {h}, lease ended {e})"),
                            _ => "none".into(),
                        },
                    ]
                },
            )
        }
    }
}
