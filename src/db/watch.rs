//! What a running flow watches while it waits, and what changes it from outside: the
//! request's state under the flow's claim (VCL's `request_state_changed` /
//! `is_request_deleted`, read on every poll of every wait), its end time, the
//! acknowledgement (`remoteIP`) of any of its reservations, the reservations of a cluster
//! request, the preload flag, and the operator's cancel of a request a flow is waiting on.

use crate::db::claim::state_id;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::vcl::PENDING;

/// A request as a flow running under a claim sees it on one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// Still `pending` under this flow's claim. `ended`: its end time has come (a user's or
    /// operator's "end now" while the flow waits).
    Mine { ended: bool },
    /// Someone else changed it (VCL's web deleted it, an operator cancelled it, another
    /// daemon took the node over): the flow hands it over without writing.
    Changed { state: String, laststate: String },
    /// The row is gone (VCL's web removes a request deleted before its start).
    Gone,
}

/// One read of `request` for a flow holding claim `token` (see [`Watched`]). A daemon's
/// flows share their reads through [`crate::db::watchbatch::Watcher`].
pub async fn watch(db: &Db, request: i64, token: &str) -> Result<Watched, DbError> {
    Ok(crate::db::watchbatch::read_many(db, &[request])
        .await?
        .remove(&request)
        .map_or(Watched::Gone, |s| s.for_claim(token)))
}

/// The reservations of `request`, smallest id first (VCL's parent first). Empty when it
/// has none.
pub async fn reservations_of(db: &Db, request: i64) -> Result<Vec<i64>, DbError> {
    let what = format!("listing the reservations of request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT `id` FROM `reservation` WHERE `requestid` = ? ORDER BY `id`")
                .bind(request).fetch_all(p).await.during(what.as_str())?;
            rows.iter().map(|r| r.int("id")).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// Set `request.preload` (vcld's new.pm sets it to 1 once a preload ran, so the
/// request is not preloaded again before its start).
pub async fn set_preload(db: &Db, request: i64, done: bool) -> Result<(), DbError> {
    let what = format!("setting the preload flag of request {request}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query("UPDATE `request` SET `preload` = ? WHERE `id` = ?")
            .bind(i64::from(done)).bind(request).execute(p).await.during(what.as_str()).map(|_| ()))
    })
    .await
}

/// What [`cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    /// The state it was in ("pending (from reserved)" while a flow ran).
    pub was: String,
}

/// Delete a request the way VCL's web front end does: state `deleted`; laststate the
/// state it had (for a request a flow is running on, the state that flow was claimed
/// from, so its reclaim knows what to undo). The running flow notices on its next poll
/// and hands the request to the `deleted` flow. Refused ([`DbError::Invalid`] naming the
/// state) for a request that is over or ending, and while a flow runs a reload, a
/// capture or a maintenance step (those have no user to cancel for; try again after).
pub async fn cancel(db: &Db, request: i64) -> Result<Cancelled, DbError> {
    let Some((state, laststate)) = crate::db::state::request_state(db, request).await? else {
        return Err(DbError::NotFound {
            what: "request",
            key: request.to_string(),
        });
    };
    let was = if state == "pending" {
        format!("pending (from {laststate})")
    } else {
        state.clone()
    };
    match state.as_str() {
        "deleted" | "complete" | "failed" => {
            return Err(DbError::Invalid(format!(
                "request {request} is already {state}"
            )))
        }
        "pending" if matches!(laststate.as_str(), "deleted" | "timeout") => {
            return Err(DbError::Invalid(format!(
                "request {request} is {was}: its reservation is being reclaimed already"
            )))
        }
        "pending" if !matches!(laststate.as_str(), "new" | "reserved" | "inuse") => {
            return Err(DbError::Invalid(format!(
                "request {request} is {was}: a {laststate} step is running; cancel it again once it is done"
            )))
        }
        _ => {}
    }
    let (from, last) = (state_id(&state)?, state_id(&laststate)?);
    // A waiting flow keeps its claim's laststate (the state it was claimed from); any
    // other state becomes the laststate, as the web does.
    let new_last = if from == PENDING { last } else { from };
    let sql = format!(
        "UPDATE `request` SET `stateid` = ?, `laststateid` = ?, `datemodified` = {} \
         WHERE `id` = ? AND `stateid` = ? AND `laststateid` = ?",
        db.now_sql()
    );
    let deleted = state_id("deleted")?;
    let what = format!("cancelling request {request}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query(&sql).bind(deleted).bind(new_last).bind(request).bind(from).bind(last)
                .execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 1 {
        Ok(Cancelled { was })
    } else {
        Err(DbError::Invalid(format!(
            "request {request} changed state while cancelling (it was {was}); try again"
        )))
    }
}
