//! One live owner per management node: the `provhost_nodelease` row. A daemon takes its
//! node's lease before it recovers or claims anything, renews it on a heartbeat, and gives
//! it up when it stops. Another daemon for the same node may take the lease only once it
//! has expired (its holder died or was paused past `lease_secs`), and until then is told
//! who holds it and since when.
//!
//! Times are the database's clock, so two machines with different clocks agree on expiry.
//! A daemon's writes that depend on its ownership (claim, exit, fail, release) carry the
//! guard from `Db::lease_guard_sql`: once another holder has taken the node,
//! they change nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};

/// Who holds a node's lease, as read from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub holder: String,
    pub host: String,
    pub pid: i64,
    /// When it took the lease (database time, `YYYY-MM-DD HH:MM:SS`).
    pub since: String,
    /// When the lease runs out unless renewed.
    pub expires: String,
}

/// This process's claim to a node: the unique holder id written into the lease row.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub node: i64,
    pub holder: String,
    pub host: String,
    pub pid: u32,
}

impl Lease {
    /// A new holder id for `node`: host, pid, time and a counter, so two daemons in one
    /// process (tests) differ too.
    pub fn new(node: i64) -> Lease {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let host = crate::db::schema::local_hostname();
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut holder = format!(
            "{host}:{pid}:{nanos}:{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // The column is varchar(128); a very long host name is cut (the id stays unique
        // through pid, time and counter, which come first once cut from the left).
        if holder.len() > 128 {
            let cut = holder.len() - 128;
            let start = (cut..holder.len())
                .find(|i| holder.is_char_boundary(*i))
                .unwrap_or(holder.len());
            holder = holder[start..].to_string();
        }
        Lease {
            node,
            holder,
            host,
            pid,
        }
    }
}

/// What this process knows of its lease without asking the database: nobody else can have
/// taken it before `lease_secs` after the take or renewal statement was sent (the database
/// sets the expiry from its own clock when it runs the statement, which is later). A flow
/// starts a routine call only while this says fresh, so a daemon that was paused or cut
/// off from the database past its lease starts nothing more on its computers.
#[derive(Debug)]
pub struct Freshness {
    base: std::time::Instant,
    /// Milliseconds after `base` (negative: before) until which the lease is surely this
    /// process's.
    until_ms: std::sync::atomic::AtomicI64,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            base: std::time::Instant::now(),
            until_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

impl Freshness {
    fn offset_ms(&self, t: std::time::Instant) -> i64 {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if t >= self.base {
            ms(t - self.base)
        } else {
            -ms(self.base - t)
        }
    }

    /// A take or renewal sent at `sent` succeeded for `secs` seconds.
    pub fn renewed(&self, sent: std::time::Instant, secs: u64) {
        let lease = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let until = self.offset_ms(sent).saturating_add(lease);
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Is the lease surely still this process's?
    pub fn is_fresh(&self) -> bool {
        self.offset_ms(std::time::Instant::now()) < self.until_ms.load(Ordering::Relaxed)
    }
}

/// Take `lease` for `secs` seconds if nobody holds it or its holder's lease has expired.
/// `Ok(None)`: taken. `Ok(Some(holder))`: someone else holds it (fresh).
pub async fn acquire(db: &Db, lease: &Lease, secs: u64) -> Result<Option<Holder>, DbError> {
    let now = db.now_sql();
    let until = db.now_plus_secs_sql(secs);
    let insert = format!(
        "INSERT INTO `provhost_nodelease` (`managementnodeid`, `holder`, `host`, `pid`, `acquired`, `heartbeat`, `expires`) \
         SELECT ?, '', '', 0, {now}, {now}, {now} WHERE NOT EXISTS \
         (SELECT 1 FROM `provhost_nodelease` WHERE `managementnodeid` = ?)"
    );
    let take = format!(
        "UPDATE `provhost_nodelease` SET `holder` = ?, `host` = ?, `pid` = ?, `acquired` = {now}, `heartbeat` = {now}, \
         `expires` = {until} WHERE `managementnodeid` = ? AND (`expires` <= {now} OR `holder` = ?)"
    );
    let what = format!("taking the lease of management node {}", lease.node);
    db.retry(&what, || async {
        with_pool!(db, p => {
            // Two daemons inserting at once: one insert fails on the key; the update
            // below decides either way.
            let _ = sqlx::query(&insert).bind(lease.node).bind(lease.node).execute(p).await;
            let n = sqlx::query(&take)
                .bind(&lease.holder).bind(&lease.host).bind(i64::from(lease.pid)).bind(lease.node).bind(&lease.holder)
                .execute(p).await.during(what.as_str())?.rows_affected();
            if n == 1 {
                return Ok(None);
            }
            let row = sqlx::query("SELECT `holder`, `host`, `pid`, CAST(`acquired` AS CHAR) AS `since`, CAST(`expires` AS CHAR) AS `expires` \
                                   FROM `provhost_nodelease` WHERE `managementnodeid` = ?")
                .bind(lease.node).fetch_optional(p).await.during(what.as_str())?;
            match row {
                Some(r) => Ok(Some(Holder {
                    holder: r.text("holder")?,
                    host: r.text("host")?,
                    pid: r.int("pid")?,
                    since: r.text("since")?,
                    expires: r.text("expires")?,
                })),
                None => Err(DbError::NotFound { what: "lease row of management node", key: lease.node.to_string() }),
            }
        })
    })
    .await
}

/// Heartbeat: push the expiry `secs` ahead while `lease` is still this holder's. False
/// when another daemon has taken the node (this one must stop writing).
pub async fn renew(db: &Db, lease: &Lease, secs: u64) -> Result<bool, DbError> {
    let now = db.now_sql();
    let sql = format!(
        "UPDATE `provhost_nodelease` SET `heartbeat` = {now}, `expires` = {} WHERE `managementnodeid` = ? AND `holder` = ?",
        db.now_plus_secs_sql(secs)
    );
    let what = format!("renewing the lease of management node {}", lease.node);
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(lease.node).bind(&lease.holder).execute(p).await.during(what.as_str()).map(|r| r.rows_affected() == 1))
    })
    .await
}

/// Give the lease up (a clean stop): it expires now, so the next daemon starts at once.
/// False when it was no longer this holder's.
pub async fn release(db: &Db, lease: &Lease) -> Result<bool, DbError> {
    let now = db.now_sql();
    let sql = format!(
        "UPDATE `provhost_nodelease` SET `expires` = {now}, `heartbeat` = {now} WHERE `managementnodeid` = ? AND `holder` = ?"
    );
    let what = format!("giving up the lease of management node {}", lease.node);
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query(&sql).bind(lease.node).bind(&lease.holder).execute(p).await.during(what.as_str()).map(|r| r.rows_affected() == 1))
    })
    .await
}

/// Does the handle's lease holder ([`Db::lease_holder`]) still hold its node? True for a
/// handle without a lease.
pub async fn holds(db: &Db) -> Result<bool, DbError> {
    let Some(holder) = db.lease_holder() else {
        return Ok(true);
    };
    let what = "checking this daemon's lease";
    db.retry(what, || async {
        with_pool!(db, p => sqlx::query("SELECT 1 AS `one` FROM `provhost_nodelease` WHERE `holder` = ?").bind(holder).fetch_optional(p).await.during(what).map(|r| r.is_some()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn freshness_lasts_the_lease_from_when_the_statement_was_sent() {
        let f = Freshness::default();
        assert!(!f.is_fresh(), "fresh before any take");
        let sent = Instant::now();
        f.renewed(sent, 60);
        assert!(f.is_fresh());
        // An older renewal does not shorten it.
        f.renewed(
            sent.checked_sub(Duration::from_secs(120)).unwrap_or(sent),
            60,
        );
        assert!(f.is_fresh());
        let g = Freshness::default();
        std::thread::sleep(Duration::from_millis(30));
        g.renewed(Instant::now(), 0);
        assert!(!g.is_fresh(), "a lease of 0 s is over at once");
        let h = Freshness::default();
        if let Some(long_ago) = Instant::now().checked_sub(Duration::from_millis(1100)) {
            h.renewed(long_ago, 1);
            assert!(!h.is_fresh(), "sent 1.1 s ago with a 1 s lease");
        }
    }
}
