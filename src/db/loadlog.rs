//! VCL's `insertloadlog`: one `computerloadlog` row per step of a reservation's load, and
//! reading them back as a timeline with elapsed times (`provhost log RESERVATION`).

use chrono::NaiveDateTime;

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::db::time::parse_datetime;
use crate::vcl;

/// Write a load-log entry for `reservation` / `computer`. `name` must be one of VCL's
/// `computerloadstate.loadstatename` values (exact case) and present in the database's
/// `computerloadstate` table; anything else is [`DbError::UnknownLoadState`].
pub async fn loadlog(
    db: &Db,
    reservation: i64,
    computer: i64,
    name: &str,
    text: &str,
) -> Result<(), DbError> {
    if !vcl::is_load_state(name) {
        return Err(DbError::UnknownLoadState(name.to_string()));
    }
    // One statement: the load state is looked up by name as the row is written, so an id
    // that differs between databases (VCL never fixed them) does not matter.
    let sql = format!(
        "INSERT INTO `computerloadlog` (`reservationid`, `computerid`, `loadstateid`, `timestamp`, `additionalinfo`) \
         SELECT ?, ?, `id`, {}, ? FROM `computerloadstate` WHERE `loadstatename` = ?",
        db.now_sql()
    );
    let what = format!("load log {name} for reservation {reservation}");
    let insert = |text: String| {
        let (sql, what) = (&sql, &what);
        async move {
            db.retry(what, || async {
                with_pool!(db, p => sqlx::query(sql).bind(reservation).bind(computer).bind(text.as_str()).bind(name).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
            })
            .await
        }
    };
    let inserted = match insert(text.to_string()).await {
        // VCL's tables are latin1: a character it cannot hold (→, ✓, emoji) is refused in
        // strict mode. Keep the entry, with those characters as `?`.
        Err(e) if e.mysql_number() == Some(1366) => insert(latin1_lossy(text)).await?,
        other => other?,
    };
    if inserted == 0 {
        return Err(DbError::UnknownLoadState(format!(
            "{name} (not in this database's computerloadstate table)"
        )));
    }
    tracing::info!(reservation, computer, loadstate = name, "{text}");
    Ok(())
}

/// `text` with every character latin1 cannot hold replaced by `?`.
pub(crate) fn latin1_lossy(text: &str) -> String {
    text.chars()
        .map(|c| if u32::from(c) < 256 { c } else { '?' })
        .collect()
}

/// One load-log row, with times relative to the first row of the reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadLogEntry {
    pub id: i64,
    pub computer_id: i64,
    /// `computerloadlog.timestamp` as stored.
    pub timestamp: String,
    pub loadstatename: String,
    pub prettyname: String,
    pub additionalinfo: String,
    /// Seconds since the reservation's first entry.
    pub elapsed_secs: i64,
    /// Seconds since the previous entry.
    pub step_secs: i64,
}

/// The load-log rows of `reservation`, oldest first.
pub async fn timeline(db: &Db, reservation: i64) -> Result<Vec<LoadLogEntry>, DbError> {
    let sql = "SELECT l.`id`, l.`computerid`, CAST(l.`timestamp` AS CHAR) AS `ts`, s.`loadstatename`, s.`prettyname`, \
               l.`additionalinfo` FROM `computerloadlog` l LEFT JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` \
               WHERE l.`reservationid` = ? ORDER BY l.`timestamp`, l.`id`";
    let what = format!("reading the load log of reservation {reservation}");
    let rows: Vec<(i64, i64, String, String, String, String)> = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let rows = sqlx::query(sql).bind(reservation).fetch_all(p).await.during(what.as_str())?;
                rows.iter()
                    .map(|r| Ok((r.int("id")?, r.int("computerid")?, r.text("ts")?, r.text("loadstatename")?, r.text("prettyname")?, r.text("additionalinfo")?)))
                    .collect::<Result<Vec<_>, DbError>>()
            })
        })
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut first: Option<NaiveDateTime> = None;
    let mut prev: Option<NaiveDateTime> = None;
    for (id, computer_id, timestamp, loadstatename, prettyname, additionalinfo) in rows {
        let t = parse_datetime(&timestamp).ok();
        let since = |a: Option<NaiveDateTime>| match (a, t) {
            (Some(a), Some(t)) => (t - a).num_seconds(),
            _ => 0,
        };
        let (elapsed_secs, step_secs) = (since(first), since(prev));
        if first.is_none() {
            first = t;
        }
        if t.is_some() {
            prev = t;
        }
        out.push(LoadLogEntry {
            id,
            computer_id,
            timestamp,
            loadstatename,
            prettyname,
            additionalinfo,
            elapsed_secs,
            step_secs,
        });
    }
    Ok(out)
}

/// The timeline as text, one line per entry: time, elapsed (m:ss), step, name, info.
pub fn format_timeline(entries: &[LoadLogEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        let pretty = if e.prettyname.is_empty() || e.prettyname == e.loadstatename {
            String::new()
        } else {
            format!(" ({})", e.prettyname)
        };
        s.push_str(&format!(
            "{}  +{:>3}:{:02}  (+{:>4}s)  {}{}  {}\n",
            e.timestamp,
            e.elapsed_secs / 60,
            e.elapsed_secs % 60,
            e.step_secs,
            e.loadstatename,
            pretty,
            e.additionalinfo
        ));
    }
    s
}
