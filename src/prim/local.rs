//! Commands on the management node itself, with the same result shape, output bounds and
//! time-out as remote ones: `sh -c CMD` in its own process group, stdin the given input
//! (then EOF) or /dev/null, killed as a group (TERM, then KILL after 2 s) when its time is up.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
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

fn reader(mut r: impl Read + Send + 'static, cap: usize) -> mpsc::Receiver<Capture> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut c = Capture::new(cap);
        let mut buf = vec![0u8; 64 * 1024];
        // Ends at EOF (every writer closed the pipe) or a read error.
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            c.push(&buf[..n]);
        }
        let _ = tx.send(c);
    });
    rx
}

/// Run `cmd` with `sh -c` under `timeout` (also cut by the routine's deadline).
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
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        std::thread::spawn(move || {
            // A command that does not read its input gets EPIPE here; that is its business.
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    let out_rx = child.stdout.take().map(|s| reader(s, max_output));
    let err_rx = child.stderr.take().map(|s| reader(s, max_output));
    let mut pause = Duration::from_micros(200);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(LocalError::Wait)? {
            break st;
        }
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
        std::thread::sleep(pause.min(d.left()));
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // The command is done; a background job it left may still hold the pipes, so wait for
    // the readers only briefly.
    let collect = |rx: Option<mpsc::Receiver<Capture>>| {
        rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
            .map(Capture::finish)
            .unwrap_or_default()
    };
    let (stdout, t1) = collect(out_rx);
    let (stderr, t2) = collect(err_rx);
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
}
