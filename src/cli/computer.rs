//! `provhost computer list|set-state`: the computers as an operator sees them, and
//! bringing one back from `failed`/`maintenance` (or taking it out) with the reason in the
//! load-log.

use clap::{Subcommand, ValueEnum};
use provhost::db::{listing, OpenMode};
use provhost::Config;

use super::list::{self, opt, Format};
use super::{open_db, UrlArg};

#[derive(Debug, Clone, Subcommand)]
pub enum ComputerCommand {
    /// List the computers (not deleted): state, address, provisioning, image, holder.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        url: UrlArg,
    },
    /// Set a computer's state by hand: `available` (back from failed or maintenance) or
    /// `maintenance` (out of service). Refused while a reservation holds the computer.
    SetState {
        /// `computer.hostname` (or its short name).
        computer: String,
        state: OperatorState,
        /// Why, for the load-log (shown by `provhost log 0`).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// The states an operator sets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OperatorState {
    Available,
    Maintenance,
}

/// Run `provhost computer …`.
pub async fn run(config: &Config, cmd: ComputerCommand) -> anyhow::Result<()> {
    match cmd {
        ComputerCommand::List { format, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = listing::computers(&db).await?;
            db.close().await;
            list::print(
                &format,
                &rows,
                &[
                    "ID",
                    "HOSTNAME",
                    "IP",
                    "STATE",
                    "PROVISIONING",
                    "TYPE",
                    "IMAGE",
                    "VMHOST",
                    "HELD BY",
                ],
                |c| {
                    vec![
                        c.id.to_string(),
                        c.hostname.clone(),
                        if c.ssh_port == 22 {
                            c.ip.clone()
                        } else {
                            format!("{}:{}", c.ip, c.ssh_port)
                        },
                        c.state.clone(),
                        c.provisioning.clone(),
                        c.computer_type.clone(),
                        c.current_image.clone(),
                        opt(&c.vmhost),
                        c.held_by_request
                            .map_or_else(|| "-".into(), |r| format!("request {r}")),
                    ]
                },
            )
        }
        ComputerCommand::SetState {
            computer,
            state,
            reason,
            url,
        } => {
            let state = match state {
                OperatorState::Available => "available",
                OperatorState::Maintenance => "maintenance",
            };
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let c =
                provhost::db::state::operator_set_computer_state(&db, &computer, state, &reason)
                    .await?;
            db.close().await;
            if c.from == c.to {
                println!(
                    "computer {} ({}): already {}; nothing changed",
                    c.computer, c.hostname, c.to
                );
            } else {
                println!(
                    "computer {} ({}): {} -> {} (recorded in the load-log)",
                    c.computer, c.hostname, c.from, c.to
                );
            }
            Ok(())
        }
    }
}
