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

/// `provhost add …`: what an operator (or VCL's web front end) enters before requests can
/// be made: users, images, computers.
#[derive(Debug, Clone, Subcommand)]
pub enum AddCommand {
    /// A user (`user.unityid`).
    User {
        login: String,
        /// Numeric uid to create the account with on computers (default: the OS picks).
        #[arg(long)]
        uid: Option<i64>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// An image with its first (production) revision.
    Image {
        /// `image.name`, also the revision's on-disk name.
        name: String,
        /// `OS.name`: `linux`, `windows`, `sim`, … (its module runs the OS routines).
        #[arg(long)]
        os: String,
        /// `image.prettyname` (default: the name).
        #[arg(long)]
        pretty: Option<String>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// A computer, available at once.
    Computer {
        /// `computer.hostname`
        hostname: String,
        /// Address (public and private).
        #[arg(long)]
        ip: String,
        /// `provisioning.name`: `lab`, `sim`, `qemu`, …
        #[arg(long)]
        provisioning: String,
        /// `lab`, `virtualmachine` or `blade` (default: lab for provisioning lab, else virtualmachine).
        #[arg(long = "type")]
        computer_type: Option<String>,
        /// SSH port provhost uses to reach it.
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost add …`.
pub async fn add(config: &Config, cmd: AddCommand) -> Result<(), DbError> {
    match cmd {
        AddCommand::User { login, uid, url } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let id = crate::db::inventory::add_user(&db, &login, uid).await?;
            println!("user {id}: {login}");
            db.close().await;
        }
        AddCommand::Image {
            name,
            os,
            pretty,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let pretty = pretty.unwrap_or_else(|| name.clone());
            let (image, revision) =
                crate::db::inventory::add_image(&db, &name, &pretty, &os).await?;
            println!("image {image}: {name} (OS {os}), revision {revision}");
            db.close().await;
        }
        AddCommand::Computer {
            hostname,
            ip,
            provisioning,
            computer_type,
            ssh_port,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let mut c = crate::db::inventory::NewComputer::lab(&hostname, &ip);
            c.computer_type = computer_type.unwrap_or_else(|| {
                if provisioning == "lab" {
                    "lab".into()
                } else {
                    "virtualmachine".into()
                }
            });
            c.provisioning = provisioning;
            c.ssh_port = ssh_port;
            let id = crate::db::inventory::add_computer(&db, &c).await?;
            println!(
                "computer {id}: {hostname} ({ip}), provisioning {}, type {}",
                c.provisioning, c.computer_type
            );
            db.close().await;
        }
    }
    Ok(())
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
    /// What the web front end does when the user clicks Connect: record their address.
    Connect {
        reservation: i64,
        /// The user's address (`reservation.remoteIP`).
        #[arg(long)]
        ip: String,
        #[command(flatten)]
        url: UrlArg,
    },
    /// End a reservation now (its request's end time becomes now).
    End {
        request: i64,
        #[command(flatten)]
        url: UrlArg,
    },
    /// Delete a request, as the web front end does (state `deleted`; the daemon reclaims).
    Cancel {
        request: i64,
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
        RequestCommand::Connect {
            reservation,
            ip,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            crate::db::flow::acknowledge(&db, reservation, &ip).await?;
            println!("reservation {reservation}: acknowledged from {ip}");
            db.close().await;
            Ok(())
        }
        RequestCommand::End { request, url } => {
            let db = Db::connect(&url.resolve(config)).await?;
            crate::db::flow::end_now(&db, request).await?;
            println!("request {request}: ends now");
            db.close().await;
            Ok(())
        }
        RequestCommand::Cancel { request, url } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let result = cancel(&db, request).await;
            db.close().await;
            result
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

/// Move a request to `deleted` from whatever state it is in (not while a daemon holds it).
async fn cancel(db: &Db, request: i64) -> Result<(), DbError> {
    let Some((state, _)) = crate::db::state::request_state(db, request).await? else {
        return Err(DbError::NotFound {
            what: "request",
            key: request.to_string(),
        });
    };
    match state.as_str() {
        "pending" => Err(DbError::Invalid(format!(
            "request {request} is being processed right now; cancel it again in a moment"
        ))),
        "deleted" | "complete" | "failed" => Err(DbError::Invalid(format!(
            "request {request} is already {state}"
        ))),
        _ => {
            if crate::db::state::transition(db, request, &state, "deleted").await? {
                println!(
                    "request {request}: deleted (was {state}); the daemon reclaims its computer"
                );
                Ok(())
            } else {
                Err(DbError::Invalid(format!(
                    "request {request} changed state while cancelling; try again"
                )))
            }
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
