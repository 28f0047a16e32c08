//! One read for many waiting flows: every flow that waits (for Connect, for the user's
//! connection, for a reload) looks at its request once per poll (VCL's
//! `request_state_changed` on every pass of every wait loop). With thousands of flows in
//! flight, one statement per flow per poll saturates the database; [`Watcher`] gathers the
//! looks that arrive while a read is under way and answers them all with the next read (one
//! statement per [`CHUNK`] requests). Each look still sees a read that started after it was
//! asked for, so a flow notices a change exactly as soon as it did with a read of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::db::watch::Watched;
use crate::vcl::PENDING;

/// Most requests read by one statement.
pub const CHUNK: usize = 500;

/// Least time between the starts of two shared reads while looks keep coming: the looks
/// of the gap are answered together (a flow polls every second or so, so 20 ms more is
/// nothing to it, and 10,000 waiting flows cost ~50 statements/s instead of hundreds).
const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// Rounds one drain task runs before it hands over to a new task (so no task loops for
/// ever while looks keep coming).
const ROUNDS_PER_TASK: usize = 64;

/// One request as one read saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub stateid: i64,
    pub laststateid: i64,
    /// The claim token the request is held under (`provhost_claim`), if any.
    pub token: Option<String>,
    /// Its end time has come.
    pub ended: bool,
    /// The user's address once they clicked Connect (the largest non-empty `remoteIP` of
    /// its reservations), else empty.
    pub remote_ip: String,
}

impl Seen {
    /// What a flow holding claim `token` makes of it (see [`Watched`]).
    pub fn for_claim(&self, token: &str) -> Watched {
        if self.stateid == PENDING && self.token.as_deref() == Some(token) {
            Watched::Mine { ended: self.ended }
        } else {
            Watched::Changed {
                state: state_label(self.stateid),
                laststate: state_label(self.laststateid),
            }
        }
    }
}

/// Read `requests` (at most [`CHUNK`] per statement); a request missing from the answer
/// is gone.
pub async fn read_many(db: &Db, requests: &[i64]) -> Result<HashMap<i64, Seen>, DbError> {
    let mut out = HashMap::with_capacity(requests.len());
    for chunk in requests.chunks(CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT rq.`id`, rq.`stateid`, rq.`laststateid`, c.`token`, \
             CASE WHEN rq.`end` <= {now} THEN 1 ELSE 0 END AS `ended`, \
             (SELECT MAX(r.`remoteIP`) FROM `reservation` r \
              WHERE r.`requestid` = rq.`id` AND r.`remoteIP` <> '') AS `ip` \
             FROM `request` rq LEFT JOIN `provhost_claim` c ON c.`requestid` = rq.`id` \
             WHERE rq.`id` IN ({marks})",
            now = db.now_sql()
        );
        let what = format!("watching {} waiting requests", chunk.len());
        let rows: Vec<(i64, Seen)> = db
            .retry(&what, || async {
                with_pool!(db, p => {
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    let rows = q.fetch_all(p).await.during(what.as_str())?;
                    rows.iter()
                        .map(|r| {
                            Ok((r.int("id")?, Seen {
                                stateid: r.int("stateid")?,
                                laststateid: r.int("laststateid")?,
                                token: r.opt_text("token")?,
                                ended: r.int("ended")? != 0,
                                remote_ip: r.opt_text("ip")?.unwrap_or_default().trim().to_string(),
                            }))
                        })
                        .collect::<Result<Vec<_>, DbError>>()
                })
            })
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// What a look is told: what the shared read saw, or how it failed.
#[derive(Debug, Clone)]
enum Answer {
    Seen(Option<Seen>),
    Failed(Failure),
}

/// How a shared read failed, copied to every look it served. The database's own errors
/// cannot be copied; these two carry what the flows act on (hand the request back) and
/// the same message.
#[derive(Debug, Clone)]
enum Failure {
    /// Not retried: the daemon is stopping.
    Stopped {
        what: String,
        attempts: u32,
        reason: String,
    },
    /// Unreachable through every retry.
    Unavailable {
        what: String,
        attempts: u32,
        waited: std::time::Duration,
        reason: String,
    },
    /// Anything else: each look reads on its own and gets its own error.
    Other,
}

impl Failure {
    fn of(e: &DbError) -> Failure {
        match e {
            DbError::Stopped {
                what,
                attempts,
                last,
            } => Failure::Stopped {
                what: what.clone(),
                attempts: *attempts,
                reason: last.transient_reason(),
            },
            DbError::Unavailable {
                what,
                attempts,
                waited,
                last,
            } => Failure::Unavailable {
                what: what.clone(),
                attempts: *attempts,
                waited: *waited,
                reason: last.transient_reason(),
            },
            _ => Failure::Other,
        }
    }

    /// The error for one look (with the shared read's message), `None` for [`Failure::Other`].
    fn error(self) -> Option<DbError> {
        match self {
            Failure::Stopped {
                what,
                attempts,
                reason,
            } => Some(DbError::Stopped {
                what,
                attempts,
                last: Box::new(DbError::Invalid(reason)),
            }),
            Failure::Unavailable {
                what,
                attempts,
                waited,
                reason,
            } => Some(DbError::Unavailable {
                what,
                attempts,
                waited,
                last: Box::new(DbError::Invalid(reason)),
            }),
            Failure::Other => None,
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(i64, oneshot::Sender<Answer>)>,
    draining: bool,
}

/// Gathers the looks of a daemon's waiting flows into shared reads. Cheap to share
/// (`Arc`); needs a tokio runtime.
pub struct Watcher {
    db: Db,
    queue: Mutex<Queue>,
    statements: AtomicU64,
    looks: AtomicU64,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("looks", &self.looks())
            .field("statements", &self.statements())
            .finish()
    }
}

impl Watcher {
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Watcher {
            db,
            queue: Mutex::new(Queue::default()),
            statements: AtomicU64::new(0),
            looks: AtomicU64::new(0),
        })
    }

    /// Looks answered so far.
    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }

    /// Statements the shared reads took so far (fewer than [`Watcher::looks`] when looks
    /// overlapped).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// `request` as a read that started after this call saw it; `None`: the row is gone.
    /// When the shared read fails after its retries (or is not retried because the daemon
    /// stops), every look it served gets that error; on any other failure each look reads
    /// on its own, so its error is its own.
    pub async fn look(self: &Arc<Self>, request: i64) -> Result<Option<Seen>, DbError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.push((request, tx));
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            Arc::clone(self).spawn_drain();
        }
        self.looks.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().watch_look();
        let failure = match rx.await {
            Ok(Answer::Seen(seen)) => return Ok(seen),
            Ok(Answer::Failed(f)) => f,
            // The drain task is gone (a runtime shutting down).
            Err(_) => Failure::Other,
        };
        if let Some(e) = failure.error() {
            return Err(e);
        }
        self.statements.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().watch_reads(1);
        Ok(read_many(&self.db, &[request]).await?.remove(&request))
    }

    /// Answer the waiting looks on a task of their own, a read at a time, until none wait
    /// (handing over to a new task after [`ROUNDS_PER_TASK`] rounds).
    fn spawn_drain(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut last: Option<tokio::time::Instant> = None;
            for _ in 0..ROUNDS_PER_TASK {
                if let Some(at) = last {
                    tokio::time::sleep_until(at + MIN_GAP).await;
                }
                last = Some(tokio::time::Instant::now());
                let batch = {
                    let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if q.waiting.is_empty() {
                        q.draining = false;
                        return;
                    }
                    std::mem::take(&mut q.waiting)
                };
                let mut ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                ids.dedup();
                let statements = ids.len().div_ceil(CHUNK) as u64;
                self.statements.fetch_add(statements, Ordering::Relaxed);
                crate::metrics::get().watch_reads(statements);
                match read_many(&self.db, &ids).await {
                    Ok(seen) => {
                        for (id, tx) in batch {
                            let _ = tx.send(Answer::Seen(seen.get(&id).cloned()));
                        }
                    }
                    Err(e) => {
                        let failure = Failure::of(&e);
                        for (_, tx) in batch {
                            let _ = tx.send(Answer::Failed(failure.clone()));
                        }
                    }
                }
            }
            self.spawn_drain();
        });
    }
}
