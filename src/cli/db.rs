//! `provhost db init`: create the schema on an empty database, or verify an existing VCL
//! database, then add provhost's own tables.

use clap::Subcommand;
use provhost::db::{schema, OpenMode};
use provhost::Config;

use super::{open_db, UrlArg};

#[derive(Debug, Clone, Subcommand)]
pub enum DbCommand {
    /// Create the schema on an empty database (VCL's tables, seeded), or check an existing
    /// VCL database; then add provhost's own `provhost_*` tables.
    Init {
        #[command(flatten)]
        url: UrlArg,
        /// Host name recorded as the management node on a fresh database (default: this machine's).
        #[arg(long)]
        management_node: Option<String>,
    },
}

/// Run `provhost db …`.
pub async fn run(config: &Config, cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Init {
            url,
            management_node,
        } => {
            let db = open_db(&url.resolve(config), OpenMode::Create).await?;
            let host = management_node.unwrap_or_else(schema::local_hostname);
            let report = schema::init(&db, &host).await?;
            if report.created_vcl_tables {
                println!("created VCL tables in {}", db.url());
            } else {
                println!("verified the existing VCL tables in {}", db.url());
            }
            if let Some((id, name)) = &report.management_node {
                println!("management node {id}: {name}");
            }
            println!("provhost tables: {}", report.provhost_tables.join(", "));
            db.close().await;
            Ok(())
        }
    }
}
