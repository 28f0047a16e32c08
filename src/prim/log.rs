//! `log::info(msg)`, `log::warn(msg)`, `log::error(msg)`: script messages into the
//! daemon's `tracing` output (target `provhost::script`), inside the reservation's span.
//! `print()` goes to `info` too. Load-log entries for the user-visible timeline are
//! `ctx.loadlog`, not these.

use rhai::{Engine, FuncRegistration, Module};

pub fn register(engine: &mut Engine) {
    let mut m = Module::new();
    FuncRegistration::new("info")
        .with_comments(["/// Log a message at info level."])
        .with_params_info(["msg: &str", "()"])
        .set_into_module(
            &mut m,
            |msg: &str| tracing::info!(target: "provhost::script", "{msg}"),
        );
    FuncRegistration::new("warn")
        .with_comments(["/// Log a message at warn level."])
        .with_params_info(["msg: &str", "()"])
        .set_into_module(
            &mut m,
            |msg: &str| tracing::warn!(target: "provhost::script", "{msg}"),
        );
    FuncRegistration::new("error")
        .with_comments([
            "/// Log a message at error level (does not fail the routine; `throw` does).",
        ])
        .with_params_info(["msg: &str", "()"])
        .set_into_module(
            &mut m,
            |msg: &str| tracing::error!(target: "provhost::script", "{msg}"),
        );
    engine.register_static_module("log", m.into());
}
