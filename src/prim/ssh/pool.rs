//! The SSH session pool: at most `max_sessions_per_host` authenticated sessions per
//! [`Target`], each used by one operation at a time (a [`Lease`]); every command opens a new
//! channel on a leased session. Idle sessions are checked before reuse (a peer that closed
//! the socket is noticed without a round trip), closed after `idle_secs`, and a session that
//! failed mid-operation is dropped instead of returned, so the next call connects afresh.
//! At most `max_idle_sessions` stay idle across all targets (the longest-idle is closed
//! first), so many targets cannot use up the process's file descriptors.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ssh2::{MethodType, Session};

use super::io::{Deadline, Wire};
use super::{known_hosts, SshConfig, SshError, Target};

/// One authenticated session and its socket.
pub struct Conn {
    sess: Session,
    fd: RawFd,
    label: String,
    last_used: Instant,
    /// This end's TCP port (0 if the socket would not say).
    local_port: u16,
}

impl Conn {
    pub fn session(&self) -> &Session {
        &self.sess
    }
    /// The session with its socket, for bounded waits.
    pub fn wire(&self) -> Wire<'_> {
        Wire {
            sess: &self.sess,
            fd: self.fd,
            target: &self.label,
        }
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The TCP port of this end of the session's connection.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Cheap liveness check without a round trip: an idle session's socket has nothing to
    /// read unless the peer closed it (EOF) or sent a message (keepalive, disconnect).
    fn looks_alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc == 0 {
            return true;
        }
        if rc < 0 || pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: reading at most 1 byte into a 1-byte buffer; MSG_PEEK leaves it queued.
        let n = unsafe {
            libc::recv(
                self.fd,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::metrics::get().ssh_session(false);
        // Best effort, non-blocking: the socket closes with the session either way.
        let _ = self
            .sess
            .disconnect(None, "provhost closing idle session", None);
    }
}

#[derive(Default)]
struct Slot {
    idle: Vec<Conn>,
    /// Sessions that exist for this target: idle plus leased plus being connected.
    total: usize,
    /// Local ports of the leased sessions and of those being connected (from the moment
    /// their TCP connection exists: the peer already sees it).
    leased: Vec<u16>,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Sessions opened since the pool was made.
    pub connects: u64,
    /// Sessions that exist now (idle or in use).
    pub open: usize,
    /// Sessions idle now.
    pub idle: usize,
}

/// Pooled SSH sessions per target. Share it as `Arc<Pool>`.
pub struct Pool {
    cfg: SshConfig,
    slots: Mutex<HashMap<Target, Slot>>,
    freed: Condvar,
    connects: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Exclusive use of one pooled session; returned to the pool on drop unless marked broken.
pub struct Lease {
    pool: Arc<Pool>,
    target: Target,
    conn: Option<Conn>,
    broken: bool,
    reused: bool,
}

impl Lease {
    pub fn conn(&self) -> &Conn {
        // A lease always holds its connection until drop.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("lease without connection"))
    }
    /// The session failed or is in an unknown state: close it instead of reusing it.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
    /// Was this session used before (so a failure to open a channel may just mean it died
    /// while idle)?
    pub fn reused(&self) -> bool {
        self.reused
    }
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let mut slots = self.pool.lock();
        let slot = slots.entry(self.target.clone()).or_default();
        if let Some(i) = slot.leased.iter().position(|p| *p == conn.local_port) {
            slot.leased.swap_remove(i);
        }
        if self.broken {
            slot.total = slot.total.saturating_sub(1);
            drop(slots);
            self.pool.freed.notify_one();
            tracing::debug!(target = %self.target, "dropping broken SSH session");
            drop(conn);
        } else {
            conn.last_used = Instant::now();
            slot.idle.push(conn);
            let mut dropped = Vec::new();
            trim_idle(&mut slots, &self.pool.cfg, &mut dropped);
            drop(slots);
            self.pool.freed.notify_one();
            drop(dropped);
        }
    }
}

impl Pool {
    pub fn new(cfg: SshConfig) -> Arc<Pool> {
        Arc::new(Pool {
            cfg,
            slots: Mutex::new(HashMap::new()),
            freed: Condvar::new(),
            connects: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &SshConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Target, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        let slots = self.lock();
        PoolStats {
            connects: self.connects.load(Ordering::Relaxed),
            open: slots.values().map(|s| s.total).sum(),
            idle: slots.values().map(|s| s.idle.len()).sum(),
        }
    }

    /// The local TCP ports of every session this pool holds to `target`'s host and port now:
    /// idle, leased, and being connected (TCP up, handshake or authentication under way),
    /// under any user, identity or host key policy — each is a connection the host sees
    /// coming from this process.
    pub fn session_ports(&self, target: &Target) -> Vec<u16> {
        let slots = self.lock();
        let mut ports: Vec<u16> = slots
            .iter()
            .filter(|(t, _)| t.host == target.host && t.port == target.port)
            .flat_map(|(_, s)| {
                s.idle
                    .iter()
                    .map(|c| c.local_port)
                    .chain(s.leased.iter().copied())
            })
            .filter(|p| *p != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Close every idle session (leased ones close when returned broken or at drop).
    pub fn close_idle(&self) {
        let mut dropped = Vec::new();
        {
            let mut slots = self.lock();
            for slot in slots.values_mut() {
                slot.total -= slot.idle.len();
                dropped.append(&mut slot.idle);
            }
        }
        drop(dropped);
    }

    /// A session to `target`: an idle one that still looks alive, else a new one (when
    /// fewer than `max_sessions_per_host` exist), else wait for one to be returned — all
    /// within `d`.
    pub fn lease(self: &Arc<Self>, target: &Target, d: &Deadline) -> Result<Lease, SshError> {
        let max = self.cfg.max_sessions_per_host.max(1);
        let mut dropped: Vec<Conn> = Vec::new();
        let mut slots = self.lock();
        loop {
            // Close sessions idle for too long (or too many), on every target.
            trim_idle(&mut slots, &self.cfg, &mut dropped);
            let slot = slots.entry(target.clone()).or_default();
            while let Some(conn) = slot.idle.pop() {
                if conn.looks_alive() {
                    slot.leased.push(conn.local_port);
                    drop(slots);
                    drop(dropped);
                    return Ok(self.wrap(target, conn, true));
                }
                slot.total -= 1;
                tracing::debug!(target = %target, "idle SSH session found closed by peer");
                dropped.push(conn);
            }
            if slot.total < max {
                slot.total += 1;
                drop(slots);
                drop(dropped);
                // The port is listed from the moment the TCP connection exists (the host
                // sees it from then on), not only once the session is authenticated.
                let registered = std::cell::Cell::new(None::<u16>);
                let on_tcp = |port: u16| {
                    self.lock()
                        .entry(target.clone())
                        .or_default()
                        .leased
                        .push(port);
                    registered.set(Some(port));
                };
                return match connect(&self.cfg, target, d, &on_tcp) {
                    Ok(conn) => {
                        self.connects.fetch_add(1, Ordering::Relaxed);
                        Ok(self.wrap(target, conn, false))
                    }
                    Err(e) => {
                        let mut slots = self.lock();
                        if let Some(s) = slots.get_mut(target) {
                            s.total = s.total.saturating_sub(1);
                            if let Some(p) = registered.get() {
                                if let Some(i) = s.leased.iter().position(|x| *x == p) {
                                    s.leased.swap_remove(i);
                                }
                            }
                        }
                        drop(slots);
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            if d.expired() {
                return Err(SshError::PoolBusy {
                    target: target.label(),
                    max,
                    secs: d.limit().as_secs_f64(),
                });
            }
            d.check(&target.label(), "waiting for a free session")?;
            let wait = d.left().min(Duration::from_millis(50));
            slots = self
                .freed
                .wait_timeout(slots, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn wrap(self: &Arc<Self>, target: &Target, conn: Conn, reused: bool) -> Lease {
        Lease {
            pool: Arc::clone(self),
            target: target.clone(),
            conn: Some(conn),
            broken: false,
            reused,
        }
    }
}

/// Move idle sessions that are past `idle_secs`, and then the longest-idle ones beyond
/// `max_idle_sessions` in all, from `slots` into `dropped` (closed by the caller after it
/// lets go of the lock); forget targets with no session left.
fn trim_idle(slots: &mut HashMap<Target, Slot>, cfg: &SshConfig, dropped: &mut Vec<Conn>) {
    let idle_limit = Duration::from_secs(cfg.idle_secs);
    let mut idle = 0;
    for slot in slots.values_mut() {
        let before = slot.idle.len();
        let (old, fresh): (Vec<Conn>, Vec<Conn>) = std::mem::take(&mut slot.idle)
            .into_iter()
            .partition(|c| c.last_used.elapsed() > idle_limit);
        slot.idle = fresh;
        slot.total -= before - slot.idle.len();
        idle += slot.idle.len();
        dropped.extend(old);
    }
    // Bounded: each pass closes one session.
    while idle > cfg.max_idle_sessions {
        let oldest = slots
            .values_mut()
            .filter_map(|s| {
                let (i, c) = s.idle.iter().enumerate().min_by_key(|(_, c)| c.last_used)?;
                Some((c.last_used, i, s))
            })
            .min_by_key(|(t, _, _)| *t);
        let Some((_, i, slot)) = oldest else { break };
        dropped.push(slot.idle.remove(i));
        slot.total -= 1;
        idle -= 1;
    }
    slots.retain(|_, s| s.total > 0);
}

/// TCP connect, SSH handshake, host key check and public key authentication, all within
/// the connect timeout (and `d`). `on_tcp` gets this end's TCP port as soon as the TCP
/// connection exists.
fn connect(
    cfg: &SshConfig,
    target: &Target,
    d: &Deadline,
    on_tcp: &dyn Fn(u16),
) -> Result<Conn, SshError> {
    let label = target.label();
    let d = d.within(cfg.connect_timeout());
    // Read the key file first: a missing key is a local problem, say so plainly.
    std::fs::metadata(&target.identity).map_err(|e| SshError::Identity {
        path: target.identity.clone(),
        source: e,
    })?;
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| SshError::Resolve {
            target: label.clone(),
            source: e,
        })?
        .collect();
    let mut last: Option<SshError> = None;
    let mut tcp = None;
    for addr in addrs {
        d.check(&label, "connecting")?;
        match TcpStream::connect_timeout(&addr, d.left().max(Duration::from_millis(1))) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Some(SshError::ConnectTimeout {
                    target: label.clone(),
                    during: "connecting",
                    secs: cfg.connect_timeout().as_secs_f64(),
                })
            }
            Err(e) => {
                last = Some(SshError::Connect {
                    target: label.clone(),
                    source: e,
                })
            }
        }
    }
    let tcp = match (tcp, last) {
        (Some(t), _) => t,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(SshError::Resolve {
                target: label,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    on_tcp(local_port);
    let fd = tcp.as_raw_fd();
    let mut sess = Session::new().map_err(|e| SshError::Handshake {
        target: label.clone(),
        detail: e.to_string(),
    })?;
    sess.set_tcp_stream(tcp);
    sess.set_blocking(false);
    if !cfg.ciphers.is_empty() {
        for m in [MethodType::CryptCs, MethodType::CryptSc] {
            sess.method_pref(m, &cfg.ciphers)
                .map_err(|e| SshError::Handshake {
                    target: label.clone(),
                    detail: format!("cipher list {:?}: {e}", cfg.ciphers),
                })?;
        }
    }
    // A pinned host offers only the pinned key types, so the server shows the pinned one.
    let pins = known_hosts::pinned(&cfg.known_hosts, &target.host, target.port);
    if !pins.is_empty() {
        sess.method_pref(MethodType::HostKey, &pins.join(","))
            .map_err(|e| SshError::Handshake {
                target: label.clone(),
                detail: format!("pinned host key types {pins:?}: {e}"),
            })?;
    }
    let handshake = {
        let wire = Wire {
            sess: &sess.clone(),
            fd,
            target: &label,
        };
        let mut s2 = sess.clone();
        wire.call(&d, "SSH handshake", || s2.handshake())
    };
    handshake.map_err(|e| match e {
        SshError::Timeout { .. } => SshError::ConnectTimeout {
            target: label.clone(),
            during: "waiting for the SSH handshake",
            secs: cfg.connect_timeout().as_secs_f64(),
        },
        SshError::SessionLost { detail, .. } => SshError::Handshake {
            target: label.clone(),
            detail: if pins.is_empty() {
                detail
            } else {
                format!(
                    "{detail} (its pinned host key is {}: does it have no key of that type?)",
                    pins.join(", ")
                )
            },
        },
        other => other,
    })?;
    known_hosts::verify(
        &sess,
        &cfg.known_hosts,
        &target.host,
        target.port,
        target.host_key,
        &label,
    )?;
    let wire = Wire {
        sess: &sess,
        fd,
        target: &label,
    };
    wire.call(&d, "authentication", || {
        sess.userauth_pubkey_file(&target.user, None, &target.identity, None)
    })
    .map_err(|e| match e {
        SshError::SessionLost { detail, .. } => SshError::Auth {
            target: label.clone(),
            identity: target.identity.clone(),
            detail,
        },
        SshError::Timeout { .. } => SshError::ConnectTimeout {
            target: label.clone(),
            during: "authenticating",
            secs: cfg.connect_timeout().as_secs_f64(),
        },
        other => other,
    })?;
    if !sess.authenticated() {
        return Err(SshError::Auth {
            target: label,
            identity: target.identity.clone(),
            detail: "server did not accept the key".into(),
        });
    }
    tracing::debug!(target = %label, "SSH session opened");
    crate::metrics::get().ssh_session(true);
    Ok(Conn {
        sess,
        fd,
        label,
        last_used: Instant::now(),
        local_port,
    })
}
