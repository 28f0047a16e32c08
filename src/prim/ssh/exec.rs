//! One remote command: a new channel on a pooled session, the given input written to its
//! stdin and then closed (EOF), stdout and stderr read together (so neither can stall the other) into bounded buffers, exit code or
//! signal collected, all under a deadline.
//!
//! On time-out the command is really stopped: the command line is prefixed with a line
//! that prints the remote shell's pid (sshd makes every session channel its own process
//! group), and on time-out provhost sends `kill -TERM` then `kill -KILL` to that group over
//! a second channel, then closes the first. With `kill_on_timeout: false` (for hosts whose
//! login shell is not POSIX) the command runs verbatim and the session is dropped instead.

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::Duration;

use ssh2::{Channel, Session};

use super::io::Deadline;
use super::pool::{Lease, Pool};
use super::{SshError, Target};

/// What to print before the command; stripped from stdout.
const PID_PREFIX: &[u8] = b"provhost-pid:";
/// Time allowed to stop a timed-out command and close its channel.
const CLEANUP: Duration = Duration::from_secs(3);
/// Most bytes a command's stdin may be given: input is for secrets and small files, written
/// before the output is read, so it must fit the channel's window.
pub const MAX_STDIN: usize = 1024 * 1024;

/// Per-command options; `None` takes the pool's configured default.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub timeout: Option<Duration>,
    pub max_output: Option<usize>,
    /// Kill the remote process group on time-out (needs a POSIX login shell).
    pub kill_on_timeout: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: None,
            max_output: None,
            kill_on_timeout: true,
        }
    }
}

/// A finished command, local or remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `128 + n` when killed by signal `n` (as shells report it), `-1` when
    /// the signal is unknown.
    pub code: i64,
    /// Name of the signal that ended the command (`"TERM"`, `"KILL"`, …), if any.
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// Some output was dropped (over `max_output`); the kept text ends with a marker line.
    pub truncated: bool,
}

/// A bounded output buffer: keeps the first `cap` bytes, counts the rest.
#[derive(Debug)]
pub struct Capture {
    buf: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            buf: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            dropped: 0,
        }
    }
    pub fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }
    /// The kept text (lossy UTF-8) with a marker line when output was dropped.
    pub fn finish(self) -> (String, bool) {
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!(
                "[provhost: output truncated: {} more bytes not kept]\n",
                self.dropped
            ));
        }
        (text, self.dropped > 0)
    }
}

/// Shell convention for a command killed by a signal.
pub fn signal_code(name: &str) -> i64 {
    let n = match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return -1,
    };
    128 + n
}

/// Reads the pid line at the start of stdout, then passes everything else through.
enum PidLine {
    Pending(Vec<u8>),
    Done(Option<u32>),
}

impl PidLine {
    fn feed(&mut self, data: &[u8], out: &mut Capture) {
        let PidLine::Pending(head) = self else {
            out.push(data);
            return;
        };
        head.extend_from_slice(data);
        if let Some(nl) = head.iter().position(|b| *b == b'\n') {
            let line = &head[..nl];
            let pid = line
                .strip_prefix(PID_PREFIX)
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.trim().parse::<u32>().ok());
            let rest = head.split_off(nl + 1);
            if pid.is_none() {
                out.push(head);
            }
            out.push(&rest);
            *self = PidLine::Done(pid);
        } else if head.len() > 64
            || !PID_PREFIX.starts_with(&head[..head.len().min(PID_PREFIX.len())])
        {
            out.push(head);
            *self = PidLine::Done(None);
        }
    }
    fn flush(&mut self, out: &mut Capture) {
        if let PidLine::Pending(head) = self {
            out.push(head);
            *self = PidLine::Done(None);
        }
    }
    fn pid(&self) -> Option<u32> {
        match self {
            PidLine::Done(p) => *p,
            PidLine::Pending(_) => None,
        }
    }
}

impl Pool {
    /// Open a channel with `open` on a leased session. A reused session that fails to open
    /// one most likely died while idle: it is dropped and the next one (or a new one) tried.
    pub fn channel(
        self: &Arc<Self>,
        target: &Target,
        d: &Deadline,
        what: &'static str,
        open: impl Fn(&Session) -> Result<Channel, ssh2::Error>,
    ) -> Result<(Lease, Channel), SshError> {
        let attempts = self.config().max_sessions_per_host.max(1) + 2;
        let mut last = None;
        for _ in 0..attempts {
            let mut lease = self.lease(target, d)?;
            let opened = {
                let conn = lease.conn();
                conn.wire().call(d, what, || open(conn.session()))
            };
            match opened {
                Ok(ch) => return Ok((lease, ch)),
                Err(e @ SshError::SessionLost { .. }) if lease.reused() => {
                    lease.mark_broken();
                    last = Some(e);
                }
                Err(e) => {
                    if e.breaks_session() {
                        lease.mark_broken();
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| d.error(&target.label(), what)))
    }

    /// Run `cmd` on `target` (through the login shell, like `ssh host cmd`).
    pub fn exec(
        self: &Arc<Self>,
        target: &Target,
        cmd: &str,
        opts: &ExecOptions,
    ) -> Result<Output, SshError> {
        self.exec_input(target, cmd, &[], opts)
    }

    /// [`Pool::exec`] with `input` written to the command's stdin, then EOF: the way to
    /// hand a command a secret without putting it on its command line (where every local
    /// user of the host reads it in `/proc/PID/cmdline`). At most [`MAX_STDIN`] bytes.
    pub fn exec_input(
        self: &Arc<Self>,
        target: &Target,
        cmd: &str,
        input: &[u8],
        opts: &ExecOptions,
    ) -> Result<Output, SshError> {
        if input.len() > MAX_STDIN {
            return Err(SshError::Channel {
                target: target.label(),
                detail: format!(
                    "stdin input of {} bytes is over the limit of {MAX_STDIN} bytes (copy the data with upload instead)",
                    input.len()
                ),
            });
        }
        let timeout = opts.timeout.unwrap_or(self.config().command_timeout());
        let max = opts.max_output.unwrap_or(self.config().max_output_bytes);
        let d = Deadline::new(timeout);
        let started = std::time::Instant::now();
        let (mut lease, ch) =
            self.channel(target, &d, "opening a channel", |s| s.channel_session())?;
        let result = run_channel(&mut lease, ch, cmd, input, opts.kill_on_timeout, max, &d);
        match &result {
            Ok(o) => {
                tracing::debug!(target = %target, code = o.code, ms = started.elapsed().as_millis() as u64, "remote command done")
            }
            Err(e) => tracing::debug!(target = %target, error = %e, "remote command failed"),
        }
        result
    }

    /// [`Pool::exec`] for async callers: runs on tokio's blocking pool, never on a worker.
    pub async fn exec_async(
        self: Arc<Self>,
        target: Target,
        cmd: String,
        opts: ExecOptions,
    ) -> Result<Output, SshError> {
        let label = target.label();
        tokio::task::spawn_blocking(move || self.exec(&target, &cmd, &opts))
            .await
            .map_err(|e| SshError::Channel {
                target: label,
                detail: format!("command task failed: {e}"),
            })?
    }
}

/// How a command ended when it did not finish.
enum Failed {
    /// Timed out or stopped; [`stop`] already killed it and kept or dropped the session.
    Stopped(SshError),
    /// Anything else: the session's state is unknown.
    Other(SshError),
}

impl From<SshError> for Failed {
    fn from(e: SshError) -> Self {
        Failed::Other(e)
    }
}

fn run_channel(
    lease: &mut Lease,
    ch: Channel,
    cmd: &str,
    input: &[u8],
    kill_on_timeout: bool,
    max: usize,
    d: &Deadline,
) -> Result<Output, SshError> {
    match run_inner(lease, ch, cmd, input, kill_on_timeout, max, d) {
        Ok(o) => Ok(o),
        Err(Failed::Stopped(e)) => Err(e),
        Err(Failed::Other(e)) => {
            if e.breaks_session() {
                lease.mark_broken();
            }
            Err(e)
        }
    }
}

fn run_inner(
    lease: &mut Lease,
    mut ch: Channel,
    cmd: &str,
    input: &[u8],
    kill_on_timeout: bool,
    max: usize,
    d: &Deadline,
) -> Result<Output, Failed> {
    let conn = lease.conn();
    let w = conn.wire();
    let line = if kill_on_timeout {
        format!("printf 'provhost-pid:%s\\n' \"$$\"\n{cmd}")
    } else {
        cmd.to_string()
    };
    w.call(d, "starting the command", || ch.exec(&line))?;
    // Bounded: every pass writes something or waits one slice of the deadline.
    let mut off = 0;
    while off < input.len() {
        match std::io::Write::write(&mut ch, &input[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if d.expired() {
                    let error = d.error(conn.label(), "writing the command's stdin");
                    stop(lease, ch, None);
                    return Err(Failed::Stopped(error));
                }
                w.wait(d, "writing the command's stdin")?
            }
            Err(e) => {
                return Err(Failed::Other(SshError::SessionLost {
                    target: conn.label().to_string(),
                    what: "writing the command's stdin",
                    detail: e.to_string(),
                }))
            }
        }
    }
    w.call(d, "closing the command's stdin", || ch.send_eof())?;
    let mut out = Capture::new(max);
    let mut err = Capture::new(max);
    let mut pid = if kill_on_timeout {
        PidLine::Pending(Vec::new())
    } else {
        PidLine::Done(None)
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut progressed = false;
        let eof = ch.eof();
        for stream in [0, 1] {
            // Bounded: each read consumes queued data; stop at "would block" or "nothing".
            for _ in 0..1024 {
                let r = if stream == 0 {
                    ch.read(&mut buf)
                } else {
                    ch.stderr().read(&mut buf)
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        progressed = true;
                        if stream == 0 {
                            pid.feed(&buf[..n], &mut out);
                        } else {
                            err.push(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        return Err(Failed::Other(SshError::SessionLost {
                            target: conn.label().to_string(),
                            what: "reading command output",
                            detail: e.to_string(),
                        }))
                    }
                }
            }
        }
        if eof && !progressed {
            break;
        }
        if !progressed && ch.eof() {
            // The reads just processed the end of the stream: one more pass drains what
            // came with it, then the check above ends the loop.
            continue;
        }
        if !progressed {
            if d.expired() || d.check(conn.label(), "running the command").is_err() {
                let error = d.error(conn.label(), "command");
                stop(lease, ch, pid.pid());
                return Err(Failed::Stopped(error));
            }
            w.wait(d, "running the command").or_else(|e| match e {
                SshError::Timeout { .. } | SshError::Stopped { .. } => Ok(()),
                other => Err(other),
            })?;
        }
    }
    pid.flush(&mut out);
    w.call(d, "closing the channel", || ch.close())?;
    w.call(d, "closing the channel", || ch.wait_close())?;
    let status = ch.exit_status().unwrap_or(-1);
    let signal = ch
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .filter(|s| !s.is_empty());
    let code = match &signal {
        Some(s) => signal_code(s),
        None => i64::from(status),
    };
    let (stdout, t1) = out.finish();
    let (stderr, t2) = err.finish();
    Ok(Output {
        code,
        signal,
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

/// Stop a timed-out command: kill its process group over a second channel, close its
/// channel; if any of that fails, drop the whole session (which closes the channel too).
fn stop(lease: &mut Lease, mut ch: Channel, pid: Option<u32>) {
    let d = Deadline::cleanup(CLEANUP);
    let conn = lease.conn();
    let w = conn.wire();
    let mut ok = false;
    if let Some(pid) = pid {
        let kill = format!(
            "kill -TERM -- -{pid} 2>/dev/null; (sleep 2; kill -KILL -- -{pid}) </dev/null >/dev/null 2>&1 &"
        );
        let killed = w
            .call(&d, "stopping the command", || {
                conn.session().channel_session()
            })
            .and_then(|mut k| {
                w.call(&d, "stopping the command", || k.exec(&kill))?;
                w.call(&d, "stopping the command", || k.send_eof())?;
                w.call(&d, "stopping the command", || k.wait_eof())?;
                w.call(&d, "stopping the command", || k.close())?;
                w.call(&d, "stopping the command", || k.wait_close())
            });
        ok = killed.is_ok();
        if let Err(e) = killed {
            tracing::warn!(target = %conn.label(), error = %e, "could not kill timed-out command");
        }
    }
    if ok {
        // Drain whatever the dying command still sends, then close.
        let mut buf = vec![0u8; 64 * 1024];
        let drained = (|| {
            for _ in 0..100_000 {
                if ch.eof() {
                    break;
                }
                let mut any = false;
                for s in [0, 1] {
                    match ch.stream(s).read(&mut buf) {
                        Ok(n) if n > 0 => any = true,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => {
                            return Err(SshError::SessionLost {
                                target: conn.label().to_string(),
                                what: "stopping the command",
                                detail: e.to_string(),
                            })
                        }
                    }
                }
                if !any {
                    w.wait(&d, "stopping the command")?;
                }
            }
            w.call(&d, "stopping the command", || ch.close())?;
            w.call(&d, "stopping the command", || ch.wait_close())
        })();
        if let Err(e) = &drained {
            tracing::debug!(target = %conn.label(), error = %e, "timed-out command's channel did not close cleanly");
        }
        ok = drained.is_ok();
    }
    if !ok {
        lease.mark_broken();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_and_marks_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        let (text, truncated) = c.finish();
        assert!(truncated);
        assert_eq!(
            text,
            "abcde\n[provhost: output truncated: 3 more bytes not kept]\n"
        );
        let (text, truncated) = Capture::new(5).finish();
        assert_eq!((text.as_str(), truncated), ("", false));
    }

    #[test]
    fn the_pid_line_is_stripped_even_when_split_across_reads() {
        let mut out = Capture::new(100);
        let mut p = PidLine::Pending(Vec::new());
        p.feed(b"provhost-p", &mut out);
        p.feed(b"id:4242\nhello", &mut out);
        p.feed(b" world\n", &mut out);
        assert_eq!(p.pid(), Some(4242));
        assert_eq!(out.finish().0, "hello world\n");

        // A login shell that printed something first: nothing is lost, no pid.
        let mut out = Capture::new(100);
        let mut p = PidLine::Pending(Vec::new());
        p.feed(b"motd\nprovhost-pid:1\n", &mut out);
        p.flush(&mut out);
        assert_eq!(p.pid(), None);
        assert_eq!(out.finish().0, "motd\nprovhost-pid:1\n");
    }

    #[test]
    fn signals_map_to_shell_exit_codes() {
        assert_eq!(signal_code("TERM"), 143);
        assert_eq!(signal_code("SIGKILL"), 137);
        assert_eq!(signal_code("WINCH"), -1);
    }
}
