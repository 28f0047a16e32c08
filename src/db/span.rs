//! `provhost_span`: the waterfall of each reservation — every routine call and every
//! command and copy it made ([`crate::trace::Span`]) — written in one statement per
//! routine call, read back per reservation, and pruned by age and count (`[trace]`).
//! Also the reservation counts by state that `/metrics` reports.

use serde::{Deserialize, Serialize};

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Backend, Db, RowExt};
use crate::trace::{Span, SpanKind};

/// The most spans one reservation's waterfall reads back.
pub const MAX_READ: usize = 5_000;

/// `[trace]` in `provhost.toml`: how long spans are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Record spans at all.
    pub enabled: bool,
    /// Spans older than this are removed (the daemon prunes every sweep).
    pub max_age_secs: u64,
    /// At most this many spans are kept (the oldest go first).
    pub max_rows: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            enabled: true,
            max_age_secs: 7 * 24 * 3600,
            max_rows: 1_000_000,
        }
    }
}

impl TraceConfig {
    pub fn check(&self) -> Result<(), String> {
        use crate::config::{Bound, MAX_SECS};
        Bound::secs("max_age_secs", self.max_age_secs, 60, MAX_SECS).check()?;
        Bound::count("max_rows", self.max_rows, 100, 100_000_000).check()
    }
}

const CREATE_SQLITE: &str = include_str!("schema/sqlite/provhost.sql");
const CREATE_MYSQL: &str = include_str!("schema/mysql/provhost.sql");

/// Create `provhost_span` when a database made before it lacks it (as `db init` would);
/// the daemon does this at start.
pub async fn ensure_table(db: &Db) -> Result<(), DbError> {
    let script = match db.backend() {
        Backend::Sqlite => CREATE_SQLITE,
        Backend::MySql => CREATE_MYSQL,
    };
    let Some(at) = script.find("CREATE TABLE IF NOT EXISTS `provhost_span`") else {
        return Ok(());
    };
    let what = "creating provhost_span";
    for stmt in script[at..].split(';') {
        let stmt = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if stmt.trim().is_empty() {
            continue;
        }
        with_pool!(db, p => sqlx::query(&stmt).execute(p).await.during(what).map(|_| ()))?;
    }
    Ok(())
}

/// Write one routine call's spans in one statement.
pub async fn insert(db: &Db, spans: &[Span]) -> Result<(), DbError> {
    if spans.is_empty() {
        return Ok(());
    }
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "INSERT INTO `provhost_span` (`reservationid`, `kind`, `module`, `routine`, `host`, `detail`, `exitcode`, `bytes`, `startms`, `durationms`, `ok`, `error`) VALUES {}",
        vec![row; spans.len()].join(", ")
    );
    let what = "writing spans";
    with_pool!(db, p => {
        let mut q = sqlx::query(&sql);
        for s in spans {
            q = q
                .bind(s.reservation_id)
                .bind(s.kind.as_str())
                .bind(&s.module)
                .bind(&s.routine)
                .bind(&s.host)
                .bind(&s.detail)
                .bind(s.exit_code)
                .bind(s.bytes.map(|b| b.min(i64::MAX as u64) as i64))
                .bind(s.start_ms)
                .bind(s.duration_ms)
                .bind(s.ok as i64)
                .bind(s.error.as_deref());
        }
        q.execute(p).await.during(what).map(|_| ())
    })?;
    crate::metrics::get().spans_written(spans.len() as u64);
    Ok(())
}

/// The spans of `reservation`, by start (at most [`MAX_READ`]).
pub async fn of_reservation(db: &Db, reservation: i64) -> Result<Vec<Span>, DbError> {
    let sql = format!(
        "SELECT `reservationid`, `kind`, `module`, `routine`, `host`, `detail`, `exitcode`, `bytes`, `startms`, `durationms`, `ok`, `error` \
         FROM `provhost_span` WHERE `reservationid` = ? ORDER BY `startms`, `id` LIMIT {MAX_READ}"
    );
    let what = format!("reading the spans of reservation {reservation}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).bind(reservation).fetch_all(p).await.during(what.as_str())?;
            rows.iter().map(|r| Ok(Span {
                reservation_id: r.int("reservationid")?,
                kind: SpanKind::parse(&r.text("kind")?),
                module: r.text("module")?,
                routine: r.text("routine")?,
                host: r.text("host")?,
                detail: r.text("detail")?,
                exit_code: r.opt_int("exitcode")?,
                bytes: r.opt_int("bytes")?.map(|b| b.max(0) as u64),
                start_ms: r.int("startms")?,
                duration_ms: r.int("durationms")?,
                ok: r.int("ok")? == 1,
                error: r.opt_text("error")?,
                running: false,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// Remove spans older than `max_age_secs` and all but the newest `max_rows`; how many
/// went. `now_ms` is the current time in milliseconds since the epoch.
pub async fn prune(db: &Db, cfg: &TraceConfig, now_ms: i64) -> Result<u64, DbError> {
    let cutoff = now_ms.saturating_sub((cfg.max_age_secs as i64).saturating_mul(1000));
    let what = "pruning spans";
    let old = with_pool!(db, p => sqlx::query("DELETE FROM `provhost_span` WHERE `startms` < ?")
        .bind(cutoff).execute(p).await.during(what).map(|r| r.rows_affected()))?;
    let top = with_pool!(db, p => sqlx::query("SELECT MAX(`id`) AS `top` FROM `provhost_span`")
        .fetch_one(p).await.during(what).and_then(|r| r.opt_int("top")))?
    .unwrap_or(0);
    let keep_from = top.saturating_sub(cfg.max_rows as i64);
    let over = if keep_from > 0 {
        with_pool!(db, p => sqlx::query("DELETE FROM `provhost_span` WHERE `id` <= ?")
            .bind(keep_from).execute(p).await.during(what).map(|r| r.rows_affected()))?
    } else {
        0
    };
    crate::metrics::get().spans_pruned(old + over);
    Ok(old + over)
}

/// Reservations by their request's state (for `provhost_reservations`).
pub async fn reservations_by_state(db: &Db) -> Result<Vec<(String, i64)>, DbError> {
    let sql = "SELECT rq.`stateid`, COUNT(*) AS `n` FROM `reservation` r JOIN `request` rq ON rq.`id` = r.`requestid` GROUP BY rq.`stateid`";
    let what = "counting reservations by state";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(sql).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok((state_label(r.int("stateid")?), r.int("n")?))).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}
