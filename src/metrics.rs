//! The process's Prometheus metrics (`GET /metrics`): routine calls, commands, copies,
//! SSH sessions, module reloads, claims and load durations, counted where they happen and
//! encoded in the text format by [`encode`]. Below every other module (like
//! [`crate::budget`]), so `prim`, `host`, `db` and `state` all count without importing
//! each other. Names follow Prometheus conventions: `provhost_…_total` for counters,
//! `provhost_…_seconds` / `_bytes` with the unit.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutineLabels {
    pub module: String,
    pub routine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub module: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `local` or `ssh`.
    pub transport: String,
    /// `ok` (ran and exited, any code) or `error` (time-out, no connection, stopped).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_buckets() -> Histogram {
    // 10 ms to about 1.5 h.
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

fn load_buckets() -> Histogram {
    // 1 s to about 4.5 h.
    Histogram::new(exponential_buckets(1.0, 2.5, 10))
}

/// Every metric this process keeps. Cheap to clone handles share the values.
#[derive(Debug)]
pub struct Metrics {
    routine_calls: Family<RoutineLabels, Counter>,
    routine_errors: Family<RoutineLabels, Counter>,
    routine_duration: HistFamily<RoutineLabels>,
    load_duration: HistFamily<ModuleLabels>,
    loads: Family<LoadLabels, Counter>,
    commands: Family<CommandLabels, Counter>,
    command_duration: Histogram,
    copies: Counter,
    copy_failures: Counter,
    copy_bytes: Counter,
    copy_duration: Histogram,
    ssh_sessions: Gauge,
    ssh_connects: Counter,
    reloads: Counter,
    reload_failures: Counter,
    claims: Counter,
    claim_conflicts: Counter,
    spans_written: Counter,
    spans_pruned: Counter,
    watch_looks: Counter,
    watch_reads: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        routine_calls: Family::default(),
        routine_errors: Family::default(),
        routine_duration: Family::new_with_constructor(call_buckets),
        load_duration: Family::new_with_constructor(load_buckets),
        loads: Family::default(),
        commands: Family::default(),
        command_duration: call_buckets(),
        copies: Counter::default(),
        copy_failures: Counter::default(),
        copy_bytes: Counter::default(),
        copy_duration: call_buckets(),
        ssh_sessions: Gauge::default(),
        ssh_connects: Counter::default(),
        reloads: Counter::default(),
        reload_failures: Counter::default(),
        claims: Counter::default(),
        claim_conflicts: Counter::default(),
        spans_written: Counter::default(),
        spans_pruned: Counter::default(),
        watch_looks: Counter::default(),
        watch_reads: Counter::default(),
    })
}

impl Metrics {
    /// A routine call ended.
    pub fn routine_done(&self, module: &str, routine: &str, took: Duration, ok: bool) {
        let l = RoutineLabels {
            module: module.to_string(),
            routine: routine.to_string(),
        };
        self.routine_calls.get_or_create(&l).inc();
        if !ok {
            self.routine_errors.get_or_create(&l).inc();
        }
        self.routine_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// A load (new, reload, reinstall) of a computer of provisioning `module` ended.
    pub fn load_done(&self, module: &str, took: Duration, ok: bool) {
        let m = ModuleLabels {
            module: module.to_string(),
        };
        if ok {
            self.load_duration
                .get_or_create(&m)
                .observe(took.as_secs_f64());
        }
        self.loads
            .get_or_create(&LoadLabels {
                module: m.module,
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    pub fn command_done(&self, local: bool, took: Duration, ok: bool) {
        self.commands
            .get_or_create(&CommandLabels {
                transport: if local { "local" } else { "ssh" }.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.command_duration.observe(took.as_secs_f64());
    }

    /// A copy ended: `Some(bytes)` when it succeeded.
    pub fn copy_done(&self, took: Duration, bytes: Option<u64>) {
        self.copies.inc();
        match bytes {
            Some(b) => {
                self.copy_bytes.inc_by(b);
            }
            None => {
                self.copy_failures.inc();
            }
        }
        self.copy_duration.observe(took.as_secs_f64());
    }

    /// An SSH session was opened (`+1`) or closed (`-1`).
    pub fn ssh_session(&self, opened: bool) {
        if opened {
            self.ssh_sessions.inc();
            self.ssh_connects.inc();
        } else {
            self.ssh_sessions.dec();
        }
    }

    /// A module file loaded (`generation > 1`: a reload) or failed to.
    pub fn module_loaded(&self, generation: u64) {
        if generation > 1 {
            self.reloads.inc();
        }
    }
    pub fn module_failed(&self) {
        self.reload_failures.inc();
    }

    /// A claim attempt: won, or lost to someone who changed the request first.
    pub fn claim(&self, won: bool) {
        if won {
            self.claims.inc();
        } else {
            self.claim_conflicts.inc();
        }
    }

    pub fn spans_written(&self, n: u64) {
        self.spans_written.inc_by(n);
    }
    pub fn spans_pruned(&self, n: u64) {
        self.spans_pruned.inc_by(n);
    }

    /// A waiting flow looked at its request (`db::watchbatch`).
    pub fn watch_look(&self) {
        self.watch_looks.inc();
    }
    /// Statements that answered those looks.
    pub fn watch_reads(&self, n: u64) {
        self.watch_reads.inc_by(n);
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "provhost_routine_calls",
            "Routine calls by module and routine",
            self.routine_calls.clone(),
        );
        r.register(
            "provhost_routine_errors",
            "Routine calls that failed (error, deadline, wrong return)",
            self.routine_errors.clone(),
        );
        r.register_with_unit(
            "provhost_routine_duration",
            "How long routine calls took",
            Unit::Seconds,
            self.routine_duration.clone(),
        );
        r.register_with_unit(
            "provhost_load_duration",
            "How long successful loads took (claim to ready), by provisioning module",
            Unit::Seconds,
            self.load_duration.clone(),
        );
        r.register(
            "provhost_loads",
            "Loads by provisioning module and result",
            self.loads.clone(),
        );
        r.register(
            "provhost_commands",
            "Commands run on hosts (local or over SSH) by result",
            self.commands.clone(),
        );
        r.register_with_unit(
            "provhost_command_duration",
            "How long commands took",
            Unit::Seconds,
            self.command_duration.clone(),
        );
        r.register("provhost_copies", "File copies", self.copies.clone());
        r.register(
            "provhost_copy_failures",
            "File copies that failed",
            self.copy_failures.clone(),
        );
        r.register_with_unit(
            "provhost_copied",
            "Bytes moved by successful copies",
            Unit::Bytes,
            self.copy_bytes.clone(),
        );
        r.register_with_unit(
            "provhost_copy_duration",
            "How long copies took",
            Unit::Seconds,
            self.copy_duration.clone(),
        );
        r.register(
            "provhost_ssh_sessions",
            "SSH sessions open in the pool (idle or in use)",
            self.ssh_sessions.clone(),
        );
        r.register(
            "provhost_ssh_connects",
            "SSH sessions opened",
            self.ssh_connects.clone(),
        );
        r.register(
            "provhost_module_reloads",
            "Module files reloaded after an edit",
            self.reloads.clone(),
        );
        r.register(
            "provhost_module_reload_failures",
            "Module file loads that failed (the last good version stays)",
            self.reload_failures.clone(),
        );
        r.register("provhost_claims", "Requests claimed", self.claims.clone());
        r.register(
            "provhost_claim_conflicts",
            "Claims lost: the request was changed or claimed by someone else first",
            self.claim_conflicts.clone(),
        );
        r.register(
            "provhost_spans_written",
            "Spans written to provhost_span",
            self.spans_written.clone(),
        );
        r.register(
            "provhost_spans_pruned",
            "Spans removed by retention",
            self.spans_pruned.clone(),
        );
        r.register(
            "provhost_watch_looks",
            "Looks of waiting flows at their requests (one per flow per poll)",
            self.watch_looks.clone(),
        );
        r.register(
            "provhost_watch_reads",
            "Statements that answered those looks (many looks share one)",
            self.watch_reads.clone(),
        );
    }
}

/// The metrics in Prometheus' text format, with `reservations` (state, count) as the
/// `provhost_reservations` gauge (read from the database by the caller).
pub fn encode(reservations: &[(String, i64)]) -> String {
    let mut r = Registry::default();
    get().register(&mut r);
    let by_state: Family<StateLabels, Gauge> = Family::default();
    for (state, n) in reservations {
        by_state
            .get_or_create(&StateLabels {
                state: state.clone(),
            })
            .set(*n);
    }
    r.register(
        "provhost_reservations",
        "Reservations by request state (database)",
        by_state,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        get().routine_done("os/linux", "post_load", Duration::from_millis(20), false);
        get().copy_done(Duration::from_millis(5), Some(10));
        let text = encode(&[("inuse".into(), 2)]);
        for want in [
            "provhost_routine_calls_total{module=\"os/linux\",routine=\"post_load\"}",
            "provhost_routine_errors_total{",
            "provhost_routine_duration_seconds_bucket{",
            "provhost_copied_bytes_total",
            "provhost_reservations{state=\"inuse\"} 2",
            "provhost_claim_conflicts_total",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
