//! VCL's bookkeeping that its web front end reads, done as vcld and the web do it:
//!
//! - a new request's `log` row (one per request; `request.logid` points at it, with
//!   `log.requestid` back), one `sublog` row per reservation and a first `changelog` row
//!   (the web's `addRequest`, `addLogEntry`, `addSublogEntry`) — `LOG_SQL`, run inside
//!   `requests::new_request`'s transaction;
//! - `log.loaded` the first time the request's computer is reserved (vcld's
//!   `update_log_loaded_time`, at the start of reserved.pm) — [`set_loaded`];
//! - `log.ending` and `log.finalend` when a flow ends the request the way vcld names it
//!   (`state_exit`'s third argument: `noack`, `nologin`, `timeout`, `EOR`, `failed`) —
//!   [`exit_ending`], [`set_ending`]; and as the web does when the user deletes or ends a
//!   reservation (`deleteRequest`: `deleted` before the start, `released` after it, with a
//!   `changelog` row) — [`web_ending`];
//! - `reservation.lastcheck` (vcld's `update_reservation_lastcheck`: when a state process
//!   starts, and when it leaves a reservation reserved or in use) — [`touch_lastcheck`];
//! - removing finished requests (vcld's `check_time` returning `remove`, then
//!   `delete_request`) — [`removable`], [`remove_request`].
//!
//! VCL's `log.ending` values are the column's enum: deleted, released, failed, failedtest,
//! noack, nologin, timeout, EOR, none.

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::db::time::{format_datetime, parse_datetime};
use crate::vcl;

/// The statements `requests::new_request` runs, in its transaction, after inserting the
/// request and its reservation (binds in brackets). `{now}` is the backend's now.
pub struct LogSql {
    /// INSERT log [userid, nowfuture, start, initialend, finalend, imageid].
    pub insert_log: &'static str,
    /// UPDATE request.logid [logid, request].
    pub request_logid: &'static str,
    /// UPDATE log.requestid [request, logid].
    pub log_requestid: &'static str,
    /// INSERT sublog from the reservation row [logid, reservation].
    pub insert_sublog: &'static str,
    /// INSERT changelog [logid, start, end].
    pub insert_changelog: String,
}

/// [`LogSql`] for a backend whose "now" is `now`.
pub fn log_sql(now: &str) -> LogSql {
    LogSql {
        insert_log: "INSERT INTO `log` (`userid`, `nowfuture`, `start`, `initialend`, `finalend`, `wasavailable`, `ending`, `imageid`) \
                     VALUES (?, ?, ?, ?, ?, 1, 'none', ?)",
        request_logid: "UPDATE `request` SET `logid` = ? WHERE `id` = ?",
        log_requestid: "UPDATE `log` SET `requestid` = ? WHERE `id` = ?",
        // The web takes the computer's predictive module, and the VM host's computer for a VM.
        insert_sublog: "INSERT INTO `sublog` (`logid`, `imageid`, `imagerevisionid`, `computerid`, `managementnodeid`, `predictivemoduleid`, `hostcomputerid`) \
                        SELECT ?, r.`imageid`, r.`imagerevisionid`, r.`computerid`, r.`managementnodeid`, c.`predictivemoduleid`, \
                        CASE WHEN c.`type` = 'virtualmachine' THEN vh.`computerid` ELSE NULL END \
                        FROM `reservation` r JOIN `computer` c ON c.`id` = r.`computerid` LEFT JOIN `vmhost` vh ON vh.`id` = c.`vmhostid` \
                        WHERE r.`id` = ?",
        insert_changelog: format!(
            "INSERT INTO `changelog` (`logid`, `start`, `end`, `timestamp`) VALUES (?, ?, ?, {now})"
        ),
    }
}

/// `log.loaded` = now unless already set, for the request's log row (none: nothing).
pub async fn set_loaded(db: &Db, request: i64) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE `log` SET `loaded` = COALESCE(`loaded`, {}) WHERE `id` = (SELECT `logid` FROM `request` WHERE `id` = ?)",
        db.now_sql()
    );
    let what = format!("recording when request {request} was loaded (log.loaded)");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(request).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// `log.ending` = `ending` and `log.finalend` = now for the request's log row, as vcld's
/// `update_log_ending` (none: nothing).
pub async fn set_ending(db: &Db, request: i64, ending: &str) -> Result<(), DbError> {
    check_ending(ending)?;
    let sql = format!(
        "UPDATE `log` SET `ending` = ?, `finalend` = {} WHERE `id` = (SELECT `logid` FROM `request` WHERE `id` = ?)",
        db.now_sql()
    );
    let what = format!("recording how request {request} ended (log.ending {ending})");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(ending).bind(request).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// What the web's `deleteRequest` records when the user deletes (`deleted`, before the
/// start) or ends (`released`, after it) a reservation: `log.ending`, for `released` also
/// `log.finalend` = now, and a `changelog` row carrying the new end.
pub async fn web_ending(db: &Db, request: i64, ending: &str) -> Result<(), DbError> {
    check_ending(ending)?;
    let now = db.now_sql();
    let released = ending == "released";
    let update = if released {
        format!("UPDATE `log` SET `ending` = ?, `finalend` = {now} WHERE `id` = ?")
    } else {
        "UPDATE `log` SET `ending` = ? WHERE `id` = ?".to_string()
    };
    let change = if released {
        format!("INSERT INTO `changelog` (`logid`, `end`, `timestamp`) VALUES (?, {now}, {now})")
    } else {
        format!("INSERT INTO `changelog` (`logid`, `timestamp`) VALUES (?, {now})")
    };
    let what = format!("recording that request {request} was {ending} (log.ending)");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let row = sqlx::query("SELECT `logid` FROM `request` WHERE `id` = ?").bind(request).fetch_optional(&mut *tx).await.during(what.as_str())?;
            let Some(logid) = row.map(|r| r.opt_int("logid")).transpose()?.flatten() else {
                tx.rollback().await.during(what.as_str())?;
                return Ok(());
            };
            sqlx::query(&update).bind(ending).bind(logid).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query(&change).bind(logid).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())
        })
    })
    .await
}

fn check_ending(ending: &str) -> Result<(), DbError> {
    if vcl::LOG_ENDINGS.contains(&ending) {
        Ok(())
    } else {
        Err(DbError::Invalid(format!(
            "log.ending {ending:?} is not one of VCL's ({})",
            vcl::LOG_ENDINGS.join(", ")
        )))
    }
}

/// The `log.ending` vcld writes when a flow for a request in state `from` ends it with
/// request state `to` and computer state `computer` (`state_exit`'s third argument in
/// reserved.pm, inuse.pm, image.pm); `None` when vcld leaves it alone (the web has set
/// `deleted`/`released`, or the request goes on).
pub fn exit_ending(from: &str, to: &str, computer: Option<&str>) -> Option<&'static str> {
    match (from, to, computer) {
        // reserved.pm: no Connect → noack (computer back to available); Connect but no
        // login → nologin (computer stays reserved until reclaimed).
        ("reserved", "timeout", Some("available")) => Some("noack"),
        ("reserved", "timeout", _) => Some("nologin"),
        // inuse.pm: the end reached → EOR (computer timeout); the user gone → timeout.
        ("inuse", "timeout", Some("timeout")) => Some("EOR"),
        ("inuse", "timeout", _) => Some("timeout"),
        // image.pm: a finished capture.
        ("image", "complete", _) => Some("EOR"),
        _ => None,
    }
}

/// The `log.ending` of vcld's `reservation_failed` for a request processed in `from`:
/// `failed` for new and reserved, nothing otherwise.
pub fn failure_ending(from: &str) -> Option<&'static str> {
    matches!(from, "new" | "reserved").then_some("failed")
}

/// `reservation.lastcheck` = now for `reservation`, unless it is set to the future (vcld
/// only moves it forward: `AND lastcheck <= NOW()`).
pub async fn touch_lastcheck(db: &Db, reservation: i64) -> Result<(), DbError> {
    let now = db.now_sql();
    let sql = format!(
        "UPDATE `reservation` SET `lastcheck` = {now} WHERE `id` = ? AND (`lastcheck` IS NULL OR `lastcheck` <= {now})"
    );
    let what = format!("setting reservation.lastcheck of reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(reservation).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// Seconds after its end from which a finished request is removed: vcld's `check_time`
/// rounds the minutes to the end and removes at -1, i.e. 30 s after the end.
pub const REMOVE_AFTER_END_SECS: i64 = 30;

/// Last states after which vcld removes a complete or failed request at once, whatever
/// its end: the states whose names contain image, deleted, makeproduction, reload,
/// tomaintenance or tovmhostinuse (`check_time`'s pattern), as ids.
pub fn remove_at_once_laststates() -> Vec<i64> {
    const WORDS: [&str; 6] = [
        "image",
        "deleted",
        "makeproduction",
        "reload",
        "tomaintenance",
        "tovmhostinuse",
    ];
    vcl::STATES
        .iter()
        .filter(|(_, name)| WORDS.iter().any(|w| name.contains(w)))
        .map(|(id, _)| *id)
        .collect()
}

/// The complete or failed requests with a reservation on `management_node` that are due
/// for removal now, oldest first, at most `limit`. With `keep_secs` 0 that is vcld's
/// `check_time` rule (laststate in [`remove_at_once_laststates`], or the end
/// [`REMOVE_AFTER_END_SECS`] past); otherwise every finished request whose end is
/// `keep_secs` past (an operator keeps them readable with `provhost log` that long).
pub async fn removable(
    db: &Db,
    management_node: i64,
    keep_secs: u64,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    let now = parse_datetime(&db.now().await?)?;
    let after = if keep_secs == 0 {
        REMOVE_AFTER_END_SECS
    } else {
        // Config allows at most a year; a library caller's larger value means "a century".
        i64::try_from(keep_secs.min(3_153_600_000)).unwrap_or(3_153_600_000)
    };
    let cutoff = format_datetime(now - chrono::Duration::seconds(after));
    let at_once = remove_at_once_laststates()
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (complete, failed) = (vcl_state("complete")?, vcl_state("failed")?);
    let due = if keep_secs == 0 {
        format!("(rq.`laststateid` IN ({at_once}) OR rq.`end` <= ?)")
    } else {
        "rq.`end` <= ?".to_string()
    };
    let sql = format!(
        "SELECT DISTINCT rq.`id` FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` \
         WHERE r.`managementnodeid` = ? AND rq.`stateid` IN ({complete}, {failed}) \
         AND {due} ORDER BY rq.`id` LIMIT {limit}"
    );
    let what = "listing finished requests to remove";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).bind(management_node).bind(&cutoff).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| r.int("id")).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

fn vcl_state(name: &str) -> Result<i64, DbError> {
    vcl::STATES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(id, _)| *id)
        .ok_or_else(|| DbError::Invalid(format!("no VCL state named {name}")))
}

/// vcld's `delete_request`: the request's `computerloadlog` rows, its reservations and the
/// request itself, in one transaction — only while it is still complete or failed (a
/// request the web or another node changed meanwhile stays). The `log`, `sublog` and
/// `changelog` rows stay, as in VCL (they are the site's history). Returns whether it
/// removed the request.
pub async fn remove_request(db: &Db, request: i64) -> Result<bool, DbError> {
    let (complete, failed) = (vcl_state("complete")?, vcl_state("failed")?);
    let lock = format!(
        "UPDATE `request` SET `stateid` = `stateid` WHERE `id` = ? AND `stateid` IN ({complete}, {failed})"
    );
    let what = format!("removing finished request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            if sqlx::query(&lock).bind(request).execute(&mut *tx).await.during(what.as_str())?.rows_affected() == 0 {
                tx.rollback().await.during(what.as_str())?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM `computerloadlog` WHERE `reservationid` IN (SELECT `id` FROM `reservation` WHERE `requestid` = ?)")
                .bind(request).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query("DELETE FROM `reservation` WHERE `requestid` = ?").bind(request).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query("DELETE FROM `request` WHERE `id` = ?").bind(request).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())?;
            Ok(true)
        })
    })
    .await
}

/// Remove what [`removable`] lists (at most `limit`); returns the removed request ids.
pub async fn remove_finished(
    db: &Db,
    management_node: i64,
    keep_secs: u64,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    let mut removed = Vec::new();
    for request in removable(db, management_node, keep_secs, limit).await? {
        if db.is_stopping() {
            break;
        }
        if remove_request(db, request).await? {
            removed.push(request);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_as_vcld_names_them() {
        assert_eq!(
            exit_ending("reserved", "timeout", Some("available")),
            Some("noack")
        );
        assert_eq!(
            exit_ending("reserved", "timeout", Some("reserved")),
            Some("nologin")
        );
        assert_eq!(
            exit_ending("inuse", "timeout", Some("timeout")),
            Some("EOR")
        );
        assert_eq!(
            exit_ending("inuse", "timeout", Some("inuse")),
            Some("timeout")
        );
        assert_eq!(exit_ending("image", "complete", None), Some("EOR"));
        assert_eq!(exit_ending("new", "reserved", Some("reserved")), None);
        assert_eq!(exit_ending("deleted", "complete", None), None);
        assert_eq!(exit_ending("inuse", "inuse", None), None);
        assert_eq!(failure_ending("new"), Some("failed"));
        assert_eq!(failure_ending("reserved"), Some("failed"));
        assert_eq!(failure_ending("inuse"), None);
        for e in ["noack", "nologin", "EOR", "timeout", "failed"] {
            assert!(vcl::LOG_ENDINGS.contains(&e), "{e}");
        }
    }

    #[test]
    fn laststates_removed_at_once_are_vclds() {
        let mut ids = remove_at_once_laststates();
        ids.sort();
        // deleted 1, reloading 6, imageinuse 7, imageprep 15, image 16, makeproduction
        // 17, tomaintenance 18, reload 19, tovmhostinuse 21 (vcld's pattern matches parts
        // of names: "reload" also matches reloading).
        assert_eq!(ids, vec![1, 6, 7, 15, 16, 17, 18, 19, 21]);
    }
}
