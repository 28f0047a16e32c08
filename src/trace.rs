//! The spans of one routine call: the call itself and every remote or local command and
//! copy it made, buffered on the calling thread and handed back in one batch when the call
//! ends (the flow writes them to `provhost_span` in one statement, see `db::span`).
//!
//! Like [`crate::budget`] it sits below `host` and `prim`: the host's routine call installs
//! a [`CallTrace`] on its thread, primitives add to it with [`command`] and [`copy`] (text
//! they pass in is already redacted by them), and neither imports the other for it. Outside
//! a traced call the recording functions only count metrics. Each call keeps at most
//! [`MAX_SPANS_PER_CALL`] spans; the rest are counted in the routine span's `dropped`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The most spans one routine call keeps (beyond them only a count).
pub const MAX_SPANS_PER_CALL: usize = 500;
/// The longest command text kept in a span (characters); longer text is cut and marked.
pub const MAX_COMMAND_CHARS: usize = 400;

/// What a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Routine,
    Command,
    Copy,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Routine => "routine",
            SpanKind::Command => "command",
            SpanKind::Copy => "copy",
        }
    }
    pub fn parse(s: &str) -> SpanKind {
        match s {
            "routine" => SpanKind::Routine,
            "copy" => SpanKind::Copy,
            _ => SpanKind::Command,
        }
    }
}

/// One recorded span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub kind: SpanKind,
    pub reservation_id: i64,
    /// `provisioning/sim`, `os/linux`, … (the routine's module, also on its commands).
    pub module: String,
    pub routine: String,
    /// Where a command or copy ran (`local`, `root@10.0.0.5:22`, `a -> b` for copies).
    pub host: String,
    /// The command (secrets redacted by the primitive) or the copy's paths.
    pub detail: String,
    /// Exit code of a command; `None` when it did not finish (time-out, no connection).
    pub exit_code: Option<i64>,
    /// Bytes a copy moved.
    pub bytes: Option<u64>,
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    pub duration_ms: i64,
    pub ok: bool,
    /// Why it failed (redacted), when it did.
    pub error: Option<String>,
    /// A routine call still running ([`running`]; its duration so far). Never stored.
    #[serde(default)]
    pub running: bool,
}

struct Buffer {
    reservation_id: i64,
    module: String,
    routine: String,
    started: Instant,
    started_wall: SystemTime,
    spans: Vec<Span>,
    dropped: usize,
    /// This call's entry in [`RUNNING`] (0: none).
    id: u64,
}

thread_local! {
    static CALL: RefCell<Option<Buffer>> = const { RefCell::new(None) };
    /// The spans of the last routine call that ended on this thread, until taken.
    static DONE: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
}

/// Keep a finished call's spans for the caller on this thread ([`take`]); replaces
/// spans nobody took (a call outside a flow, e.g. `provhost call`).
pub fn stash(spans: Vec<Span>) {
    DONE.with(|d| *d.borrow_mut() = spans);
}

/// The spans of the last routine call that ended on this thread (empty once taken).
pub fn take() -> Vec<Span> {
    DONE.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Cut `text` to [`MAX_COMMAND_CHARS`] characters, marking the cut.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_COMMAND_CHARS) {
        Some((at, _)) => format!("{}… [{} bytes]", &text[..at], text.len()),
        None => text.to_string(),
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// The routine calls of reservations running now in this process (one entry per running
/// call, so bounded by the routine threads), for the waterfall of a load in progress.
/// Per call: its routine span, when it started, and the commands and copies it finished.
static RUNNING: Mutex<BTreeMap<u64, RunningCall>> = Mutex::new(BTreeMap::new());

/// A running call's routine span, its start, and the spans it finished so far.
type RunningCall = (Span, Instant, Vec<Span>);
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// The routine calls of `reservation` running now in this process, each with its
/// duration so far (`running: true`), followed by the commands and copies it finished.
pub fn running(reservation: i64) -> Vec<Span> {
    let Ok(map) = RUNNING.lock() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (s, started, done) in map
        .values()
        .filter(|(s, ..)| s.reservation_id == reservation)
    {
        out.push(Span {
            duration_ms: millis(started.elapsed()),
            ..s.clone()
        });
        out.extend(done.iter().cloned());
    }
    out
}

fn not_running(id: u64) {
    if id != 0 {
        if let Ok(mut map) = RUNNING.lock() {
            map.remove(&id);
        }
    }
}

/// Turn span recording on or off for this process (`[trace] enabled`); metrics are
/// counted either way.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether spans are recorded and written.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records one routine call's spans on this thread until [`CallTrace::finish`]; restores
/// an outer call's buffer (a nested call from Rust) when it ends.
pub struct CallTrace {
    previous: Option<Buffer>,
    active: bool,
    /// This call's entry in [`RUNNING`] (0: none).
    id: u64,
}

impl CallTrace {
    /// Start recording a call of `module::routine` for `reservation_id`.
    pub fn begin(reservation_id: i64, module: &str, routine: &str) -> CallTrace {
        let buf = Buffer {
            reservation_id,
            module: module.to_string(),
            routine: routine.to_string(),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            spans: Vec::new(),
            dropped: 0,
            id: 0,
        };
        let id = if reservation_id != 0 {
            let id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
            let span = Span {
                kind: SpanKind::Routine,
                reservation_id,
                module: buf.module.clone(),
                routine: buf.routine.clone(),
                host: String::new(),
                detail: String::new(),
                exit_code: None,
                bytes: None,
                start_ms: ms_since_epoch(buf.started_wall),
                duration_ms: 0,
                ok: true,
                error: None,
                running: true,
            };
            if let Ok(mut map) = RUNNING.lock() {
                map.insert(id, (span, buf.started, Vec::new()));
            }
            id
        } else {
            0
        };
        let buf = Buffer { id, ..buf };
        let previous = CALL.with(|c| c.borrow_mut().replace(buf));
        CallTrace {
            previous,
            active: true,
            id,
        }
    }

    /// End the call: its routine span first, then what it recorded, in start order.
    /// `error` is the call's failure (already redacted), if it failed.
    pub fn finish(mut self, error: Option<String>) -> Vec<Span> {
        self.active = false;
        not_running(self.id);
        let previous = self.previous.take();
        let Some(buf) = CALL.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous)) else {
            return Vec::new();
        };
        let took = buf.started.elapsed();
        crate::metrics::get().routine_done(&buf.module, &buf.routine, took, error.is_none());
        let mut out = Vec::with_capacity(buf.spans.len() + 1);
        let detail = if buf.dropped > 0 {
            format!(
                "{} more spans not kept (at most {MAX_SPANS_PER_CALL} per call)",
                buf.dropped
            )
        } else {
            String::new()
        };
        out.push(Span {
            kind: SpanKind::Routine,
            reservation_id: buf.reservation_id,
            module: buf.module,
            routine: buf.routine,
            host: String::new(),
            detail,
            exit_code: None,
            bytes: None,
            start_ms: ms_since_epoch(buf.started_wall),
            duration_ms: millis(took),
            ok: error.is_none(),
            error: error.map(|e| cut(&e)),
            running: false,
        });
        out.extend(buf.spans);
        out
    }
}

impl Drop for CallTrace {
    fn drop(&mut self) {
        if self.active {
            not_running(self.id);
            let previous = self.previous.take();
            CALL.with(|c| *c.borrow_mut() = previous);
        }
    }
}

fn push(
    kind: SpanKind,
    host: &str,
    detail: &str,
    started: Instant,
    exit_code: Option<i64>,
    bytes: Option<u64>,
    error: Option<String>,
) {
    let took = started.elapsed();
    let wall = SystemTime::now()
        .checked_sub(took)
        .unwrap_or_else(SystemTime::now);
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(buf) = c.as_mut() else { return };
        if buf.spans.len() >= MAX_SPANS_PER_CALL {
            buf.dropped += 1;
            return;
        }
        let ok = error.is_none() && exit_code.is_none_or(|c| c == 0);
        let span = Span {
            kind,
            reservation_id: buf.reservation_id,
            module: buf.module.clone(),
            routine: buf.routine.clone(),
            host: host.to_string(),
            detail: cut(detail),
            exit_code,
            bytes,
            start_ms: ms_since_epoch(wall),
            duration_ms: millis(took),
            ok,
            error: error.map(|e| cut(&e)),
            running: false,
        };
        if buf.id != 0 {
            if let Ok(mut map) = RUNNING.lock() {
                if let Some((.., done)) = map.get_mut(&buf.id) {
                    done.push(span.clone());
                }
            }
        }
        buf.spans.push(span);
    });
}

/// A command ended (`command` already redacted): its exit code, or the error that ended
/// it. Counted in the metrics; kept as a span inside a traced routine call.
pub fn command(host: &str, command: &str, started: Instant, result: Result<i64, String>) {
    let local = host == "local";
    crate::metrics::get().command_done(local, started.elapsed(), result.is_ok());
    match result {
        Ok(code) => push(
            SpanKind::Command,
            host,
            command,
            started,
            Some(code),
            None,
            None,
        ),
        Err(e) => push(
            SpanKind::Command,
            host,
            command,
            started,
            None,
            None,
            Some(e),
        ),
    }
}

/// A copy ended: bytes moved, or the error that ended it.
pub fn copy(from: &str, to: &str, started: Instant, result: Result<u64, String>) {
    crate::metrics::get().copy_done(started.elapsed(), result.as_ref().ok().copied());
    let detail = format!("{from} -> {to}");
    match result {
        Ok(bytes) => push(
            SpanKind::Copy,
            "",
            &detail,
            started,
            None,
            Some(bytes),
            None,
        ),
        Err(e) => push(SpanKind::Copy, "", &detail, started, None, None, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_keeps_its_commands_and_copies_in_order_and_nothing_outside_it() {
        command("local", "true", Instant::now(), Ok(0));
        let t = CallTrace::begin(7, "os/linux", "post_load");
        command("local", "echo hi", Instant::now(), Ok(0));
        command("root@h:22", "false", Instant::now(), Ok(1));
        copy("a", "b", Instant::now(), Ok(42));
        let spans = t.finish(None);
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[0].kind, SpanKind::Routine);
        assert_eq!(spans[0].routine, "post_load");
        assert!(spans[1].ok && !spans[2].ok, "exit 1 is a failed command");
        assert_eq!(spans[3].bytes, Some(42));
        assert_eq!(spans[3].detail, "a -> b");
        assert!(spans.iter().all(|s| s.reservation_id == 7));
        let during = CallTrace::begin(8, "m", "r");
        command("local", "in progress", Instant::now(), Ok(0));
        let now = running(8);
        assert_eq!(now.len(), 2);
        assert!(now[0].running && now[0].routine == "r");
        assert_eq!(now[1].detail, "in progress");
        let after = during.finish(Some("boom".into()));
        assert!(running(8).is_empty(), "an ended call is no longer running");
        assert_eq!(after.len(), 2, "the earlier call's spans are gone");
        assert_eq!(after[0].error.as_deref(), Some("boom"));
    }

    #[test]
    fn spans_per_call_are_bounded_and_long_commands_cut() {
        let t = CallTrace::begin(1, "m", "r");
        for _ in 0..MAX_SPANS_PER_CALL + 10 {
            command("local", &"x".repeat(5000), Instant::now(), Ok(0));
        }
        let spans = t.finish(None);
        assert_eq!(spans.len(), MAX_SPANS_PER_CALL + 1);
        assert!(
            spans[0].detail.starts_with("10 more spans"),
            "{}",
            spans[0].detail
        );
        assert!(spans[1].detail.len() < 500, "{}", spans[1].detail.len());
    }

    #[test]
    fn nested_calls_restore_the_outer_buffer() {
        let outer = CallTrace::begin(1, "m", "outer");
        {
            let inner = CallTrace::begin(1, "m", "inner");
            command("local", "inner-cmd", Instant::now(), Ok(0));
            assert_eq!(inner.finish(None).len(), 2);
        }
        command("local", "outer-cmd", Instant::now(), Ok(0));
        let spans = outer.finish(None);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].detail, "outer-cmd");
    }
}
