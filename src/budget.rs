//! The time budget of one routine call: its deadline and cancel flag, installed on the
//! calling thread by [`CallGuard`] and read by everything that waits under it — the script
//! engine's `on_progress` check (in `host::engine`) and the blocking primitives (`prim`).
//!
//! It sits below both `host` and `prim` so neither has to import the other for it: the host
//! sets the budget, primitives consult it. A routine runs start to end on one thread, so
//! the budget is a thread-local; nested calls from Rust restore the outer one on drop.
//!
//! Every deadline here is computed with [`after`], which saturates instead of overflowing:
//! a huge timeout (`u64::MAX` seconds) means "practically never", not a panic.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{EvalAltResult, Position};

/// The termination token a stopped call ends with; the host maps it back to an error kind.
pub const TIMEOUT_TOKEN: &str = "provhost:deadline";
pub const CANCEL_TOKEN: &str = "provhost:cancelled";

/// The longest any deadline is set ahead (about 100 years): a longer timeout is capped to
/// it, which no routine can tell apart from "no deadline".
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, capped at [`FAR_FUTURE`] ahead (never overflows, whatever `d` is).
pub fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(FAR_FUTURE))
        .unwrap_or_else(|| now + Duration::from_secs(24 * 3600))
}

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
    /// A budget of `timeout` from now (capped, see [`after`]) and the cancel flag.
    pub fn new(timeout: Duration, cancel: Option<Arc<AtomicBool>>) -> Self {
        let deadline = after(timeout);
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

/// Why the current call must stop now (cancel first, then the deadline), if it must.
pub fn stop_token() -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_budget_does_not_overflow_and_is_practically_endless() {
        let _g = CallGuard::new(Duration::from_secs(u64::MAX), None);
        let left = remaining().expect("inside a call");
        assert!(left > Duration::from_secs(50 * 365 * 24 * 3600), "{left:?}");
        assert!(check_deadline().is_ok());
        let _ = after(Duration::MAX);
    }

    #[test]
    fn guards_nest_and_restore() {
        assert!(remaining().is_none());
        {
            let _outer = CallGuard::new(Duration::from_secs(60), None);
            {
                let _inner = CallGuard::new(Duration::ZERO, None);
                assert_eq!(stop_token(), Some(TIMEOUT_TOKEN));
            }
            assert!(check_deadline().is_ok());
            let flag = Arc::new(AtomicBool::new(true));
            let _cancelled = CallGuard::new(Duration::from_secs(60), Some(flag));
            assert_eq!(stop_token(), Some(CANCEL_TOKEN));
        }
        assert!(remaining().is_none());
    }
}
