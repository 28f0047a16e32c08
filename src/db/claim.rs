//! Claiming work: the daemon takes a request with one conditional UPDATE (state to
//! `pending`, `laststateid` to the state it had, `WHERE id = ? AND stateid = ?`) and goes on
//! only when exactly one row changed. Two daemons racing for a request: one wins, the other
//! sees zero rows and leaves it. Recovery at start puts requests this node left `pending`
//! back into their last state.
//!
//! A claim also writes a `provhost_claim` row (request, node, a unique token) in the same
//! transaction. If the connection drops while the commit's answer is on the way, the retry
//! finds the token and knows the claim is its own, so a claim is never lost and never
//! doubled. The same transaction writes the token into the `provhost_computerlock` row of
//! a computer the request holds (`db::lock`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::vcl::{self, PENDING};

/// Request states the daemon acts on (VCL's dispatch in `vcld`); everything else
/// (`pending`, `complete`, `failed`, `maintenance`, …) is left alone.
pub const ACTIONABLE: &[&str] = &[
    "new",
    "reload",
    "reinstall",
    "tomaintenance",
    "imageprep",
    "tovmhostinuse",
    "reserved",
    "inuse",
    "imageinuse",
    "rebootsoft",
    "reboothard",
    "servermodified",
    "timeout",
    "deleted",
    "image",
    "checkpoint",
    "makeproduction",
];

/// A request assigned to a management node, in a state the daemon acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub request_id: i64,
    /// The parent reservation (lowest id; VCL's rule for clusters).
    pub reservation_id: i64,
    pub state: String,
    pub laststate: String,
    pub start: String,
    pub end: String,
    /// `request.preload`: 1 once vcld (or provhost) preloaded the request ahead of its
    /// start, so it is not preloaded again.
    pub preload: bool,
    /// Set by the daemon when it claims a `new` request before its start (the preload
    /// window): the flow loads the computer and puts the request back to `new`.
    pub preload_only: bool,
}

/// A successful claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub request_id: i64,
    /// The state the request had (now its `laststateid`).
    pub from_state: String,
    pub management_node_id: i64,
    pub token: String,
}

/// Requests whose reservations are assigned to `management_node`, in a state the daemon
/// acts on, earliest start first. One query.
pub async fn work_for(db: &Db, management_node: i64) -> Result<Vec<Work>, DbError> {
    let ids: Vec<String> = ACTIONABLE
        .iter()
        .filter_map(|n| vcl::state_id(n))
        .map(|i| i.to_string())
        .collect();
    let sql = format!(
        "SELECT rq.`id`, MIN(r.`id`) AS `reservationid`, rq.`stateid`, rq.`laststateid`, \
         CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end`, rq.`preload` \
         FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` \
         WHERE r.`managementnodeid` = ? AND rq.`stateid` IN ({}) \
         GROUP BY rq.`id`, rq.`stateid`, rq.`laststateid`, rq.`start`, rq.`end`, rq.`preload` ORDER BY rq.`start`, rq.`id`",
        ids.join(", ")
    );
    let what = format!("listing work for management node {management_node}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).bind(management_node).fetch_all(p).await.during(what.as_str())?;
            rows.iter()
                .map(|r| {
                    Ok(Work {
                        request_id: r.int("id")?,
                        reservation_id: r.int("reservationid")?,
                        state: state_label(r.int("stateid")?),
                        laststate: state_label(r.int("laststateid")?),
                        start: r.text("start")?,
                        end: r.text("end")?,
                        preload: r.int("preload")? != 0,
                        preload_only: false,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// Request states the pickup check watches: every state the daemon has a flow for except
/// `inuse` (in-use checks run on the regular poll's schedule).
pub const PICKUP: &[&str] = &[
    "new",
    "reload",
    "reinstall",
    "tomaintenance",
    "reserved",
    "timeout",
    "deleted",
    "image",
];

/// What the pickup check saw: the number, highest id and a checksum of `management_node`'s
/// requests in a [`PICKUP`] state. Any change (a request inserted, or moved into or out of
/// one of those states, by anyone) means the full poll ([`work_for`]) has something to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub count: i64,
    pub top: i64,
    pub mix: i64,
}

/// The pickup check: one cheap query, run every `pickup_poll_ms` between full polls. It is
/// driven by VCL's own index `request.stateid` (KEY `stateid` on MySQL/MariaDB,
/// `request_stateid` on SQLite): only requests in a pickup state are read (a handful in
/// steady state — running ones are `pending`), each joined to its reservations through
/// `reservation.requestid` (KEY `requestid`). One try, no retries: a failed check only
/// means the full poll on its own schedule.
pub async fn pickup_fingerprint(db: &Db, management_node: i64) -> Result<Fingerprint, DbError> {
    let ids: Vec<String> = PICKUP
        .iter()
        .filter_map(|n| vcl::state_id(n))
        .map(|i| i.to_string())
        .collect();
    let cast = |e: &str| match db.backend() {
        crate::db::Backend::MySql => format!("CAST({e} AS SIGNED)"),
        crate::db::Backend::Sqlite => e.to_string(),
    };
    // MariaDB picked `reservation.managementnodeid` (all of the node's reservations, ever)
    // over `request.stateid` with fresh statistics on a growing table (measured: 237 row
    // reads instead of ~10 with 118 reservations on the node): name the index. A database
    // without VCL's index gets the query without the hint (once refused, never again).
    static NO_HINT: AtomicBool = AtomicBool::new(false);
    let hinted = db.backend() == crate::db::Backend::MySql && !NO_HINT.load(Ordering::Relaxed);
    let sql = format!(
        "SELECT {} AS `n`, {} AS `top`, {} AS `mix` \
         FROM `request` rq{} JOIN `reservation` r ON r.`requestid` = rq.`id` \
         WHERE rq.`stateid` IN ({}) AND r.`managementnodeid` = ?",
        cast("COUNT(*)"),
        cast("COALESCE(MAX(rq.`id`), 0)"),
        cast("COALESCE(SUM(rq.`id` * 32 + rq.`stateid`), 0)"),
        if hinted {
            " FORCE INDEX (`stateid`)"
        } else {
            ""
        },
        ids.join(", ")
    );
    let what = format!("pickup check of management node {management_node}");
    let got = with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(management_node).fetch_one(p).await.during(what.as_str())?;
        Ok(Fingerprint { count: row.int("n")?, top: row.int("top")?, mix: row.int("mix")? })
    });
    match got {
        Err(DbError::Sql { ref cause, .. })
            if hinted
                && cause.as_database_error().and_then(|e| e.code()).as_deref() == Some("42000") =>
        {
            tracing::warn!("the request table has no index `stateid` (VCL's KEY on request.stateid); the pickup check runs without it: add it with CREATE INDEX `stateid` ON `request` (`stateid`)");
            NO_HINT.store(true, Ordering::Relaxed);
            Box::pin(pickup_fingerprint(db, management_node)).await
        }
        other => other,
    }
}

/// VCL's name for a state id, or `state <id>` for an id VCL does not have.
pub(crate) fn state_label(id: i64) -> String {
    vcl::state_name(id)
        .map(str::to_string)
        .unwrap_or_else(|| format!("state {id}"))
}

pub(crate) fn state_id(name: &str) -> Result<i64, DbError> {
    vcl::state_id(name).ok_or_else(|| DbError::UnknownState(name.to_string()))
}

fn new_token(management_node: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{management_node}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Claim `request` for `management_node` if it is still in `expected` state. `Ok(None)`
/// means another node (or the web front end) changed it first: leave it alone.
pub async fn claim(
    db: &Db,
    request: i64,
    expected: &str,
    management_node: i64,
) -> Result<Option<Claim>, DbError> {
    let from = state_id(expected)?;
    if from == PENDING || expected == "maintenance" {
        return Err(DbError::Invalid(format!(
            "request {request}: a request in state {expected} cannot be claimed"
        )));
    }
    let token = new_token(management_node);
    let update = format!(
        "UPDATE `request` SET `stateid` = ?, `laststateid` = ?, `datemodified` = {} WHERE `id` = ? AND `stateid` = ?{}",
        db.now_sql(),
        db.lease_guard_sql()
    );
    let record = format!(
        "INSERT INTO `provhost_claim` (`requestid`, `managementnodeid`, `token`, `fromstateid`, `priorlaststateid`, `claimed`) VALUES (?, ?, ?, ?, ?, {})",
        db.now_sql()
    );
    let what = format!("claiming request {request}");
    let mut retrying = false;
    let won = db
        .retry(&what, || {
            let check_first = retrying;
            retrying = true;
            let (update, record, token, what) = (&update, &record, &token, &what);
            async move {
                with_pool!(db, p => {
                    if check_first {
                        // An earlier attempt may have committed before its connection died.
                        let mine = sqlx::query("SELECT `token` FROM `provhost_claim` WHERE `requestid` = ?")
                            .bind(request)
                            .fetch_optional(p)
                            .await
                            .during(what.as_str())?;
                        if let Some(row) = mine {
                            if &row.text("token")? == token {
                                return Ok(true);
                            }
                        }
                    }
                    let mut tx = p.begin().await.during(what.as_str())?;
                    // The laststate the request had before this claim, so a hand-back
                    // restores both fields (the claim overwrites laststateid).
                    let prior = sqlx::query("SELECT `laststateid` FROM `request` WHERE `id` = ?")
                        .bind(request)
                        .fetch_optional(&mut *tx)
                        .await
                        .during(what.as_str())?
                        .map(|r| r.opt_int("laststateid"))
                        .transpose()?
                        .flatten();
                    let mut q = sqlx::query(update).bind(PENDING).bind(from).bind(request).bind(from);
                    if let Some(h) = db.lease_holder() {
                        q = q.bind(h);
                    }
                    let changed = q
                        .execute(&mut *tx)
                        .await
                        .during(what.as_str())?
                        .rows_affected();
                    if changed != 1 {
                        return Ok(false);
                    }
                    sqlx::query("DELETE FROM `provhost_claim` WHERE `requestid` = ?")
                        .bind(request)
                        .execute(&mut *tx)
                        .await
                        .during(what.as_str())?;
                    sqlx::query(record)
                        .bind(request)
                        .bind(management_node)
                        .bind(token)
                        .bind(from)
                        .bind(prior)
                        .execute(&mut *tx)
                        .await
                        .during(what.as_str())?;
                    // A computer this request holds is now acted on under this claim.
                    sqlx::query("UPDATE `provhost_computerlock` SET `token` = ?, `managementnodeid` = ? WHERE `requestid` = ?")
                        .bind(token)
                        .bind(management_node)
                        .bind(request)
                        .execute(&mut *tx)
                        .await
                        .during(what.as_str())?;
                    tx.commit().await.during(what.as_str())?;
                    Ok(true)
                })
            }
        })
        .await?;
    crate::metrics::get().claim(won);
    Ok(won.then(|| Claim {
        request_id: request,
        from_state: expected.to_string(),
        management_node_id: management_node,
        token,
    }))
}

/// A `pending` request of `management_node` and the claim token it was left with
/// (`None`: no claim row, left by a provhost from before claims had rows).
async fn pending_of(db: &Db, management_node: i64) -> Result<Vec<(i64, Option<String>)>, DbError> {
    let find = "SELECT DISTINCT rq.`id`, c.`token` FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` \
                LEFT JOIN `provhost_claim` c ON c.`requestid` = rq.`id` \
                WHERE rq.`stateid` = ? AND (c.`managementnodeid` = ? OR (c.`requestid` IS NULL AND r.`managementnodeid` = ?)) \
                ORDER BY rq.`id`";
    let what = format!("listing pending requests of management node {management_node}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(find).bind(PENDING).bind(management_node).bind(management_node).fetch_all(p).await.during(what.as_str())?;
            rows.iter().map(|r| Ok((r.int("id")?, r.opt_text("token")?))).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// Recovery at start: every request left `pending` by `management_node` (its claim row
/// names this node, or it has no claim row and its reservation is assigned to this node)
/// goes back to its `laststateid`, to be claimed and processed again. Each is released
/// under the token it was left with, so a claim made meanwhile is never touched. The
/// daemon calls this only once it holds the node's lease, so every such claim belongs
/// to a holder whose lease expired. Returns the request ids, smallest first.
pub async fn recover_pending(db: &Db, management_node: i64) -> Result<Vec<i64>, DbError> {
    let mut back = Vec::new();
    for (id, token) in pending_of(db, management_node).await? {
        if release_as(db, id, token.as_deref()).await? {
            back.push(id);
        }
    }
    Ok(back)
}

/// The daemon's periodic sweep: release `management_node`'s `pending` requests that no
/// running flow of this daemon owns (`running`), at most `limit` per call (a flow whose
/// exit could not be written, a claim whose flow never started). Returns the ids released.
pub async fn release_unowned(
    db: &Db,
    management_node: i64,
    running: &std::collections::HashSet<i64>,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    let mut back = Vec::new();
    for (id, token) in pending_of(db, management_node).await? {
        if back.len() >= limit {
            break;
        }
        if running.contains(&id) {
            continue;
        }
        if release_as(db, id, token.as_deref()).await? {
            back.push(id);
        }
    }
    Ok(back)
}

/// Hand back a request this daemon claimed with `token`: [`release`] that changes
/// nothing when the claim is no longer this token's (another daemon took the node over)
/// or this daemon lost its lease. False when nothing changed.
pub async fn release_claimed(db: &Db, request: i64, token: &str) -> Result<bool, DbError> {
    release_as(db, request, Some(token)).await
}

/// Put a `pending` request back into its `laststateid` (the state it was claimed from),
/// restore the laststate it had before the claim, and drop the claim. False when it was not
/// pending (nothing changed).
pub async fn release(db: &Db, request: i64) -> Result<bool, DbError> {
    let what = format!("releasing request {request}");
    release_tx(db, request, None, &what).await
}

/// [`release`] under a claim: `Some(token)` only while the claim row has that token,
/// `None` only while there is no claim row.
async fn release_as(db: &Db, request: i64, token: Option<&str>) -> Result<bool, DbError> {
    let what = format!("releasing request {request}");
    let cond = match token {
        Some(_) => " AND EXISTS (SELECT 1 FROM `provhost_claim` ct WHERE ct.`requestid` = ? AND ct.`token` = ?)",
        None => " AND NOT EXISTS (SELECT 1 FROM `provhost_claim` ct WHERE ct.`requestid` = ?)",
    };
    release_tx(db, request, Some((cond, token)), &what).await
}

async fn release_tx(
    db: &Db,
    request: i64,
    claim: Option<(&str, Option<&str>)>,
    what: &str,
) -> Result<bool, DbError> {
    let update = format!(
        "UPDATE `request` SET `stateid` = `laststateid`, \
         `laststateid` = COALESCE((SELECT c.`priorlaststateid` FROM `provhost_claim` c WHERE c.`requestid` = ?), `laststateid`), \
         `datemodified` = {} WHERE `id` = ? AND `stateid` = ?{}{}",
        db.now_sql(),
        claim.map(|c| c.0).unwrap_or(""),
        if claim.is_some() { db.lease_guard_sql() } else { "" },
    );
    db.retry(what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what)?;
            let mut q = sqlx::query(&update).bind(request).bind(request).bind(PENDING);
            if let Some((_, token)) = claim {
                q = q.bind(request);
                if let Some(t) = token {
                    q = q.bind(t);
                }
                if let Some(h) = db.lease_holder() {
                    q = q.bind(h);
                }
            }
            let n = q.execute(&mut *tx).await.during(what)?.rows_affected();
            // A plain release (no claim named) also drops a stale claim row, as before.
            if n == 1 || claim.is_none() {
                sqlx::query("DELETE FROM `provhost_claim` WHERE `requestid` = ?").bind(request).execute(&mut *tx).await.during(what)?;
            }
            tx.commit().await.during(what)?;
            Ok(n == 1)
        })
    })
    .await
}
