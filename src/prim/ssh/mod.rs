//! Remote execution over pooled SSH sessions (`ssh2`/libssh2): configuration, targets, the
//! host key policy and the error type. The pieces: [`pool`] (sessions per target, connect,
//! liveness), [`exec`] (one command on a new channel, with timeout and bounded output),
//! [`known_hosts`] (the provhost-managed known_hosts file), [`forward`] (a stream to a unix
//! socket on the remote host, for QMP), [`io`] (non-blocking waits bounded by deadlines),
//! [`openssh`] (the system's OpenSSH `ssh` as the data transport of large copies).
//!
//! Everything here blocks the calling thread: call it from a routine (which runs on tokio's
//! blocking pool) or through [`pool::Pool::exec_async`], never directly on a tokio worker.
//!
//! ## Host key policy
//!
//! provhost keeps its own known_hosts file (`[ssh] known_hosts`, default
//! `data/ssh/known_hosts`), never the user's `~/.ssh/known_hosts`.
//! - [`HostKeyPolicy::Strict`] (VM hosts, peer management nodes, `remote_host` by default):
//!   the host's key must already be in the file and match. Add it by hand (`ssh-keyscan`) or
//!   with [`known_hosts::add_line`].
//! - [`HostKeyPolicy::AcceptNew`] (computers being reloaded, `ctx.computer()`): an unknown
//!   host's key is recorded on first contact; a known host whose key changed is refused, as
//!   with OpenSSH's `StrictHostKeyChecking=accept-new`. A reload that reinstalls the OS calls
//!   `h.forget_host_key()` ([`known_hosts::forget`]) first, so the new key is accepted.
//!
//! - Pinned ([`known_hosts::pin`], `h.trust_host_key(pubkey)`): a module that knows the
//!   key the host will have (the image build made it) pins it, typically right after
//!   `forget_host_key()`; from then on only that key is accepted, whatever the policy, and
//!   the connect offers only its type. This closes accept-new's window after a reinstall,
//!   where whoever answers first for the address would be trusted.
//!
//! A changed key is always an error ([`SshError::HostKeyChanged`]); it is never overwritten
//! silently.

pub mod exec;
pub mod forward;
pub mod io;
pub mod known_hosts;
pub mod openssh;
pub mod pool;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use exec::{ExecOptions, Output};
pub use forward::RemoteUnixStream;
pub use pool::{Pool, PoolStats};

/// Cipher order used unless `[ssh] ciphers` says otherwise.
pub const DEFAULT_CIPHERS: &str =
    "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr";

/// `[ssh]` in provhost.toml: how provhost reaches computers, VM hosts and peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Login name on computers and VM hosts.
    pub user: String,
    /// Private key file (OpenSSH format, no passphrase). Only its path is ever logged.
    pub identity: PathBuf,
    /// The known_hosts file provhost manages (see "Host key policy").
    pub known_hosts: PathBuf,
    /// Port used when a reservation does not name one.
    pub port: u16,
    /// TCP connect + SSH handshake + authentication, in seconds.
    pub connect_timeout_secs: u64,
    /// Default timeout of one remote or local command, in seconds.
    pub command_timeout_secs: u64,
    /// Default timeout of one file copy, in seconds.
    pub copy_timeout_secs: u64,
    /// Bytes of stdout (and, separately, stderr) kept per command; the rest is counted and
    /// dropped, and the result is marked truncated.
    pub max_output_bytes: usize,
    /// The VM host (its `computer.hostname` in the database) that is this management node:
    /// its commands run as local processes. Empty (the default): none is; a VM host named
    /// `local` in the database is then refused rather than run here.
    pub local_vmhost: String,
    /// Sessions kept open to one target; more parallel commands wait for a free one.
    pub max_sessions_per_host: usize,
    /// Idle sessions are closed after this many seconds.
    pub idle_secs: u64,
    /// Idle sessions kept open across all targets (each holds a socket, a file
    /// descriptor); beyond it the longest-idle one is closed.
    pub max_idle_sessions: usize,
    /// Cipher preference list for libssh2 (names libssh2 does not know are skipped);
    /// empty = libssh2's default order. The default puts chacha20-poly1305 first: in
    /// libssh2 it is the fastest (the AES modes are encrypted 16 bytes per call), and it is
    /// OpenSSH's default too. See docs/BENCHMARKS.md.
    pub ciphers: String,
    /// What carries the bytes of a copy between this node and a host; see
    /// [`CopyTransport`]. Default `auto`.
    pub copy_transport: CopyTransport,
    /// With `copy_transport = "auto"`, files of at least this many bytes go through
    /// OpenSSH's `ssh`; smaller ones use a pooled session (starting `ssh` costs a process
    /// and a handshake, ~0.1 s: below ~128 MiB libssh2 is as fast or faster).
    pub openssh_min_bytes: u64,
    /// The OpenSSH client program for copies: a path, or a name looked up in `PATH`.
    pub openssh_program: PathBuf,
}

/// What carries a copy's bytes between this node and a host (`[ssh] copy_transport`).
/// Either way the copy is the same: part file then rename, size (and SHA-256) checks,
/// time-out, progress; the host key is checked by the session pool first, under the
/// target's policy. See [`openssh`] and docs/BENCHMARKS.md ("Copies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyTransport {
    /// OpenSSH's `ssh` for files of at least `openssh_min_bytes` when the program runs and
    /// can express the target (see [`openssh`]); a pooled libssh2 session otherwise.
    #[default]
    Auto,
    /// Every copy between this node and a host through OpenSSH's `ssh`; an error when it
    /// cannot be used (no program, a path it would misread, no common cipher).
    Openssh,
    /// Every copy through pooled libssh2 sessions.
    Libssh2,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            user: "root".into(),
            identity: "data/ssh/id_ed25519".into(),
            known_hosts: "data/ssh/known_hosts".into(),
            port: 22,
            connect_timeout_secs: 10,
            command_timeout_secs: 30,
            copy_timeout_secs: 3600,
            max_output_bytes: 1024 * 1024,
            local_vmhost: String::new(),
            max_sessions_per_host: 8,
            idle_secs: 300,
            max_idle_sessions: 256,
            ciphers: DEFAULT_CIPHERS.into(),
            copy_transport: CopyTransport::Auto,
            openssh_min_bytes: 128 * 1024 * 1024,
            openssh_program: "ssh".into(),
        }
    }
}

impl SshConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs.max(1))
    }
    pub fn copy_timeout(&self) -> Duration {
        Duration::from_secs(self.copy_timeout_secs.max(1))
    }
}

/// What to do with the host's key; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    Strict,
    AcceptNew,
}

impl HostKeyPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(HostKeyPolicy::Strict),
            "accept-new" => Some(HostKeyPolicy::AcceptNew),
            _ => None,
        }
    }
}

/// One SSH destination. Sessions are pooled per distinct `Target` (host, port, user,
/// identity, and the host key policy they were verified under).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    pub host_key: HostKeyPolicy,
}

impl Target {
    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// Everything that can go wrong talking SSH. Messages name the target and, for files, the
/// path; never key material, and never the command text (it may hold a secret).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{target}: cannot resolve host name: {source}")]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: cannot connect: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: no answer within {secs:.1} s while {during} (host down or unreachable?)")]
    ConnectTimeout {
        target: String,
        during: &'static str,
        secs: f64,
    },
    #[error("{target}: SSH handshake failed: {detail}")]
    Handshake { target: String, detail: String },
    #[error("{target}: host key not in {} and the policy is strict; add it (ssh-keyscan) to trust this host", known_hosts.display())]
    UnknownHostKey {
        target: String,
        known_hosts: PathBuf,
    },
    #[error("{target}: HOST KEY CHANGED (does not match {}); refusing to connect. If the host was reinstalled, forget its old key (h.forget_host_key())", known_hosts.display())]
    HostKeyChanged {
        target: String,
        known_hosts: PathBuf,
    },
    /// `detail`: the known_hosts file, the offered and the pinned key types.
    #[error("{target}: host key does not match the key pinned for it {detail}; refusing to connect. If the host really changed, pin its new key (h.trust_host_key(PUBKEY))")]
    PinnedKeyMismatch { target: String, detail: String },
    #[error("known_hosts file {}: {detail}", path.display())]
    KnownHosts { path: PathBuf, detail: String },
    #[error("{target}: authentication with key {} refused: {detail}", identity.display())]
    Auth {
        target: String,
        identity: PathBuf,
        detail: String,
    },
    #[error("identity file {}: {source}", path.display())]
    Identity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {what} timed out after {secs:.1} s")]
    Timeout {
        target: String,
        what: &'static str,
        secs: f64,
    },
    #[error(
        "{target}: {what} stopped: the routine's deadline passed or the reservation was cancelled"
    )]
    Stopped { target: String, what: &'static str },
    #[error("{target}: connection lost during {what}: {detail}")]
    SessionLost {
        target: String,
        what: &'static str,
        detail: String,
    },
    #[error("{target}: all {max} sessions busy for {secs:.1} s")]
    PoolBusy {
        target: String,
        max: usize,
        secs: f64,
    },
    #[error("{target}: {detail}")]
    Channel { target: String, detail: String },
    /// OpenSSH's `ssh` could not start, or ended with its own failure (exit 255: connection,
    /// authentication or host key); `detail` is its message.
    #[error("{target}: {what} through OpenSSH's ssh failed: {detail}")]
    OpenSsh {
        target: String,
        what: String,
        detail: String,
    },
}

impl SshError {
    /// True when the error says the session is unusable (it is dropped from the pool).
    pub fn breaks_session(&self) -> bool {
        !matches!(self, SshError::Channel { .. } | SshError::OpenSsh { .. })
    }
}
