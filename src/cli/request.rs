//! `provhost request new|connect|end|cancel|list`: reservation requests the way VCL's web
//! front end makes and changes them.

use clap::Subcommand;
use provhost::db::requests::{self, ComputerChoice, NewRequest};
use provhost::db::{Db, DbError, OpenMode};
use provhost::Config;

use super::add::check_ipv4;
use super::{open_db, UrlArg};

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

/// Run `provhost request …`.
pub async fn run(config: &Config, cmd: RequestCommand) -> anyhow::Result<()> {
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
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let choice = match (computer, any) {
                (Some(c), false) => ComputerChoice::Named(c),
                (None, true) => ComputerChoice::Any,
                _ => {
                    return Err(
                        DbError::Invalid("give either --computer NAME or --any".into()).into(),
                    )
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
            let ip = check_ipv4(&ip)?;
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            provhost::db::flow::acknowledge(&db, reservation, &ip).await?;
            println!("reservation {reservation}: acknowledged from {ip}");
            db.close().await;
            Ok(())
        }
        RequestCommand::End { request, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            provhost::db::flow::end_now(&db, request).await?;
            println!("request {request}: ends now");
            db.close().await;
            Ok(())
        }
        RequestCommand::Cancel { request, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let result = cancel(&db, request).await;
            db.close().await;
            Ok(result?)
        }
        RequestCommand::List { all, limit, url } => {
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = requests::list_requests(&db, all, limit).await?;
            print!("{}", requests::format_requests(&rows));
            db.close().await;
            Ok(())
        }
    }
}

/// Move a request to `deleted` (`db::watch::cancel`); a flow waiting on it (for Connect,
/// for its computer, for the user) notices on its next poll and hands it to the reclaim.
async fn cancel(db: &Db, request: i64) -> Result<(), DbError> {
    let done = provhost::db::watch::cancel(db, request).await?;
    // As the web's deleteRequest: `released` once started, else `deleted`.
    let started = provhost::db::flow::request_times(db, request)
        .await?
        .is_some_and(|t| t.start <= t.now);
    let ending = if started { "released" } else { "deleted" };
    provhost::db::bookkeeping::web_ending(db, request, ending).await?;
    println!(
        "request {request}: deleted (was {}); the daemon reclaims its computer",
        done.was
    );
    Ok(())
}
