//! Bounded waiting on a non-blocking libssh2 session. Every session is used in
//! non-blocking mode; a call that would block returns `EAGAIN`, and [`Wire::wait`] polls the
//! socket in the direction libssh2 asks for, in slices of at most 50 ms, until the
//! operation's [`Deadline`], the calling routine's deadline or its cancel flag says stop.
//! So no SSH wait in provhost is unbounded, and a cancelled reservation stops within 50 ms.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, ErrorCode, Session};

use super::SshError;
use crate::budget;

/// libssh2's "would block" code.
const EAGAIN: i32 = -37;
/// Longest single poll; the deadline and cancel flag are checked between polls.
const SLICE: Duration = Duration::from_millis(50);

/// When an operation must end: its own timeout, cut short by the calling routine's
/// deadline (`budget::remaining`) when that comes first.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    routine: bool,
    /// Clean-up after a time-out: not cut short by the routine's (already passed) deadline.
    cleanup: bool,
}

impl Deadline {
    /// `timeout` from now, or the routine's deadline if that is sooner.
    pub fn new(timeout: Duration) -> Self {
        match budget::remaining() {
            Some(left) if left < timeout => Deadline {
                at: budget::after(left),
                limit: left,
                routine: true,
                cleanup: false,
            },
            _ => Deadline {
                at: budget::after(timeout),
                limit: timeout,
                routine: false,
                cleanup: false,
            },
        }
    }

    /// `d` from now, for cleaning up after a time-out or stop; ignores the routine's
    /// deadline and cancel flag (they are why we clean up).
    pub fn cleanup(d: Duration) -> Self {
        Deadline {
            at: budget::after(d),
            limit: d,
            routine: false,
            cleanup: true,
        }
    }

    /// The time this deadline allowed in total.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// This deadline, or `d` from now if that is sooner (e.g. the connect timeout inside a
    /// command's timeout).
    pub fn within(&self, d: Duration) -> Deadline {
        let at = budget::after(d);
        if at < self.at {
            Deadline {
                at,
                limit: d,
                routine: false,
                cleanup: self.cleanup,
            }
        } else {
            *self
        }
    }

    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The instant it ends.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The error for having reached this deadline (or a stop request) during `what`.
    pub fn error(&self, target: &str, what: &'static str) -> SshError {
        if !self.cleanup && (self.routine || budget::check_deadline().is_err()) {
            SshError::Stopped {
                target: target.to_string(),
                what,
            }
        } else {
            SshError::Timeout {
                target: target.to_string(),
                what,
                secs: self.limit.as_secs_f64(),
            }
        }
    }

    /// `Err` when the deadline passed or the routine was cancelled / ran out of time.
    pub fn check(&self, target: &str, what: &'static str) -> Result<(), SshError> {
        if self.expired() || (!self.cleanup && budget::check_deadline().is_err()) {
            Err(self.error(target, what))
        } else {
            Ok(())
        }
    }
}

/// Is this libssh2 error "would block"?
pub fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(EAGAIN)
}

/// Did the server refuse a channel or request (the session itself is fine)?
fn refused(e: &ssh2::Error) -> bool {
    // LIBSSH2_ERROR_CHANNEL_FAILURE, LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED
    matches!(e.code(), ErrorCode::Session(-21) | ErrorCode::Session(-22))
}

/// A session plus its socket, for waiting.
#[derive(Clone, Copy)]
pub struct Wire<'a> {
    pub sess: &'a Session,
    pub fd: RawFd,
    pub target: &'a str,
}

impl Wire<'_> {
    /// Wait (at most one slice) until the socket is ready in the direction libssh2 needs.
    pub fn wait(&self, d: &Deadline, what: &'static str) -> Result<(), SshError> {
        d.check(self.target, what)?;
        let (events, cap) = match self.sess.block_directions() {
            BlockDirections::Inbound => (libc::POLLIN, SLICE),
            BlockDirections::Outbound => (libc::POLLOUT, SLICE),
            BlockDirections::Both => (libc::POLLIN | libc::POLLOUT, SLICE),
            // libssh2 is not waiting on the socket (e.g. a closed window): look again soon.
            BlockDirections::None => (libc::POLLIN, Duration::from_millis(1)),
        };
        let ms = d.left().min(cap).as_millis().clamp(1, 1000) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(SshError::SessionLost {
                    target: self.target.to_string(),
                    what,
                    detail: format!("poll: {err}"),
                });
            }
        }
        Ok(())
    }

    /// Run a non-blocking libssh2 call until it stops saying "would block"; any other
    /// error means the session is gone.
    pub fn call<T>(
        &self,
        d: &Deadline,
        what: &'static str,
        mut f: impl FnMut() -> Result<T, ssh2::Error>,
    ) -> Result<T, SshError> {
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if would_block(&e) => self.wait(d, what)?,
                Err(e) if refused(&e) => {
                    return Err(SshError::Channel {
                        target: self.target.to_string(),
                        detail: format!("{what}: {}", e.message()),
                    })
                }
                Err(e) => {
                    return Err(SshError::SessionLost {
                        target: self.target.to_string(),
                        what,
                        detail: e.message().to_string(),
                    })
                }
            }
        }
    }
}
