//! Construction of the one shared Rhai `Engine`: sandbox limits, the per-call deadline and
//! cancel flag (checked in `on_progress` and by blocking primitives), the `stdlib/` module
//! resolver, and registration of `Ctx` and every primitive family.
//!
//! The deadline and cancel flag live in [`crate::budget`] (below both host and primitives;
//! re-exported here): [`CallGuard`] installs them for one routine call, primitives that wait
//! ask [`remaining`] how long they may block and [`check_deadline`] whether to stop.

use std::path::PathBuf;
use std::sync::Arc;

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Dynamic, Engine};
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

pub use crate::budget::{check_deadline, remaining, CallGuard};
pub(crate) use crate::budget::{stop_token, CANCEL_TOKEN};
pub use crate::prim::Primitives;

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
        crate::host::ctx::register_family_methods(&mut engine, family.ctx_methods());
    }
    engine
}
