//! `provhost user list`: the users requests can be made for.

use clap::Subcommand;
use provhost::db::{listing, OpenMode};
use provhost::Config;

use super::list::{self, opt, Format};
use super::{open_db, UrlArg};

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// List the users: login, uid, affiliation, whether they log in with SSH keys.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost user …`.
pub async fn run(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::List { format, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = listing::users(&db).await?;
            db.close().await;
            list::print(
                &format,
                &rows,
                &["ID", "LOGIN", "UID", "AFFILIATION", "SSH KEYS"],
                |u| {
                    vec![
                        u.id.to_string(),
                        u.login.clone(),
                        opt(&u.uid),
                        u.affiliation.clone(),
                        if u.ssh_keys { "yes" } else { "no" }.into(),
                    ]
                },
            )
        }
    }
}
