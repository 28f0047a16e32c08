//! Where routine calls run: each call on its own OS thread, in one of two lanes with their
//! own capacity — [`Lane::Work`] for loads and everything else (`[daemon] routine_threads`
//! threads for up to `max_flows` flows), and [`Lane::End`] for the end of reservations
//! (`reclaim_flows`, one thread per flow: timeout, deleted, an in-use reservation past its
//! end). A flow holds a thread only while one of its calls runs: waiting for Connect, a
//! connection or a reload it is a tokio task, so a daemon can have many more flows in
//! flight than threads (a work call waits for a free thread when all are busy; an end call
//! never does). No call uses tokio's shared blocking pool (512 threads), so a thousand loads
//! waiting in `post_load` cannot delay the `revoke_access` of a reservation that ended.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Most routine threads a daemon may run at once (both lanes together).
pub const MAX_THREADS: usize = 4096;

/// Most flows (`[daemon] max_flows`) a daemon may have in flight: each is a tokio task of
/// a few kilobytes while it waits (docs/BENCHMARKS.md: one node at 10,000).
pub const MAX_FLOWS: usize = 100_000;

/// Which capacity a flow runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Loads, reservations starting, in-use checks, captures.
    Work,
    /// The end of a reservation: taking access away and reclaiming the computer.
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("cannot start a thread for the routine call: {0} (too many threads for this system? lower [daemon] routine_threads)")]
    Spawn(#[source] std::io::Error),
    #[error("the routine thread ended abnormally (a panic in provhost; see the log)")]
    Panicked,
    #[error("the {0:?} lane is closed")]
    Closed(Lane),
}

/// The two lanes' permits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lanes {
    work: Arc<Semaphore>,
    end: Arc<Semaphore>,
}

impl Lanes {
    /// `work` and `end` calls at most at once (each at least 1).
    pub fn new(work: usize, end: usize) -> Self {
        Lanes {
            work: Arc::new(Semaphore::new(work.max(1))),
            end: Arc::new(Semaphore::new(end.max(1))),
        }
    }

    /// Run `f` on a thread of its own in `lane`, waiting for the lane's permit first; the
    /// permit is held until `f` returns, also when the caller stops waiting (a flow
    /// abandoned at shutdown: its call still ends at its deadline or cancel).
    pub async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LaneError> {
        let sem = match lane {
            Lane::Work => &self.work,
            Lane::End => &self.end,
        };
        let permit = Arc::clone(sem)
            .acquire_owned()
            .await
            .map_err(|_| LaneError::Closed(lane))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let out = f();
                drop(permit);
                let _ = tx.send(out);
            })
            .map_err(LaneError::Spawn)?;
        rx.await.map_err(|_| LaneError::Panicked)
    }

    /// Calls running now in `lane` (for tests and status).
    pub fn busy(&self, lane: Lane, capacity: usize) -> usize {
        let sem = match lane {
            Lane::Work => &self.work,
            Lane::End => &self.end,
        };
        capacity.max(1).saturating_sub(sem.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "current_thread")]
    async fn the_end_lane_runs_while_the_work_lane_is_full() {
        let lanes = Lanes::new(2, 1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut slow = Vec::new();
        for _ in 0..2 {
            let (l, h) = (lanes.clone(), Arc::clone(&hold));
            slow.push(tokio::spawn(async move {
                l.run(Lane::Work, "slow", move || {
                    let _ = h.lock().map(|r| r.recv_timeout(Duration::from_secs(30)));
                })
                .await
            }));
        }
        let t = Instant::now();
        while lanes.busy(Lane::Work, 2) < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "work calls never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = Instant::now();
        let got = lanes
            .run(Lane::End, "end", || 7)
            .await
            .expect("end lane call");
        assert_eq!(got, 7);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        drop(release);
        for s in slow {
            s.await.expect("join").expect("slow call");
        }
        assert_eq!(lanes.busy(Lane::Work, 2), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_call_is_an_error_and_frees_its_permit() {
        let lanes = Lanes::new(1, 1);
        let r = lanes.run(Lane::Work, "panics", || panic!("boom")).await;
        assert!(matches!(r, Err(LaneError::Panicked)), "{r:?}");
        assert_eq!(
            lanes.run(Lane::Work, "after", || 1).await.expect("after"),
            1
        );
    }
}
