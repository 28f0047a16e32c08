//! `provhost log RESERVATION`: the load-log timeline of a reservation with elapsed times.

use provhost::db::{flow, loadlog, DbError, OpenMode};
use provhost::Config;

use super::{open_db, UrlArg};

/// Run `provhost log RESERVATION`.
pub async fn run(config: &Config, reservation: i64, url: UrlArg) -> anyhow::Result<()> {
    let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
    let entries = loadlog::timeline(&db, reservation).await?;
    if entries.is_empty() && flow::request_of(&db, reservation).await?.is_none() {
        return Err(DbError::NotFound {
            what: "reservation",
            key: reservation.to_string(),
        }
        .into());
    }
    if entries.is_empty() {
        println!("reservation {reservation}: no load-log entries");
    } else {
        print!("{}", loadlog::format_timeline(&entries));
    }
    db.close().await;
    Ok(())
}
