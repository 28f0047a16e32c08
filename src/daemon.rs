//! The daemon: polls the database for this management node's requests, claims each due
//! one atomically, runs its state flow as a tokio task, and stops cleanly.
//!
//! - Start: take the node's lease (`db::lease`; one live daemon per node: refuse, naming
//!   the holder, or wait up to `lease_wait_secs` for it to expire), then requests this
//!   node left `pending` (its previous holder died) go back to their last state and are
//!   processed again (`recovery`), with a load-log line saying so. A heartbeat renews the
//!   lease; losing it to another daemon stops this one without writing.
//! - Every `sweep_interval_secs`: this node's `pending` requests no running flow owns are
//!   handed back (bounded).
//! - Loop: every `poll_interval_secs`, or at once when `provhost request new` on this
//!   machine pokes the wake socket (`<data_dir>/provhost.wake`) or when the pickup check
//!   (every `pickup_poll_ms`, one indexed query) sees this node's requests change — a
//!   request inserted by another machine —, list the node's work,
//!   claim what is due (VCL's `check_time`, simplified: new/reload once started or inside
//!   the preload window (`preload_secs` to `preload_min_secs` before the start), in-use
//!   reservations near their end or every `general_inuse_check`), spawn its flow.
//! - Stop (SIGTERM/SIGINT, or `--once` when nothing is left): running flows are cancelled at
//!   their next routine step and hand their request back; database operations are no
//!   longer retried (an outage cannot hold the stop up); `shutdown_grace_secs` after the
//!   signal whatever still runs — a flow, or a poll still waiting on the database — is
//!   abandoned to recovery. A claimed request is never left `pending` by a clean stop
//!   while the database answers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::db::lease::Lease;
use crate::db::{Db, DbError};
use crate::host::ScriptHost;
use crate::state::lanes::{Lane, Lanes};
use crate::state::{Services, Timings};

/// `[daemon]` in `provhost.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// This node's `managementnode.hostname` (default: the machine's host name).
    pub node: String,
    /// Seconds between polls of the database.
    pub poll_interval_secs: u64,
    /// Milliseconds between pickup checks: one cheap indexed query
    /// (`db::claim::pickup_fingerprint`) between full polls; when it sees this node's
    /// requests change (one inserted by the web front end or another node, a state
    /// change), the full poll runs at once. So a request is claimed within about this long
    /// of its insert, from any machine. 0 turns the checks off (full polls only, as vcld).
    pub pickup_poll_ms: u64,
    /// How long a stop waits for running flows to hand their requests back.
    pub shutdown_grace_secs: u64,
    /// Most flows running at once for loads and everything else; further due work waits
    /// for the next poll. A flow waiting (for Connect, a connection, a reload) holds no
    /// thread; only its routine calls run on threads (`routine_threads`).
    pub max_flows: usize,
    /// Most routine calls of those flows running at once, each on a thread of its own; a
    /// flow's next call waits for a free thread when all are busy.
    pub routine_threads: usize,
    /// Flows for the end of reservations (timeout, deleted, an in-use reservation past its
    /// end) on top of `max_flows`, with routine threads of their own: access is taken away
    /// from ended reservations even while loads fill `max_flows`.
    pub reclaim_flows: usize,
    /// How long this daemon's hold on its node (`provhost_nodelease`) lasts without a
    /// heartbeat; another daemon for the node may take over only after that.
    pub lease_secs: u64,
    /// How often the lease is renewed (must be less than `lease_secs`).
    pub heartbeat_secs: u64,
    /// At start, how long to wait for another daemon's lease on the node to expire; 0:
    /// refuse to start at once, naming the holder.
    pub lease_wait_secs: u64,
    /// How often the daemon hands back this node's `pending` requests that none of its
    /// running flows owns (an exit that could not be written).
    pub sweep_interval_secs: u64,
    /// Remove complete and failed requests (with their reservations and load-log) as vcld's
    /// `check_time` does. Checked on every poll. `false` keeps them for good.
    pub remove_finished: bool,
    /// How long after its end a finished request stays (so `provhost log` can show it)
    /// before it is removed; 0: vcld's own timing (at once after a reload, deletion,
    /// capture or maintenance, else 30 s after the end).
    pub keep_finished_secs: u64,
    /// Preload (vcld's `check_time` "preload"): a `new` reservation whose start is at
    /// most this far ahead, and at least `preload_min_secs`, is loaded ahead of its start
    /// (once: `request.preload` is set) and becomes `reserved` at its start. vcld's window
    /// is 35 to 25 minutes before the start. 0 turns preloading off.
    pub preload_secs: u64,
    /// The near edge of the preload window (vcld: 25 minutes): a request made closer to
    /// its start than this waits for its start. 0: every future start within
    /// `preload_secs` is preloaded.
    pub preload_min_secs: u64,
    /// VCL's timing variables (the `variable` table's values win; see docs/database.md).
    pub timings: Timings,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            node: String::new(),
            poll_interval_secs: 5,
            pickup_poll_ms: 250,
            shutdown_grace_secs: 30,
            max_flows: 1000,
            routine_threads: 1000,
            reclaim_flows: 64,
            lease_secs: 60,
            heartbeat_secs: 10,
            lease_wait_secs: 0,
            sweep_interval_secs: 60,
            remove_finished: true,
            keep_finished_secs: 86_400,
            preload_secs: 35 * 60,
            preload_min_secs: 25 * 60,
            timings: Timings::default(),
        }
    }
}

impl DaemonConfig {
    /// Every setting in its allowed range (durations up to a year, flow counts within
    /// what the daemon can run) and the heartbeat inside the lease.
    pub fn check(&self) -> Result<(), String> {
        use crate::config::{Bound, MAX_SECS};
        let threads = crate::state::lanes::MAX_THREADS;
        let t = &self.timings;
        for b in [
            Bound::secs("poll_interval_secs", self.poll_interval_secs, 1, 3600),
            Bound::millis("pickup_poll_ms", self.pickup_poll_ms, 0, 3_600_000),
            Bound::secs("shutdown_grace_secs", self.shutdown_grace_secs, 0, MAX_SECS),
            Bound::secs("lease_secs", self.lease_secs, 1, MAX_SECS),
            Bound::secs("heartbeat_secs", self.heartbeat_secs, 1, MAX_SECS),
            Bound::secs("lease_wait_secs", self.lease_wait_secs, 0, MAX_SECS),
            Bound::secs("sweep_interval_secs", self.sweep_interval_secs, 1, MAX_SECS),
            Bound::secs("keep_finished_secs", self.keep_finished_secs, 0, MAX_SECS),
            Bound::secs("preload_secs", self.preload_secs, 0, MAX_SECS),
            Bound::secs("preload_min_secs", self.preload_min_secs, 0, MAX_SECS),
            Bound::count(
                "max_flows",
                self.max_flows as u64,
                1,
                crate::state::lanes::MAX_FLOWS as u64,
            ),
            Bound::count(
                "routine_threads",
                self.routine_threads as u64,
                1,
                threads as u64,
            ),
            Bound::count(
                "reclaim_flows",
                self.reclaim_flows as u64,
                1,
                threads as u64 / 4,
            ),
            Bound::secs(
                "timings.acknowledgetimeout",
                t.acknowledgetimeout,
                0,
                MAX_SECS,
            ),
            Bound::secs(
                "timings.initialconnecttimeout",
                t.initialconnecttimeout,
                0,
                MAX_SECS,
            ),
            Bound::secs("timings.reconnecttimeout", t.reconnecttimeout, 0, MAX_SECS),
            Bound::secs(
                "timings.general_inuse_check",
                t.general_inuse_check,
                1,
                MAX_SECS,
            ),
            Bound::secs(
                "timings.general_end_notice_first",
                t.general_end_notice_first,
                0,
                MAX_SECS,
            ),
            Bound::secs(
                "timings.general_end_notice_second",
                t.general_end_notice_second,
                0,
                MAX_SECS,
            ),
            Bound::millis(
                "timings.acknowledge_poll_ms",
                t.acknowledge_poll_ms,
                1,
                3_600_000,
            ),
            Bound::secs("timings.connect_poll", t.connect_poll, 1, 3600),
            Bound::secs(
                "timings.computer_wait_secs",
                t.computer_wait_secs,
                0,
                MAX_SECS,
            ),
            Bound::millis(
                "timings.computer_wait_poll_ms",
                t.computer_wait_poll_ms,
                1,
                3_600_000,
            ),
        ] {
            b.check()?;
        }
        if self.heartbeat_secs >= self.lease_secs {
            return Err(format!(
                "heartbeat_secs ({}) must be at least 1 and less than lease_secs ({}); e.g. lease_secs = 60, heartbeat_secs = 10",
                self.heartbeat_secs, self.lease_secs
            ));
        }
        if self.preload_secs > 0 && self.preload_min_secs > self.preload_secs {
            return Err(format!(
                "preload_min_secs ({}) must not be more than preload_secs ({}): the preload window runs from preload_secs to preload_min_secs before a reservation's start (vcld: 2100 and 1500)",
                self.preload_min_secs, self.preload_secs
            ));
        }
        if self.work_threads() + self.reclaim_flows > threads {
            return Err(format!(
                "routine_threads ({}) + reclaim_flows ({}) is more than the {threads} routine threads a daemon runs at once; lower routine_threads",
                self.routine_threads, self.reclaim_flows
            ));
        }
        Ok(())
    }
}

impl DaemonConfig {
    /// Routine threads for the flows of `max_flows`: `routine_threads`, and never more
    /// than there are such flows.
    pub fn work_threads(&self) -> usize {
        self.routine_threads.min(self.max_flows)
    }
}

/// Threads this user may still start, by `RLIMIT_NPROC` (`None`: no limit).
fn thread_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Threads a daemon needs beside its routine threads (runtime workers, the blocking pool's
/// usual few, the database pool, watchers).
const OTHER_THREADS: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("management node {node:?} is not in the managementnode table ({source}); run `provhost db init` on this machine or set [daemon] node")]
    UnknownNode {
        node: String,
        #[source]
        source: DbError,
    },
    #[error("management node {node:?} is held by another provhost daemon (host {host}, pid {pid}, since {since}; its lease runs to {expires} unless renewed); stop that daemon, or wait for its lease to expire (set [daemon] lease_wait_secs to wait)")]
    NodeHeld {
        node: String,
        host: String,
        pid: i64,
        since: String,
        expires: String,
    },
    #[error("lost the lease on management node {node:?} (another daemon took it over, e.g. after this one was paused past lease_secs); stopped without writing")]
    LeaseLost { node: String },
    #[error("{source}; the database lacks provhost's `provhost_nodelease` table (made before it existed): run `provhost db init`, which adds it and leaves everything else as it is")]
    NoLeaseTable {
        #[source]
        source: DbError,
    },
    #[error("[daemon] {0}")]
    Config(String),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("wake socket {} is in use by another running daemon; give each daemon its own [paths] data_dir", path.display())]
    WakeInUse { path: PathBuf },
    #[error("wake socket {}: {source}", path.display())]
    Wake {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How often an in-use reservation near its end is checked (at most; less when
/// `general_inuse_check` is shorter).
const NEAR_END_CHECK_SECS: u64 = 60;

/// Most requests one sweep hands back.
const SWEEP_LIMIT: usize = 100;

/// A spawned task that ends when this is dropped (also on an early return or a panic).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running flows: each request's cancel flag and lane, and how many run per lane.
#[derive(Default)]
struct Running {
    flows: HashMap<i64, (Arc<AtomicBool>, Lane)>,
    work: usize,
    end: usize,
}

impl Running {
    fn contains(&self, request: i64) -> bool {
        self.flows.contains_key(&request)
    }
    fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
    fn len(&self) -> usize {
        self.flows.len()
    }
    fn requests(&self) -> HashSet<i64> {
        self.flows.keys().copied().collect()
    }
    fn insert(&mut self, request: i64, cancel: Arc<AtomicBool>, lane: Lane) {
        if self.flows.insert(request, (cancel, lane)).is_none() {
            *self.count(lane) += 1;
        }
    }
    fn remove(&mut self, request: i64) {
        if let Some((_, lane)) = self.flows.remove(&request) {
            let n = self.count(lane);
            *n = n.saturating_sub(1);
        }
    }
    fn count(&mut self, lane: Lane) -> &mut usize {
        match lane {
            Lane::Work => &mut self.work,
            Lane::End => &mut self.end,
        }
    }
    fn cancel_all(&self) {
        for (flag, _) in self.flows.values() {
            flag.store(true, Ordering::Relaxed);
        }
    }
    /// The lane a due request runs in, if one has room: the end of a reservation takes
    /// an end slot (else a work slot), everything else a work slot.
    fn lane_for(&self, end_work: bool, cfg: &DaemonConfig) -> Option<Lane> {
        if end_work && self.end < cfg.reclaim_flows {
            Some(Lane::End)
        } else if self.work < cfg.max_flows {
            Some(Lane::Work)
        } else {
            None
        }
    }
}

/// Forget in-use check times of requests that are no longer in use: O(work + checked).
fn prune_inuse_checked(checked: &mut HashMap<i64, Instant>, work: &[crate::db::claim::Work]) {
    if checked.is_empty() {
        return;
    }
    let inuse: HashSet<i64> = work
        .iter()
        .filter(|w| w.state == "inuse")
        .map(|w| w.request_id)
        .collect();
    checked.retain(|id, _| inuse.contains(id));
}

/// The running flow tasks and which request each one serves.
#[derive(Default)]
struct Tasks {
    set: JoinSet<i64>,
    /// Per task: its request and the claim token it runs under.
    requests: HashMap<tokio::task::Id, (i64, String)>,
}

/// Request states the daemon has a flow for.
pub const HANDLED: &[&str] = &[
    "new",
    "reload",
    "reinstall",
    "tomaintenance",
    "reserved",
    "inuse",
    "timeout",
    "deleted",
    "image",
];

/// The stop signal, awaitable any number of times (a plain future must not be polled again
/// once it has completed).
struct Stop<F> {
    signal: std::pin::Pin<Box<F>>,
    at: Option<Instant>,
}

impl<F: Future<Output = ()>> Stop<F> {
    fn new(signal: F) -> Self {
        Stop {
            signal: Box::pin(signal),
            at: None,
        }
    }

    /// Resolves when the signal came (at once if it already has).
    async fn wait(&mut self) {
        if self.at.is_none() {
            (&mut self.signal).await;
            self.at = Some(Instant::now());
        }
    }

    /// Run `work` unless a stop comes first. On a stop, `db` stops retrying and `work`
    /// gets the rest of the grace period to finish (its tries end within the acquire
    /// timeout); `None` when it had to be abandoned.
    async fn race<T>(
        &mut self,
        db: &Db,
        grace: Duration,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        if self.at.is_none() {
            tokio::select! {
                biased;
                _ = self.wait() => {}
                out = &mut work => return Some(out),
            }
        }
        db.stop_retrying();
        let deadline = self.deadline(grace);
        tokio::time::timeout_at(deadline.into(), work).await.ok()
    }

    /// When the grace period ends (`grace` after the signal; from now if none came).
    fn deadline(&self, grace: Duration) -> Instant {
        self.at.unwrap_or_else(Instant::now) + grace
    }

    fn stopped(&self) -> bool {
        self.at.is_some()
    }
}

/// Why the wait between polls ended.
enum Wait {
    Poll,
    Stop,
    Lost,
}

/// What a run did (for `--once`, tests and the exit message).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub recovered: usize,
    pub processed: usize,
}

pub struct Daemon {
    svc: Arc<Services>,
    cfg: DaemonConfig,
    wake: Option<PathBuf>,
    node: String,
    lease: Lease,
    /// How long the waterfall's spans are kept (pruned every sweep).
    trace: crate::db::span::TraceConfig,
}

/// The wake socket path in `data_dir`.
pub fn wake_path(data_dir: &Path) -> PathBuf {
    data_dir.join("provhost.wake")
}

/// Poke a daemon running on this machine (best effort: nothing listening is fine).
pub fn wake(data_dir: &Path) {
    let path = wake_path(data_dir);
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.send_to(b"w", &path);
    }
}

impl Daemon {
    /// Resolve this node's id; `wake_dir` is where the wake socket goes (`None`: no socket).
    pub async fn new(
        db: Db,
        host: Arc<ScriptHost>,
        cfg: DaemonConfig,
        wake_dir: Option<&Path>,
    ) -> Result<Daemon, DaemonError> {
        let node = if cfg.node.is_empty() {
            crate::db::schema::local_hostname()
        } else {
            cfg.node.clone()
        };
        let node_id = crate::db::inventory::management_node_id(&db, &node)
            .await
            .map_err(|source| DaemonError::UnknownNode {
                node: node.clone(),
                source,
            })?;
        cfg.check().map_err(DaemonError::Config)?;
        let threads = (cfg.work_threads() + cfg.reclaim_flows) as u64 + OTHER_THREADS;
        if let Some(limit) = thread_limit().filter(|l| *l < threads) {
            return Err(DaemonError::Config(format!(
                "routine_threads ({}) + reclaim_flows ({}) routine threads (+{OTHER_THREADS} others) exceed this user's process limit (ulimit -u = {limit}); lower routine_threads or raise the limit",
                cfg.work_threads(), cfg.reclaim_flows
            )));
        }
        let timings = timings_at_start(&db, &cfg.timings).await;
        let lease = Lease::new(node_id);
        // Its own stop flag: stopping this daemon ends only its retries. Its claims,
        // exits, fails and releases change rows only while it holds the node's lease.
        let flows_db = db.with_own_stop().with_lease(&lease.holder);
        let svc = Arc::new(Services {
            db: flows_db.clone(),
            host,
            timings,
            node_id,
            lanes: Lanes::new(cfg.work_threads(), cfg.reclaim_flows),
            fresh: Some(Arc::new(crate::db::lease::Freshness::default())),
            watcher: crate::db::watchbatch::Watcher::new(flows_db),
        });
        // A database made before the waterfall gets its table (as `db init` would).
        if let Err(e) = crate::db::span::ensure_table(&db).await {
            tracing::warn!("the waterfall's table provhost_span could not be made (spans will not be stored; run `provhost db init`): {e}");
        }
        Ok(Daemon {
            svc,
            cfg,
            wake: wake_dir.map(wake_path),
            node,
            lease,
            trace: crate::db::span::TraceConfig::default(),
        })
    }

    /// Keep spans as `trace` says (`[trace]`; default: a week, a million rows), and
    /// record them at all only when it is enabled.
    pub fn with_trace(mut self, trace: crate::db::span::TraceConfig) -> Self {
        crate::trace::set_enabled(trace.enabled);
        self.trace = trace;
        self
    }

    pub fn node_id(&self) -> i64 {
        self.svc.node_id
    }

    /// Run until `shutdown` resolves (or, with `once`, until nothing is due or running).
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()>,
        once: bool,
    ) -> Result<Summary, DaemonError> {
        let mut stop = Stop::new(shutdown);
        if !self.take_lease(&mut stop).await? {
            tracing::info!("stopped while waiting for the node's lease; nothing was claimed");
            return Ok(Summary::default());
        }
        let out = self.run_leased(&mut stop, once).await;
        match &out {
            Err(DaemonError::LeaseLost { .. }) => {}
            // Best effort, for at most 1 s and within the grace period: a database outage
            // must not hold the stop up (the lease then expires by itself).
            _ => match tokio::time::timeout_at(
                stop.deadline(Duration::from_secs(self.cfg.shutdown_grace_secs))
                    .min(Instant::now() + Duration::from_secs(1))
                    .into(),
                crate::db::lease::release(&self.svc.db, &self.lease),
            )
            .await
            {
                Ok(Ok(true)) => {
                    tracing::info!("gave up the lease on management node {:?}", self.node)
                }
                Ok(Ok(false)) => tracing::warn!(
                    "the lease on management node {:?} was no longer this daemon's at the stop",
                    self.node
                ),
                Ok(Err(e)) => tracing::warn!(
                    "could not give up the lease (it expires by itself after lease_secs): {e}"
                ),
                Err(_) => tracing::warn!(
                    "could not give up the lease in time (it expires by itself after lease_secs)"
                ),
            },
        }
        out
    }

    /// Take the node's lease, waiting (bounded by `lease_wait_secs`) while another
    /// daemon's is fresh. False when a stop came first.
    async fn take_lease<F: Future<Output = ()>>(
        &self,
        stop: &mut Stop<F>,
    ) -> Result<bool, DaemonError> {
        let db = &self.svc.db;
        let deadline = Instant::now() + Duration::from_secs(self.cfg.lease_wait_secs);
        let mut said = false;
        loop {
            let sent = Instant::now();
            let got = match stop
                .race(
                    db,
                    Duration::from_secs(self.cfg.shutdown_grace_secs),
                    crate::db::lease::acquire(db, &self.lease, self.cfg.lease_secs),
                )
                .await
            {
                Some(Err(e)) => {
                    let text = e.to_string();
                    let missing = text.contains("provhost_nodelease")
                        && (text.contains("no such table") || text.contains("doesn't exist"));
                    return Err(if missing {
                        DaemonError::NoLeaseTable { source: e }
                    } else {
                        DaemonError::Db(e)
                    });
                }
                Some(Ok(r)) => r,
                None => return Ok(false),
            };
            if stop.stopped() {
                return Ok(false);
            }
            let Some(h) = got else {
                if let Some(f) = &self.svc.fresh {
                    f.renewed(sent, self.cfg.lease_secs);
                }
                tracing::info!(holder = %self.lease.holder, lease_secs = self.cfg.lease_secs, "holding the lease on management node {:?}", self.node);
                return Ok(true);
            };
            if Instant::now() >= deadline {
                return Err(DaemonError::NodeHeld {
                    node: self.node.clone(),
                    host: h.host,
                    pid: h.pid,
                    since: h.since,
                    expires: h.expires,
                });
            }
            if !said {
                said = true;
                tracing::warn!(host = %h.host, pid = h.pid, since = %h.since, expires = %h.expires, "management node {:?} is held by another daemon; waiting up to {} s for its lease to expire", self.node, self.cfg.lease_wait_secs);
            }
            let pause =
                Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = stop.wait() => return Ok(false),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// [`Daemon::run`] once the lease is held.
    async fn run_leased<F: Future<Output = ()>>(
        &self,
        stop: &mut Stop<F>,
        once: bool,
    ) -> Result<Summary, DaemonError> {
        let db = &self.svc.db;
        let node = self.svc.node_id;
        let grace = Duration::from_secs(self.cfg.shutdown_grace_secs);
        let recovery = stop
            .race(db, grace, crate::db::claim::recover_pending(db, node))
            .await;
        if stop.stopped() {
            tracing::info!("stopped before the first poll; nothing was claimed");
            return Ok(Summary::default());
        }
        let mut recovered: HashSet<i64> = match recovery {
            Some(r) => r?.into_iter().collect(),
            None => return Ok(Summary::default()),
        };
        if !recovered.is_empty() {
            tracing::warn!(requests = ?recovered, "recovered requests this node left pending");
        }
        let mut summary = Summary {
            recovered: recovered.len(),
            processed: 0,
        };

        let (wake_sock, wake_ino) = match &self.wake {
            Some(p) => {
                // A socket someone is bound to is another daemon's: never take it away.
                let live = std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|s| s.connect(p))
                    .is_ok();
                // Which node's daemon bound it (written beside it): a daemon of this node
                // that lost its lease (we hold it now) is replaced; another node's is not.
                let owner_file = p.with_extension("wake.node");
                let owner = std::fs::read_to_string(&owner_file).ok();
                let same_node =
                    owner.as_deref().map(str::trim) == Some(self.svc.node_id.to_string().as_str());
                if live && !same_node {
                    return Err(DaemonError::WakeInUse { path: p.clone() });
                }
                if live {
                    tracing::warn!(path = %p.display(), "replacing the wake socket of this node's previous daemon (its lease expired)");
                }
                let _ = std::fs::remove_file(p);
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let sock =
                    tokio::net::UnixDatagram::bind(p).map_err(|source| DaemonError::Wake {
                        path: p.clone(),
                        source,
                    })?;
                let ino = std::fs::metadata(p)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                let _ = std::fs::write(&owner_file, format!("{}\n", self.svc.node_id));
                (Some(sock), ino)
            }
            None => (None, None),
        };
        // The heartbeat: renews the lease; says when another daemon has taken the node.
        let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
        let heartbeat = {
            let (db, lease, fresh) = (db.clone(), self.lease.clone(), self.svc.fresh.clone());
            let (every, secs) = (
                Duration::from_secs(self.cfg.heartbeat_secs),
                self.cfg.lease_secs,
            );
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let sent = Instant::now();
                    match crate::db::lease::renew(&db, &lease, secs).await {
                        Ok(true) => {
                            if let Some(f) = &fresh {
                                f.renewed(sent, secs);
                            }
                        }
                        Ok(false) => {
                            lost_tx.send_replace(true);
                            return;
                        }
                        Err(e) => tracing::warn!("lease heartbeat failed (the writes of this daemon stop once another daemon takes the node): {e}"),
                    }
                }
            }))
        };
        let mut lease_lost = false;
        let sweep_every = Duration::from_secs(self.cfg.sweep_interval_secs.max(1));
        let mut last_sweep = Instant::now();

        let mut tasks = Tasks::default();
        let mut running = Running::default();
        let mut inuse_checked: HashMap<i64, Instant> = HashMap::new();
        let mut warned: HashSet<String> = HashSet::new();
        let poll = Duration::from_secs(self.cfg.poll_interval_secs.max(1));
        let pickup = Duration::from_millis(self.cfg.pickup_poll_ms);
        let mut last_pickup: Option<crate::db::claim::Fingerprint> = None;
        let mut pickup_ok = true;
        let mut buf = [0u8; 16];
        // A bound on `--once` passes: each pass either claims work or ends the run.
        let mut passes_left: u64 = if once { 100_000 } else { u64::MAX };

        let mut first = true;
        loop {
            passes_left = passes_left.saturating_sub(1);
            let first_poll = std::mem::take(&mut first);
            // One poll. During a database outage its tries and retry waits can take long;
            // a stop ends the retries and bounds the rest by the grace period.
            let polled = stop
                .race(db, grace, async {
                    if let Err(e) = crate::db::flow::checkin(db, node).await {
                        tracing::warn!("check-in failed: {e}");
                    }
                    if db.is_stopping() {
                        return Ok(0);
                    }
                    let prune_spans = last_sweep.elapsed() >= sweep_every || first_poll;
                    if last_sweep.elapsed() >= sweep_every {
                        last_sweep = Instant::now();
                        let mine = running.requests();
                        match crate::db::claim::release_unowned(db, node, &mine, SWEEP_LIMIT).await {
                            Ok(back) if !back.is_empty() => tracing::warn!(requests = ?back, "handed back pending requests of this node that no running flow owns"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("sweep of unowned pending requests failed (will retry): {e}"),
                        }
                    }
                    if prune_spans {
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0);
                        match crate::db::span::prune(db, &self.trace, now_ms).await {
                            Ok(n) if n > 0 => tracing::info!(spans = n, "pruned old spans ([trace] max_age_secs / max_rows)"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("pruning spans failed (will retry): {e}"),
                        }
                    }
                    // vcld's check_time "remove": finished requests leave the database.
                    if self.cfg.remove_finished {
                        match crate::db::bookkeeping::remove_finished(db, node, self.cfg.keep_finished_secs, SWEEP_LIMIT).await {
                            Ok(gone) if !gone.is_empty() => tracing::info!(requests = ?gone, "removed finished requests (as vcld does)"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("removing finished requests failed (will retry): {e}"),
                        }
                    }
                    self.claim_due(
                        &mut recovered,
                        &mut running,
                        &mut inuse_checked,
                        &mut warned,
                        &mut tasks,
                    )
                    .await
                })
                .await;
            let claimed = match polled {
                Some(Ok(n)) => {
                    pickup_ok = true;
                    n
                }
                Some(Err(e)) if stop.stopped() => {
                    tracing::warn!("stopping: the last poll did not finish: {e}");
                    0
                }
                Some(Err(e)) => {
                    tracing::error!("polling for work failed (will retry): {e}");
                    0
                }
                None => {
                    tracing::error!("stopping: the last poll was still waiting on the database at the end of the grace period; abandoned (a request it was claiming stays pending for recovery)");
                    0
                }
            };
            if *lost_rx.borrow() {
                tracing::error!(node = %self.node, "lost the lease on this management node to another daemon: stopping without writing");
                lease_lost = true;
                break;
            }
            if stop.stopped() || once && claimed == 0 && running.is_empty() || passes_left == 0 {
                break;
            }
            // Wait for the next poll: the interval, a finished flow, the wake socket, or a
            // pickup check that saw this node's requests change. Bounded: every pass of
            // this loop either ends it or waits for the next pickup check.
            let next_poll = tokio::time::Instant::now() + poll;
            let mut next_pickup = tokio::time::Instant::now() + pickup;
            let wait = loop {
                tokio::select! {
                    // A stop wins over everything else that is ready at the same time.
                    biased;
                    _ = stop.wait() => break Wait::Stop,
                    _ = lost_rx.changed() => break Wait::Lost,
                    Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                        self.reap(done, &mut tasks, &mut running, &mut summary).await;
                        // Reap everything else that has finished too.
                        while let Some(done) = tasks.set.try_join_next_with_id() {
                            self.reap(done, &mut tasks, &mut running, &mut summary).await;
                        }
                        break Wait::Poll;
                    }
                    woke = async { match &wake_sock { Some(s) => s.recv(&mut buf).await.map(|_| ()), None => std::future::pending().await } } => {
                        if let Err(e) = woke {
                            // Never spin on a broken socket: wait a poll interval instead.
                            tracing::warn!("wake socket: {e}");
                            tokio::time::sleep(poll).await;
                        }
                        break Wait::Poll;
                    }
                    _ = tokio::time::sleep_until(next_poll) => break Wait::Poll,
                    _ = tokio::time::sleep_until(next_pickup), if !pickup.is_zero() && pickup_ok => {
                        next_pickup = tokio::time::Instant::now() + pickup;
                        // The check waits on the database (up to its limit): neither a
                        // stop nor the scheduled poll waits for it (e.g. in an outage).
                        tokio::select! {
                            biased;
                            _ = stop.wait() => break Wait::Stop,
                            _ = tokio::time::sleep_until(next_poll) => break Wait::Poll,
                            changed = self.pickup_changed(&mut last_pickup, pickup) => match changed {
                                Some(true) => break Wait::Poll,
                                Some(false) => {}
                                // The database is failing: no more checks until a full
                                // poll succeeds (they would only compete with its retries
                                // and the flows' for connections).
                                None => pickup_ok = false,
                            }
                        }
                    }
                }
            };
            match wait {
                Wait::Poll => {}
                Wait::Stop => break,
                Wait::Lost => {
                    tracing::error!(node = %self.node, "lost the lease on this management node to another daemon: stopping without writing");
                    lease_lost = true;
                    break;
                }
            }
        }

        if !running.is_empty() {
            tracing::info!(
                running = running.len(),
                "stopping: cancelling running flows"
            );
            running.cancel_all();
            if stop.stopped() || lease_lost {
                db.stop_retrying();
            }
            // The grace period counts from the signal, not from here.
            let deadline = stop.deadline(grace);
            let drained = tokio::time::timeout_at(deadline.into(), async {
                while let Some(done) = tasks.set.join_next_with_id().await {
                    self.reap(done, &mut tasks, &mut running, &mut summary)
                        .await;
                }
            })
            .await;
            if drained.is_err() {
                tracing::error!(left = ?running.requests(), "flows still running after the grace period; their requests stay pending for recovery");
                tasks.set.abort_all();
            }
        }
        drop(heartbeat);
        if let Some(p) = &self.wake {
            // Only the socket this daemon bound (not one a later daemon put there).
            let ino = std::fs::metadata(p)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            if ino.is_some() && ino == wake_ino {
                let _ = std::fs::remove_file(p);
            }
        }
        if lease_lost {
            return Err(DaemonError::LeaseLost {
                node: self.node.clone(),
            });
        }
        Ok(summary)
    }

    /// One pickup check: whether this node's requests in a pickup state changed since
    /// the last check (the first check only takes the baseline). `None`: the check failed
    /// or took longer than four intervals (at least 2 s); the full poll still runs on its
    /// own schedule.
    async fn pickup_changed(
        &self,
        last: &mut Option<crate::db::claim::Fingerprint>,
        every: Duration,
    ) -> Option<bool> {
        let limit = (every * 4).max(Duration::from_secs(2));
        let got = tokio::time::timeout(
            limit,
            crate::db::claim::pickup_fingerprint(&self.svc.db, self.svc.node_id),
        )
        .await;
        match got {
            Ok(Ok(f)) => {
                let changed = last.is_some_and(|l| l != f);
                *last = Some(f);
                Some(changed)
            }
            Ok(Err(e)) => {
                tracing::debug!("pickup check failed (the next poll runs on schedule): {e}");
                None
            }
            Err(_) => {
                tracing::debug!("pickup check took over {limit:?}; the next poll runs on schedule");
                None
            }
        }
    }

    /// Account for a finished flow task. A task that panicked (a bug, not a script error:
    /// those are handled inside the flow) still frees its slot and hands its request back.
    async fn reap(
        &self,
        done: Result<(tokio::task::Id, i64), tokio::task::JoinError>,
        tasks: &mut Tasks,
        running: &mut Running,
        summary: &mut Summary,
    ) {
        summary.processed += 1;
        match done {
            Ok((id, request)) => {
                tasks.requests.remove(&id);
                running.remove(request);
            }
            Err(e) => {
                let Some((request, token)) = tasks.requests.remove(&e.id()) else {
                    return;
                };
                running.remove(request);
                tracing::error!(
                    request,
                    "flow task ended abnormally ({e}); handing the request back"
                );
                match crate::db::claim::release_claimed(&self.svc.db, request, &token).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(
                        request,
                        "hand-back wrote nothing: the request is no longer pending under this daemon's claim"
                    ),
                    Err(e) => tracing::error!(
                        request,
                        "could not hand the request back; the sweep or recovery will: {e}"
                    ),
                }
            }
        }
    }

    /// One poll: claim every due request that is not already running. Returns how many
    /// were claimed.
    async fn claim_due(
        &self,
        recovered: &mut HashSet<i64>,
        running: &mut Running,
        inuse_checked: &mut HashMap<i64, Instant>,
        warned: &mut HashSet<String>,
        tasks: &mut Tasks,
    ) -> Result<usize, DbError> {
        let db = &self.svc.db;
        // Once stopping (see `Stop::race`), no new database work is started.
        let work = crate::db::claim::work_for(db, self.svc.node_id).await?;
        if db.is_stopping() {
            return Ok(0);
        }
        let now = crate::db::time::parse_datetime(&db.now().await?)?;
        let t = &self.svc.timings;
        let mut claimed = 0;
        prune_inuse_checked(inuse_checked, &work);
        for w in work {
            if db.is_stopping() {
                break;
            }
            if running.contains(w.request_id) {
                continue;
            }
            if !HANDLED.contains(&w.state.as_str()) {
                if warned.insert(w.state.clone()) {
                    tracing::warn!(state = %w.state, "requests in this state are left alone: provhost has no flow for it");
                }
                continue;
            }
            let start = crate::db::time::parse_datetime(&w.start).unwrap_or(now);
            let end = crate::db::time::parse_datetime(&w.end).unwrap_or(now);
            let left = (end - now).num_seconds();
            let ahead = (start - now).num_seconds();
            // vcld's preload window: `new` (once, by its flag) and `reload` are taken up to
            // `preload_secs` before their start.
            let in_preload = self.cfg.preload_secs > 0
                && ahead > 0
                && ahead <= self.cfg.preload_secs as i64
                && ahead >= self.cfg.preload_min_secs as i64;
            let due = match w.state.as_str() {
                "new" => start <= now || (in_preload && !w.preload),
                "reload" => start <= now || in_preload,
                "reinstall" => start <= now,
                "inuse" => {
                    let near_end =
                        left <= (t.general_end_notice_first + self.cfg.poll_interval_secs) as i64;
                    let since = inuse_checked
                        .entry(w.request_id)
                        .or_insert_with(Instant::now)
                        .elapsed();
                    // Near the end: often enough for the notices and the end itself, but
                    // not on every poll.
                    let near_end_every =
                        Duration::from_secs(t.general_inuse_check.min(NEAR_END_CHECK_SECS));
                    left <= 0
                        || (near_end && since >= near_end_every)
                        || since >= Duration::from_secs(t.general_inuse_check)
                }
                _ => true,
            };
            if !due {
                continue;
            }
            // Ending a reservation has capacity of its own (`reclaim_flows`).
            let end_work = matches!(w.state.as_str(), "timeout" | "deleted")
                || (w.state == "inuse" && left <= 0);
            let Some(lane) = running.lane_for(end_work, &self.cfg) else {
                continue;
            };
            let token =
                match crate::db::claim::claim(db, w.request_id, &w.state, self.svc.node_id).await {
                    Ok(Some(c)) => c.token,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(request = w.request_id, "claim failed: {e}");
                        continue;
                    }
                };
            if w.state == "inuse" {
                inuse_checked.insert(w.request_id, Instant::now());
            }
            claimed += 1;
            let cancel = Arc::new(AtomicBool::new(false));
            running.insert(w.request_id, Arc::clone(&cancel), lane);
            let svc = Arc::clone(&self.svc);
            let request = w.request_id;
            // Only the first run after a restart says it was recovered.
            let was_recovered = recovered.remove(&request);
            let mut w = w;
            w.preload_only = w.state == "new" && start > now;
            let handle = tasks.set.spawn({
                let token = token.clone();
                async move {
                    crate::state::run(svc, w, token, cancel, was_recovered, lane).await;
                    request
                }
            });
            tasks.requests.insert(handle.id(), (request, token));
        }
        Ok(claimed)
    }
}

/// `[daemon.timings]` with the `variable` table's values put in (VCL's web front end counts
/// down with those), logged once with where each came from. Flows read the table again for
/// their user's affiliation (`state::run`).
async fn timings_at_start(db: &Db, configured: &Timings) -> Timings {
    match crate::db::variable::timings(db, None).await {
        Ok(vars) => {
            let (timings, sources) = configured.with_variables(&vars);
            tracing::info!("timings: {}", sources.join(", "));
            timings
        }
        Err(e) => {
            tracing::warn!(
                "timings: the variable table could not be read ({e}); all from provhost.toml"
            );
            configured.clone()
        }
    }
}

/// The host a daemon runs scripts with: every module under the configured scripts folder
/// loaded (errors logged, good modules served) and hot reload on.
pub fn start_host(host: &Arc<ScriptHost>) -> Result<crate::host::Watcher, crate::host::HostError> {
    for e in host.load_all() {
        tracing::error!("{e}");
    }
    host.watch()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::claim::Work;

    fn work(id: i64, state: &str) -> Work {
        Work {
            request_id: id,
            reservation_id: id,
            state: state.into(),
            laststate: String::new(),
            start: String::new(),
            end: String::new(),
            preload: false,
            preload_only: false,
        }
    }

    #[test]
    fn pruning_in_use_check_times_keeps_only_in_use_requests_and_is_linear() {
        let mut checked: HashMap<i64, Instant> = [
            (1, Instant::now()),
            (2, Instant::now()),
            (3, Instant::now()),
        ]
        .into();
        prune_inuse_checked(&mut checked, &[work(1, "inuse"), work(2, "timeout")]);
        assert_eq!(checked.keys().copied().collect::<Vec<_>>(), vec![1]);

        // 20,000 in-use reservations, each checked before: the old retain compared every
        // pair (4·10⁸ comparisons, seconds on the async worker); this is one pass each.
        let n = 20_000;
        let all: Vec<Work> = (0..n).map(|i| work(i, "inuse")).collect();
        let mut checked: HashMap<i64, Instant> = (0..n).map(|i| (i, Instant::now())).collect();
        let t = Instant::now();
        prune_inuse_checked(&mut checked, &all);
        let took = t.elapsed();
        assert_eq!(checked.len(), n as usize);
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn the_preload_window_is_checked() {
        let ok = DaemonConfig::default();
        assert_eq!(
            (ok.preload_secs, ok.preload_min_secs),
            (2100, 1500),
            "vcld's window"
        );
        ok.check().expect("defaults");
        let off = DaemonConfig {
            preload_secs: 0,
            preload_min_secs: 1500,
            ..DaemonConfig::default()
        };
        off.check().expect("0 turns preloading off");
        let upside_down = DaemonConfig {
            preload_secs: 600,
            preload_min_secs: 1200,
            ..DaemonConfig::default()
        };
        let e = upside_down.check().expect_err("min above max");
        assert!(
            e.contains("preload_min_secs (1200)") && e.contains("preload_secs (600)"),
            "{e}"
        );
        let huge = DaemonConfig {
            preload_secs: u64::MAX,
            ..DaemonConfig::default()
        };
        let e = huge.check().expect_err("out of range");
        assert!(e.contains("preload_secs"), "{e}");
    }

    #[test]
    fn an_ended_reservation_gets_an_end_slot_then_a_work_slot() {
        let cfg = DaemonConfig {
            max_flows: 1,
            reclaim_flows: 1,
            ..DaemonConfig::default()
        };
        let mut r = Running::default();
        let flag = || Arc::new(AtomicBool::new(false));
        assert_eq!(r.lane_for(false, &cfg), Some(Lane::Work));
        r.insert(1, flag(), Lane::Work);
        assert_eq!(r.lane_for(false, &cfg), None, "load capacity full");
        assert_eq!(r.lane_for(true, &cfg), Some(Lane::End));
        r.insert(2, flag(), Lane::End);
        assert_eq!(r.lane_for(true, &cfg), None);
        r.remove(1);
        assert_eq!(
            r.lane_for(true, &cfg),
            Some(Lane::Work),
            "a free load slot serves too"
        );
        r.remove(2);
        assert_eq!((r.work, r.end, r.len()), (0, 0, 0));
    }
}
