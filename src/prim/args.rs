//! Script arguments shared by the primitive bindings: durations given as seconds (int or
//! float) and option maps whose unknown keys are an error, so a typo never passes as a
//! default.

use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map};

/// `v` as a duration in seconds: a finite number, at least 0 (or above 0 when `zero_ok`
/// is false), capped at `cap`.
pub fn seconds(
    v: &Dynamic,
    what: &str,
    zero_ok: bool,
    cap: Duration,
) -> Result<Duration, Box<EvalAltResult>> {
    let s = if let Ok(i) = v.as_int() {
        i as f64
    } else if let Ok(f) = v.as_float() {
        f
    } else {
        return Err(format!("{what} must be a number of seconds, got {}", v.type_name()).into());
    };
    if !s.is_finite() || s < 0.0 || (!zero_ok && s == 0.0) {
        let bound = if zero_ok { ">= 0" } else { "> 0" };
        return Err(format!("{what} must be {bound} seconds, got {s}").into());
    }
    Ok(Duration::from_secs_f64(s.min(cap.as_secs_f64())))
}

/// An error naming `func` and the known keys when `opts` has any other key.
pub fn check_keys(opts: &Map, known: &[&str], func: &str) -> Result<(), Box<EvalAltResult>> {
    for k in opts.keys() {
        if !known.contains(&k.as_str()) {
            return Err(
                format!("{func}: unknown option {k:?} (known: {})", known.join(", ")).into(),
            );
        }
    }
    Ok(())
}
