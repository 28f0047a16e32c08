//! `provhost log RESERVATION [--follow]`: the load-log timeline of a reservation with
//! elapsed times; with `--follow`, new entries and request state changes as they come,
//! until the request ends, Ctrl-C, or `--timeout`.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use provhost::db::{flow, loadlog, Db, DbError, OpenMode};
use provhost::Config;

use super::progress::Progress;
use super::{open_db, UrlArg};

/// Exit code of `log --follow` stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// `reservation.id`
    pub reservation: i64,
    /// Keep printing new entries and state changes until the request ends: exit 0 when it
    /// completes (or was removed as finished), 1 when it failed or --timeout passed, 130
    /// on Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// With --follow: seconds between reads of the database.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// With --follow: the longest to follow, in seconds (default one day).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub timeout: u64,
    #[command(flatten)]
    pub url: UrlArg,
}

/// Run `provhost log RESERVATION [--follow]`.
pub async fn run(config: &Config, args: LogArgs) -> anyhow::Result<ExitCode> {
    let reservation = args.reservation;
    let db = open_db(&args.url.resolve(config), OpenMode::Existing).await?;
    let entries = loadlog::timeline(&db, reservation).await?;
    let request = flow::request_of(&db, reservation).await?;
    if entries.is_empty() && request.is_none() {
        db.close().await;
        return Err(DbError::NotFound {
            what: "reservation",
            key: reservation.to_string(),
        }
        .into());
    }
    if !args.follow {
        if entries.is_empty() {
            println!("reservation {reservation}: no load-log entries");
        } else {
            print!("{}", loadlog::format_timeline(&entries));
        }
        db.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let code = follow(&db, &args, entries).await;
    db.close().await;
    code
}

/// How a followed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    Failed,
    Removed,
}

/// The end a request state means, if any: `complete` and `failed` are final (a deleted
/// or timed-out request passes through reclaim to `complete`).
pub fn end_of(state: &str) -> Option<End> {
    match state {
        "complete" => Some(End::Complete),
        "failed" => Some(End::Failed),
        _ => None,
    }
}

async fn follow(
    db: &Db,
    args: &LogArgs,
    first: Vec<loadlog::LoadLogEntry>,
) -> anyhow::Result<ExitCode> {
    let reservation = args.reservation;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let progress = Progress::spinner(&format!("following reservation {reservation}"));
    let mut shown: HashSet<i64> = HashSet::new();
    let mut last_state = String::new();
    let mut pending = Some(first);
    let mut request_id: Option<i64> = None;
    // Registered now, before the first line is printed: a Ctrl-C at any point after it
    // ends the follow with its own exit code, never the default signal death.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("listening for Ctrl-C: {e}"))?;
    loop {
        let entries = match pending.take() {
            Some(e) => e,
            None => loadlog::timeline(db, reservation).await?,
        };
        let new: Vec<_> = entries
            .into_iter()
            .filter(|e| !shown.contains(&e.id))
            .collect();
        if !new.is_empty() {
            shown.extend(new.iter().map(|e| e.id));
            progress.println(loadlog::format_timeline(&new).trim_end());
        }
        // A reservation never changes its request: looked up once, then only its state.
        if request_id.is_none() {
            request_id = flow::request_of(db, reservation).await?;
        }
        let state = match request_id {
            Some(request) => flow::request_times(db, request)
                .await?
                .map(|t| (request, t.state.clone(), t.describe())),
            None => None,
        };
        let Some((request, state, described)) = state else {
            progress.finish();
            println!("reservation {reservation}: its request is gone (finished and removed)");
            return Ok(end_code(End::Removed));
        };
        if described != last_state {
            progress.println(&format!("-- request {request}: {described}"));
            last_state = described.clone();
        }
        if let Some(end) = end_of(&state) {
            progress.finish();
            println!("reservation {reservation}: request {request} ended: {state}");
            return Ok(end_code(end));
        }
        let now = Instant::now();
        if now >= deadline {
            progress.finish();
            anyhow::bail!(
                "reservation {reservation}: request {request} still {described} after {} s (--timeout)",
                args.timeout
            );
        }
        progress.set_message(&format!(
            "following reservation {reservation}: request {request} {described}"
        ));
        let wait = Duration::from_secs(args.interval).min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = interrupt.recv() => {
                progress.finish();
                eprintln!("interrupted: stopped following reservation {reservation}");
                return Ok(ExitCode::from(INTERRUPTED));
            }
        }
    }
}

fn end_code(end: End) -> ExitCode {
    match end {
        End::Complete | End::Removed => ExitCode::SUCCESS,
        End::Failed => ExitCode::from(super::exit::FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_and_failed_end_a_follow() {
        assert_eq!(end_of("complete"), Some(End::Complete));
        assert_eq!(end_of("failed"), Some(End::Failed));
        for s in [
            "new", "pending", "reserved", "inuse", "timeout", "deleted", "reload",
        ] {
            assert_eq!(end_of(s), None, "{s}");
        }
    }
}
