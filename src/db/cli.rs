//! The database commands of the `provhost` CLI — `db init`, `request new|list`, `log` —
//! as clap argument types and functions, so `main.rs` only dispatches to them.

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::db::error::DbError;
use crate::db::pool::Db;
use crate::db::requests::{ComputerChoice, NewRequest};
use crate::db::{loadlog, requests, schema};

/// Where the database is: `--url`, else `[database] url`, else the SQLite file in the data folder.
#[derive(Debug, Clone, Args)]
pub struct UrlArg {
    /// Database URL (`sqlite://PATH` or `mysql://USER@HOST/DB`); default: `[database] url`
    /// in provhost.toml, else `sqlite://<data_dir>/provhost.db`.
    #[arg(long, env = "PROVHOST_DATABASE_URL")]
    pub url: Option<String>,
}

impl UrlArg {
    fn resolve(&self, config: &Config) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| config.database.url_or_default(&config.paths.data_dir))
    }
}

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

#[derive(Debug, Clone, Subcommand)]
pub enum RequestCommand {
    /// Add a reservation request the way VCL's web front end does (state `new`).
    New {
        /// `image.name` (or its pretty name).
        #[arg(long)]
        image: String,
        /// Computer host name (or short name).
        #[arg(long, conflicts_with = "any", required_unless_present = "any")]
        computer: Option<String>,
        /// Any free computer, preferring one that already has the image.
        #[arg(long)]
        any: bool,
        /// The user's login (`user.unityid`).
        #[arg(long)]
        user: String,
        /// `now` (default), `+30m`, or `YYYY-MM-DD HH:MM`.
        #[arg(long)]
        start: Option<String>,
        /// `+1h` after the start (default), or `YYYY-MM-DD HH:MM`.
        #[arg(long)]
        end: Option<String>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// List requests (by default those not complete or failed).
    List {
        /// Include complete and failed requests.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost db …`.
pub async fn db(config: &Config, cmd: DbCommand) -> Result<(), DbError> {
    match cmd {
        DbCommand::Init {
            url,
            management_node,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
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

/// Run `provhost request …`.
pub async fn request(config: &Config, cmd: RequestCommand) -> Result<(), DbError> {
    match cmd {
        RequestCommand::New {
            image,
            computer,
            any,
            user,
            start,
            end,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let choice = match (computer, any) {
                (Some(c), false) => ComputerChoice::Named(c),
                (None, true) => ComputerChoice::Any,
                _ => {
                    return Err(DbError::Invalid(
                        "give either --computer NAME or --any".into(),
                    ))
                }
            };
            let c = requests::new_request(
                &db,
                &NewRequest {
                    image,
                    computer: choice,
                    user,
                    start,
                    end,
                },
            )
            .await?;
            println!(
                "request {} (reservation {}): image {} on {}, management node {}, {} to {}",
                c.request_id,
                c.reservation_id,
                c.image_id,
                c.computer,
                c.management_node,
                c.start,
                c.end
            );
            db.close().await;
            Ok(())
        }
        RequestCommand::List { all, limit, url } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let rows = requests::list_requests(&db, all, limit).await?;
            print!("{}", requests::format_requests(&rows));
            db.close().await;
            Ok(())
        }
    }
}

/// Run `provhost log RESERVATION`.
pub async fn log(config: &Config, reservation: i64, url: UrlArg) -> Result<(), DbError> {
    let db = Db::connect(&url.resolve(config)).await?;
    let entries = loadlog::timeline(&db, reservation).await?;
    if entries.is_empty() {
        println!("reservation {reservation}: no load-log entries");
    } else {
        print!("{}", loadlog::format_timeline(&entries));
    }
    db.close().await;
    Ok(())
}
