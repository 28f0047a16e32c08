//! Moving request and computer states the way vcld does: `state_exit` (request out of
//! `pending` into its next state, computer state, `exited` load-log entry, all in one
//! transaction), `reservation_failed`, `insert_reload_request`, and the plain updates a
//! state flow makes along the way (computer state, the image now on a computer).
//!
//! Every function here is safe to run again after a lost connection: each is one
//! transaction, and `state_exit` recognises its own earlier commit (the request is already
//! where it was going), so nothing is written twice.

use crate::db::claim::{state_id, state_label};
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, InsertedId, RowExt};
use crate::host::ReservationData;
use crate::vcl::{self, PENDING};

/// The three ids a state change needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub request: i64,
    pub reservation: i64,
    pub computer: i64,
}

impl From<&ReservationData> for Ids {
    fn from(d: &ReservationData) -> Self {
        Ids {
            request: d.request_id,
            reservation: d.reservation_id,
            computer: d.computer_id,
        }
    }
}

/// Set `computer.stateid` by state name.
pub async fn set_computer_state(db: &Db, computer: i64, state: &str) -> Result<(), DbError> {
    let id = state_id(state)?;
    let what = format!("setting computer {computer} to {state}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query("UPDATE `computer` SET `stateid` = ? WHERE `id` = ?").bind(id).bind(computer).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 0 {
        // MySQL counts only changed rows: tell "already there" from "no such computer".
        if computer_state(db, computer).await?.is_none() {
            return Err(DbError::NotFound {
                what: "computer",
                key: computer.to_string(),
            });
        }
    }
    Ok(())
}

/// Set `computer.stateid` by state name for a flow of `request`, only while `request`
/// holds the computer (`db::lock`): [`DbError::NotHolder`] otherwise, and nothing changes.
pub async fn set_held_computer_state(
    db: &Db,
    computer: i64,
    request: i64,
    state: &str,
) -> Result<(), DbError> {
    let id = state_id(state)?;
    let sql = "UPDATE `computer` SET `stateid` = ? WHERE `id` = ? AND EXISTS \
               (SELECT 1 FROM `provhost_computerlock` l WHERE l.`computerid` = ? AND l.`requestid` = ?)";
    let what = format!("request {request}: setting computer {computer} to {state}");
    // Rows matched, not changed, on both backends (sqlx asks MySQL for found rows).
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query(sql).bind(id).bind(computer).bind(computer).bind(request).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DbError::NotHolder { request, computer })
    }
}

/// The name of a computer's state, `None` when there is no such computer.
pub async fn computer_state(db: &Db, computer: i64) -> Result<Option<String>, DbError> {
    let what = format!("reading the state of computer {computer}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `stateid` FROM `computer` WHERE `id` = ?").bind(computer).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| r.int("stateid").map(state_label)).transpose()
        })
    })
    .await
}

/// The (state, laststate) names of a request, `None` when there is no such request.
pub async fn request_state(db: &Db, request: i64) -> Result<Option<(String, String)>, DbError> {
    let what = format!("reading the state of request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `stateid`, `laststateid` FROM `request` WHERE `id` = ?").bind(request).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok((state_label(r.int("stateid")?), state_label(r.int("laststateid")?)))).transpose()
        })
    })
    .await
}

/// Conditional change of a request's state: `from` → `to` (laststate = `from`), only if it
/// is still in `from`. True when this call changed it. (What the web front end does when a
/// user deletes or acknowledges; the daemon itself uses `claim` and `state_exit`.)
pub async fn transition(db: &Db, request: i64, from: &str, to: &str) -> Result<bool, DbError> {
    let (f, t) = (state_id(from)?, state_id(to)?);
    let sql = format!(
        "UPDATE `request` SET `stateid` = ?, `laststateid` = ?, `datemodified` = {} WHERE `id` = ? AND `stateid` = ?",
        db.now_sql()
    );
    let what = format!("moving request {request} from {from} to {to}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(t).bind(f).bind(request).bind(f).execute(p).await.during(what.as_str()).map(|r| r.rows_affected() == 1))
    })
    .await
}

/// VCL's `state_exit`: in one transaction, move the request out of `pending` into
/// `request_state` with `laststate`, set the computer's state (when given), and log
/// `exited`; when the request ends (`complete` or `failed`), its reservations' `pw` (the
/// user's password in clear) is cleared in the same transaction. Fails with [`DbError::StateConflict`] when the request is not `pending` (this
/// node does not hold it); succeeds without writing when an earlier attempt already did it.
pub async fn state_exit(
    db: &Db,
    ids: Ids,
    request_state: &str,
    laststate: &str,
    computer_state: Option<&str>,
) -> Result<(), DbError> {
    exit_tx(
        db,
        ids,
        None,
        request_state,
        laststate,
        computer_state,
        None,
        None,
    )
    .await
}

/// The daemon's [`state_exit`], under the claim `token` it holds: writes nothing and fails
/// with [`DbError::ClaimLost`] once the claim is not this token's (or the handle's lease
/// is lost). When the request ends (complete or failed), it passes the computer it holds
/// to request `next` (the reload request a reclaim or capture inserted) in the same
/// transaction, so no other reservation can take the computer between the two.
pub async fn state_exit_passing(
    db: &Db,
    ids: Ids,
    token: &str,
    request_state: &str,
    laststate: &str,
    computer_state: Option<&str>,
    next: Option<i64>,
) -> Result<(), DbError> {
    exit_tx(
        db,
        ids,
        Some(token),
        request_state,
        laststate,
        computer_state,
        None,
        next,
    )
    .await
}

/// VCL's `reservation_failed`: load-log `failed` with `message`, request → `failed`,
/// computer → `computer_state` (VCL: `failed`; `maintenance` after a failed capture, `inuse`
/// for a failed in-use step), then `state_exit` — all in one transaction. The request's
/// laststate is the state it was claimed from.
pub async fn reservation_failed(
    db: &Db,
    ids: Ids,
    message: &str,
    computer_state: &str,
) -> Result<(), DbError> {
    reservation_failed_with(db, ids, message, Some(computer_state)).await
}

/// [`reservation_failed`] with the computer state optional: `None` leaves the computer as
/// it is (a flow that never got the computer, e.g. its wait for another reservation ran
/// out).
pub async fn reservation_failed_with(
    db: &Db,
    ids: Ids,
    message: &str,
    computer_state: Option<&str>,
) -> Result<(), DbError> {
    failed_tx(db, ids, None, message, computer_state).await
}

/// The daemon's [`reservation_failed_with`], under the claim `token` it holds (see
/// [`state_exit_passing`]).
pub async fn reservation_failed_claimed(
    db: &Db,
    ids: Ids,
    token: &str,
    message: &str,
    computer_state: Option<&str>,
) -> Result<(), DbError> {
    failed_tx(db, ids, Some(token), message, computer_state).await
}

async fn failed_tx(
    db: &Db,
    ids: Ids,
    token: Option<&str>,
    message: &str,
    computer_state: Option<&str>,
) -> Result<(), DbError> {
    let laststate = match request_state(db, ids.request).await? {
        Some((_, last)) => last,
        None => {
            return Err(DbError::NotFound {
                what: "request",
                key: ids.request.to_string(),
            })
        }
    };
    // Whatever the caller passed, the stored text fits the column (`loadlog::cap`).
    let message = crate::db::loadlog::cap(message);
    let first = exit_tx(
        db,
        ids,
        token,
        "failed",
        &laststate,
        computer_state,
        Some(&message),
        None,
    )
    .await;
    match first {
        // VCL's latin1 tables refuse some characters; the failure must be recorded anyway.
        Err(e) if e.mysql_number() == Some(1366) => {
            let lossy = crate::db::loadlog::latin1_lossy(&message);
            exit_tx(
                db,
                ids,
                token,
                "failed",
                &laststate,
                computer_state,
                Some(&lossy),
                None,
            )
            .await
        }
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
async fn exit_tx(
    db: &Db,
    ids: Ids,
    token: Option<&str>,
    request_state: &str,
    laststate: &str,
    computer_state: Option<&str>,
    failed: Option<&str>,
    pass_to: Option<i64>,
) -> Result<(), DbError> {
    let part = Part {
        reservation: ids.reservation,
        computer: ids.computer,
        computer_state: computer_state.map(str::to_string),
        failed: failed.map(str::to_string),
        pass_to,
    };
    exit_parts(db, ids.request, token, request_state, laststate, &[part]).await
}

/// One reservation's share of a request's state exit: its computer's next state (`None`:
/// left as it is), the `failed` text to log on it, and the request its computer passes
/// to as the request ends (`None`: released).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub reservation: i64,
    pub computer: i64,
    pub computer_state: Option<String>,
    pub failed: Option<String>,
    pub pass_to: Option<i64>,
}

/// The daemon's state exit of a request with several reservations (VCL's cluster
/// requests), under its claim `token`: the request moves once; each part's computer state,
/// `failed` text, `exited` entry and computer lock (passed or released when the request
/// ends) — all in one transaction. Without parts it is a plain request state change.
pub async fn state_exit_parts(
    db: &Db,
    request: i64,
    token: &str,
    request_state: &str,
    laststate: &str,
    parts: &[Part],
) -> Result<(), DbError> {
    let parts: Vec<Part> = parts
        .iter()
        .map(|p| Part {
            failed: p
                .failed
                .as_deref()
                .map(|m| crate::db::loadlog::cap(m).into_owned()),
            ..p.clone()
        })
        .collect();
    match exit_parts(db, request, Some(token), request_state, laststate, &parts).await {
        // VCL's latin1 tables refuse some characters; the failure must be recorded anyway.
        Err(e) if e.mysql_number() == Some(1366) => {
            let lossy: Vec<Part> = parts
                .iter()
                .map(|p| Part {
                    failed: p.failed.as_deref().map(crate::db::loadlog::latin1_lossy),
                    ..p.clone()
                })
                .collect();
            exit_parts(db, request, Some(token), request_state, laststate, &lossy).await
        }
        other => other,
    }
}

async fn exit_parts(
    db: &Db,
    request: i64,
    token: Option<&str>,
    request_state: &str,
    laststate: &str,
    parts: &[Part],
) -> Result<(), DbError> {
    let to = state_id(request_state)?;
    // The request no longer holds its computers once it is complete or failed.
    let ends = matches!(request_state, "complete" | "failed");
    let computer_update = format!(
        "UPDATE `computer` SET `stateid` = ? WHERE `id` = ? AND {}",
        crate::db::lock::NOT_HELD_BY_OTHERS
    );
    let last = state_id(laststate)?;
    let comps = parts
        .iter()
        .map(|p| p.computer_state.as_deref().map(state_id).transpose())
        .collect::<Result<Vec<_>, DbError>>()?;
    let now = db.now_sql();
    let update = format!(
        "UPDATE `request` SET `stateid` = ?, `laststateid` = ?, `datemodified` = {now} WHERE `id` = ? AND `stateid` = ?{}{}",
        if token.is_some() {
            " AND EXISTS (SELECT 1 FROM `provhost_claim` ct WHERE ct.`requestid` = ? AND ct.`token` = ?)"
        } else {
            ""
        },
        if token.is_some() { db.lease_guard_sql() } else { "" },
    );
    let log = format!(
        "INSERT INTO `computerloadlog` (`reservationid`, `computerid`, `loadstateid`, `timestamp`, `additionalinfo`) \
         SELECT ?, ?, `id`, {now}, ? FROM `computerloadstate` WHERE `loadstatename` = ?"
    );
    let what = format!("request {request}: state exit to {request_state}/{laststate}");
    let exit_text = format!("vcld process exited, request {request_state}, laststate {laststate}");
    let outcome: Option<(String, String)> = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let mut tx = p.begin().await.during(what.as_str())?;
                let mut q = sqlx::query(&update).bind(to).bind(last).bind(request).bind(PENDING);
                if let Some(t) = token {
                    q = q.bind(request).bind(t);
                    if let Some(h) = db.lease_holder() {
                        q = q.bind(h);
                    }
                }
                let n = q.execute(&mut *tx).await.during(what.as_str())?.rows_affected();
                if n != 1 {
                    let row = sqlx::query("SELECT `stateid`, `laststateid` FROM `request` WHERE `id` = ?").bind(request).fetch_optional(&mut *tx).await.during(what.as_str())?;
                    return match row {
                        None => Err(DbError::NotFound { what: "request", key: request.to_string() }),
                        Some(r) => Ok(Some((state_label(r.int("stateid")?), state_label(r.int("laststateid")?)))),
                    };
                }
                for (part, comp) in parts.iter().zip(&comps) {
                    if let Some(c) = comp {
                        // Never over another reservation that holds the computer.
                        sqlx::query(&computer_update).bind(*c).bind(part.computer).bind(part.computer).bind(request).execute(&mut *tx).await.during(what.as_str())?;
                    }
                }
                if ends {
                    // The user's password (VCL's web shows it while the reservation is live)
                    // goes with the reservation: no clear copy outlives it.
                    sqlx::query("UPDATE `reservation` SET `pw` = NULL WHERE `requestid` = ? AND `pw` IS NOT NULL")
                        .bind(request).execute(&mut *tx).await.during(what.as_str())?;
                    for part in parts {
                        if let Some(next) = part.pass_to {
                            sqlx::query("UPDATE `provhost_computerlock` SET `requestid` = ?, `reservationid` = \
                                    (SELECT MIN(r.`id`) FROM `reservation` r WHERE r.`requestid` = ?), `token` = '' WHERE `requestid` = ? AND `computerid` = ?")
                                .bind(next).bind(next).bind(request).bind(part.computer).execute(&mut *tx).await.during(what.as_str())?;
                        }
                    }
                    // Every computer not passed on is released.
                    sqlx::query("DELETE FROM `provhost_computerlock` WHERE `requestid` = ?")
                        .bind(request).execute(&mut *tx).await.during(what.as_str())?;
                }
                for part in parts {
                    if let Some(msg) = &part.failed {
                        sqlx::query(&log).bind(part.reservation).bind(part.computer).bind(msg.as_str()).bind("failed").execute(&mut *tx).await.during(what.as_str())?;
                    }
                    sqlx::query(&log).bind(part.reservation).bind(part.computer).bind(exit_text.as_str()).bind("exited").execute(&mut *tx).await.during(what.as_str())?;
                }
                sqlx::query("DELETE FROM `provhost_claim` WHERE `requestid` = ?").bind(request).execute(&mut *tx).await.during(what.as_str())?;
                tx.commit().await.during(what.as_str())?;
                Ok(None)
            })
        })
        .await?;
    match outcome {
        None => Ok(()),
        // An earlier attempt committed and only its answer was lost: done already.
        Some((s, l)) if s == request_state && l == laststate => Ok(()),
        Some(_) if token.is_some() => Err(DbError::ClaimLost { request }),
        Some((s, _)) => Err(DbError::StateConflict {
            request,
            expected: "pending".into(),
            found: s,
        }),
    }
}

/// Record that a computer now has `image` / `imagerevision` loaded (new.pm sets
/// `currentimageid`, `nextimageid` and `imagerevisionid` after a successful load), unless
/// a request other than `request` holds the computer.
pub async fn set_computer_image(
    db: &Db,
    request: i64,
    computer: i64,
    image: i64,
    imagerevision: i64,
) -> Result<(), DbError> {
    let what = format!("recording image {image} (revision {imagerevision}) on computer {computer}");
    let sql = format!(
        "UPDATE `computer` SET `currentimageid` = ?, `nextimageid` = ?, `imagerevisionid` = ? WHERE `id` = ? AND {}",
        crate::db::lock::NOT_HELD_BY_OTHERS
    );
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql)
            .bind(image).bind(image).bind(imagerevision).bind(computer).bind(computer).bind(request).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// VCL's `insert_reload_request`: log `loadimageblade` / `loadimagevmware` / `info` on the
/// old reservation, set the computer to `reload`, and add a request in state `reload`
/// (laststate = the old request's laststate) for user `vclreload`, starting now and ending
/// in 30 minutes, with one reservation for the same computer, image, revision and
/// management node. One transaction. Returns the new (request id, reservation id), or
/// `None` when the computer is already in `reload`/`reloading` (a reload is on its way) or
/// another request holds it (`db::lock`).
pub async fn insert_reload_request(
    db: &Db,
    data: &ReservationData,
) -> Result<Option<(i64, i64)>, DbError> {
    let loadstate = match data.computer_type.as_str() {
        "blade" => "loadimageblade",
        "virtualmachine" => "loadimagevmware",
        _ => "info",
    };
    let last = state_id(if data.request_laststate.is_empty() {
        "reload"
    } else {
        &data.request_laststate
    })?;
    let (reload, reloading) = (state_id("reload")?, state_id("reloading")?);
    let now = db.now_sql();
    let end = db.now_plus_minutes_sql(30);
    let log = format!(
        "INSERT INTO `computerloadlog` (`reservationid`, `computerid`, `loadstateid`, `timestamp`, `additionalinfo`) \
         SELECT ?, ?, `id`, {now}, ? FROM `computerloadstate` WHERE `loadstatename` = ?"
    );
    let req = format!(
        "INSERT INTO `request` (`stateid`, `laststateid`, `userid`, `forimaging`, `test`, `preload`, `start`, `end`, `daterequested`) \
         SELECT ?, ?, `id`, 0, 0, 0, {now}, {end}, {now} FROM `user` WHERE `unityid` = 'vclreload' ORDER BY `id` LIMIT 1"
    );
    let computer_update = format!(
        "UPDATE `computer` SET `stateid` = ? WHERE `id` = ? AND `stateid` NOT IN (?, ?) AND {}",
        crate::db::lock::NOT_HELD_BY_OTHERS
    );
    let res = "INSERT INTO `reservation` (`requestid`, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid`) VALUES (?, ?, ?, ?, ?)";
    let what = format!(
        "request {}: inserting a reload request for computer {}",
        data.request_id, data.computer_id
    );
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            // Taking the computer row first serializes two reclaims of the same computer.
            let n = sqlx::query(&computer_update)
                .bind(reload).bind(data.computer_id).bind(reload).bind(reloading).bind(data.computer_id).bind(data.request_id)
                .execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 0 {
                return Ok(None);
            }
            sqlx::query(&log).bind(data.reservation_id).bind(data.computer_id).bind("switching request state to reload").bind(loadstate)
                .execute(&mut *tx).await.during(what.as_str())?;
            let r = sqlx::query(&req).bind(reload).bind(last).execute(&mut *tx).await.during(what.as_str())?;
            if r.rows_affected() != 1 {
                return Err(DbError::NotFound { what: "user", key: "vclreload".into() });
            }
            let request_id = r.inserted_id();
            let reservation_id = sqlx::query(res)
                .bind(request_id).bind(data.computer_id).bind(data.image_id).bind(data.imagerevision_id).bind(data.management_node_id)
                .execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            sqlx::query(&log).bind(data.reservation_id).bind(data.computer_id).bind(format!("created new reload request {request_id}")).bind("info")
                .execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())?;
            Ok(Some((request_id, reservation_id)))
        })
    })
    .await
}

/// Is `name` a VCL state name? (For callers validating input before a transaction.)
pub fn is_state(name: &str) -> bool {
    vcl::state_id(name).is_some()
}

/// What [`operator_set_computer_state`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorChange {
    pub computer: i64,
    pub hostname: String,
    /// The state before (the same as the new one when nothing changed).
    pub from: String,
    pub to: String,
}

/// An operator brings a computer back (`available`) or takes it out (`maintenance`):
/// computer `hostname` (not deleted) moves to `state` and the load-log gets an `info` row
/// (reservation 0) with who-what-why; one transaction, conditional on the state read and
/// on no live reservation holding the computer ([`crate::db::lock::live_holder`] names
/// it in the refusal). VM hosts and other states are refused.
pub async fn operator_set_computer_state(
    db: &Db,
    hostname: &str,
    state: &str,
    reason: &str,
) -> Result<OperatorChange, DbError> {
    if !matches!(state, "available" | "maintenance") {
        return Err(DbError::Invalid(format!(
            "computer state {state:?}: an operator sets available or maintenance"
        )));
    }
    let Some((computer, hostname, current)) = computer_by_name(db, hostname).await? else {
        return Err(DbError::NotFound {
            what: "computer",
            key: hostname.to_string(),
        });
    };
    let hostname = hostname.as_str();
    let change = OperatorChange {
        computer,
        hostname: hostname.to_string(),
        from: current.clone(),
        to: state.to_string(),
    };
    if matches!(current.as_str(), "vmhostinuse" | "tovmhostinuse") {
        return Err(DbError::Invalid(format!(
            "computer {hostname} is a VM host ({current}); its state is not a reservable computer's"
        )));
    }
    if let Some(h) = crate::db::lock::live_holder(db, computer).await? {
        return Err(DbError::Invalid(format!(
            "computer {hostname} ({current}) is held by {}; end or cancel that request first (`provhost request end {}` / `provhost request cancel {}`)",
            h.describe(),
            h.request,
            h.request
        )));
    }
    if current == state {
        return Ok(change);
    }
    let (from_id, to_id) = (state_id(&current)?, state_id(state)?);
    let update = format!(
        "UPDATE `computer` SET `stateid` = ? WHERE `id` = ? AND `stateid` = ? AND {}",
        crate::db::lock::not_held_sql()
    );
    let log = format!(
        "INSERT INTO `computerloadlog` (`reservationid`, `computerid`, `loadstateid`, `timestamp`, `additionalinfo`) \
         SELECT 0, ?, `id`, {}, ? FROM `computerloadstate` WHERE `loadstatename` = 'info'",
        db.now_sql()
    );
    let text = crate::db::loadlog::cap(&format!(
        "operator: computer {hostname} {current} -> {state}{}",
        if reason.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", reason.trim())
        }
    ))
    .into_owned();
    let what = format!("setting computer {hostname} to {state}");
    let changed = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let mut tx = p.begin().await.during(what.as_str())?;
                let n = sqlx::query(&update).bind(to_id).bind(computer).bind(from_id).bind(computer).bind(computer)
                    .execute(&mut *tx).await.during(what.as_str())?.rows_affected();
                if n == 1 {
                    sqlx::query(&log).bind(computer).bind(text.as_str()).execute(&mut *tx).await.during(what.as_str())?;
                    tx.commit().await.during(what.as_str())?;
                } else {
                    tx.rollback().await.during(what.as_str())?;
                }
                Ok(n == 1)
            })
        })
        .await?;
    if changed {
        Ok(change)
    } else {
        Err(DbError::Invalid(format!(
            "computer {hostname} changed while setting it to {state} (a reservation took it, or its state moved on); look again with `provhost computer list`"
        )))
    }
}

/// A computer (not deleted) by host name, or by short name when only one has it: (id,
/// host name, state name).
async fn computer_by_name(
    db: &Db,
    hostname: &str,
) -> Result<Option<(i64, String, String)>, DbError> {
    let sql = "SELECT `id`, `hostname`, `stateid` FROM `computer` WHERE `deleted` = 0 AND (`hostname` = ? OR `hostname` LIKE ?) \
               ORDER BY CASE WHEN `hostname` = ? THEN 0 ELSE 1 END, `id` LIMIT 5";
    let what = format!("looking up computer {hostname}");
    let rows = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let rows = sqlx::query(sql).bind(hostname).bind(format!("{hostname}.%")).bind(hostname).fetch_all(p).await.during(what.as_str())?;
                rows.iter().map(|r| Ok((r.int("id")?, r.text("hostname")?, state_label(r.int("stateid")?)))).collect::<Result<Vec<_>, DbError>>()
            })
        })
        .await?;
    match rows.as_slice() {
        [] => Ok(None),
        [(id, name, state), ..] if name == hostname || rows.len() == 1 => {
            Ok(Some((*id, name.clone(), state.clone())))
        }
        many => Err(DbError::Invalid(format!(
            "computer {hostname:?} is the short name of more than one computer ({}); give the full host name",
            many.iter().map(|(_, h, _)| h.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}
