//! One reservation per computer: before a flow acts on its computer it takes the
//! computer for its request (`db::lock`), so at most one reservation's flow acts on a
//! computer at a time, on every management node sharing the database.
//!
//! - new, reload, reinstall and tomaintenance wait for the computer, bounded by
//!   `Timings::computer_wait_secs` and polling every `computer_wait_poll_ms`, with an
//!   `info` load-log entry naming the reservation they wait for (VCL's new.pm
//!   `computer_not_being_used`). A holder that is complete, failed or gone is stale and
//!   its row is dropped. When the wait runs out they give up the way vcld does: new,
//!   reinstall and tomaintenance fail, a reload is dropped (request complete); the
//!   computer is left as it is.
//! - reserved, inuse, timeout, deleted and image run for a reservation that already holds
//!   its computer (since its new): they re-take it at once or fail without touching it.
//! - timeout/deleted of a request that never got its computer does nothing to the
//!   computer and takes nothing: laststate `new` without the computer's row, or the
//!   computer held by another request (a delete that came while the request waited for
//!   it). A request that holds the row (its load began, or a preload ran) is reclaimed
//!   whatever its laststate.
//! - the wait reads the request on every poll: a delete or cancel while waiting hands it
//!   over to its reclaim within one poll (`Flow::watch`).
//!
//! A flow that holds the computer writes VCL's `begin` load-log entry; `exited`
//! (`state_exit`) closes it.

use std::time::{Duration, Instant};

use crate::db::lock::{self, Taken, Taker};
use crate::state::{Flow, FlowError};

/// What a flow may do after [`acquire`].
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// Its request holds the computer.
    Held,
    /// The flow does not act on the computer (a reclaim of a request that never got it).
    NotNeeded,
    /// Another reservation holds the computer; the text says which and why.
    GaveUp(String),
}

/// Does the flow for this request state wait for a computer another reservation holds?
pub fn waits(state: &str) -> bool {
    matches!(state, "new" | "reload" | "reinstall" | "tomaintenance")
}

/// Take the flow's computer for its request (see the module doc).
pub async fn acquire(f: &Flow) -> Result<Acquired, FlowError> {
    let reclaim = matches!(f.state.as_str(), "timeout" | "deleted");
    let holds = || async {
        Ok::<bool, FlowError>(
            lock::holder(&f.svc.db, f.data.computer_id)
                .await?
                .is_some_and(|h| h.request == f.data.request_id),
        )
    };
    if reclaim && f.prior_laststate == "new" && !holds().await? {
        return Ok(Acquired::NotNeeded);
    }
    let taker = Taker {
        computer: f.data.computer_id,
        request: f.data.request_id,
        reservation: f.data.reservation_id,
        management_node: f.svc.node_id,
        token: f.token.clone(),
    };
    let wait = if waits(&f.state) {
        Duration::from_secs(f.svc.timings.computer_wait_secs)
    } else {
        Duration::ZERO
    };
    let every = Duration::from_millis(f.svc.timings.computer_wait_poll_ms.max(50));
    let started = Instant::now();
    let max_tries = wait.as_millis() / every.as_millis() + 2;
    let mut waiting_for: Option<i64> = None;
    let mut last = None;
    for _ in 0..max_tries {
        match lock::take(&f.svc.db, &taker).await? {
            Taken::Mine { took_over } => {
                if let Some(old) = took_over {
                    f.log(
                        "info",
                        &format!(
                            "took computer {} over from request {old}, which is finished",
                            f.data.computer_node_name
                        ),
                    )
                    .await?;
                }
                let waited = started.elapsed();
                let text = if waiting_for.is_some() {
                    format!(
                        "{} flow begins on {} after waiting {:.1} s for it",
                        f.state,
                        f.data.computer_node_name,
                        waited.as_secs_f64()
                    )
                } else {
                    format!("{} flow begins on {}", f.state, f.data.computer_node_name)
                };
                f.log("begin", &text).await?;
                return Ok(Acquired::Held);
            }
            Taken::Busy(h) => {
                if reclaim {
                    // It never got this computer (deleted while it waited for it).
                    f.log(
                        "info",
                        &format!(
                            "computer {} is held by {}; this request never had it, so there is nothing to undo on it",
                            f.data.computer_node_name,
                            h.describe()
                        ),
                    )
                    .await?;
                    return Ok(Acquired::NotNeeded);
                }
                if wait.is_zero() {
                    return Ok(Acquired::GaveUp(format!(
                        "computer {} is held by {}; this reservation does not hold it, so its {} flow leaves it alone",
                        f.data.computer_node_name,
                        h.describe(),
                        f.state
                    )));
                }
                if waiting_for != Some(h.request) {
                    f.log(
                        "info",
                        &format!(
                            "waiting up to {} s for computer {}: it is held by {} (its reservation, reclaim or reload has not finished)",
                            wait.as_secs(),
                            f.data.computer_node_name,
                            h.describe()
                        ),
                    )
                    .await?;
                    waiting_for = Some(h.request);
                }
                last = Some(h);
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= wait {
            break;
        }
        // A delete while waiting hands the request over (`FlowError::Superseded`).
        f.pause_watching(every.min(wait - elapsed)).await?;
    }
    let who = last
        .map(|h| h.describe())
        .unwrap_or_else(|| "another reservation".into());
    Ok(Acquired::GaveUp(format!(
        "computer {} is not available: {who} still held it after {} s of waiting",
        f.data.computer_node_name,
        wait.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_flows_wait() {
        for s in ["new", "reload", "reinstall", "tomaintenance"] {
            assert!(waits(s), "{s}");
        }
        for s in ["reserved", "inuse", "timeout", "deleted", "image"] {
            assert!(!waits(s), "{s}");
        }
    }
}
