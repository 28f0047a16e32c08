//! A byte stream to a unix socket on a remote host over SSH (`direct-streamlocal`, what
//! `ssh -L local:/remote.sock` uses). The VM primitives reach QEMU's QMP socket on a VM
//! host this way. The stream holds its pooled session for as long as it lives.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ssh2::Channel;

use super::io::Deadline;
use super::pool::{Lease, Pool};
use super::{SshError, Target};

/// A connected remote unix socket. Every read or write waits at most the I/O timeout
/// (`io::ErrorKind::TimedOut` after it); drop closes the channel.
pub struct RemoteUnixStream {
    lease: Lease,
    ch: Option<Channel>,
    io_timeout: Duration,
}

impl Pool {
    /// Connect to the unix socket `path` on `target` within `timeout`; the stream's reads
    /// and writes are bounded by `timeout` too (change with
    /// [`RemoteUnixStream::set_io_timeout`]).
    pub fn open_unix_socket(
        self: &Arc<Self>,
        target: &Target,
        path: &str,
        timeout: Duration,
    ) -> Result<RemoteUnixStream, SshError> {
        let d = Deadline::new(timeout);
        let (lease, ch) = self.channel(target, &d, "opening the remote unix socket", |s| {
            s.channel_direct_streamlocal(path, None)
        })?;
        Ok(RemoteUnixStream {
            lease,
            ch: Some(ch),
            io_timeout: timeout,
        })
    }
}

fn to_io(e: SshError) -> io::Error {
    let kind = match e {
        SshError::Timeout { .. } | SshError::Stopped { .. } => ErrorKind::TimedOut,
        _ => ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, e.to_string())
}

impl RemoteUnixStream {
    pub fn set_io_timeout(&mut self, d: Duration) {
        self.io_timeout = d;
    }

    fn parts(&mut self) -> io::Result<(&Lease, &mut Channel)> {
        match self.ch.as_mut() {
            Some(ch) => Ok((&self.lease, ch)),
            None => Err(io::Error::new(ErrorKind::NotConnected, "stream closed")),
        }
    }
}

impl Read for RemoteUnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = Deadline::new(self.io_timeout);
        let (lease, ch) = self.parts()?;
        let w = lease.conn().wire();
        loop {
            match ch.read(buf) {
                Ok(0) if ch.eof() || buf.is_empty() => return Ok(0),
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if d.expired() {
                return Err(to_io(d.error(w.target, "reading the remote socket")));
            }
            w.wait(&d, "reading the remote socket").map_err(to_io)?;
        }
    }
}

impl Write for RemoteUnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let d = Deadline::new(self.io_timeout);
        let (lease, ch) = self.parts()?;
        let w = lease.conn().wire();
        loop {
            match ch.write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if d.expired() {
                return Err(to_io(d.error(w.target, "writing the remote socket")));
            }
            w.wait(&d, "writing the remote socket").map_err(to_io)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let d = Deadline::new(self.io_timeout);
        let (lease, ch) = self.parts()?;
        let w = lease.conn().wire();
        loop {
            match ch.flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if d.expired() {
                return Err(to_io(d.error(w.target, "flushing the remote socket")));
            }
            w.wait(&d, "flushing the remote socket").map_err(to_io)?;
        }
    }
}

impl Drop for RemoteUnixStream {
    fn drop(&mut self) {
        let Some(mut ch) = self.ch.take() else { return };
        let d = Deadline::cleanup(Duration::from_secs(1));
        let w = self.lease.conn().wire();
        let closed = w
            .call(&d, "closing the remote socket", || ch.close())
            .and_then(|_| w.call(&d, "closing the remote socket", || ch.wait_close()));
        if closed.is_err() {
            self.lease.mark_broken();
        }
    }
}
