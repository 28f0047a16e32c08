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
         SELECT ?, ?, `id`, {}, ? FROM `computerloadstate` WHERE `loadstatename` = ?{}",
        db.now_sql(),
        db.lease_guard_sql()
    );
    let what = format!("load log {name} for reservation {reservation}");
    let insert = |text: String| {
        let (sql, what) = (&sql, &what);
        async move {
            db.retry(what, || async {
                with_pool!(db, p => {
                    let mut q = sqlx::query(sql).bind(reservation).bind(computer).bind(text.as_str()).bind(name);
                    if let Some(h) = db.lease_holder() {
                        q = q.bind(h);
                    }
                    q.execute(p).await.during(what.as_str()).map(|r| r.rows_affected())
                })
            })
            .await
        }
    };
    let text = &*cap(text);
    let inserted = match insert(text.to_string()).await {
        // VCL's tables are latin1: a character it cannot hold (→, ✓, emoji) is refused in
        // strict mode. Keep the entry, with those characters as `?`.
        Err(e) if e.mysql_number() == Some(1366) => insert(latin1_lossy(text)).await?,
        other => other?,
    };
    if inserted == 0 && db.lease_holder().is_some() && !crate::db::lease::holds(db).await? {
        return Err(DbError::LeaseLost);
    }
    if inserted == 0 {
        return Err(DbError::UnknownLoadState(format!(
            "{name} (not in this database's computerloadstate table)"
        )));
    }
    tracing::info!(reservation, computer, loadstate = name, "{text}");
    Ok(())
}

/// The most bytes of text one load-log row (`computerloadlog.additionalinfo`, VCL's
/// `TEXT` column: 65,535 bytes) gets from provhost; a failure's text (a routine's stderr
/// can be any size) is cut to this.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// The one place load-log and failure text is capped: `text` when it fits in
/// [`MAX_TEXT_BYTES`], else its start cut on a character boundary and marked as cut
/// (with how much was dropped). Pure ASCII marker, so it survives latin1 tables.
pub fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    const ROOM: usize = 80;
    let mut end = MAX_TEXT_BYTES - ROOM;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{} [... cut by provhost: {} of {} bytes not stored]",
        &text[..end],
        text.len() - end,
        text.len()
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_as_is() {
        assert_eq!(cap("load failed"), "load failed");
        let exact = "x".repeat(MAX_TEXT_BYTES);
        assert_eq!(cap(&exact).len(), MAX_TEXT_BYTES);
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_marked() {
        // Multi-byte characters all the way, so the cut point falls inside one.
        let long = "é€😀".repeat(20_000);
        let cut = cap(&long);
        assert!(cut.len() <= MAX_TEXT_BYTES, "{}", cut.len());
        assert!(cut.starts_with("é€😀"));
        assert!(
            cut.ends_with(&format!("of {} bytes not stored]", long.len())),
            "{}",
            &cut[cut.len() - 80..]
        );
        assert!(cut.contains("[... cut by provhost: "));
    }
}
