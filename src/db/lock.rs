//! Which reservation holds a computer: one `provhost_computerlock` row per computer, naming
//! the request that holds it, that request's reservation, the management node whose flow
//! last took it and that flow's claim token.
//!
//! The row is the one thing every management node sees, so it is what keeps a computer to
//! one reservation at a time across nodes (docs/daemon.md, "One reservation per
//! computer"):
//!
//! - a flow takes it with [`take`] — one transaction: re-take its own row, drop a row
//!   whose holder request is finished (complete, failed or gone), record a live
//!   reservation of the computer that has no row as the holder (requests from before this
//!   table existed), insert a row when there is none; otherwise it learns who holds the
//!   computer ([`Holder`]);
//! - a claim of the holder's request writes the new claim token into the row (`claim.rs`);
//! - it is released, or passed on to the reload request a reclaim or capture inserted, in
//!   the same transaction as the holder's `state_exit` / `reservation_failed`
//!   (`state.rs`), and only when the request ends (complete, failed);
//! - every computer state change a flow makes is conditional on it (`state.rs`);
//! - an operator's `provhost computer set-state` is refused while a live request holds
//!   the computer by its row or by its state ([`live_holder`], `not_held_sql`).

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};

/// Request states that no longer hold a computer.
pub(crate) const FINISHED: &str = "5, 12";

/// SQL condition on `rq` (a request) that is true when the request has its computer by its
/// state: reserved, inuse, image, reinstall or reload (queued or running), or timeout /
/// deleted after it had the computer (laststate not `new`). Used to adopt holders that have
/// no row (see [`take`]).
const HOLDING: &str = "rq.`stateid` IN (3, 8, 16, 27, 19) \
     OR (rq.`stateid` IN (1, 11) AND rq.`laststateid` <> 13) \
     OR (rq.`stateid` = 14 AND rq.`laststateid` IN (3, 8, 16, 27, 19, 1, 11))";

/// SQL condition (with one `?` for the computer and one for the request) that is true when
/// no *other* request holds the computer. Used by every computer state change a flow
/// makes, so a flow never changes a computer another reservation holds.
pub(crate) const NOT_HELD_BY_OTHERS: &str =
    "NOT EXISTS (SELECT 1 FROM `provhost_computerlock` l WHERE l.`computerid` = ? AND l.`requestid` <> ?)";

/// Who a flow is: what [`take`] writes into the row.
#[derive(Debug, Clone, PartialEq)]
pub struct Taker {
    pub computer: i64,
    pub request: i64,
    pub reservation: i64,
    pub management_node: i64,
    /// The claim token of the flow (see `claim.rs`).
    pub token: String,
}

/// The request that holds a computer.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub request: i64,
    pub reservation: i64,
    pub management_node: i64,
    /// Request state and laststate names (`pending`/`reload`: a flow of it is running).
    pub state: String,
    pub laststate: String,
    pub start: String,
    pub end: String,
}

impl Holder {
    /// "request 7 (reservation 9, inuse/reserved, 2026-11-28 10:00:00 to 2026-11-28 11:00:00)"
    pub fn describe(&self) -> String {
        format!(
            "request {} (reservation {}, {}/{}, {} to {})",
            self.request, self.reservation, self.state, self.laststate, self.start, self.end
        )
    }
}

/// What [`take`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// The row is this request's now. `took_over` names a finished request whose row was
    /// dropped on the way.
    Mine { took_over: Option<i64> },
    /// Another request, still live, holds the computer.
    Busy(Holder),
}

/// Take the computer for `t.request`, or say who holds it. One transaction per try (see
/// the module doc); safe to run again after a lost connection (it finds its own row).
pub async fn take(db: &Db, t: &Taker) -> Result<Taken, DbError> {
    // A holder that releases between our insert and our read: look again, a few times.
    for _ in 0..3 {
        if let Some(took_over) = try_take(db, t).await? {
            return Ok(Taken::Mine { took_over });
        }
        if let Some(h) = holder(db, t.computer).await? {
            if h.request != t.request {
                return Ok(Taken::Busy(h));
            }
        }
    }
    Err(DbError::Invalid(format!(
        "request {}: the lock of computer {} changed hands three times while taking it; try again",
        t.request, t.computer
    )))
}

/// One try: `Some(took_over)` when the row is ours now, `None` when someone else's.
async fn try_take(db: &Db, t: &Taker) -> Result<Option<Option<i64>>, DbError> {
    let now = db.now_sql();
    let retake = "UPDATE `provhost_computerlock` SET `reservationid` = ?, `managementnodeid` = ?, `token` = ? \
                  WHERE `computerid` = ? AND `requestid` = ?";
    let stale = format!(
        "SELECT `requestid` FROM `provhost_computerlock` WHERE `computerid` = ? AND `requestid` NOT IN \
         (SELECT `id` FROM `request` WHERE `stateid` NOT IN ({FINISHED}))"
    );
    let insert = format!(
        "INSERT INTO `provhost_computerlock` (`computerid`, `requestid`, `reservationid`, `managementnodeid`, `token`, `locked`) \
         SELECT ?, ?, ?, ?, ?, {now} WHERE NOT EXISTS (SELECT 1 FROM `provhost_computerlock` WHERE `computerid` = ?)"
    );
    let adopt = format!(
        "SELECT rq.`id`, MIN(r.`id`) AS `reservationid`, MIN(r.`managementnodeid`) AS `managementnodeid` \
         FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` \
         WHERE r.`computerid` = ? AND rq.`id` <> ? AND ({HOLDING}) \
         AND NOT EXISTS (SELECT 1 FROM `provhost_computerlock` l WHERE l.`requestid` = rq.`id`) \
         GROUP BY rq.`id` ORDER BY rq.`id` LIMIT 1"
    );
    let what = format!("request {}: taking computer {}", t.request, t.computer);
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let mine = sqlx::query(retake)
                .bind(t.reservation).bind(t.management_node).bind(&t.token).bind(t.computer).bind(t.request)
                .execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if mine == 1 {
                tx.commit().await.during(what.as_str())?;
                return Ok(Some(None));
            }
            // A row whose holder is finished or gone is stale: drop it.
            let old = sqlx::query(&stale).bind(t.computer).fetch_optional(&mut *tx).await.during(what.as_str())?
                .map(|r| r.int("requestid")).transpose()?;
            if let Some(old) = old {
                sqlx::query("DELETE FROM `provhost_computerlock` WHERE `computerid` = ? AND `requestid` = ?")
                    .bind(t.computer).bind(old).execute(&mut *tx).await.during(what.as_str())?;
            }
            // A live reservation of the computer without a row (its flows ran before this
            // table existed, e.g. across an upgrade) holds it: record that and wait for it.
            let legacy = sqlx::query(&adopt).bind(t.computer).bind(t.request).fetch_optional(&mut *tx).await.during(what.as_str())?;
            if let Some(l) = legacy {
                sqlx::query(&insert)
                    .bind(t.computer).bind(l.int("id")?).bind(l.int("reservationid")?).bind(l.int("managementnodeid")?).bind("").bind(t.computer)
                    .execute(&mut *tx).await.during(what.as_str())?;
                tx.commit().await.during(what.as_str())?;
                return Ok(None);
            }
            let n = sqlx::query(&insert)
                .bind(t.computer).bind(t.request).bind(t.reservation).bind(t.management_node).bind(&t.token).bind(t.computer)
                .execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 1 {
                tx.commit().await.during(what.as_str())?;
                Ok(Some(old))
            } else {
                Ok(None)
            }
        })
    })
    .await
}

/// The request holding `computer`, if any.
pub async fn holder(db: &Db, computer: i64) -> Result<Option<Holder>, DbError> {
    let sql = "SELECT l.`requestid`, l.`reservationid`, l.`managementnodeid`, rq.`stateid`, rq.`laststateid`, \
               CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end` \
               FROM `provhost_computerlock` l LEFT JOIN `request` rq ON rq.`id` = l.`requestid` WHERE l.`computerid` = ?";
    let what = format!("reading who holds computer {computer}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(sql).bind(computer).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| {
                let state = r.opt_int("stateid")?;
                Ok(Holder {
                    request: r.int("requestid")?,
                    reservation: r.int("reservationid")?,
                    management_node: r.int("managementnodeid")?,
                    state: state.map(state_label).unwrap_or_else(|| "gone".into()),
                    laststate: r.opt_int("laststateid")?.map(state_label).unwrap_or_else(|| "gone".into()),
                    start: r.opt_text("start")?.unwrap_or_default(),
                    end: r.opt_text("end")?.unwrap_or_default(),
                })
            })
            .transpose()
        })
    })
    .await
}

/// The computer `request` holds, if any.
pub async fn held_by(db: &Db, request: i64) -> Result<Option<i64>, DbError> {
    let what = format!("reading the computer request {request} holds");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `computerid` FROM `provhost_computerlock` WHERE `requestid` = ?")
                .bind(request).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| r.int("computerid")).transpose()
        })
    })
    .await
}

/// The live request holding `computer`, if any: its lock row's request when unfinished,
/// else a reservation of the computer holding it by its request's state.
pub async fn live_holder(db: &Db, computer: i64) -> Result<Option<Holder>, DbError> {
    if let Some(h) = holder(db, computer).await? {
        if !matches!(h.state.as_str(), "complete" | "failed" | "gone") {
            return Ok(Some(h));
        }
    }
    let sql = format!(
        "SELECT rq.`id`, r.`id` AS `reservationid`, r.`managementnodeid`, rq.`stateid`, rq.`laststateid`, \
         CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end` \
         FROM `reservation` r JOIN `request` rq ON rq.`id` = r.`requestid` WHERE r.`computerid` = ? AND ({HOLDING}) \
         ORDER BY rq.`id` LIMIT 1"
    );
    let what = format!("reading which reservation holds computer {computer}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(&sql).bind(computer).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok(Holder {
                request: r.int("id")?,
                reservation: r.int("reservationid")?,
                management_node: r.int("managementnodeid")?,
                state: state_label(r.int("stateid")?),
                laststate: state_label(r.int("laststateid")?),
                start: r.text("start")?,
                end: r.text("end")?,
            }))
            .transpose()
        })
    })
    .await
}

/// SQL condition (with two `?`, both the computer id) that is true when no live request
/// holds the computer: no lock row of an unfinished request, and no reservation of it
/// holding it by its request's state (requests from before the lock table). What an
/// operator's state change ([`crate::db::state::operator_set_computer_state`]) is
/// conditional on.
pub(crate) fn not_held_sql() -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM `provhost_computerlock` l JOIN `request` rq ON rq.`id` = l.`requestid` \
         WHERE l.`computerid` = ? AND rq.`stateid` NOT IN ({FINISHED})) \
         AND NOT EXISTS (SELECT 1 FROM `reservation` r JOIN `request` rq ON rq.`id` = r.`requestid` \
         WHERE r.`computerid` = ? AND ({HOLDING}))"
    )
}
