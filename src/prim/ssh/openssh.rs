//! The system's OpenSSH client (`ssh`) as the data transport of large copies between this
//! node and a host (`[ssh] copy_transport`). This module owns deciding whether OpenSSH can
//! carry a copy (the program runs, the target and files can be named to it unambiguously,
//! a cipher in common), building its command line from provhost's own settings, and
//! running one transfer under a deadline. The copy itself — part file, size and SHA-256
//! checks, rename, clean-up — stays in [`crate::prim::scp`]; here only bytes move, and
//! they never pass through provhost: the local file is `ssh`'s stdin (upload) or stdout
//! (download).
//!
//! Why: libssh2 encrypts with its own reference ChaCha20-Poly1305 and calls OpenSSL 16
//! bytes at a time for AES, so a copy through it costs 2–4× the client CPU of OpenSSH's
//! and runs at 40–85% of its speed (docs/BENCHMARKS.md, "Copies").
//!
//! What `ssh` is told: `-F /dev/null` (no user or system configuration), provhost's
//! identity file only (`IdentitiesOnly`, no agent, no password or keyboard prompts,
//! `BatchMode`), provhost's known_hosts file with `StrictHostKeyChecking=yes` (no global
//! file, no key updates, no IP check), the connect timeout, keepalives, no forwarding, no
//! multiplexing, and `[ssh] ciphers` cut to those the program knows. The session pool has
//! already checked — and under accept-new recorded — the host's key under the target's
//! policy before `ssh` starts, so `ssh` only has to find that same key; a pinned host is
//! offered only its pinned key types, as the pool does. Nothing secret is on the command
//! line: options, names and paths only.
//!
//! When OpenSSH cannot express the target — a host or user name that is not plain, a key
//! or known_hosts path it would expand (`%`, `$`, `~`) or split (spaces), no program, no
//! cipher in common — `auto` falls back to libssh2 and `openssh` is an error saying why.
//! `ssh` runs in its own process group, dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), and is killed with its group when the copy's deadline passes or
//! the routine is stopped (checked every 50 ms).

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::exec::Capture;
use super::io::Deadline;
use super::{known_hosts, CopyTransport, SshConfig, SshError, Target};

/// Longest wait for `ssh -Q cipher`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest single wait while a transfer runs; deadline and stop flag are checked between.
const SLICE: Duration = Duration::from_millis(50);
/// Bytes of `ssh`'s stderr kept for the error message.
const STDERR_CAP: usize = 4096;
/// Keepalive interval (s) and count: a peer silent for 60 s ends the transfer.
const ALIVE_SECS: u32 = 15;
const ALIVE_COUNT: u32 = 4;

/// OpenSSH's `ssh`, ready to reach one target.
#[derive(Debug, Clone)]
pub struct Client {
    program: PathBuf,
    args: Vec<String>,
    label: String,
}

/// How a transfer's `ssh` ended when it was not its own failure: the remote command's exit
/// code and the start of the stderr (the remote command's, and `ssh`'s warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub code: i32,
    pub stderr: String,
}

/// The client for a copy of `size` bytes between this node and `target`, or `None` when
/// libssh2 carries it: `copy_transport = "libssh2"`, a small file under `auto`, or (under
/// `auto`, logged at debug) OpenSSH cannot be used. `Err` only under `openssh`, saying why
/// it cannot.
pub fn for_copy(cfg: &SshConfig, target: &Target, size: u64) -> Result<Option<Client>, SshError> {
    match cfg.copy_transport {
        CopyTransport::Libssh2 => return Ok(None),
        CopyTransport::Auto if size < cfg.openssh_min_bytes => return Ok(None),
        CopyTransport::Auto | CopyTransport::Openssh => {}
    }
    match Client::new(cfg, target) {
        Ok(c) => Ok(Some(c)),
        Err(why) if cfg.copy_transport == CopyTransport::Auto => {
            tracing::debug!(target = %target, reason = %why, "copy through libssh2: OpenSSH's ssh cannot be used");
            Ok(None)
        }
        Err(why) => Err(SshError::OpenSsh {
            target: target.label(),
            what: "a copy".into(),
            detail: format!("{why} ([ssh] copy_transport = \"openssh\")"),
        }),
    }
}

/// A host name or address `ssh` takes as it is (no option, no user part, no spaces).
fn plain_host(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

fn plain_user(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A path `ssh` reads as it is: it expands `~`, `%` tokens and `${VAR}` in identity and
/// known_hosts paths, splits the latter on spaces, and reads `#` as a comment.
fn plain_path(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        !s.is_empty()
            && !s.starts_with('~')
            && !s.starts_with('-')
            && s.chars().all(|c| {
                !c.is_whitespace()
                    && !c.is_control()
                    && !matches!(c, '%' | '$' | '"' | '\'' | '\\' | '#')
            })
    })
}

/// The ciphers a program knows (`PROGRAM -Q cipher`), asked once per program and kept
/// (a failure is not kept: a program installed later is found).
fn known_ciphers(program: &Path) -> Result<Vec<String>, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Vec<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(list) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(program) {
        return Ok(list.clone());
    }
    let list = probe(program)?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(program.to_path_buf(), list.clone());
    Ok(list)
}

fn probe(program: &Path) -> Result<Vec<String>, String> {
    let name = program.display();
    let mut child = Command::new(program)
        .args(["-Q", "cipher"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    let started = Instant::now();
    // Bounded by PROBE_TIMEOUT; the answer is a few hundred bytes (fits the pipe).
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} -Q cipher did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.by_ref().take(64 * 1024).read_to_string(&mut text);
    }
    let list: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if !status.success() || list.is_empty() {
        return Err(format!(
            "{name} -Q cipher answered {status} with no cipher list: is it OpenSSH's ssh?"
        ));
    }
    Ok(list)
}

/// OpenSSH's host key algorithms for a pinned key type (libssh2 names RSA keys `ssh-rsa`;
/// OpenSSH verifies them with the SHA-2 signatures).
fn host_key_algorithms(types: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for t in types {
        match t.as_str() {
            "ssh-rsa" => out.extend(["rsa-sha2-512", "rsa-sha2-256"]),
            other => out.push(other),
        }
    }
    out.dedup();
    out.join(",")
}

impl Client {
    /// The client for `target` under `cfg`, or why OpenSSH cannot reach it.
    pub fn new(cfg: &SshConfig, target: &Target) -> Result<Client, String> {
        if !plain_host(&target.host) {
            return Err(format!(
                "host name {:?} is not a plain name or address",
                target.host
            ));
        }
        if !plain_user(&target.user) {
            return Err(format!("user name {:?} is not a plain name", target.user));
        }
        for (what, p) in [
            ("identity file", &target.identity),
            ("known_hosts file", &cfg.known_hosts),
        ] {
            if !plain_path(p) {
                return Err(format!(
                    "{what} path {} has characters ssh would expand or split",
                    p.display()
                ));
            }
        }
        let known = known_ciphers(&cfg.openssh_program)?;
        let wanted: Vec<&str> = cfg
            .ciphers
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let ciphers: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| known.iter().any(|k| k == c))
            .collect();
        if !wanted.is_empty() && ciphers.is_empty() {
            return Err(format!(
                "none of [ssh] ciphers ({}) is known to {}",
                cfg.ciphers,
                cfg.openssh_program.display()
            ));
        }
        let kh = cfg.known_hosts.display().to_string();
        let mut args: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        args.extend(["-T", "-x", "-a", "-e", "none"].map(String::from));
        args.extend([
            "-i".into(),
            target.identity.display().to_string(),
            "-l".into(),
            target.user.clone(),
            "-p".into(),
            target.port.to_string(),
        ]);
        let mut opts = vec![
            "BatchMode=yes".to_string(),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "PubkeyAuthentication=yes".into(),
            "PasswordAuthentication=no".into(),
            "KbdInteractiveAuthentication=no".into(),
            "HostbasedAuthentication=no".into(),
            "GSSAPIAuthentication=no".into(),
            "StrictHostKeyChecking=yes".into(),
            format!("UserKnownHostsFile={kh}"),
            "GlobalKnownHostsFile=/dev/null".into(),
            "UpdateHostKeys=no".into(),
            "CheckHostIP=no".into(),
            "HashKnownHosts=no".into(),
            format!("ConnectTimeout={}", cfg.connect_timeout().as_secs()),
            format!("ServerAliveInterval={ALIVE_SECS}"),
            format!("ServerAliveCountMax={ALIVE_COUNT}"),
            "ControlMaster=no".into(),
            "ControlPath=none".into(),
            "ClearAllForwardings=yes".into(),
            "PermitLocalCommand=no".into(),
            "Compression=no".into(),
            "LogLevel=ERROR".into(),
        ];
        if !ciphers.is_empty() {
            opts.push(format!("Ciphers={}", ciphers.join(",")));
        }
        let pins = known_hosts::pinned(&cfg.known_hosts, &target.host, target.port);
        if !pins.is_empty() {
            opts.push(format!("HostKeyAlgorithms={}", host_key_algorithms(&pins)));
        }
        for o in opts {
            args.push("-o".into());
            args.push(o);
        }
        args.push("--".into());
        args.push(target.host.clone());
        Ok(Client {
            program: cfg.openssh_program.clone(),
            args,
            label: target.label(),
        })
    }

    /// The program and arguments, the remote command last (for tests and messages).
    pub fn command_line(&self, remote_cmd: &str) -> Vec<String> {
        let mut v = vec![self.program.display().to_string()];
        v.extend(self.args.iter().cloned());
        v.push(remote_cmd.to_string());
        v
    }

    /// Run `remote_cmd` on the host with `stdin` and `stdout` (a file, or null) until it
    /// ends; `tick` is called about every 50 ms meanwhile. `what` names the transfer in
    /// errors (`upload to '/srv/x'`). When `d` passes or the routine is stopped, `ssh` is
    /// killed and the deadline's error returned; `ssh`'s own failure (exit 255, a signal) is
    /// [`SshError::OpenSsh`] with its message. Any other exit is the remote command's.
    pub fn run(
        &self,
        remote_cmd: &str,
        stdin: Stdio,
        stdout: Stdio,
        d: &Deadline,
        what: &str,
        tick: &mut dyn FnMut(),
    ) -> Result<Ended, SshError> {
        let fail = |detail: String| SshError::OpenSsh {
            target: self.label.clone(),
            what: what.to_string(),
            detail,
        };
        d.check(&self.label, "copy")?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .arg(remote_cmd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("LC_ALL", "C")
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            fail(format!(
                "cannot run {}: {e}",
                self.program.as_path().display()
            ))
        })?;
        let mut stderr = Capture::new(STDERR_CAP);
        let Some(mut err_pipe) = child.stderr.take() else {
            stop(&mut child);
            return Err(fail("no stderr pipe".into()));
        };
        set_nonblocking(&err_pipe);
        let mut err_open = true;
        // Bounded by `d`: every turn waits at most one slice, then checks it.
        let status = loop {
            if err_open {
                wait_readable(&err_pipe, d.left().min(SLICE));
                err_open = drain(&mut err_pipe, &mut stderr);
            } else {
                std::thread::sleep(d.left().min(Duration::from_millis(5)));
            }
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => {
                    stop(&mut child);
                    return Err(fail(format!("waiting for ssh: {e}")));
                }
            }
            tick();
            if let Err(e) = d.check(&self.label, "copy") {
                stop(&mut child);
                return Err(e);
            }
        };
        if err_open {
            drain(&mut err_pipe, &mut stderr);
        }
        let (text, _) = stderr.finish();
        let text = text.trim().to_string();
        ended(status, text).map_err(fail)
    }
}

/// The remote command's exit, or `ssh`'s own failure as a message.
fn ended(status: ExitStatus, stderr: String) -> Result<Ended, String> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(255), _) => Err(if stderr.is_empty() {
            "exit code 255".into()
        } else {
            stderr
        }),
        (Some(code), _) => Ok(Ended { code, stderr }),
        (None, Some(sig)) => Err(format!("ssh was killed by signal {sig}")),
        (None, None) => Err(format!("ssh ended with {status}")),
    }
}

/// Kill `ssh` with its process group (anything a wrapper program started too), and reap it.
fn stop(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling the process group of our own unreaped child (pgid = its pid).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn set_nonblocking(p: &ChildStderr) {
    let fd = p.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn wait_readable(p: &ChildStderr, max: Duration) {
    let mut pfd = libc::pollfd {
        fd: p.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = max.as_millis().clamp(1, 1000) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Read what the pipe holds now; false once it reached end of file.
fn drain(p: &mut ChildStderr, into: &mut Capture) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match p.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => into.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_ssh_would_misread_are_refused() {
        assert!(plain_host("10.0.0.5") && plain_host("::1") && plain_host("vm-1.lab"));
        assert!(!plain_host("-oProxyCommand=x") && !plain_host("a b") && !plain_host("u@h"));
        assert!(!plain_host(""));
        assert!(plain_user("root") && plain_user("vcl.admin"));
        assert!(!plain_user("-l") && !plain_user("a%u") && !plain_user("a b"));
        assert!(plain_path(Path::new("/etc/provhost/data/ssh/id_ed25519")));
        for bad in [
            "~/.ssh/id",
            "/a/%h",
            "/a/${HOME}",
            "/a b/key",
            "/a/#k",
            "-x",
            "",
        ] {
            assert!(!plain_path(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn pinned_rsa_keys_are_offered_as_sha2_signatures() {
        assert_eq!(
            host_key_algorithms(&["ssh-ed25519".into(), "ssh-rsa".into()]),
            "ssh-ed25519,rsa-sha2-512,rsa-sha2-256"
        );
    }

    #[test]
    fn exit_255_and_signals_are_ssh_failures_other_codes_the_remote_commands() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            ended(ExitStatus::from_raw(1 << 8), "No space left".into()),
            Ok(Ended {
                code: 1,
                stderr: "No space left".into()
            })
        );
        assert_eq!(
            ended(ExitStatus::from_raw(255 << 8), String::new()),
            Err("exit code 255".into())
        );
        assert!(ended(ExitStatus::from_raw(9), String::new())
            .expect_err("signal")
            .contains("signal 9"));
    }

    #[test]
    fn libssh2_is_chosen_by_configuration_size_or_a_missing_program() {
        let target = Target {
            host: "127.0.0.1".into(),
            port: 22,
            user: "root".into(),
            identity: "/nonexistent/id".into(),
            host_key: super::super::HostKeyPolicy::Strict,
        };
        let mut cfg = SshConfig {
            openssh_program: "/nonexistent/ssh".into(),
            ..SshConfig::default()
        };
        assert!(for_copy(&cfg, &target, 1 << 30).expect("auto").is_none());
        assert!(for_copy(&cfg, &target, 1).expect("small").is_none());
        cfg.copy_transport = CopyTransport::Libssh2;
        assert!(for_copy(&cfg, &target, 1 << 30).expect("libssh2").is_none());
        cfg.copy_transport = CopyTransport::Openssh;
        let err = for_copy(&cfg, &target, 1).expect_err("no program");
        assert!(err.to_string().contains("/nonexistent/ssh"), "{err}");
    }
}
