//! A rig for state-flow tests: a real database (SQLite or MariaDB) made by `db init`, a
//! script folder with the shipped `sim` provisioning module (sped up) and an OS module,
//! computers that use `sim`, and a daemon running in the background with short timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::daemon::{Daemon, DaemonConfig, Summary};
use provhost::db::requests::{new_request, ComputerChoice, Created, NewRequest};
use provhost::db::Backend;
use provhost::host::ScriptHost;
use provhost::state::Timings;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::db::{world, TestDb, World};
use super::scripts::{test_limits, ScriptDir};

/// An OS module for flow tests that keeps a record of what the flow asked of it in the
/// computer's variables (`os_calls`), so tests can assert on the order of calls without a
/// real machine. The real Linux module is tested against lab hosts.
pub const RECORDING_OS: &str = r#"const MODULE = #{ kind: "os", name: "linux", version: "1", add_user_at: "acknowledge" };
fn record(ctx, what) {
    let before = ctx.computer_var("os_calls");
    ctx.set_computer_var("os_calls", if before == () { what } else { before + "," + what });
    true
}
fn post_load(ctx) { record(ctx, "post_load") }
fn add_user(ctx, user) { record(ctx, `add_user:${user.login}`) }
fn delete_user(ctx, user) { record(ctx, `delete_user:${user.login}`) }
fn grant_access(ctx) { record(ctx, `grant_access:${ctx.remote_ip}`) }
fn revoke_access(ctx) { record(ctx, "revoke_access") }
fn set_password(ctx, user, password) { record(ctx, "set_password") }
fn sanitize(ctx) { record(ctx, "sanitize") }
fn pre_capture(ctx) { record(ctx, "pre_capture") }
fn is_ready(ctx) { true }
fn is_user_connected(ctx) { true }
"#;

pub fn sim_source(load_seconds: f64) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/provisioning/sim.rhai"
    ))
    .expect("read scripts/provisioning/sim.rhai");
    shipped.replace(
        "load_seconds: 3.0",
        &format!("load_seconds: {load_seconds:.2}"),
    )
}

pub fn fast_timings() -> Timings {
    Timings {
        acknowledgetimeout: 30,
        initialconnecttimeout: 10,
        reconnecttimeout: 5,
        general_inuse_check: 1,
        general_end_notice_first: 600,
        general_end_notice_second: 300,
        ignore_connections_gte: 1440,
        acknowledge_poll_ms: 100,
        connect_poll: 1,
        computer_wait_secs: 30,
        computer_wait_poll_ms: 100,
    }
}

pub struct Rig {
    pub t: TestDb,
    pub scripts: ScriptDir,
    pub host: Arc<ScriptHost>,
    pub world: World,
}

impl Rig {
    /// `computers` sim computers (`lab1.test` …) on a fresh database; `None` only when
    /// MariaDB runs are skipped explicitly.
    pub async fn new(
        backend: Backend,
        computers: usize,
        os_module: &str,
        load_seconds: f64,
    ) -> Option<Rig> {
        Rig::with_families(backend, computers, os_module, load_seconds, &[]).await
    }

    /// Like `new`, with primitive families (e.g. remote execution set up for a lab host).
    pub async fn with_families(
        backend: Backend,
        computers: usize,
        os_module: &str,
        load_seconds: f64,
        families: &[Arc<dyn provhost::host::Primitives>],
    ) -> Option<Rig> {
        Rig::with_limits(
            backend,
            computers,
            os_module,
            load_seconds,
            families,
            test_limits(),
        )
        .await
    }

    /// Like `with_families`, with the scripts' sandbox limits given (real VMs need a routine
    /// deadline of minutes, not the 10 s of `test_limits`).
    pub async fn with_limits(
        backend: Backend,
        computers: usize,
        os_module: &str,
        load_seconds: f64,
        families: &[Arc<dyn provhost::host::Primitives>],
        limits: provhost::host::Limits,
    ) -> Option<Rig> {
        let t = TestDb::initialized(backend).await?;
        let w = world(&t.db, computers).await;
        t.exec("UPDATE `computer` SET `provisioningid` = 101, `type` = 'virtualmachine' WHERE `hostname` LIKE 'lab%'").await;
        let scripts = ScriptDir::new();
        scripts.write("provisioning/sim.rhai", sim_source(load_seconds));
        scripts.write("os/linux.rhai", os_module);
        let host = ScriptHost::new(
            provhost::host::HostOptions {
                scripts_dir: scripts.scripts.clone(),
                stdlib_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib").into(),
                limits,
            },
            families,
        );
        let errors = host.load_all();
        assert!(errors.is_empty(), "{errors:?}");
        Some(Rig {
            t,
            scripts,
            host,
            world: w,
        })
    }

    pub fn config(&self) -> DaemonConfig {
        DaemonConfig {
            node: "mn1.test".into(),
            poll_interval_secs: 1,
            shutdown_grace_secs: 10,
            timings: fast_timings(),
            // Short, so a test's daemon that did not give its lease up (a dropped run)
            // holds the node up for 3 s at most.
            lease_secs: 3,
            heartbeat_secs: 1,
            // Flow tests read finished requests' load-logs; vcld's removal of finished
            // requests is tested on its own (tests/db_vclweb.rs).
            remove_finished: false,
            ..DaemonConfig::default()
        }
    }

    /// A daemon for `node` on this rig's database (its own pool, like a second process).
    pub async fn daemon(&self, cfg: DaemonConfig) -> Daemon {
        let db = self.t.connect_again().await;
        Daemon::new(db, Arc::clone(&self.host), cfg, None)
            .await
            .expect("daemon")
    }

    /// Run a daemon in the background until the returned sender fires (or is dropped).
    pub async fn spawn(&self, cfg: DaemonConfig) -> (JoinHandle<Summary>, oneshot::Sender<()>) {
        let d = self.daemon(cfg).await;
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            d.run(
                async move {
                    let _ = rx.await;
                },
                false,
            )
            .await
            .expect("daemon run")
        });
        (h, tx)
    }

    pub async fn request(&self, computer: &str, image: &str) -> Created {
        self.request_for(computer, image, "ann").await
    }

    pub async fn request_for(&self, computer: &str, image: &str, user: &str) -> Created {
        new_request(
            &self.t.db,
            &NewRequest {
                image: image.into(),
                computer: ComputerChoice::Named(computer.into()),
                user: user.into(),
                start: None,
                end: None,
            },
        )
        .await
        .expect("request new")
    }

    /// The request's state name.
    pub async fn request_state(&self, request: i64) -> String {
        let id = self
            .t
            .scalar(&format!(
                "SELECT `stateid` FROM `request` WHERE `id` = {request}"
            ))
            .await;
        provhost::vcl::state_name(id).unwrap_or("?").to_string()
    }

    pub async fn computer_state(&self, computer: i64) -> String {
        let id = self
            .t
            .scalar(&format!(
                "SELECT `stateid` FROM `computer` WHERE `id` = {computer}"
            ))
            .await;
        provhost::vcl::state_name(id).unwrap_or("?").to_string()
    }

    /// Wait (bounded) until the request is in `state`.
    pub async fn wait_state(&self, request: i64, state: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let now = self.request_state(request).await;
            if now == state {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "request {request} still {now}, not {state}, after {timeout:?}; load-log: {:?}",
                self.log_of_request(request).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The user clicked Connect: VCL's web front end writes their address into the
    /// reservation (`remoteIP`).
    pub async fn connect_from(&self, reservation: i64, ip: &str) {
        self.t
            .exec(&format!(
                "UPDATE `reservation` SET `remoteIP` = '{ip}' WHERE `id` = {reservation}"
            ))
            .await;
    }

    /// Wait (bounded) until the reservation's load-log has an entry `name`. (A request
    /// being processed is `pending`; the load-log shows where its flow is.)
    pub async fn wait_log(&self, reservation: i64, name: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let names = self.names(reservation).await;
            if names.iter().any(|n| n == name) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "reservation {reservation} has no {name} entry after {timeout:?}: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Load-log names and texts of a reservation, in order.
    pub async fn log(&self, reservation: i64) -> Vec<(String, String)> {
        provhost::db::loadlog::timeline(&self.t.db, reservation)
            .await
            .expect("timeline")
            .into_iter()
            .map(|e| (e.loadstatename, e.additionalinfo))
            .collect()
    }

    pub async fn names(&self, reservation: i64) -> Vec<String> {
        self.log(reservation)
            .await
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    async fn log_of_request(&self, request: i64) -> Vec<(String, String)> {
        let res = self
            .t
            .scalar(&format!(
                "SELECT MIN(`id`) FROM `reservation` WHERE `requestid` = {request}"
            ))
            .await;
        self.log(res).await
    }

    pub async fn computer_var(&self, computer: i64, name: &str) -> Option<String> {
        provhost::db::flow::computer_var(&self.t.db, computer, name)
            .await
            .expect("computer var")
    }
}

/// One load-log row of a computer, for checks across reservations.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: i64,
    pub request: i64,
    pub reservation: i64,
    pub name: String,
    pub info: String,
}

impl Rig {
    /// A request for `computer` from `start` to `end` (`YYYY-MM-DD HH:MM:SS`, `now`, `+Nm`).
    pub async fn request_window(
        &self,
        computer: &str,
        start: &str,
        end: &str,
    ) -> Result<Created, provhost::db::DbError> {
        new_request(
            &self.t.db,
            &NewRequest {
                image: "debian12".into(),
                computer: ComputerChoice::Named(computer.into()),
                user: "ann".into(),
                start: Some(start.into()),
                end: Some(end.into()),
            },
        )
        .await
    }

    /// Every load-log row of `computer` in the order written (by id), with its request.
    pub async fn computer_timeline(&self, computer: i64) -> Vec<Step> {
        let sql = format!(
            "SELECT CAST(l.`id` AS SIGNED) AS `id`, CAST(r.`requestid` AS SIGNED) AS `requestid`, \
             CAST(l.`reservationid` AS SIGNED) AS `reservationid`, s.`loadstatename`, l.`additionalinfo` \
             FROM `computerloadlog` l JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` \
             JOIN `reservation` r ON r.`id` = l.`reservationid` WHERE l.`computerid` = {computer} ORDER BY l.`id`"
        );
        use sqlx::Row;
        macro_rules! read {
            ($p:expr) => {
                sqlx::query(&sql)
                    .fetch_all($p)
                    .await
                    .expect("timeline")
                    .iter()
                    .map(|r| Step {
                        id: r.get::<i64, _>("id"),
                        request: r.get::<i64, _>("requestid"),
                        reservation: r.get::<i64, _>("reservationid"),
                        name: r.get::<String, _>("loadstatename"),
                        info: r
                            .get::<Option<String>, _>("additionalinfo")
                            .unwrap_or_default(),
                    })
                    .collect()
            };
        }
        match self.t.db.pool() {
            provhost::db::pool::Pool::Sqlite(p) => read!(p),
            provhost::db::pool::Pool::MySql(p) => read!(p),
        }
    }

    /// The invariant "at most one reservation holds a computer at a time", from its
    /// load-log: a request holds the computer from its first `begin` to its last `exited`
    /// (open while the request is not complete or failed); no two requests' spans may
    /// overlap. Returns the spans (request, first begin id, last exited id or None).
    pub async fn assert_one_holder_at_a_time(&self, computer: i64) -> Vec<(i64, i64, Option<i64>)> {
        let steps = self.computer_timeline(computer).await;
        let mut spans: Vec<(i64, i64, Option<i64>)> = Vec::new();
        let mut requests: Vec<i64> = steps.iter().map(|s| s.request).collect();
        requests.sort_unstable();
        requests.dedup();
        for rq in requests {
            let Some(first) = steps.iter().find(|s| s.request == rq && s.name == "begin") else {
                continue; // never held the computer
            };
            let finished = matches!(self.request_state(rq).await.as_str(), "complete" | "failed");
            let last = steps
                .iter()
                .rev()
                .find(|s| s.request == rq && s.name == "exited");
            let end = if finished { last.map(|s| s.id) } else { None };
            spans.push((rq, first.id, end));
        }
        for (i, a) in spans.iter().enumerate() {
            for b in spans.iter().skip(i + 1) {
                let a_before_b = a.2.is_some_and(|e| e < b.1);
                let b_before_a = b.2.is_some_and(|e| e < a.1);
                assert!(
                    a_before_b || b_before_a,
                    "requests {} and {} held computer {computer} at the same time (spans {a:?} {b:?}); timeline:\n{}",
                    a.0,
                    b.0,
                    steps
                        .iter()
                        .map(|s| format!("{:>5} rq{:<4} {:<20} {}", s.id, s.request, s.name, s.info))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        spans
    }
}
