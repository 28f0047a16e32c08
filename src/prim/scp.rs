//! File copies between the management node and hosts, or between two hosts through the
//! management node: streaming in 256 KiB pieces (memory stays bounded whatever the file
//! size), with progress callbacks, a size check after every copy and an optional SHA-256
//! check end to end.
//!
//! A copy never leaves a partial file under the destination name: data goes to
//! `DEST.provhost-part-RANDOM` beside it and is renamed over `DEST` only after the size (and
//! checksum, when asked) matched. The part file's name is unpredictable, it is created
//! exclusively (a file or symlink planted under the name fails the copy instead of
//! redirecting it) and private (0600) while data arrives; it is made 0644 just before the
//! rename, and only when it is still a regular file. A failed copy removes its part file when the destination
//! host still answers. Remote ends use `cat`, `stat`, `sha256sum`, `mv` and `rm` through
//! the login shell over pooled sessions; every path is shell-quoted.
//!
//! Transport: by default (`[ssh] copy_transport = "auto"`) the bytes of a file of at least
//! `[ssh] openssh_min_bytes` between this node and a host go through the system's OpenSSH
//! `ssh` ([`crate::prim::ssh::openssh`]) with the local file as its stdin or stdout — a
//! quarter to a half of libssh2's client CPU per GiB, and 1.2–2.5× its speed
//! (docs/BENCHMARKS.md, "Copies"); the size and checksum checks, the rename and the
//! helpers stay on pooled sessions. Smaller files, copies between two hosts and targets OpenSSH cannot express
//! stream through libssh2.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh2::Channel;

use crate::prim::ssh::exec::Capture;
use crate::prim::ssh::io::Deadline;
use crate::prim::ssh::openssh;
use crate::prim::ssh::pool::Lease;
use crate::prim::ssh::{ExecOptions, Pool, SshError, Target};

/// Size of one piece read and written.
pub const CHUNK: usize = 256 * 1024;
/// Copies without a configured time-out (local to local) get this one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Least time between two progress callbacks (the first and last always come).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ScpError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {what} {path:?} failed: {detail}")]
    Remote {
        target: String,
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: size after copy is {got} bytes, expected {expected}; not kept")]
    SizeMismatch {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("{path}: SHA-256 after copy is {got}, expected {expected}; not kept")]
    ChecksumMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("copy to {path} timed out after {secs:.1} s")]
    Timeout { path: String, secs: f64 },
    #[error(
        "copy to {path} stopped: the routine's deadline passed or the reservation was cancelled"
    )]
    Stopped { path: String },
}

/// One end of a copy.
#[derive(Clone, Copy)]
pub enum End<'a> {
    Local(&'a Path),
    Remote(&'a Arc<Pool>, &'a Target, &'a str),
}

impl End<'_> {
    fn describe(&self) -> String {
        match self {
            End::Local(p) => p.display().to_string(),
            End::Remote(_, t, p) => format!("{}:{p}", t.label()),
        }
    }
}

/// How far a copy got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

impl Progress {
    pub fn percent(&self) -> u64 {
        (self.done * 100).checked_div(self.total).unwrap_or(100)
    }
}

/// A process-wide watcher of every copy (the command line's progress bars); a daemon
/// sets none. Called with the destination as [`copy`] names it, as often as the copy's
/// own progress callback.
pub trait CopyObserver: Send + Sync {
    fn copy_progress(&self, dest: &str, progress: Progress);
}

static OBSERVER: std::sync::OnceLock<Box<dyn CopyObserver>> = std::sync::OnceLock::new();

/// Install the process's [`CopyObserver`]; only the first call counts (returns whether
/// this one did).
pub fn observe_copies(observer: Box<dyn CopyObserver>) -> bool {
    OBSERVER.set(observer).is_ok()
}

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Whole copy; default: `[ssh] copy_timeout_secs` (cut by the routine's deadline).
    pub timeout: Option<Duration>,
    /// Compare SHA-256 of what was sent with what arrived on disk.
    pub sha256: bool,
}

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyReport {
    pub bytes: u64,
    /// Hex SHA-256 of the data, when asked for.
    pub sha256: Option<String>,
    pub secs: f64,
}

/// Single-quote `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The part file's name beside `dest`: `DEST.provhost-part-` and 16 random letters and
/// digits, so no one can plant a file or symlink under it in advance.
fn part_name(dest: &str) -> String {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf).is_err() {
        // No random source: fall back on time and a counter (the file is still created
        // exclusively, so a planted name fails the copy rather than redirect it).
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let x = t ^ (u64::from(std::process::id()) << 32) ^ N.fetch_add(1, Ordering::Relaxed);
        buf[..8].copy_from_slice(&x.to_le_bytes());
    }
    let suffix: String = buf
        .iter()
        .map(|b| ALPHA[*b as usize % ALPHA.len()] as char)
        .collect();
    format!("{dest}.provhost-part-{suffix}")
}

/// The remote command that receives the data: the part file is created exclusively
/// (`set -C`: an existing file or a symlink under the name fails the copy) and private
/// (`umask 077`: 0600 while the data arrives).
fn sink_command(part: &str) -> String {
    format!("umask 077 && set -C && cat > {}", shell_quote(part))
}

/// The remote command that publishes the part file: only a regular file (not a symlink)
/// is made readable (0644) and renamed over the destination.
fn commit_command(part: &str, dest: &str) -> String {
    let (p, d) = (shell_quote(part), shell_quote(dest));
    format!(
        "if [ -L {p} ] || [ ! -f {p} ]; then echo 'part file is not a regular file' >&2; exit 1; fi; \
         chmod 0644 -- {p} && mv -f -- {p} {d}"
    )
}

fn local_err(path: &Path) -> impl Fn(std::io::Error) -> ScpError + '_ {
    move |e| ScpError::Local {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Run a short helper command (stat, mv, rm, sha256sum) within `d`.
fn helper(
    pool: &Arc<Pool>,
    t: &Target,
    cmd: &str,
    d: &Deadline,
) -> Result<crate::prim::ssh::Output, SshError> {
    let opts = ExecOptions {
        timeout: Some(d.left().max(Duration::from_millis(1))),
        max_output: Some(64 * 1024),
        kill_on_timeout: true,
    };
    pool.exec(t, cmd, &opts)
}

fn remote_fail(
    t: &Target,
    path: &str,
    what: &'static str,
    out: &crate::prim::ssh::Output,
) -> ScpError {
    remote_failed(t, path, what, out.code, &out.stderr)
}

/// A remote command of a copy that exited `code`: its stderr, or the code when it printed
/// nothing.
fn remote_failed(t: &Target, path: &str, what: &'static str, code: i64, stderr: &str) -> ScpError {
    let detail = stderr.trim();
    ScpError::Remote {
        target: t.label(),
        path: path.to_string(),
        what,
        detail: if detail.is_empty() {
            format!("exit code {code}")
        } else {
            detail.to_string()
        },
    }
}

fn remote_size(pool: &Arc<Pool>, t: &Target, path: &str, d: &Deadline) -> Result<u64, ScpError> {
    let q = shell_quote(path);
    let out = helper(
        pool,
        t,
        &format!("stat -L -c %s -- {q} 2>/dev/null || wc -c < {q}"),
        d,
    )?;
    if out.code != 0 {
        return Err(remote_fail(t, path, "reading the size of", &out));
    }
    out.stdout.trim().parse().map_err(|_| ScpError::Remote {
        target: t.label(),
        path: path.to_string(),
        what: "reading the size of",
        detail: format!("unexpected answer {:?}", out.stdout.trim()),
    })
}

fn remote_sha(pool: &Arc<Pool>, t: &Target, path: &str, d: &Deadline) -> Result<String, ScpError> {
    let out = helper(pool, t, &format!("sha256sum -- {}", shell_quote(path)), d)?;
    if out.code != 0 {
        return Err(remote_fail(t, path, "checksumming", &out));
    }
    Ok(out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// A `cat` channel on a leased session (source: `cat -- P`; sink: `cat > TMP`).
struct RemoteCat {
    lease: Lease,
    ch: Channel,
    stderr: Capture,
}

impl RemoteCat {
    fn open(pool: &Arc<Pool>, t: &Target, cmd: &str, d: &Deadline) -> Result<RemoteCat, SshError> {
        let (mut lease, mut ch) =
            pool.channel(t, d, "opening a copy channel", |s| s.channel_session())?;
        let started = {
            let w = lease.conn().wire();
            w.call(d, "starting the copy", || ch.exec(cmd))
        };
        if let Err(e) = started {
            lease.mark_broken();
            return Err(e);
        }
        Ok(RemoteCat {
            lease,
            ch,
            stderr: Capture::new(4096),
        })
    }

    fn lost(&self, what: &'static str, e: impl std::fmt::Display) -> SshError {
        SshError::SessionLost {
            target: self.lease.target().label(),
            what,
            detail: e.to_string(),
        }
    }

    fn drain_stderr(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            match self.ch.stderr().read(buf) {
                Ok(n) if n > 0 => self.stderr.push(&buf[..n]),
                _ => break,
            }
        }
    }

    /// Read some bytes; 0 at end of file.
    fn read(&mut self, buf: &mut [u8], d: &Deadline) -> Result<usize, SshError> {
        loop {
            match self.ch.read(buf) {
                Ok(0) if self.ch.eof() => return Ok(0),
                Ok(0) => {}
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.lost("reading the file", e)),
            }
            let mut small = [0u8; 4096];
            self.drain_stderr(&mut small);
            let conn = self.lease.conn();
            let w = conn.wire();
            if d.expired() {
                return Err(d.error(w.target, "copy"));
            }
            w.wait(d, "copy")?;
        }
    }

    fn write_all(&mut self, mut data: &[u8], d: &Deadline) -> Result<(), SshError> {
        let mut small = [0u8; 4096];
        while !data.is_empty() {
            match self.ch.write(data) {
                Ok(n) => {
                    data = &data[n..];
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.lost("writing the file", e)),
            }
            self.drain_stderr(&mut small);
            if self.ch.eof() {
                // `cat > part` closed its output: it exited (disk full, no permission) and
                // will never take the rest.
                return Err(SshError::Channel {
                    target: self.lease.target().label(),
                    detail: "the remote side stopped reading".into(),
                });
            }
            let conn = self.lease.conn();
            let w = conn.wire();
            if d.expired() {
                return Err(d.error(w.target, "copy"));
            }
            w.wait(d, "copy")?;
        }
        Ok(())
    }

    /// A write failed: when the remote command said why (disk full, permission), report
    /// that rather than the broken channel.
    fn explain(&mut self, e: SshError, t: &Target, dest: &str) -> ScpError {
        let mut small = [0u8; 4096];
        self.drain_stderr(&mut small);
        let (text, _) = std::mem::replace(&mut self.stderr, Capture::new(0)).finish();
        if text.trim().is_empty() {
            stopped(e, dest)
        } else {
            ScpError::Remote {
                target: t.label(),
                path: dest.to_string(),
                what: "writing",
                detail: text.trim().to_string(),
            }
        }
    }

    /// Close stdin (sink), wait for the command to end; returns exit code and stderr.
    fn finish(mut self, d: &Deadline) -> Result<(i64, String), SshError> {
        let label = self.lease.target().label();
        let res = {
            let w = self.lease.conn().wire();
            let ch = &mut self.ch;
            let stderr = &mut self.stderr;
            let mut small = [0u8; 4096];
            let mut drain = |ch: &mut Channel, stderr: &mut Capture| {
                for _ in 0..64 {
                    match ch.stderr().read(&mut small) {
                        Ok(n) if n > 0 => stderr.push(&small[..n]),
                        _ => break,
                    }
                }
            };
            (|| {
                w.call(d, "finishing the copy", || ch.send_eof())?;
                let mut sink = [0u8; 4096];
                for _ in 0..1_000_000 {
                    drain(ch, stderr);
                    match ch.read(&mut sink) {
                        Ok(n) if n > 0 => continue,
                        Ok(_) | Err(_) if ch.eof() => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => {
                            return Err(SshError::SessionLost {
                                target: label.clone(),
                                what: "finishing the copy",
                                detail: e.to_string(),
                            })
                        }
                    }
                    w.wait(d, "finishing the copy")?;
                }
                drain(ch, stderr);
                w.call(d, "finishing the copy", || ch.close())?;
                w.call(d, "finishing the copy", || ch.wait_close())?;
                Ok(i64::from(ch.exit_status().unwrap_or(-1)))
            })()
        };
        match res {
            Ok(code) => {
                let (stderr, _) = std::mem::replace(&mut self.stderr, Capture::new(0)).finish();
                Ok((code, stderr))
            }
            Err(e) => {
                self.lease.mark_broken();
                Err(e)
            }
        }
    }
}

enum Source {
    Local(File, PathBuf),
    Remote(RemoteCat),
}

enum Sink<'a> {
    Local {
        file: File,
        part: PathBuf,
        dest: PathBuf,
    },
    Remote {
        cat: Box<RemoteCat>,
        pool: &'a Arc<Pool>,
        target: &'a Target,
        part: String,
        dest: String,
    },
}

fn stopped(e: SshError, dest: &str) -> ScpError {
    match e {
        SshError::Timeout { secs, .. } => ScpError::Timeout {
            path: dest.to_string(),
            secs,
        },
        SshError::Stopped { .. } => ScpError::Stopped {
            path: dest.to_string(),
        },
        other => ScpError::Ssh(other),
    }
}

/// Copy `src` to `dst` (see the module docs). `progress` (and the process's
/// [`CopyObserver`], if any) is called with bytes done and the total, at the start, at
/// most every 200 ms, and at the end.
pub fn copy(
    src: End<'_>,
    dst: End<'_>,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyReport, ScpError> {
    let started = Instant::now();
    let (from, to) = (src.describe(), dst.describe());
    let out = copy_inner(src, dst, opts, progress);
    crate::trace::copy(
        &crate::prim::secret::redact(&from),
        &crate::prim::secret::redact(&to),
        started,
        match &out {
            Ok(r) => Ok(r.bytes),
            Err(e) => Err(crate::prim::secret::redact(&e.to_string()).into_owned()),
        },
    );
    out
}

fn copy_inner(
    src: End<'_>,
    dst: End<'_>,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyReport, ScpError> {
    let timeout = opts.timeout.unwrap_or(match (src, dst) {
        (End::Remote(p, ..), _) | (_, End::Remote(p, ..)) => p.config().copy_timeout(),
        _ => DEFAULT_TIMEOUT,
    });
    let d = Deadline::new(timeout);
    let started = Instant::now();
    let dest_name = dst.describe();
    let mut reported = |p: Progress| {
        if let Some(o) = OBSERVER.get() {
            o.copy_progress(&dest_name, p);
        }
        progress(p);
    };
    let done = |bytes: u64, sha256: Option<String>| {
        let report = CopyReport {
            bytes,
            sha256,
            secs: started.elapsed().as_secs_f64(),
        };
        tracing::info!(from = %src.describe(), to = %dest_name, bytes, secs = report.secs, "copy done");
        report
    };

    // Open the source and learn its size; a large file between this node and a host may
    // go through OpenSSH's ssh instead (`[ssh] copy_transport`).
    let (mut source, total) = match src {
        End::Local(p) => {
            let f = File::open(p).map_err(local_err(p))?;
            let meta = f.metadata().map_err(local_err(p))?;
            if !meta.is_file() {
                return Err(ScpError::Local {
                    path: p.to_path_buf(),
                    source: std::io::Error::new(ErrorKind::InvalidInput, "not a regular file"),
                });
            }
            if let End::Remote(pool, t, rp) = dst {
                if let Some(client) = openssh::for_copy(pool.config(), t, meta.len())? {
                    let (bytes, sha) = via_openssh::upload(
                        &client,
                        f,
                        p,
                        meta.len(),
                        (pool, t, rp),
                        opts.sha256,
                        &d,
                        &mut reported,
                    )?;
                    return Ok(done(bytes, sha));
                }
            }
            (Source::Local(f, p.to_path_buf()), meta.len())
        }
        End::Remote(pool, t, p) => {
            let size = remote_size(pool, t, p, &d)?;
            if let End::Local(lp) = dst {
                if let Some(client) = openssh::for_copy(pool.config(), t, size)? {
                    let (bytes, sha) = via_openssh::download(
                        &client,
                        (pool, t, p),
                        size,
                        lp,
                        opts.sha256,
                        &d,
                        &mut reported,
                    )?;
                    return Ok(done(bytes, sha));
                }
            }
            let cat = RemoteCat::open(pool, t, &format!("cat -- {}", shell_quote(p)), &d)?;
            (Source::Remote(cat), size)
        }
    };

    // Open the sink under its part name.
    let mut sink = match dst {
        End::Local(p) => {
            let dest_str = p.to_string_lossy().into_owned();
            let part = PathBuf::from(part_name(&dest_str));
            // Exclusive (never follows a planted symlink) and private until complete.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&part)
                .map_err(local_err(&part))?;
            Sink::Local {
                file,
                part,
                dest: p.to_path_buf(),
            }
        }
        End::Remote(pool, t, p) => {
            let part = part_name(p);
            let cat = RemoteCat::open(pool, t, &sink_command(&part), &d)?;
            Sink::Remote {
                cat: Box::new(cat),
                pool,
                target: t,
                part,
                dest: p.to_string(),
            }
        }
    };

    let result = pump(
        &mut source,
        &mut sink,
        total,
        opts.sha256,
        &d,
        &mut reported,
        &dest_name,
    );
    let result = result.and_then(|(bytes, sha)| {
        finish_source(
            source,
            src,
            &d,
            sha.as_deref(),
            matches!(dst, End::Local(_)),
        )?;
        Ok((bytes, sha))
    });
    match result {
        Ok((bytes, sha)) => {
            if bytes != total {
                abort(sink);
                return Err(ScpError::SizeMismatch {
                    path: dest_name,
                    expected: total,
                    got: bytes,
                });
            }
            commit(sink, total, sha.as_deref(), &d)?;
            Ok(done(bytes, sha))
        }
        Err(e) => {
            abort(sink);
            Err(e)
        }
    }
}

/// Starts the write-back of a local part file while data still arrives, so the `fsync`
/// before the rename has only the tail left to write (the disk works during the copy,
/// not after it). Best effort: a failure here only leaves more for the `fsync`.
struct WriteBack {
    started: u64,
}

impl WriteBack {
    /// Write-back is started for every this many new bytes.
    const STEP: u64 = 32 * 1024 * 1024;

    fn new() -> Self {
        WriteBack { started: 0 }
    }

    /// The file now holds `len` bytes.
    fn advance(&mut self, file: &File, len: u64) {
        if len < self.started + Self::STEP {
            return;
        }
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(self.started),
            libc::off64_t::try_from(len - self.started),
        ) else {
            return;
        };
        // SAFETY: a hint on a descriptor we own; no memory is involved.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.started = len;
    }
}

fn pump(
    source: &mut Source,
    sink: &mut Sink<'_>,
    total: u64,
    want_sha: bool,
    d: &Deadline,
    progress: &mut dyn FnMut(Progress),
    dest: &str,
) -> Result<(u64, Option<String>), ScpError> {
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = want_sha.then(Sha256::new);
    let mut done: u64 = 0;
    let mut last = Instant::now();
    let mut write_back = WriteBack::new();
    progress(Progress { done: 0, total });
    // Bounded: each turn moves at least one byte or ends; the deadline ends stalls.
    loop {
        let n = match source {
            Source::Local(f, p) => {
                d.check("local", "copy").map_err(|e| stopped(e, dest))?;
                f.read(&mut buf).map_err(local_err(p))?
            }
            Source::Remote(cat) => cat.read(&mut buf, d).map_err(|e| stopped(e, dest))?,
        };
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        if let Some(h) = hasher.as_mut() {
            h.update(data);
        }
        match sink {
            Sink::Local { file, part, .. } => {
                file.write_all(data).map_err(local_err(part))?;
                write_back.advance(file, done + n as u64);
            }
            Sink::Remote { cat, target, .. } => {
                if let Err(e) = cat.write_all(data, d) {
                    return Err(cat.explain(e, target, dest));
                }
            }
        }
        done += n as u64;
        if done > total {
            // The file grew while being copied; the size check below reports it.
            break;
        }
        if last.elapsed() >= PROGRESS_EVERY {
            progress(Progress { done, total });
            last = Instant::now();
        }
    }
    progress(Progress { done, total });
    Ok((done, hasher.map(|h| hex(&h.finalize()))))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// End the source; for a remote source copied to a local file, compare the source's own
/// checksum with what arrived.
fn finish_source(
    source: Source,
    src: End<'_>,
    d: &Deadline,
    sha: Option<&str>,
    to_local: bool,
) -> Result<(), ScpError> {
    match (source, src) {
        (Source::Local(..), _) => Ok(()),
        (Source::Remote(cat), End::Remote(pool, t, p)) => {
            let (code, stderr) = cat.finish(d)?;
            if code != 0 {
                return Err(ScpError::Remote {
                    target: t.label(),
                    path: p.to_string(),
                    what: "reading",
                    detail: stderr.trim().to_string(),
                });
            }
            if let (Some(got), true) = (sha, to_local) {
                let expected = remote_sha(pool, t, p, d)?;
                if expected != got {
                    return Err(ScpError::ChecksumMismatch {
                        path: p.to_string(),
                        expected,
                        got: got.to_string(),
                    });
                }
            }
            Ok(())
        }
        (Source::Remote(_), End::Local(_)) => Ok(()),
    }
}

/// Check size (and checksum) of the part file, then rename it to the destination.
fn commit(sink: Sink<'_>, total: u64, sha: Option<&str>, d: &Deadline) -> Result<(), ScpError> {
    match sink {
        Sink::Local { file, part, dest } => {
            let res = (|| {
                let file = file;
                file.sync_data().map_err(local_err(&part))?;
                let got = file.metadata().map_err(local_err(&part))?.len();
                if got != total {
                    return Err(ScpError::SizeMismatch {
                        path: dest.display().to_string(),
                        expected: total,
                        got,
                    });
                }
                drop(file);
                std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644))
                    .map_err(local_err(&part))?;
                std::fs::rename(&part, &dest).map_err(local_err(&dest))
            })();
            if res.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            res
        }
        Sink::Remote {
            cat,
            pool,
            target,
            part,
            dest,
        } => {
            let res = (|| {
                let (code, stderr) = cat.finish(d)?;
                if code != 0 {
                    return Err(ScpError::Remote {
                        target: target.label(),
                        path: dest.clone(),
                        what: "writing",
                        detail: stderr.trim().to_string(),
                    });
                }
                publish_remote(pool, target, &part, &dest, total, sha, d)
            })();
            if res.is_err() {
                remove_remote_part(pool, target, &part);
            }
            res
        }
    }
}

/// Check the size (and checksum) of a complete remote part file, then rename it to `dest`.
fn publish_remote(
    pool: &Arc<Pool>,
    target: &Target,
    part: &str,
    dest: &str,
    total: u64,
    sha: Option<&str>,
    d: &Deadline,
) -> Result<(), ScpError> {
    let got = remote_size(pool, target, part, d)?;
    if got != total {
        return Err(ScpError::SizeMismatch {
            path: dest.to_string(),
            expected: total,
            got,
        });
    }
    if let Some(expected) = sha {
        let got = remote_sha(pool, target, part, d)?;
        if got != expected {
            return Err(ScpError::ChecksumMismatch {
                path: dest.to_string(),
                expected: expected.to_string(),
                got,
            });
        }
    }
    let out = helper(pool, target, &commit_command(part, dest), d)?;
    if out.code != 0 {
        return Err(remote_fail(target, dest, "renaming the copy to", &out));
    }
    Ok(())
}

/// Copies whose bytes go through OpenSSH's `ssh` ([`openssh`]): the local file is `ssh`'s
/// stdin or stdout, so no byte passes through this process. The rest is the same as
/// through libssh2: a private part file created exclusively, the size (and SHA-256)
/// checked, then renamed; removed when the copy fails.
mod via_openssh {
    use std::io::Seek;
    use std::os::unix::fs::FileExt;
    use std::process::Stdio;
    use std::sync::atomic::AtomicBool;

    use super::*;

    type RemoteEnd<'a> = (&'a Arc<Pool>, &'a Target, &'a str);

    /// SHA-256 of the file behind `f` from offset 0 to its end (positional reads: the
    /// descriptor's offset, shared with `ssh`, is not moved); stops when `stop` is set or
    /// `d` passes.
    fn hash_file(
        f: &File,
        path: &Path,
        stop: &AtomicBool,
        d: &Deadline,
        what: &str,
    ) -> Result<String, ScpError> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut at: u64 = 0;
        // Bounded: each turn reads at least one byte or ends; the deadline ends the rest.
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(ScpError::Stopped {
                    path: what.to_string(),
                });
            }
            d.check("local", "checksumming")
                .map_err(|e| stopped(e, what))?;
            let n = f.read_at(&mut buf, at).map_err(local_err(path))?;
            if n == 0 {
                return Ok(hex(&h.finalize()));
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
    }

    fn describe(t: &Target, path: &str) -> String {
        format!("{}:{path}", t.label())
    }

    /// Upload `file` (of `total` bytes, opened from `path`) to `dest` on the host.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upload(
        client: &openssh::Client,
        file: File,
        path: &Path,
        total: u64,
        (pool, t, dest): RemoteEnd<'_>,
        want_sha: bool,
        d: &Deadline,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(u64, Option<String>), ScpError> {
        let dest_name = describe(t, dest);
        // The pool checks the host key under the target's policy (and records it under
        // accept-new) before ssh, told to be strict with the same file, connects.
        drop(pool.lease(t, d)?);
        // Same open file description as ssh's stdin: its offset is how far ssh has read.
        let watch = file.try_clone().map_err(local_err(path))?;
        let for_hash = file.try_clone().map_err(local_err(path))?;
        let part = part_name(dest);
        let what = format!("upload to {}", shell_quote(dest));
        let stop = AtomicBool::new(false);
        progress(Progress { done: 0, total });
        let (ran, sha) = std::thread::scope(|sc| {
            let hasher =
                want_sha.then(|| sc.spawn(|| hash_file(&for_hash, path, &stop, d, &dest_name)));
            let mut last = Instant::now();
            let ran = client.run(
                &sink_command(&part),
                Stdio::from(file),
                Stdio::null(),
                d,
                &what,
                &mut || {
                    if last.elapsed() >= PROGRESS_EVERY {
                        let done = (&watch).stream_position().unwrap_or(0).min(total);
                        progress(Progress { done, total });
                        last = Instant::now();
                    }
                },
            );
            if ran.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let sha = hasher.map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ScpError::Local {
                        path: path.to_path_buf(),
                        source: std::io::Error::other("checksum thread panicked"),
                    })
                })
            });
            (ran, sha)
        });
        let res = (|| {
            let ended = ran.map_err(|e| stopped(e, &dest_name))?;
            if ended.code != 0 {
                return Err(remote_failed(
                    t,
                    dest,
                    "writing",
                    ended.code.into(),
                    &ended.stderr,
                ));
            }
            let sha = sha.transpose()?;
            let bytes = (&watch).stream_position().map_err(local_err(path))?;
            progress(Progress { done: bytes, total });
            if bytes != total {
                return Err(ScpError::SizeMismatch {
                    path: dest_name.clone(),
                    expected: total,
                    got: bytes,
                });
            }
            publish_remote(pool, t, &part, dest, total, sha.as_deref(), d)?;
            Ok((bytes, sha))
        })();
        if res.is_err() {
            remove_remote_part(pool, t, &part);
        }
        res
    }

    /// Download `src` (of `total` bytes) from the host to `dest`.
    pub(super) fn download(
        client: &openssh::Client,
        (pool, t, src): RemoteEnd<'_>,
        total: u64,
        dest: &Path,
        want_sha: bool,
        d: &Deadline,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(u64, Option<String>), ScpError> {
        let dest_name = dest.display().to_string();
        let part = PathBuf::from(part_name(&dest.to_string_lossy()));
        // Exclusive (never follows a planted symlink) and private until complete.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(local_err(&part))?;
        let res = (|| {
            let out = file.try_clone().map_err(local_err(&part))?;
            let what = format!("download of {}", shell_quote(src));
            progress(Progress { done: 0, total });
            let mut last = Instant::now();
            let mut write_back = WriteBack::new();
            let ended = client
                .run(
                    &format!("cat -- {}", shell_quote(src)),
                    Stdio::null(),
                    Stdio::from(out),
                    d,
                    &what,
                    &mut || {
                        let done = file.metadata().map(|m| m.len()).unwrap_or(0);
                        write_back.advance(&file, done);
                        if last.elapsed() >= PROGRESS_EVERY {
                            progress(Progress {
                                done: done.min(total),
                                total,
                            });
                            last = Instant::now();
                        }
                    },
                )
                .map_err(|e| stopped(e, &dest_name))?;
            if ended.code != 0 {
                return Err(remote_failed(
                    t,
                    src,
                    "reading",
                    ended.code.into(),
                    &ended.stderr,
                ));
            }
            let bytes = file.metadata().map_err(local_err(&part))?.len();
            progress(Progress { done: bytes, total });
            if bytes != total {
                return Err(ScpError::SizeMismatch {
                    path: dest_name.clone(),
                    expected: total,
                    got: bytes,
                });
            }
            let sha = if want_sha {
                let got = hash_file(&file, &part, &AtomicBool::new(false), d, &dest_name)?;
                let expected = remote_sha(pool, t, src, d)?;
                if expected != got {
                    return Err(ScpError::ChecksumMismatch {
                        path: src.to_string(),
                        expected,
                        got,
                    });
                }
                Some(got)
            } else {
                None
            };
            Ok((bytes, sha))
        })();
        match res {
            Ok((bytes, sha)) => {
                let sink = Sink::Local {
                    file,
                    part,
                    dest: dest.to_path_buf(),
                };
                commit(sink, total, None, d)?;
                Ok((bytes, sha))
            }
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }
}

fn remove_remote_part(pool: &Arc<Pool>, target: &Target, part: &str) {
    let d = Deadline::cleanup(Duration::from_secs(5));
    if let Err(e) = helper(pool, target, &format!("rm -f -- {}", shell_quote(part)), &d) {
        tracing::warn!(target = %target, part, error = %e, "could not remove the part file of a failed copy");
    }
}

/// A failed copy: drop the sink's channel (its session is broken or mid-stream) and
/// remove the part file.
fn abort(sink: Sink<'_>) {
    match sink {
        Sink::Local { file, part, .. } => {
            drop(file);
            let _ = std::fs::remove_file(&part);
        }
        Sink::Remote {
            mut cat,
            pool,
            target,
            part,
            ..
        } => {
            cat.lease.mark_broken();
            drop(cat);
            remove_remote_part(pool, target, &part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_unpredictable() {
        let a = part_name("/x/f");
        let b = part_name("/x/f");
        assert_ne!(a, b);
        assert!(
            a.starts_with("/x/f.provhost-part-") && a.len() == "/x/f.provhost-part-".len() + 16
        );
    }

    #[test]
    fn the_sink_refuses_a_planted_symlink_and_creates_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        let part = dir.path().join("dest.provhost-part-planted");
        std::os::unix::fs::symlink(&victim, &part).expect("symlink");
        let run = |cmd: String| {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sh");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"attacker-controlled")
                .ok();
            child.wait().expect("wait")
        };
        let st = run(sink_command(&part.display().to_string()));
        assert!(!st.success(), "writing through a planted symlink must fail");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
        // A dangling symlink (to a file that does not exist yet) is not followed either.
        let target = dir.path().join("created-through-link");
        let part2 = dir.path().join("dest.provhost-part-dangling");
        std::os::unix::fs::symlink(&target, &part2).expect("symlink");
        assert!(!run(sink_command(&part2.display().to_string())).success());
        assert!(!target.exists());
        // A fresh name is created 0600 and receives the data.
        let fresh = dir.path().join("dest.provhost-part-fresh");
        assert!(run(sink_command(&fresh.display().to_string())).success());
        let meta = std::fs::metadata(&fresh).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Committing a symlink is refused; a regular file is published 0644.
        let dest = dir.path().join("dest");
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(commit_command(
                &part.display().to_string(),
                &dest.display().to_string(),
            ))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("sh");
        assert!(!st.success());
        assert!(!dest.exists());
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(commit_command(
                &fresh.display().to_string(),
                &dest.display().to_string(),
            ))
            .status()
            .expect("sh");
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(&dest).expect("dest"),
            "attacker-controlled"
        );
        assert_eq!(
            std::fs::metadata(&dest).expect("m").permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn shell_quote_survives_a_real_shell() {
        for s in [
            "plain",
            "with space",
            "it's",
            "\"dq\" $HOME `id` \\ ;&|",
            "",
            "'",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn local_copies_verify_size_and_leave_no_part_file_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("a.bin");
        std::fs::write(&src, vec![1u8; 700_000]).expect("write");
        let dst = dir.path().join("b.bin");
        let mut calls = Vec::new();
        let opts = CopyOptions {
            sha256: true,
            ..CopyOptions::default()
        };
        let rep = copy(End::Local(&src), End::Local(&dst), &opts, &mut |p| {
            calls.push(p)
        })
        .expect("copy");
        assert_eq!(rep.bytes, 700_000);
        assert_eq!(calls.last().map(Progress::percent), Some(100));
        assert_eq!(std::fs::read(&dst).expect("dst").len(), 700_000);
        let missing_dir = dir.path().join("nope/c.bin");
        assert!(copy(
            End::Local(&src),
            End::Local(&missing_dir),
            &opts,
            &mut |_| {}
        )
        .is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("provhost-part")),
            "{names:?}"
        );
    }
}
