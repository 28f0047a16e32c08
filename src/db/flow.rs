//! What the state flows read and write besides claims and state exits: the live
//! `reservation.remoteIP` (the user's acknowledgement), the reservation password, the
//! management node's check-in, and per-computer variables that modules keep across
//! reservations (`provhost_computervar`, e.g. the simulator's power state).

use crate::db::claim::{state_id, state_label};
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Backend, Db, RowExt};

/// `reservation.remoteIP`, read live (the web front end sets it when the user clicks
/// Connect). Empty when not acknowledged yet.
pub async fn remote_ip(db: &Db, reservation: i64) -> Result<String, DbError> {
    let what = format!("reading remoteIP of reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `remoteIP` FROM `reservation` WHERE `id` = ?").bind(reservation).fetch_optional(p).await.during(what.as_str())?;
            match row {
                Some(r) => Ok(r.text("remoteIP")?),
                None => Err(DbError::NotFound { what: "reservation", key: reservation.to_string() }),
            }
        })
    })
    .await
}

/// `reservation.pw` (VCL keeps the user's password for the reservation there).
pub async fn reservation_password(db: &Db, reservation: i64) -> Result<String, DbError> {
    let what = format!("reading the password of reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `pw` FROM `reservation` WHERE `id` = ?").bind(reservation).fetch_optional(p).await.during(what.as_str())?;
            Ok(match row { Some(r) => r.text("pw")?, None => String::new() })
        })
    })
    .await
}

/// Store the user's password for the reservation (`reservation.pw`).
pub async fn set_reservation_password(
    db: &Db,
    reservation: i64,
    password: &str,
) -> Result<(), DbError> {
    let what = format!("storing the password of reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query("UPDATE `reservation` SET `pw` = ? WHERE `id` = ?").bind(password).bind(reservation).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// `managementnode.lastcheckin = now` (VCL's liveness mark for a node).
pub async fn checkin(db: &Db, management_node: i64) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE `managementnode` SET `lastcheckin` = {} WHERE `id` = ?",
        db.now_sql()
    );
    let what = format!("check-in of management node {management_node}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(management_node).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// A per-computer variable kept by a module, `None` when unset.
pub async fn computer_var(db: &Db, computer: i64, name: &str) -> Result<Option<String>, DbError> {
    let what = format!("reading variable {name:?} of computer {computer}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `value` FROM `provhost_computervar` WHERE `computerid` = ? AND `name` = ?")
                .bind(computer).bind(name).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| r.text("value")).transpose()
        })
    })
    .await
}

/// Set (replace) a per-computer variable.
pub async fn set_computer_var(
    db: &Db,
    computer: i64,
    name: &str,
    value: &str,
) -> Result<(), DbError> {
    if name.is_empty() || name.len() > 64 {
        return Err(DbError::Invalid(format!(
            "computer variable name must be 1-64 characters, got {name:?}"
        )));
    }
    let what = format!("setting variable {name:?} of computer {computer}");
    // One statement on the (computerid, name) key: no delete-then-insert window, and no
    // gap locks for two management nodes to deadlock on.
    let sql = match db.backend() {
        Backend::MySql => {
            "INSERT INTO `provhost_computervar` (`computerid`, `name`, `value`) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)"
        }
        Backend::Sqlite => {
            "INSERT INTO `provhost_computervar` (`computerid`, `name`, `value`) VALUES (?, ?, ?) \
             ON CONFLICT (`computerid`, `name`) DO UPDATE SET `value` = excluded.`value`"
        }
    };
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(sql).bind(computer).bind(name).bind(value).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// Fail a claimed request whose reservation cannot even be loaded (a row it points to is
/// missing): request `pending` → `failed` (laststate stays the state it was claimed
/// from), load-log `failed` with `message` against the computer id the reservation row
/// names, claim dropped. One transaction, only under the claim `token` (and the handle's
/// lease); false when the request was not pending under it.
pub async fn fail_request(
    db: &Db,
    request: i64,
    token: &str,
    reservation: i64,
    message: &str,
) -> Result<bool, DbError> {
    let (failed, pending) = (state_id("failed")?, state_id("pending")?);
    let now = db.now_sql();
    let update = format!(
        "UPDATE `request` SET `stateid` = ?, `datemodified` = {now} WHERE `id` = ? AND `stateid` = ? \
         AND EXISTS (SELECT 1 FROM `provhost_claim` ct WHERE ct.`requestid` = ? AND ct.`token` = ?){}",
        db.lease_guard_sql()
    );
    let log = format!(
        "INSERT INTO `computerloadlog` (`reservationid`, `computerid`, `loadstateid`, `timestamp`, `additionalinfo`) \
         SELECT r.`id`, r.`computerid`, s.`id`, {now}, ? FROM `reservation` r, `computerloadstate` s \
         WHERE r.`id` = ? AND s.`loadstatename` = 'failed'"
    );
    let what = format!("failing request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let mut q = sqlx::query(&update).bind(failed).bind(request).bind(pending).bind(request).bind(token);
            if let Some(h) = db.lease_holder() {
                q = q.bind(h);
            }
            let n = q.execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 1 {
                sqlx::query(&log).bind(&*crate::db::loadlog::cap(message)).bind(reservation).execute(&mut *tx).await.during(what.as_str())?;
                sqlx::query("DELETE FROM `provhost_claim` WHERE `requestid` = ?").bind(request).execute(&mut *tx).await.during(what.as_str())?;
            }
            tx.commit().await.during(what.as_str())?;
            Ok(n == 1)
        })
    })
    .await
}

/// SQL condition on a request (columns prefixed with `p`, e.g. "rq.") that is true while
/// the request is over or on its way out: deleted, failed, timeout or complete, or pending
/// after deleted or timeout (a reclaim running). Such a request takes no Connect and no End.
fn ending(p: &str) -> String {
    format!(
        "({p}`stateid` IN (1, 5, 11, 12) OR ({p}`stateid` = 14 AND {p}`laststateid` IN (1, 11)))"
    )
}

/// A request's state, laststate and times, as [`request_times`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTimes {
    pub state: String,
    pub laststate: String,
    pub start: String,
    pub end: String,
    /// The database's clock at the read.
    pub now: String,
}

impl RequestTimes {
    /// "complete", or "pending (from timeout)" while a flow runs.
    pub fn describe(&self) -> String {
        if self.state == "pending" {
            format!("pending (from {})", self.laststate)
        } else {
            self.state.clone()
        }
    }

    /// Over or on its way out (see `ending`).
    pub fn is_ending(&self) -> bool {
        matches!(
            self.state.as_str(),
            "deleted" | "failed" | "timeout" | "complete"
        ) || (self.state == "pending" && matches!(self.laststate.as_str(), "deleted" | "timeout"))
    }
}

/// State, laststate, start and end of `request`; `None` when there is no such request.
pub async fn request_times(db: &Db, request: i64) -> Result<Option<RequestTimes>, DbError> {
    let sql = format!(
        "SELECT `stateid`, `laststateid`, CAST(`start` AS CHAR) AS `start`, CAST(`end` AS CHAR) AS `end`, \
         CAST({} AS CHAR) AS `now` FROM `request` WHERE `id` = ?",
        db.now_sql()
    );
    let what = format!("reading request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(&sql).bind(request).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok(RequestTimes {
                state: state_label(r.int("stateid")?),
                laststate: state_label(r.int("laststateid")?),
                start: r.text("start")?,
                end: r.text("end")?,
                now: r.text("now")?,
            }))
            .transpose()
        })
    })
    .await
}

/// The request a reservation belongs to; `None` when there is no such reservation.
pub async fn request_of(db: &Db, reservation: i64) -> Result<Option<i64>, DbError> {
    let what = format!("reading reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `requestid` FROM `reservation` WHERE `id` = ?").bind(reservation).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| r.int("requestid")).transpose()
        })
    })
    .await
}

/// What VCL's web front end does when the user clicks Connect: record their address in
/// `reservation.remoteIP` (the acknowledgement the `reserved` flow waits for). Refused
/// ([`DbError::NotFound`], [`DbError::Invalid`] naming the request's state) for a
/// reservation that does not exist or whose request is over or ending; the address is
/// stored as given (checking its form is the caller's part).
pub async fn acknowledge(db: &Db, reservation: i64, remote_ip: &str) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE `reservation` SET `remoteIP` = ? WHERE `id` = ? AND NOT EXISTS \
         (SELECT 1 FROM `request` rq WHERE rq.`id` = `reservation`.`requestid` AND {})",
        ending("rq.")
    );
    let what = format!("acknowledging reservation {reservation}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query(&sql).bind(remote_ip).bind(reservation).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 1 {
        return Ok(());
    }
    let not_found = || DbError::NotFound {
        what: "reservation",
        key: reservation.to_string(),
    };
    let request = request_of(db, reservation).await?.ok_or_else(not_found)?;
    let state = match request_times(db, request).await? {
        Some(t) => t.describe(),
        None => "gone".into(),
    };
    Err(DbError::Invalid(format!(
        "reservation {reservation}: its request {request} is {state}; a finished or ending reservation takes no Connect"
    )))
}

/// End a request now (what the web front end does when the user ends a reservation
/// early): `request.end` = the database's now. Refused ([`DbError::NotFound`],
/// [`DbError::Invalid`] naming its state) for a request that does not exist, is over or
/// ending (deleted, failed, timeout, complete), or has not started yet (cancel that).
pub async fn end_now(db: &Db, request: i64) -> Result<(), DbError> {
    let now = db.now_sql();
    let sql = format!(
        "UPDATE `request` SET `end` = {now} WHERE `id` = ? AND `start` <= {now} AND NOT {}",
        ending("")
    );
    let what = format!("ending request {request}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query(&sql).bind(request).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 1 {
        return Ok(());
    }
    let Some(t) = request_times(db, request).await? else {
        return Err(DbError::NotFound {
            what: "request",
            key: request.to_string(),
        });
    };
    if t.is_ending() {
        return Err(DbError::Invalid(format!(
            "request {request} is {} (ended {}); a finished or ending request is not changed",
            t.describe(),
            t.end
        )));
    }
    if t.start > t.now {
        return Err(DbError::Invalid(format!(
            "request {request} has not started yet (it starts at {}); to drop it, run `provhost request cancel {request}`",
            t.start
        )));
    }
    Err(DbError::Invalid(format!(
        "request {request} changed while ending it (now {}); try again",
        t.describe()
    )))
}

/// Point a reservation at another image revision (the one a capture is writing), so a
/// capture that is retried or recovered finds its revision instead of making another.
pub async fn set_reservation_revision(
    db: &Db,
    reservation: i64,
    imagerevision: i64,
) -> Result<(), DbError> {
    let what = format!("pointing reservation {reservation} at image revision {imagerevision}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query("UPDATE `reservation` SET `imagerevisionid` = ? WHERE `id` = ?").bind(imagerevision).bind(reservation).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}
