//! State flows: plain Rust that runs one claimed request through VCL's steps, calling the
//! computer's provisioning module, the image's OS module and the site hooks in VCL's
//! order, writing load-log entries and moving request and computer states.
//!
//! One file per flow: [`new`] (new, reload, reinstall, tomaintenance), [`reserved`],
//! [`inuse`], [`reclaim`] (timeout, deleted), [`image`]. [`run`] is the entry point the
//! daemon calls for each claimed request; it turns a flow's [`Exit`] into VCL's
//! `state_exit`, a flow error into `reservation_failed` with a load-log entry that says
//! why, and a shutdown into handing the request back.
//!
//! Before a flow acts on its computer, [`exclusive::acquire`] takes the computer for its
//! request (waiting, bounded, while another reservation holds it), so at most one
//! reservation's flow acts on a computer at a time.
//!
//! A request with several reservations (VCL's cluster requests, "subimages") runs one
//! [`Flow`] per reservation, in parallel, each with its own computer, lock and load-log;
//! [`run`] waits for all of them and writes one exit for the request (`combine`): it is
//! ready (reserved) only when every reservation is, and a failure of one fails the
//! request (the failed computers `failed`, the others of a load `available`, as vcld's
//! `state_exit` of a cluster parent does).
//!
//! Every wait of a flow reads the request on each poll ([`Flow::watch`]): a request the
//! web front end (or `provhost request cancel`) changed while the flow waited is handed
//! over without writing — the daemon claims it in its new state (`deleted`: the reclaim)
//! at its next poll — and an end time that has come ends the wait.
//!
//! Flows never contain hypervisor or OS specifics and never touch SQL: they call
//! routines through [`Flow::call`] and the database through `db::`.

pub mod exclusive;
pub mod image;
pub mod inuse;
pub mod lanes;
pub mod new;
pub mod reclaim;
pub mod reserved;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rhai::Dynamic;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::db::claim::Work;
use crate::db::state::Ids;
use crate::db::{Db, DbBackend, DbError};
use crate::host::modmap::ModuleRow;
use crate::host::{
    AddUserAt, CallOptions, Ctx, FileState, HostError, Kind, ModuleKey, ReservationData,
    ScriptHost, SourcePos,
};

/// VCL's timing variables (the `variable` table's defaults), in seconds, plus how often
/// the flows poll. Every wait in a flow is bounded by one of these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timings {
    /// How long a reserved computer waits for the user to click Connect.
    pub acknowledgetimeout: u64,
    /// How long after Connect the user has to log in.
    pub initialconnecttimeout: u64,
    /// How long an in-use reservation waits for a disconnected user to come back.
    pub reconnecttimeout: u64,
    /// How often an in-use reservation is checked.
    pub general_inuse_check: u64,
    /// First end-of-reservation notice (`inuseend10`) this long before the end.
    pub general_end_notice_first: u64,
    /// Second notice (`inuseend5`).
    pub general_end_notice_second: u64,
    /// Minutes: a reservation this long or longer is not checked for the user's
    /// connection (vcld counts the user as connected), as VCL's `ignore_connections_gte`.
    pub ignore_connections_gte: u64,
    /// Poll interval for the acknowledgement (`reservation.remoteIP`), milliseconds.
    pub acknowledge_poll_ms: u64,
    /// Poll interval for the user's connection, seconds.
    pub connect_poll: u64,
    /// How long new, reload, reinstall and tomaintenance wait for a computer another
    /// reservation holds (its reservation, reclaim or reload not finished) before giving
    /// up as vcld does. Default 120 s (24 looks, 5 s apart).
    pub computer_wait_secs: u64,
    /// How often that wait looks again, milliseconds.
    pub computer_wait_poll_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            acknowledgetimeout: 900,
            initialconnecttimeout: 900,
            reconnecttimeout: 900,
            general_inuse_check: 300,
            general_end_notice_first: 600,
            general_end_notice_second: 300,
            ignore_connections_gte: 1440,
            acknowledge_poll_ms: 1000,
            connect_poll: 15,
            computer_wait_secs: 120,
            computer_wait_poll_ms: 5000,
        }
    }
}

impl Timings {
    /// These timings with the `variable` table's values put in (`vars` from
    /// `db::variable::timings`), and for each timing variable where its value came from.
    pub fn with_variables(
        &self,
        vars: &[crate::db::variable::VarTiming],
    ) -> (Timings, Vec<String>) {
        let mut t = self.clone();
        let mut sources = Vec::new();
        for name in crate::db::variable::TIMING_NAMES {
            let slot = match *name {
                "acknowledgetimeout" => &mut t.acknowledgetimeout,
                "initialconnecttimeout" => &mut t.initialconnecttimeout,
                "reconnecttimeout" => &mut t.reconnecttimeout,
                "general_inuse_check" => &mut t.general_inuse_check,
                "general_end_notice_first" => &mut t.general_end_notice_first,
                "general_end_notice_second" => &mut t.general_end_notice_second,
                "ignore_connections_gte" => &mut t.ignore_connections_gte,
                _ => continue,
            };
            match vars.iter().find(|v| v.name == *name) {
                Some(v) => {
                    *slot = v.value;
                    sources.push(format!("{name}={} (variable {:?})", v.value, v.row));
                }
                None => sources.push(format!("{name}={} (provhost.toml)", *slot)),
            }
        }
        (t, sources)
    }
}

/// What every flow needs: the database, the scripting host, the timings, and the lanes its
/// routine calls run in.
pub struct Services {
    pub db: Db,
    pub host: Arc<ScriptHost>,
    pub timings: Timings,
    pub node_id: i64,
    pub lanes: lanes::Lanes,
    /// How long the daemon's node lease is surely its own (`None`: no lease, e.g. a
    /// library user running flows itself). No routine call starts once it is not.
    pub fresh: Option<Arc<crate::db::lease::Freshness>>,
    /// The shared reads of waiting flows' requests (one statement for many flows).
    pub watcher: Arc<crate::db::watchbatch::Watcher>,
}

/// How a flow ends: VCL's `state_exit(request_state, computer_state)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub request: &'static str,
    pub laststate: String,
    pub computer: Option<&'static str>,
    /// The request the computer passes to as this one ends (the reload request a reclaim
    /// or capture inserted); `None`: the computer is released.
    pub next_holder: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}")]
    Routine(HostError),
    #[error("{at}: {module}::{routine} returned false")]
    False {
        module: String,
        routine: String,
        at: SourcePos,
    },
    #[error("{0}")]
    Db(#[from] DbError),
    /// Something the flow cannot start or go on without (a module not loaded, no image).
    #[error("{0}")]
    Failed(String),
    /// Another reservation holds the computer: fail without touching it.
    #[error("{0}")]
    ComputerBusy(String),
    /// The daemon is shutting down: hand the request back.
    #[error("cancelled: the daemon is shutting down")]
    Cancelled,
    /// The daemon's node lease was not renewed within `lease_secs` (paused, or cut off
    /// from the database): another daemon may own the node now, so nothing more is done
    /// on the computer; the request is handed back (a write that changes nothing once the
    /// node was taken over).
    #[error("this daemon's lease on its management node was not renewed within lease_secs (paused or cut off from the database); no further routine is started")]
    LeaseStale,
    /// A module the flow needs is not loaded because its file does not load (and no saved
    /// good copy could be served): hand the request back until the file is fixed, rather
    /// than fail a reservation for a broken edit or a restart.
    #[error("{0}")]
    Held(String),
    /// The request was changed by someone else while the flow ran (deleted by the web
    /// front end or `provhost request cancel`, taken over): hand it over, writing nothing.
    #[error("{0}")]
    Superseded(String),
}

impl From<HostError> for FlowError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Cancelled { .. } => FlowError::Cancelled,
            e => FlowError::Routine(e),
        }
    }
}

/// One claimed request being processed.
#[derive(Clone)]
pub struct Flow {
    pub svc: Arc<Services>,
    pub data: ReservationData,
    pub ctx: Ctx,
    pub prov: ModuleKey,
    pub os: ModuleKey,
    /// The state the request was claimed from.
    pub state: String,
    /// The request's laststate before the claim (what it was doing when deleted, …).
    pub prior_laststate: String,
    /// The token of the claim this flow runs under (`db::claim`).
    pub token: String,
    pub cancel: Arc<AtomicBool>,
    /// The capacity its routine calls run in.
    pub lane: lanes::Lane,
    /// Claimed ahead of its start (the preload window): load, then put the request back
    /// to `new` (vcld's `PRELOADONLY`).
    pub preload: bool,
    /// What the flows of one request (a cluster's reservations) tell each other.
    pub shared: Arc<Shared>,
}

/// What the flows of one request's reservations share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once any of them saw the request change under it: the others stop at their
    /// next step or poll.
    pub handover: AtomicBool,
    /// Set once the user was seen connected to any of the request's computers: the others'
    /// waits for a connection end (vcld counts a connection to any computer of a cluster).
    pub connected: AtomicBool,
}

impl Flow {
    pub fn ids(&self) -> Ids {
        Ids::from(&self.data)
    }

    pub fn module_name(key: &ModuleKey) -> String {
        format!("{}/{}", key.0, key.1)
    }

    fn check_cancel(&self) -> Result<(), FlowError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(FlowError::Cancelled)
        } else if self.shared.handover.load(Ordering::Relaxed) {
            Err(FlowError::Superseded(format!(
                "request {} changed while its {} flow ran (seen by another of its reservations)",
                self.data.request_id, self.state
            )))
        } else {
            Ok(())
        }
    }

    /// One poll of the request (VCL's `request_state_changed`, on every poll of every
    /// wait): `Ok(true)` when its end time has come, [`FlowError::Superseded`] when it is
    /// no longer `pending` under this flow's claim (deleted, cancelled, taken over, gone).
    pub async fn watch(&self) -> Result<bool, FlowError> {
        Ok(self.look().await?.0)
    }

    /// [`Flow::watch`] and the user's address once they clicked Connect (empty before),
    /// from one read shared with the daemon's other waiting flows
    /// ([`crate::db::watchbatch::Watcher`]).
    pub async fn look(&self) -> Result<(bool, String), FlowError> {
        self.check_cancel()?;
        use crate::db::watch::Watched;
        let seen = self.svc.watcher.look(self.data.request_id).await?;
        let watched = match &seen {
            Some(s) => s.for_claim(&self.token),
            None => Watched::Gone,
        };
        let why = match watched {
            Watched::Mine { ended } => {
                return Ok((ended, seen.map(|s| s.remote_ip).unwrap_or_default()))
            }
            Watched::Changed { state, .. } if state == "pending" => format!(
                "request {} is pending under another daemon's claim (this one's lease or claim \
                 was taken over while its {} flow waited); handed over, nothing was written",
                self.data.request_id, self.state
            ),
            Watched::Changed { state, laststate } => format!(
                "request {} is now {state} (laststate {laststate}): changed while its {} flow \
                 waited; handed over, nothing was written",
                self.data.request_id, self.state
            ),
            Watched::Gone => format!(
                "request {} was removed while its {} flow waited",
                self.data.request_id, self.state
            ),
        };
        self.shared.handover.store(true, Ordering::Relaxed);
        Err(FlowError::Superseded(why))
    }

    /// Sleep `d` while watching the request every `acknowledge_poll_ms` ([`Flow::watch`]);
    /// `Ok(true)` as soon as its end time has come.
    pub async fn pause_watching(&self, d: Duration) -> Result<bool, FlowError> {
        let step = Duration::from_millis(self.svc.timings.acknowledge_poll_ms.max(10));
        let end = std::time::Instant::now() + d;
        // Bounded: one look per step, plus the last.
        let looks = d.as_millis() / step.as_millis().max(1) + 2;
        for _ in 0..looks {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.pause(left.min(step)).await?;
            if self.watch().await? {
                return Ok(true);
            }
            if self.shared.connected.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(false)
    }

    /// Write a load-log entry (VCL's insertloadlog).
    pub async fn log(&self, name: &str, text: &str) -> Result<(), FlowError> {
        let text = crate::host::secrets::redact(text);
        crate::db::loadlog::loadlog(
            &self.svc.db,
            self.data.reservation_id,
            self.data.computer_id,
            name,
            &text,
        )
        .await?;
        Ok(())
    }

    /// Call a routine (ctx first, then `args`) on a thread of the flow's lane
    /// ([`lanes::Lanes`]); the module's current version is used, under the configured
    /// deadline, cancelled at shutdown.
    pub async fn call(
        &self,
        key: &ModuleKey,
        routine: &str,
        args: Vec<Dynamic>,
    ) -> Result<Dynamic, FlowError> {
        self.check_cancel()?;
        if self.svc.fresh.as_ref().is_some_and(|f| !f.is_fresh()) {
            return Err(FlowError::LeaseStale);
        }
        let (host, key, ctx, cancel, routine) = (
            Arc::clone(&self.svc.host),
            key.clone(),
            self.ctx.clone(),
            Arc::clone(&self.cancel),
            routine.to_string(),
        );
        let span = tracing::Span::current();
        let thread = match self.lane {
            lanes::Lane::Work => "provhost-call",
            lanes::Lane::End => "provhost-end",
        };
        let result = self
            .svc
            .lanes
            .run(self.lane, thread, move || {
                let _enter = span.enter();
                let out = host.call(
                    &key,
                    &routine,
                    Some(&ctx),
                    args,
                    &CallOptions {
                        timeout: None,
                        cancel: Some(cancel),
                    },
                );
                (out, crate::trace::take())
            })
            .await
            .map_err(|e| FlowError::Failed(e.to_string()))?;
        let (result, spans) = result;
        self.write_spans(spans);
        Ok(result?)
    }

    /// Write one routine call's spans (the waterfall) in one batch, without holding the
    /// flow up: the write runs beside it. A database that cannot take them (an old schema,
    /// an outage) costs a warning, never the reservation.
    fn write_spans(&self, spans: Vec<crate::trace::Span>) {
        if spans.is_empty() || !crate::trace::enabled() {
            return;
        }
        let db = self.svc.db.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::db::span::insert(&db, &spans).await {
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("spans of a routine call not written (the waterfall misses them; further failures are not logged): {e}");
                }
            }
        });
    }

    /// Call a routine that must return `true`.
    pub async fn call_ok(
        &self,
        key: &ModuleKey,
        routine: &str,
        args: Vec<Dynamic>,
    ) -> Result<(), FlowError> {
        let v = self.call(key, routine, args).await?;
        if v.as_bool().unwrap_or(false) {
            Ok(())
        } else {
            Err(self.returned_false(key, routine))
        }
    }

    /// Call a routine that returns a bool and give it back.
    pub async fn call_bool(&self, key: &ModuleKey, routine: &str) -> Result<bool, FlowError> {
        Ok(self
            .call(key, routine, vec![])
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    pub fn returned_false(&self, key: &ModuleKey, routine: &str) -> FlowError {
        let at = match self.svc.host.module(key) {
            Some(m) => m.defined_at(routine),
            None => SourcePos {
                path: Default::default(),
                line: 0,
            },
        };
        FlowError::False {
            module: Flow::module_name(key),
            routine: routine.to_string(),
            at,
        }
    }

    /// Is the user connected (the OS module's `is_user_connected`)? True also once the user
    /// was seen on another computer of the request (a cluster).
    pub async fn user_connected(&self) -> Result<bool, FlowError> {
        if self.shared.connected.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let on_this = self
            .call_bool(&self.os.clone(), "is_user_connected")
            .await?;
        if on_this {
            self.shared.connected.store(true, Ordering::Relaxed);
        }
        Ok(on_this || self.shared.connected.load(Ordering::Relaxed))
    }

    /// Does the module define the optional `routine(ctx)`?
    pub fn defines(&self, key: &ModuleKey, routine: &str) -> bool {
        self.svc.host.has_routine(key, routine, 1)
    }

    /// Call an optional `routine(ctx)` when the module defines it; it must return `true`.
    pub async fn call_optional(&self, key: &ModuleKey, routine: &str) -> Result<(), FlowError> {
        if self.defines(key, routine) {
            self.call_ok(key, routine, vec![]).await?;
        }
        Ok(())
    }

    /// Run `routine(ctx)` of every site module that defines it, in name order. A failing
    /// hook fails the flow, unless its module says `on_failure: "warn"`: then the failure
    /// is logged (daemon log and load-log) and the next hook runs.
    pub async fn site_hooks(&self, routine: &str) -> Result<(), FlowError> {
        let sites: Vec<ModuleKey> = self
            .svc
            .host
            .modules()
            .into_iter()
            .filter(|(k, _)| *k == Kind::Site)
            .collect();
        for key in sites {
            match self.call_optional(&key, routine).await {
                Err(e @ (FlowError::Routine(_) | FlowError::False { .. }))
                    if self.site_warns(&key)
                        && !matches!(e, FlowError::Routine(HostError::Cancelled { .. })) =>
                {
                    let text = format!(
                        "site hook {}/{} {routine} failed (on_failure: warn): {e}",
                        key.0, key.1
                    );
                    tracing::warn!("{}", crate::host::secrets::redact(&text));
                    self.log("info", &text).await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// The site modules (`site/NAME`) that define `routine(ctx)` now, in name order.
    pub fn site_modules_defining(&self, routine: &str) -> Vec<String> {
        self.svc
            .host
            .modules()
            .into_iter()
            .filter(|k| k.0 == Kind::Site && self.defines(k, routine))
            .map(|(k, n)| format!("{k}/{n}"))
            .collect()
    }

    fn site_warns(&self, key: &ModuleKey) -> bool {
        self.svc
            .host
            .module(key)
            .is_some_and(|m| m.info.on_failure == crate::host::OnFailure::Warn)
    }

    /// When the OS module adds the reservation user.
    pub fn add_user_at(&self) -> AddUserAt {
        self.svc
            .host
            .module(&self.os)
            .map(|m| m.info.add_user_at)
            .unwrap_or(AddUserAt::Acknowledge)
    }

    /// The reservation user as routines receive it: `#{login, uid, password, ssh_keys, root}`.
    /// The password is `reservation.pw`, generated (and stored) when empty; `root` is
    /// `imagemeta.rootaccess` (administrator rights on the computer).
    pub async fn user_map(&self) -> Result<rhai::Map, FlowError> {
        let stored =
            crate::db::flow::reservation_password(&self.svc.db, self.data.reservation_id).await?;
        let (pw, new) =
            crate::host::secrets::reservation_password(self.data.reservation_id, stored)
                .map_err(|e| FlowError::Failed(e.to_string()))?;
        if new {
            crate::db::flow::set_reservation_password(&self.svc.db, self.data.reservation_id, &pw)
                .await?;
        }
        let mut m = rhai::Map::new();
        m.insert("login".into(), self.data.user_login_id.clone().into());
        m.insert("uid".into(), self.data.user_uid.into());
        m.insert("password".into(), pw.into());
        m.insert(
            "ssh_keys".into(),
            self.data.user_ssh_public_keys.clone().into(),
        );
        m.insert("root".into(), self.data.image_root_access.into());
        Ok(m)
    }

    /// `addinguser` + the OS module's `add_user(ctx, user)`.
    pub async fn add_user(&self) -> Result<(), FlowError> {
        self.log(
            "addinguser",
            &format!("adding user {}", self.data.user_login_id),
        )
        .await?;
        let user = self.user_map().await?;
        self.call_ok(&self.os.clone(), "add_user", vec![user.into()])
            .await
    }

    /// The OS module's `post_load` and then the site hooks' `post_load`.
    pub async fn post_load(&self) -> Result<(), FlowError> {
        self.call_ok(&self.os.clone(), "post_load", vec![]).await?;
        self.site_hooks("post_load").await
    }

    /// Sleep, but wake up for a shutdown.
    pub async fn pause(&self, d: Duration) -> Result<(), FlowError> {
        let step = Duration::from_millis(100);
        let mut left = d;
        while !left.is_zero() {
            self.check_cancel()?;
            let s = left.min(step);
            tokio::time::sleep(s).await;
            left = left.saturating_sub(s);
        }
        self.check_cancel()
    }
}

/// Which loaded module serves VCL module `row` for a `kind` module (docs/modules.md), with
/// a reason naming the row and the script that would serve it when none is loaded.
fn resolve(
    host: &ScriptHost,
    kind: Kind,
    row: &ModuleRow,
    what: &str,
) -> Result<ModuleKey, FlowError> {
    let Some(mapping) = host.map_module_row(kind, row) else {
        return Err(FlowError::Failed(format!(
            "the {what} has no {kind} script: {row} names none (its perl package is not under VCL::Module::{} and its name is not a script name); list it in a script's MODULE.serves (docs/modules.md)",
            if kind == Kind::Os { "OS" } else { "Provisioning" }
        )));
    };
    let key = mapping.key;
    let name = &key.1;
    if host.module(&key).is_some() {
        return Ok(key);
    }
    let file = host
        .options()
        .scripts_dir
        .join(kind.as_str())
        .join(format!("{name}.rhai"));
    let broken = host
        .file_states()
        .into_iter()
        .find(|(p, _)| p == &file)
        .and_then(|(_, s)| match s {
            FileState::Failed { errors, .. } => Some(errors.join("; ")),
            _ => None,
        });
    let how = match mapping.rule {
        crate::host::modmap::Rule::Serves => "a module's MODULE.serves".to_string(),
        crate::host::modmap::Rule::PerlPackage => "its perl package".to_string(),
        crate::host::modmap::Rule::ModuleName => "its module name".to_string(),
    };
    let parent = mapping
        .vcl_parent
        .map(|p| format!("; as in VCL, that script would `extends: \"{p}\"`"))
        .unwrap_or_default();
    match broken {
        Some(errors) => Err(FlowError::Held(format!(
            "{kind} module {name:?} of the {what} is not loaded: {errors}; the request waits until the file loads"
        ))),
        None => Err(FlowError::Failed(format!(
            "{kind} module {name:?} of the {what} is not loaded: {row} maps to {} (by {how}{parent}), which does not exist or did not load (docs/modules.md)",
            file.display()
        ))),
    }
}

/// The computer state a failure leaves, per flow (VCL: image → maintenance, inuse → inuse).
fn failure_computer_state(state: &str) -> &'static str {
    match state {
        "image" | "tomaintenance" => "maintenance",
        "inuse" => "inuse",
        _ => "failed",
    }
}

/// Process one claimed request to its end: every reservation of the request (one for a
/// plain request, several for a cluster) in parallel, then one exit for the request.
/// Never panics and never returns an error: every outcome is written to the database
/// (or, when the database is gone, left `pending` for recovery and logged).
pub async fn run(
    mut svc: Arc<Services>,
    work: Work,
    token: String,
    cancel: Arc<AtomicBool>,
    recovered: bool,
    lane: lanes::Lane,
) {
    let span = tracing::info_span!("reservation", id = work.reservation_id, request = work.request_id, state = %work.state, computer = tracing::field::Empty);
    async move {
        let ids_fallback = Ids { request: work.request_id, reservation: work.reservation_id, computer: 0 };
        let who = Who { request: work.request_id, computer: String::new(), module: String::new() };
        let reservations = match crate::db::watch::reservations_of(&svc.db, work.request_id).await {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => vec![work.reservation_id],
            Err(e) => {
                tracing::error!("cannot list the reservations of the request: {e}; handing it back");
                hand_back(&svc, work.request_id, &token).await;
                return;
            }
        };
        let shared = Arc::new(Shared::default());
        let mut flows = Vec::with_capacity(reservations.len());
        for id in reservations {
            let data = match crate::db::reservation::load_reservation(&svc.db, id).await {
                Ok(d) => d,
                Err(e @ (DbError::Stopped { .. } | DbError::Unavailable { .. })) => {
                    tracing::error!("cannot load reservation {id}: {e}; handing the request back");
                    hand_back(&svc, work.request_id, &token).await;
                    return;
                }
                Err(e) => {
                    tracing::error!("cannot load reservation {id}: {e}");
                    let ids = Ids { reservation: id, ..ids_fallback };
                    fail(&svc, ids, &token, &who, &work.state, &format!("cannot load reservation {id}: {e}")).await;
                    return;
                }
            };
            if flows.is_empty() {
                tracing::Span::current().record("computer", data.computer_node_name.as_str());
                // The `variable` table's timings for the request's user (one user per request).
                svc = with_user_timings(&svc, data.user_id).await;
            }
            // vcld: every state process starts by setting reservation.lastcheck.
            note(crate::db::bookkeeping::touch_lastcheck(&svc.db, data.reservation_id).await);
            let who = Who {
                request: work.request_id,
                computer: data.computer_node_name.clone(),
                module: data.computer_provisioning_module.clone(),
            };
            let ids = Ids::from(&data);
            match prepare(&svc, data, &work, token.clone(), Arc::clone(&cancel), lane) {
                Ok(mut f) => {
                    f.shared = Arc::clone(&shared);
                    flows.push(f);
                }
                Err(FlowError::Held(why)) => {
                    tracing::warn!("{why}; handing the request back");
                    hand_back(&svc, work.request_id, &token).await;
                    return;
                }
                Err(e) => {
                    fail(&svc, ids, &token, &who, &work.state, &e.to_string()).await;
                    return;
                }
            }
        }
        if recovered {
            for f in &flows {
                let _ = f.log("info", &format!("recovered after a daemon restart: request returned to {} and processed again", work.state)).await;
            }
        }
        if flows.len() > 1 {
            tracing::info!(reservations = flows.len(), "cluster request: processing every reservation in parallel");
        }
        let outcomes = run_members(&flows).await;
        finish(&svc, &work, &token, &flows, outcomes).await;
    }
    .instrument(span)
    .await
}

/// The daemon's timings with the `variable` table's for the reservation's user (`NAME|affiliation`
/// rows first, then `NAME`), read for each flow so a change on the web's side counts from
/// the next flow on. Unreadable: the daemon's timings, with a warning.
async fn with_user_timings(svc: &Arc<Services>, user: i64) -> Arc<Services> {
    let affiliation = crate::db::variable::user_affiliation(&svc.db, user)
        .await
        .ok()
        .flatten();
    match crate::db::variable::timings(&svc.db, affiliation.as_deref()).await {
        Ok(vars) if !vars.is_empty() => {
            let (timings, _) = svc.timings.with_variables(&vars);
            Arc::new(Services {
                db: svc.db.clone(),
                host: Arc::clone(&svc.host),
                timings,
                node_id: svc.node_id,
                lanes: svc.lanes.clone(),
                fresh: svc.fresh.clone(),
                watcher: Arc::clone(&svc.watcher),
            })
        }
        Ok(_) => Arc::clone(svc),
        Err(e) => {
            tracing::warn!("timings from the variable table not read; using the daemon's: {e}");
            Arc::clone(svc)
        }
    }
}

/// One reservation's flow: take its computer, then the flow for the request's state.
async fn member(flow: &Flow) -> Result<Exit, FlowError> {
    let started = std::time::Instant::now();
    let out = member_flow(flow).await;
    if matches!(flow.state.as_str(), "new" | "reload" | "reinstall") {
        let counted = match &out {
            Ok(exit) => Some(matches!(exit.request, "reserved" | "complete" | "new")),
            Err(FlowError::Cancelled | FlowError::Superseded(_) | FlowError::LeaseStale) => None,
            Err(_) => Some(false),
        };
        if let Some(ok) = counted {
            crate::metrics::get().load_done(&Flow::module_name(&flow.prov), started.elapsed(), ok);
        }
    }
    out
}

async fn member_flow(flow: &Flow) -> Result<Exit, FlowError> {
    match exclusive::acquire(flow).await {
        Ok(exclusive::Acquired::Held) => dispatch(flow).await,
        Ok(exclusive::Acquired::NotNeeded) => reclaim::nothing_to_undo(flow).await,
        // vcld leaves a busy computer to its holder during a preload: the request is
        // loaded at its start instead.
        Ok(exclusive::Acquired::GaveUp(why)) if flow.preload => {
            flow.log(
                "info",
                &format!("not preloaded: {why}; loading at the start"),
            )
            .await?;
            Ok(Exit {
                request: "new",
                laststate: "new".into(),
                computer: None,
                next_holder: None,
            })
        }
        // vcld drops a reload of a computer that stays busy.
        Ok(exclusive::Acquired::GaveUp(why)) if flow.state == "reload" => {
            let _ = flow
                .log("WARNING", &format!("reload not done: {why}"))
                .await;
            Ok(Exit {
                request: "complete",
                laststate: "reload".into(),
                computer: None,
                next_holder: None,
            })
        }
        Ok(exclusive::Acquired::GaveUp(why)) => Err(FlowError::ComputerBusy(why)),
        Err(e) => Err(e),
    }
}

/// Every reservation's flow, in parallel when there are several; outcomes in the order of
/// `flows` (reservation id order).
async fn run_members(flows: &[Flow]) -> Vec<Result<Exit, FlowError>> {
    if let [only] = flows {
        return vec![member(only).await];
    }
    let mut set = tokio::task::JoinSet::new();
    let mut slots: Vec<Option<Result<Exit, FlowError>>> = flows.iter().map(|_| None).collect();
    let mut tasks = std::collections::HashMap::new();
    for (i, f) in flows.iter().enumerate() {
        let f = f.clone();
        let span = tracing::info_span!("cluster", reservation = f.data.reservation_id, computer = %f.data.computer_node_name);
        let handle = set.spawn(async move { (i, member(&f).await) }.instrument(span));
        tasks.insert(handle.id(), i);
    }
    while let Some(done) = set.join_next_with_id().await {
        match done {
            Ok((_, (i, out))) => slots[i] = Some(out),
            Err(e) => {
                if let Some(i) = tasks.get(&e.id()) {
                    slots[*i] = Some(Err(FlowError::Failed(format!(
                        "the flow of this reservation ended abnormally: {e}"
                    ))));
                }
            }
        }
    }
    slots
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Err(FlowError::Failed(
                    "the flow of this reservation did not finish".into(),
                ))
            })
        })
        .collect()
}

/// How the outcomes of a request's flows end the request (see the module doc).
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    /// Shutdown, a stale lease or an unreachable database: hand the request back.
    HandBack(String),
    /// Someone else changed the request: write nothing.
    HandOver(String),
    /// One exit for the request with each reservation's part.
    Exit {
        request: &'static str,
        laststate: String,
        parts: Vec<crate::db::state::Part>,
        /// Reservations that failed and why (for the daemon's log).
        failed: Vec<(usize, String)>,
    },
}

/// Which request state wins when the reservations of a cluster end differently: a
/// connection on any computer keeps the request in use (vcld's `user_connected` for
/// clusters), a ready one keeps it reserved.
const PRECEDENCE: &[&str] = &["inuse", "reserved", "new", "timeout", "complete"];

fn combine(flows: &[Flow], outcomes: &[Result<Exit, FlowError>]) -> Ending {
    let state = flows.first().map(|f| f.state.as_str()).unwrap_or_default();
    for o in outcomes {
        if let Err(
            e @ (FlowError::Cancelled
            | FlowError::LeaseStale
            | FlowError::Db(DbError::Stopped { .. } | DbError::Unavailable { .. })),
        ) = o
        {
            return Ending::HandBack(e.to_string());
        }
    }
    for o in outcomes {
        if let Err(FlowError::Superseded(why)) = o {
            return Ending::HandOver(why.clone());
        }
    }
    let any_failed = outcomes.iter().any(|o| o.is_err());
    if any_failed {
        let mut failed = Vec::new();
        let parts = flows
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(i, (f, o))| {
                let (reservation, computer) = (f.data.reservation_id, f.data.computer_id);
                match o {
                    Err(FlowError::ComputerBusy(why)) => {
                        failed.push((i, why.clone()));
                        crate::db::state::Part {
                            reservation,
                            computer,
                            computer_state: None,
                            failed: Some(why.clone()),
                            pass_to: None,
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        failed.push((i, why.clone()));
                        crate::db::state::Part {
                            reservation,
                            computer,
                            computer_state: Some(failure_computer_state(state).to_string()),
                            failed: Some(why),
                            pass_to: None,
                        }
                    }
                    // vcld: the other computers of a failed cluster load are made available.
                    Ok(exit) => crate::db::state::Part {
                        reservation,
                        computer,
                        computer_state: match state {
                            "new" | "reload" | "reinstall" => {
                                exit.computer.map(|_| "available".to_string())
                            }
                            _ => exit.computer.map(str::to_string),
                        },
                        failed: None,
                        pass_to: exit.next_holder,
                    },
                }
            })
            .collect();
        return Ending::Exit {
            request: "failed",
            laststate: state.to_string(),
            parts,
            failed,
        };
    }
    let exits: Vec<&Exit> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let chosen = PRECEDENCE
        .iter()
        .find_map(|p| exits.iter().find(|e| e.request == *p))
        .or_else(|| exits.first())
        .copied();
    let Some(chosen) = chosen else {
        return Ending::HandBack("the request has no reservation to process".into());
    };
    let parts = flows
        .iter()
        .zip(&exits)
        .map(|(f, e)| crate::db::state::Part {
            reservation: f.data.reservation_id,
            computer: f.data.computer_id,
            computer_state: if e.request == chosen.request {
                e.computer
            } else {
                chosen.computer
            }
            .map(str::to_string),
            failed: None,
            pass_to: e.next_holder,
        })
        .collect();
    Ending::Exit {
        request: chosen.request,
        laststate: chosen.laststate.clone(),
        parts,
        failed: Vec::new(),
    }
}

/// Write the request's ending (see [`combine`]).
async fn finish(
    svc: &Services,
    work: &Work,
    token: &str,
    flows: &[Flow],
    outcomes: Vec<Result<Exit, FlowError>>,
) {
    match combine(flows, &outcomes) {
        Ending::HandBack(why) => {
            if outcomes
                .iter()
                .any(|o| matches!(o, Err(FlowError::Cancelled)))
            {
                tracing::warn!("shutting down: handing the request back");
                for f in flows {
                    let _ = f
                        .log(
                            "info",
                            "daemon shutting down: request handed back to be processed again",
                        )
                        .await;
                }
            } else {
                tracing::error!("{why}; handing the request back");
            }
            hand_back(svc, work.request_id, token).await;
        }
        Ending::HandOver(why) => handed_over(flows, &why).await,
        Ending::Exit {
            request,
            laststate,
            parts,
            failed,
        } => {
            if work.preload_only && request == "new" {
                // vcld's new.pm: the preload is done once; the start loads no more.
                if let Err(e) = crate::db::watch::set_preload(&svc.db, work.request_id, true).await
                {
                    tracing::error!("could not set the preload flag: {e}");
                }
            }
            if failed.is_empty() {
                tracing::info!(to = request, computer_state = ?parts.first().and_then(|p| p.computer_state.clone()), "flow finished");
            }
            let parts: Vec<_> = parts
                .into_iter()
                .map(|p| crate::db::state::Part {
                    failed: p
                        .failed
                        .map(|m| crate::host::secrets::redact(&m).into_owned()),
                    ..p
                })
                .collect();
            let written = crate::db::state::state_exit_parts(
                &svc.db,
                work.request_id,
                token,
                request,
                &laststate,
                &parts,
            )
            .await;
            match written {
                Ok(()) => {
                    after_exit(svc, work, request, &parts, flows).await;
                    for (i, why) in &failed {
                        if let Some(f) = flows.get(*i) {
                            tracing::error!(reservation = f.data.reservation_id, "flow failed: {}", crate::host::secrets::redact(why));
                            warn_failed(&Who { request: work.request_id, computer: f.data.computer_node_name.clone(), module: f.data.computer_provisioning_module.clone() }, &crate::host::secrets::redact(why));
                        }
                    }
                }
                Err(e @ DbError::ClaimLost { .. }) => match flows.first().map(|f| f.watch()) {
                    Some(w) => match w.await {
                        Err(FlowError::Superseded(why)) => handed_over(flows, &why).await,
                        _ => tracing::error!("state exit not written: {e}"),
                    },
                    None => tracing::error!("state exit not written: {e}"),
                },
                Err(e) => tracing::error!("state exit failed; the request stays pending until this daemon's sweep or recovery hands it back: {e}"),
            }
        }
    }
}

/// VCL's bookkeeping failed: vcld logs it and goes on; so does provhost.
fn note(r: Result<(), DbError>) {
    if let Err(e) = r {
        tracing::warn!("VCL bookkeeping not written (the web front end shows less): {e}");
    }
}

/// After a state exit was written: `log.ending` as vcld's `state_exit` writes it (or
/// `failed`), and `reservation.lastcheck` of every reservation when the request stays
/// reserved or in use.
async fn after_exit(
    svc: &Services,
    work: &Work,
    request: &str,
    parts: &[crate::db::state::Part],
    flows: &[Flow],
) {
    let computer = parts.first().and_then(|p| p.computer_state.as_deref());
    let ending = if request == "failed" {
        crate::db::bookkeeping::failure_ending(&work.state)
    } else {
        crate::db::bookkeeping::exit_ending(&work.state, request, computer)
    };
    if let Some(ending) = ending {
        note(crate::db::bookkeeping::set_ending(&svc.db, work.request_id, ending).await);
    }
    if matches!(request, "reserved" | "inuse") {
        for f in flows {
            note(crate::db::bookkeeping::touch_lastcheck(&svc.db, f.data.reservation_id).await);
        }
    }
}

/// The request changed under its flows (VCL's `state_exit` without arguments): nothing
/// is written but a load-log line; the daemon claims it in its new state.
async fn handed_over(flows: &[Flow], why: &str) {
    tracing::info!("{why}; handed over (the daemon takes it up in its new state)");
    for f in flows {
        let _ = f
            .log(
                "info",
                &format!("{why}; this flow stops and hands the request over"),
            )
            .await;
    }
}

/// Hand a request back under this flow's claim (nothing changes once the claim is lost).
async fn hand_back(svc: &Services, request: i64, token: &str) {
    match crate::db::claim::release_claimed(&svc.db, request, token).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            request,
            "hand-back wrote nothing: the request is no longer pending under this daemon's claim (another daemon took the node over)"
        ),
        Err(e) => tracing::error!("could not hand the request back; this daemon's sweep or recovery will: {e}"),
    }
}

/// What a failed reservation is logged with (item: request, computer, module).
struct Who {
    request: i64,
    computer: String,
    module: String,
}

/// The daemon's own record of a failed reservation, at warn level (the load-log has it
/// too, but an operator watching the daemon should not need the database to see it).
fn warn_failed(who: &Who, reason: &str) {
    let reason = crate::db::loadlog::cap(reason);
    tracing::warn!(
        request = who.request,
        computer = %who.computer,
        module = %who.module,
        reason = %reason,
        "reservation failed"
    );
}

/// The flow for the request's state.
async fn dispatch(flow: &Flow) -> Result<Exit, FlowError> {
    match flow.state.as_str() {
        "new" | "reload" | "reinstall" | "tomaintenance" => new::run(flow).await,
        "reserved" => reserved::run(flow).await,
        "inuse" => inuse::run(flow).await,
        "timeout" | "deleted" => reclaim::run(flow).await,
        "image" => image::run(flow).await,
        other => Err(FlowError::Failed(format!(
            "provhost has no flow for request state {other:?}"
        ))),
    }
}

fn prepare(
    svc: &Arc<Services>,
    data: ReservationData,
    work: &Work,
    token: String,
    cancel: Arc<AtomicBool>,
    lane: lanes::Lane,
) -> Result<Flow, FlowError> {
    let mut data = data;
    let what = format!("computer {}", data.computer_node_name);
    let prov_row = ModuleRow {
        id: data.computer_provisioning_module_id,
        name: data.computer_provisioning_module_name.clone(),
        perl_package: data.computer_provisioning_module_perl_package.clone(),
    };
    let prov = resolve(&svc.host, Kind::Provisioning, &prov_row, &what)?;
    let os_row = ModuleRow {
        id: data.image_os_moduleid,
        name: data.image_os_module_name.clone(),
        perl_package: data.image_os_module_perl_package.clone(),
    };
    let os = resolve(
        &svc.host,
        Kind::Os,
        &os_row,
        &format!("image {}", data.image_name),
    )?;
    // A script's MODULE.serves may have claimed a row: ctx names the script that runs.
    data.computer_provisioning_module = prov.1.clone();
    data.image_os_module = os.1.clone();
    let backend = Arc::new(DbBackend::new(
        svc.db.clone(),
        tokio::runtime::Handle::current(),
    ));
    let ctx = Ctx::new(data.clone(), backend);
    Ok(Flow {
        svc: Arc::clone(svc),
        data,
        ctx,
        prov,
        os,
        state: work.state.clone(),
        prior_laststate: work.laststate.clone(),
        token,
        cancel,
        lane,
        preload: work.preload_only,
        shared: Arc::new(Shared::default()),
    })
}

/// VCL's `reservation_failed`: load-log `failed` with `message`, request failed, computer
/// to the flow's failure state, under this flow's claim `token`.
async fn fail(svc: &Services, ids: Ids, token: &str, who: &Who, state: &str, message: &str) {
    let message = crate::host::secrets::redact(message);
    let comp = failure_computer_state(state);
    let written = if ids.computer == 0 {
        // No computer to log against (a broken reservation row): still end the request.
        crate::db::flow::fail_request(&svc.db, ids.request, token, ids.reservation, &message)
            .await
            .and_then(|done| {
                if done {
                    Ok(())
                } else {
                    Err(DbError::ClaimLost {
                        request: ids.request,
                    })
                }
            })
    } else {
        crate::db::state::reservation_failed_claimed(&svc.db, ids, token, &message, Some(comp))
            .await
    };
    failed_ending(svc, ids, state, &written).await;
    report_failed(who, &message, written);
}

/// `log.ending` = `failed` for a failure vcld records so (new, reserved).
async fn failed_ending(svc: &Services, ids: Ids, state: &str, written: &Result<(), DbError>) {
    if let (Ok(()), Some(ending)) = (written, crate::db::bookkeeping::failure_ending(state)) {
        note(crate::db::bookkeeping::set_ending(&svc.db, ids.request, ending).await);
    }
}

fn report_failed(who: &Who, message: &str, written: Result<(), DbError>) {
    match written {
        Ok(()) => warn_failed(who, message),
        Err(e @ DbError::ClaimLost { .. }) => {
            tracing::error!("failure not written: {e}")
        }
        Err(e) => tracing::error!(
            "could not mark the request failed; it stays pending until this daemon's sweep or recovery hands it back: {e}"
        ),
    }
}
