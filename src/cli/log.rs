//! `provhost log RESERVATION`: the load-log timeline of a reservation with elapsed times.

use provhost::db::{loadlog, Db};
use provhost::Config;

use super::UrlArg;

/// Run `provhost log RESERVATION`.
pub async fn run(config: &Config, reservation: i64, url: UrlArg) -> anyhow::Result<()> {
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
