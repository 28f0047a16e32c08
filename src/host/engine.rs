//! Construction of the one shared Rhai `Engine`: sandbox limits, the per-call deadline and
//! cancel flag (checked in `on_progress` and by blocking primitives), the `stdlib/` module
//! resolver, and registration of `Ctx` and every primitive family.
//!
//! The deadline lives in a thread-local set by [`CallGuard`] for the duration of one routine
//! call; a routine runs start to end on one (blocking-pool) thread, so primitives that wait
//! can ask [`remaining`] how long they may block and [`check_deadline`] whether to stop.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, Position};
use serde::{Deserialize, Serialize};

/// Sandbox limits for every script call. Defaults suit production routines that wait in
/// primitives (waits do not count as operations); tests lower them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Rhai operations one routine call may execute.
    pub max_operations: u64,
    /// Nesting of function calls (endless recursion stops here).
    pub max_call_levels: usize,
    /// Longest string a script may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a script may build.
    pub max_array_size: usize,
    /// Largest object map a script may build.
    pub max_map_size: usize,
    /// Wall-clock deadline of one routine call, in seconds (primitive waits included).
    pub call_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 200_000_000,
            max_call_levels: 64,
            max_string_size: 16 * 1024 * 1024,
            max_array_size: 1_000_000,
            max_map_size: 100_000,
            call_timeout_secs: 3600,
        }
    }
}

/// A family of primitives (ssh, vm, db, …) that registers itself into the engine.
/// Each family is a Rust API first; this is its Rhai binding.
pub trait Primitives: Send + Sync {
    /// Register functions, types and static modules.
    fn register(&self, engine: &mut Engine);
}

/// The termination token `on_progress` returns; the host maps it back to an error kind.
pub(crate) const TIMEOUT_TOKEN: &str = "provhost:deadline";
pub(crate) const CANCEL_TOKEN: &str = "provhost:cancelled";

struct CallState {
    deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
}

thread_local! {
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
}

/// Installs a routine call's deadline and cancel flag on this thread; restores the previous
/// one (nested calls from Rust) on drop.
pub struct CallGuard {
    previous: Option<CallState>,
}

impl CallGuard {
    pub fn new(timeout: Duration, cancel: Option<Arc<AtomicBool>>) -> Self {
        let deadline = Instant::now() + timeout;
        let previous = CALL.with(|c| c.borrow_mut().replace(CallState { deadline, cancel }));
        CallGuard { previous }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CALL.with(|c| *c.borrow_mut() = previous);
    }
}

/// Time left before the current routine call's deadline (`None` outside a routine call).
pub fn remaining() -> Option<Duration> {
    CALL.with(|c| {
        c.borrow()
            .as_ref()
            .map(|s| s.deadline.saturating_duration_since(Instant::now()))
    })
}

fn stop_token() -> Option<&'static str> {
    CALL.with(|c| {
        let c = c.borrow();
        let s = c.as_ref()?;
        if s.cancel.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            Some(CANCEL_TOKEN)
        } else if Instant::now() >= s.deadline {
            Some(TIMEOUT_TOKEN)
        } else {
            None
        }
    })
}

/// For blocking primitives: an error that ends the script when the call's deadline has
/// passed or its reservation was cancelled; `Ok` otherwise.
pub fn check_deadline() -> Result<(), Box<EvalAltResult>> {
    match stop_token() {
        Some(token) => Err(EvalAltResult::ErrorTerminated(token.into(), Position::NONE).into()),
        None => Ok(()),
    }
}

/// Build the shared engine. `stdlib` is where `import "name"` looks (`name.rhai`); imports
/// are resolved when a module is compiled (self-contained ASTs), so calls never touch disk.
pub fn build(limits: &Limits, stdlib: PathBuf, families: &[Arc<dyn Primitives>]) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_expr_depths(128, 64);
    engine.set_strict_variables(true);

    let mut resolver = FileModuleResolver::new_with_path_and_extension(stdlib, "rhai");
    resolver.enable_cache(false);
    engine.set_module_resolver(resolver);

    // Checking the clock on every operation would dominate tight loops; every 256th is
    // plenty to stop a runaway loop within microseconds of its deadline.
    engine.on_progress(|ops| {
        if ops % 256 == 0 {
            stop_token().map(Dynamic::from)
        } else {
            None
        }
    });
    engine.on_print(|s| tracing::info!(target: "provhost::script", "{s}"));
    engine.on_debug(|s, src, pos| {
        tracing::debug!(target: "provhost::script", "{}:{}: {s}", src.unwrap_or("?"), pos.line().unwrap_or(0))
    });

    crate::host::inherit::register(&mut engine);
    crate::host::ctx::register(&mut engine);
    crate::prim::wait::register(&mut engine);
    crate::prim::log::register(&mut engine);
    crate::prim::secret::register(&mut engine);
    for family in families {
        family.register(&mut engine);
    }
    engine
}
