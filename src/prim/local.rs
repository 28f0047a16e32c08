//! Commands on the management node itself, with the same result shape, output bounds and
//! time-out as remote ones: `sh -c CMD` in its own process group, stdin the given input
//! (then EOF) or /dev/null, killed as a group (TERM, then KILL after 2 s) when its time is
//! up, or when a background job it left keeps its output open past a short grace. Input
//! and output are handled on the calling thread: a call starts no threads.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::prim::ssh::exec::{signal_code, Capture};
use crate::prim::ssh::io::Deadline;
use crate::prim::ssh::Output;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("local command: cannot start sh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("local command: waiting for it failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("local command timed out after {secs:.1} s (killed)")]
    Timeout { secs: f64 },
    #[error("local command stopped: the routine's deadline passed or the reservation was cancelled (killed)")]
    Stopped,
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGILL => "ILL",
        libc::SIGABRT => "ABRT",
        libc::SIGKILL => "KILL",
        libc::SIGUSR1 => "USR1",
        libc::SIGSEGV => "SEGV",
        libc::SIGUSR2 => "USR2",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        _ => return None,
    })
}

/// How long output is still read after the command itself exited, for a background job
/// it left that still holds its stdout or stderr.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

/// The command's stdout and stderr, read on the calling thread (no reader threads, so
/// nothing is left behind however long a background job keeps the pipes open).
struct Pipes {
    out: Option<std::process::ChildStdout>,
    err: Option<std::process::ChildStderr>,
    out_cap: Capture,
    err_cap: Capture,
    /// The command's stdin (non-blocking) with the input and how much of it is written.
    input: Option<(std::process::ChildStdin, Vec<u8>, usize)>,
}

impl Pipes {
    fn new(
        out: Option<std::process::ChildStdout>,
        err: Option<std::process::ChildStderr>,
        cap: usize,
    ) -> Self {
        Pipes {
            out,
            err,
            out_cap: Capture::new(cap),
            err_cap: Capture::new(cap),
            input: None,
        }
    }

    /// Write `data` to the command's `stdin` as it reads it, then close it (EOF).
    fn feed(&mut self, stdin: std::process::ChildStdin, data: Vec<u8>) {
        let fd = stdin.as_raw_fd();
        // SAFETY: fcntl on a pipe fd we own; O_NONBLOCK so a write never blocks this thread.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        self.input = (!data.is_empty()).then_some((stdin, data, 0));
    }

    /// Write what the pipe takes now; close it when all is written or on an error (the
    /// command closed its stdin: EPIPE).
    fn write_input(&mut self) {
        let Some((stdin, data, done)) = self.input.as_mut() else {
            return;
        };
        // Bounded: each pass writes at least one byte or stops.
        while *done < data.len() {
            match std::io::Write::write(stdin, &data[*done..]) {
                Ok(0) => break,
                Ok(n) => *done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
                Err(_) => break,
            }
        }
        self.input = None;
    }

    fn done(&self) -> bool {
        self.out.is_none() && self.err.is_none()
    }

    fn close(&mut self) {
        self.out = None;
        self.err = None;
        self.input = None;
    }

    /// Wait up to `wait` for output and read what is there; a pipe at EOF is closed.
    fn read(&mut self, wait: Duration) {
        let out_fd = self.out.as_ref().map(AsRawFd::as_raw_fd);
        let err_fd = self.err.as_ref().map(AsRawFd::as_raw_fd);
        let mut fds: Vec<libc::pollfd> = out_fd.into_iter().chain(err_fd).map(pollfd).collect();
        let in_fd = self.input.as_ref().map(|(i, _, _)| i.as_raw_fd());
        if let Some(fd) = in_fd {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        if fds.is_empty() {
            std::thread::sleep(wait);
            return;
        }
        let ms = wait.as_micros().div_ceil(1000).min(1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc <= 0 {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        for f in fds.iter().filter(|f| f.revents != 0) {
            // poll said ready (or hung up / failed): one read does not block.
            if Some(f.fd) == in_fd {
                self.write_input();
            } else if Some(f.fd) == out_fd {
                if let Some(n) = read_some(&mut self.out, &mut buf) {
                    self.out_cap.push(&buf[..n]);
                }
            } else if let Some(n) = read_some(&mut self.err, &mut buf) {
                self.err_cap.push(&buf[..n]);
            }
        }
    }
}

/// One read from `pipe`: the bytes read, or `None` — and the pipe closed — at EOF or on an
/// error (an interrupted read is tried again at the next poll).
fn read_some(pipe: &mut Option<impl Read>, buf: &mut [u8]) -> Option<usize> {
    match pipe.as_mut()?.read(buf) {
        Ok(n) if n > 0 => Some(n),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
        _ => {
            *pipe = None;
            None
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Run `cmd` with `sh -c` under `timeout` (also cut by the routine's deadline).
///
/// Its output is read until both pipes close. A background job that keeps them open after
/// the command exited gets [`EXIT_GRACE`]; then the command's process group is killed
/// (TERM, KILL after 2 s) and whatever is still open is closed: the call returns, and
/// nothing of it keeps running. A background job that let go of the pipes (redirected its
/// output) is left alone.
pub fn exec(cmd: &str, timeout: Duration, max_output: usize) -> Result<Output, LocalError> {
    exec_input(cmd, None, timeout, max_output)
}

/// [`exec`] with `input` written to the command's stdin by a helper thread, then EOF
/// (`None`: stdin is /dev/null). The thread ends when the input is written or the command
/// closed its stdin (it exited or was killed).
pub fn exec_input(
    cmd: &str,
    input: Option<&[u8]>,
    timeout: Duration,
    max_output: usize,
) -> Result<Output, LocalError> {
    let d = Deadline::new(timeout);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(LocalError::Spawn)?;
    let pgid = child.id() as libc::pid_t;
    let stdin = child.stdin.take().zip(input.map(<[u8]>::to_vec));
    let mut pipes = Pipes::new(child.stdout.take(), child.stderr.take(), max_output);
    if let Some((stdin, data)) = stdin {
        pipes.feed(stdin, data);
    }
    let mut pause = Duration::from_micros(200);
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    let status = loop {
        if exited.is_none() {
            if let Some(st) = child.try_wait().map_err(LocalError::Wait)? {
                exited = Some((st, Instant::now()));
            }
        }
        if exited.is_some() {
            // Nobody reads the rest of the input once the command is gone.
            pipes.input = None;
        }
        match exited {
            Some((st, _)) if pipes.done() => break st,
            Some((st, at)) if at.elapsed() >= EXIT_GRACE => {
                tracing::debug!(
                    cmd,
                    "local command exited but a background job keeps its output open: killing its process group"
                );
                kill_leftovers(pgid, &mut pipes);
                break st;
            }
            Some(_) => {}
            None => {
                if d.check("local", "command").is_err() {
                    let error = match d.error("local", "command") {
                        crate::prim::ssh::SshError::Stopped { .. } => LocalError::Stopped,
                        _ => LocalError::Timeout {
                            secs: d.limit().as_secs_f64(),
                        },
                    };
                    kill_group(pgid, &mut child);
                    return Err(error);
                }
            }
        }
        pipes.read(pause.min(d.left()).max(Duration::from_micros(100)));
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let (stdout, t1) = pipes.out_cap.finish();
    let (stderr, t2) = pipes.err_cap.finish();
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal().map(|s| {
        signal_name(s)
            .map(str::to_string)
            .unwrap_or_else(|| s.to_string())
    });
    let code = match (status.code(), &signal) {
        (Some(c), _) => i64::from(c),
        (None, Some(s)) => signal_code(s),
        (None, None) => -1,
    };
    Ok(Output {
        code,
        signal,
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

/// After the command exited: TERM what is left of its process group, read until the pipes
/// close (2 s at most), KILL the group, close the pipes.
fn kill_leftovers(pgid: libc::pid_t, pipes: &mut Pipes) {
    // SAFETY: signalling the process group we created (ESRCH when it is gone is fine).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(2);
    while !pipes.done() && Instant::now() < end {
        pipes.read(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    pipes.close();
}

/// TERM the whole group, KILL it after 2 s, reap the child.
fn kill_group(pgid: libc::pid_t, child: &mut std::process::Child) {
    // SAFETY: signalling a process group we created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above; the group may already be gone (ESRCH is fine).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    wait_group_gone(pgid, Duration::from_secs(1));
}

/// Wait (bounded) until no live process is left in group `pgid`: a grandchild the shell
/// forked may still be exiting when the shell has been reaped, and the caller is told the
/// command is gone. Zombies (reaped by their new parent) do not count.
fn wait_group_gone(pgid: libc::pid_t, bound: Duration) {
    let end = Instant::now() + bound;
    while group_has_live_member(pgid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `/proc` shows a process of group `pgid` that is not a zombie.
fn group_has_live_member(pgid: libc::pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // Fields after the command name (which may hold spaces and parentheses): state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|g| g.parse::<libc::pid_t>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X"))
    })
}
