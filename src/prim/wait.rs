//! Bounded waiting: `wait::sleep(seconds)` and `wait::poll(fn, #{timeout, interval})`.
//!
//! Neither ever outlives the calling routine's deadline (DESIGN.md calls it `wait::until`, but `until` is a
//! Rhai keyword, so it is `poll`): a sleep that would cross it ends
//! the routine with a deadline error, and `poll` gives up (returns `false`) at its own
//! timeout or at the deadline, whichever is first, with a hard cap on iterations.

use std::time::{Duration, Instant};

use rhai::{
    Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, Map, Module, NativeCallContext,
};

use crate::budget::{check_deadline, remaining};

/// Longest single sleep a script may ask for.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Upper bound on `wait::poll` checks, whatever timeout and interval say.
pub const MAX_CHECKS: u64 = 100_000;
/// The option keys of `wait::poll(fn, opts)` (the script-test fake takes the same).
pub const POLL_OPTIONS: &[&str] = &["timeout", "interval"];

/// Sleep for `d`, but never past the current routine's deadline; in small steps so a
/// cancel is noticed quickly.
pub fn bounded_sleep(d: Duration) -> Result<(), Box<EvalAltResult>> {
    let end = Instant::now() + d.min(MAX_SLEEP);
    loop {
        check_deadline()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        let mut step = (end - now).min(Duration::from_millis(100));
        if let Some(left) = remaining() {
            step = step.min(left + Duration::from_millis(1));
        }
        std::thread::sleep(step);
    }
}

fn secs(v: &Dynamic, what: &str) -> Result<Duration, Box<EvalAltResult>> {
    crate::prim::args::seconds(v, what, true, MAX_SLEEP)
}

fn poll(ctx: NativeCallContext, f: FnPtr, opts: Map) -> Result<bool, Box<EvalAltResult>> {
    let timeout = match opts.get("timeout") {
        Some(v) => secs(v, "timeout")?,
        None => {
            return Err("wait::poll needs #{ timeout: SECONDS } (waits are always bounded)".into())
        }
    };
    let interval = match opts.get("interval") {
        Some(v) => secs(v, "interval")?,
        None => Duration::from_secs(1),
    }
    .max(Duration::from_millis(10));
    crate::prim::args::check_keys(&opts, POLL_OPTIONS, "wait::poll")?;
    let end = Instant::now() + timeout;
    for _ in 0..MAX_CHECKS {
        let got: Dynamic = f.call_within_context(&ctx, ())?;
        if got.as_bool().unwrap_or(!got.is_unit()) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(false);
        }
        bounded_sleep(interval.min(end - now))?;
    }
    Ok(false)
}

pub fn register(engine: &mut Engine) {
    let mut m = Module::new();
    FuncRegistration::new("sleep")
        .with_comments([
            "/// Sleep for `seconds` (int or float, at most 3600). Ends the routine with a deadline",
            "/// error instead if its deadline comes first.",
        ])
        .with_params_info(["seconds: Dynamic", "()"])
        .set_into_module(&mut m, |seconds: Dynamic| bounded_sleep(secs(&seconds, "seconds")?));
    FuncRegistration::new("poll")
        .with_comments([
            "/// Call `f` until it returns something truthy, every `interval` seconds (default 1),",
            "/// for at most `timeout` seconds (required). Returns `true` if `f` succeeded,",
            "/// `false` on time-out. Errors thrown by `f` end the wait and propagate.",
            "///",
            "/// ```rhai",
            "/// let up = wait::poll(|| h.run(\"test -e /run/ready\").code == 0, #{ timeout: 60, interval: 2 });",
            "/// ```",
        ])
        .with_params_info(["f: FnPtr", "opts: Map", "bool"])
        .set_into_module(&mut m, poll);
    engine.register_static_module("wait", m.into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::CallGuard;

    fn engine() -> Engine {
        let mut e = Engine::new();
        e.on_progress(|_| None);
        register(&mut e);
        e
    }

    #[test]
    fn poll_returns_true_when_the_condition_holds() {
        let e = engine();
        let _g = CallGuard::new(Duration::from_secs(10), None);
        let got: bool = e
            .eval("let n = 0; wait::poll(|| { n += 1; n >= 3 }, #{ timeout: 5, interval: 0.01 })")
            .expect("eval");
        assert!(got);
    }

    #[test]
    fn poll_gives_up_at_its_timeout() {
        let e = engine();
        let _g = CallGuard::new(Duration::from_secs(10), None);
        let t = Instant::now();
        let got: bool = e
            .eval("wait::poll(|| false, #{ timeout: 0.2, interval: 0.05 })")
            .expect("eval");
        assert!(!got);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let err = e
            .eval::<bool>("wait::poll(|| false, #{})")
            .expect_err("needs timeout");
        assert!(err.to_string().contains("always bounded"), "{err}");
    }

    #[test]
    fn sleep_stops_at_the_routine_deadline() {
        let e = engine();
        let _g = CallGuard::new(Duration::from_millis(150), None);
        let t = Instant::now();
        let err = e.eval::<()>("wait::sleep(30)").expect_err("deadline");
        assert!(matches!(*err, EvalAltResult::ErrorTerminated(..)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
