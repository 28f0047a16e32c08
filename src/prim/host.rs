//! [`Host`]: where a script's commands and copies go — the management node itself (a
//! local process) or a remote machine (a pooled SSH session). Both give the same
//! [`Output`] shape, the same output bounds and the same time-outs, so a script can treat
//! the embedded setup's local VM host and a remote one alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::prim::local::{self, LocalError};
use crate::prim::scp::{self, CopyOptions, CopyReport, End, Progress, ScpError};
use crate::prim::ssh::io::Deadline;
use crate::prim::ssh::{known_hosts, ExecOptions, Output, Pool, SshConfig, SshError, Target};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl RunError {
    /// The routine's deadline passed or it was cancelled (not the command's own time-out).
    pub fn is_stop(&self) -> bool {
        matches!(
            self,
            RunError::Ssh(SshError::Stopped { .. }) | RunError::Local(LocalError::Stopped)
        )
    }
}

/// A machine commands run on.
#[derive(Clone)]
pub enum Host {
    /// The management node; the config gives the default time-out and output bound.
    Local(Arc<SshConfig>),
    /// A machine reached over SSH through the shared pool.
    Remote { pool: Arc<Pool>, target: Target },
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Host {
    pub fn local(cfg: Arc<SshConfig>) -> Host {
        Host::Local(cfg)
    }

    pub fn remote(pool: Arc<Pool>, target: Target) -> Host {
        Host::Remote { pool, target }
    }

    /// `local` or `user@host:port`.
    pub fn label(&self) -> String {
        match self {
            Host::Local(_) => "local".into(),
            Host::Remote { target, .. } => target.label(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Host::Local(_))
    }

    /// Run `cmd` (through `sh -c` locally, the login shell remotely).
    pub fn run(&self, cmd: &str, opts: &ExecOptions) -> Result<Output, RunError> {
        self.run_input(cmd, None, opts)
    }

    /// Run `cmd` with `input` on its stdin, then EOF (`None`: no input). Secrets go this
    /// way, never on the command line.
    pub fn run_input(
        &self,
        cmd: &str,
        input: Option<&[u8]>,
        opts: &ExecOptions,
    ) -> Result<Output, RunError> {
        let started = std::time::Instant::now();
        let out: Result<Output, RunError> = match self {
            Host::Local(cfg) => local::exec_input(
                cmd,
                input,
                opts.timeout.unwrap_or(cfg.command_timeout()),
                opts.max_output.unwrap_or(cfg.max_output_bytes),
            )
            .map_err(RunError::from),
            Host::Remote { pool, target } => pool
                .exec_input(target, cmd, input.unwrap_or_default(), opts)
                .map_err(RunError::from),
        };
        // The routine's waterfall and the metrics: the command as the log would show it.
        crate::trace::command(
            &self.label(),
            &crate::prim::secret::redact(cmd),
            started,
            match &out {
                Ok(o) => Ok(o.code),
                Err(e) => Err(crate::prim::secret::redact(&e.to_string()).into_owned()),
            },
        );
        out
    }

    /// The local TCP ports of every SSH session this process's pool holds to this host's
    /// address and port (idle, in use, or being connected; any user or host key policy):
    /// how the host tells provhost's own connections from a user's that comes from the same
    /// address. Empty for the local host. Other processes' sessions are not known here.
    pub fn session_ports(&self) -> Vec<u16> {
        match self {
            Host::Local(_) => Vec::new(),
            Host::Remote { pool, target } => pool.session_ports(target),
        }
    }

    /// This host's side of a copy.
    pub fn end<'a>(&'a self, path: &'a str) -> End<'a> {
        match self {
            Host::Local(_) => End::Local(Path::new(path)),
            Host::Remote { pool, target } => End::Remote(pool, target, path),
        }
    }

    /// Copy a management-node file to this host.
    pub fn upload(
        &self,
        local: &Path,
        remote: &str,
        opts: &CopyOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<CopyReport, ScpError> {
        scp::copy(End::Local(local), self.end(remote), opts, progress)
    }

    /// Copy a file from this host to the management node.
    pub fn download(
        &self,
        remote: &str,
        local: &Path,
        opts: &CopyOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<CopyReport, ScpError> {
        scp::copy(self.end(remote), End::Local(local), opts, progress)
    }

    /// Wait until the host accepts SSH and runs `true`, trying every `interval`, for at
    /// most `timeout` (cut by the routine's deadline). `Ok(false)` on time-out; `Err` only
    /// when the routine was stopped or the host key changed (retrying cannot help).
    /// The local host is always ready.
    pub fn wait_for_ssh(&self, timeout: Duration, interval: Duration) -> Result<bool, SshError> {
        let Host::Remote { pool, target } = self else {
            return Ok(true);
        };
        let d = Deadline::new(timeout);
        let interval = interval.max(Duration::from_millis(50));
        // Bounded by the deadline; the count is a second guard.
        for _ in 0..1_000_000u32 {
            let attempt = d
                .left()
                .min(pool.config().connect_timeout() + Duration::from_secs(5));
            if attempt.is_zero() {
                break;
            }
            let opts = ExecOptions {
                timeout: Some(attempt),
                max_output: Some(4096),
                kill_on_timeout: true,
            };
            match pool.exec(target, "true", &opts) {
                Ok(o) if o.code == 0 => return Ok(true),
                Ok(_) => {}
                Err(e @ (SshError::Stopped { .. } | SshError::HostKeyChanged { .. })) => {
                    return Err(e)
                }
                Err(e) => tracing::debug!(target = %target, error = %e, "not answering yet"),
            }
            if d.check(&target.label(), "waiting for SSH").is_err() {
                return match d.error(&target.label(), "waiting for SSH") {
                    e @ SshError::Stopped { .. } => Err(e),
                    _ => Ok(false),
                };
            }
            std::thread::sleep(interval.min(d.left()));
        }
        Ok(false)
    }

    /// Forget this host's recorded host keys (it was reinstalled); the next connect
    /// records the new key (accept-new) or needs it added (strict). Also closes idle
    /// sessions, which were verified against the old key.
    pub fn forget_host_key(&self) -> Result<usize, SshError> {
        match self {
            Host::Local(_) => Ok(0),
            Host::Remote { pool, target } => {
                let n = known_hosts::forget(&pool.config().known_hosts, &target.host, target.port)?;
                pool.close_idle();
                Ok(n)
            }
        }
    }
}

impl Host {
    /// Pin `public_key` as this host's only acceptable host key (see
    /// [`known_hosts::pin`]); idle sessions, verified against whatever key was there, close.
    pub fn trust_host_key(&self, public_key: &str) -> Result<(), SshError> {
        match self {
            Host::Local(_) => Ok(()),
            Host::Remote { pool, target } => {
                known_hosts::pin(
                    &pool.config().known_hosts,
                    &target.host,
                    target.port,
                    public_key,
                )?;
                pool.close_idle();
                Ok(())
            }
        }
    }
}

/// Copy `path_a` on `a` to `path_b` on `b` (through this node; for the image library
/// between management nodes).
pub fn scp_between(
    a: &Host,
    path_a: &str,
    b: &Host,
    path_b: &str,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyReport, ScpError> {
    scp::copy(a.end(path_a), b.end(path_b), opts, progress)
}
