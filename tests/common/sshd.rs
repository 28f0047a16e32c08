//! A real OpenSSH `sshd` for tests: generated host and client keys and its config in a temp
//! dir, listening on a free loopback port (or an address inside a lab host's network
//! namespace), run in the foreground as our child and killed — with every connection
//! process it forked — on drop, also when the test panics.
//!
//! Commands run as the current user (root in CI) with `HOME` set to an empty folder in the
//! temp dir (sshd's `SetEnv`), so the user's shell rc files do not slow every command down.
//! With `tmpfs`, sshd runs in its own mount namespace with a small tmpfs mounted at that
//! folder (for disk-full tests); the mount goes away with the namespace when sshd exits.
//! With `isolated` (lab hosts only), sshd runs in its own mount and UTS namespaces with
//! private copies of /etc, /home and /var/lib/provhost and an empty /run, so what an OS module does to
//! accounts, passwords, sudoers and the host name stays on that "computer".

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::prim::ssh::{known_hosts, HostKeyPolicy, Pool, SshConfig, Target};

use super::procs;

pub const SSHD: &str = "/usr/sbin/sshd";

#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Listen address; default 127.0.0.1.
    pub addr: Option<String>,
    /// Fixed port; default a free one (22 inside a namespace).
    pub port: Option<u16>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Mount a tmpfs of this size (e.g. "1m") at `dir/small` in sshd's own mount namespace.
    pub tmpfs: Option<String>,
    /// With `netns`: private /etc, /home, /var/lib/provhost and host name (see module docs);
    /// users' own `~/.ssh/authorized_keys` are honoured too.
    pub isolated: bool,
    /// Lines appended to sshd_config (e.g. a `ForceCommand` for a named fake).
    pub extra_config: Option<String>,
}

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub port: u16,
    pub user: String,
    pub client_key: PathBuf,
    pub host_key: PathBuf,
    /// The provhost-managed known_hosts file tests give the pool (empty at first).
    pub known_hosts: PathBuf,
    opts: SshdOptions,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "provhost-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(st.success(), "ssh-keygen failed");
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Sshd {
    /// sshd on a free loopback port.
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        std::fs::create_dir_all("/run/sshd").ok();
        let dir = tempfile::Builder::new()
            .prefix("provhost-sshd-")
            .tempdir()
            .expect("tempdir");
        let client_key = dir.path().join("client_key");
        let host_key = dir.path().join("host_key");
        keygen(&client_key);
        keygen(&host_key);
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("small")).expect("small");
        if opts.isolated {
            let root = dir.path().join("root");
            for d in ["home", "varlib"] {
                std::fs::create_dir_all(root.join(d)).expect("isolated dirs");
            }
            let st = Command::new("cp")
                .args(["-a", "/etc"])
                .arg(root.join("etc"))
                .status()
                .expect("cp /etc");
            assert!(st.success(), "copying /etc for an isolated lab host");
            std::fs::create_dir_all("/var/lib/provhost").expect("/var/lib/provhost mount point");
        }
        let known_hosts = dir.path().join("known_hosts");
        let mut s = Sshd {
            addr: opts.addr.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: 0,
            user: current_user(),
            client_key,
            host_key,
            known_hosts,
            opts,
            child: None,
            dir,
        };
        let fixed = s.opts.port.or(s.opts.netns.as_ref().map(|_| 22));
        for _ in 0..5 {
            s.port = fixed.unwrap_or_else(free_port);
            if s.spawn() {
                return s;
            }
            if fixed.is_some() {
                break;
            }
        }
        panic!(
            "sshd did not start; see {}",
            s.dir.path().join("sshd.log").display()
        );
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path().display();
        let own_keys = if self.opts.isolated {
            " .ssh/authorized_keys"
        } else {
            ""
        };
        let cfg = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys{own_keys}\n\
             PidFile none\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nSetEnv HOME={d}/home\n\
             AllowStreamLocalForwarding yes\nSubsystem sftp /usr/lib/openssh/sftp-server\nMaxSessions 200\nMaxStartups 200:30:400\nLogLevel ERROR\n",
            port = self.port,
            addr = self.addr,
        );
        let cfg = match &self.opts.extra_config {
            Some(extra) => format!("{cfg}{extra}\n"),
            None => cfg,
        };
        let path = self.dir.path().join("sshd_config");
        std::fs::write(&path, cfg).expect("write sshd_config");
        path
    }

    /// Start sshd and wait (≤ 5 s) until it sends its banner; false if it exited.
    fn spawn(&mut self) -> bool {
        let cfg = self.write_config();
        let log = std::fs::File::create(self.dir.path().join("sshd.log")).expect("sshd.log");
        let sshd_args = format!("{SSHD} -D -e -f {}", cfg.display());
        let mut cmd = match (&self.opts.netns, &self.opts.tmpfs) {
            (Some(ns), _) if self.opts.isolated => {
                let root = self.dir.path().join("root");
                let r = root.display();
                let script = format!(
                    "mount --bind {r}/etc /etc && mount --bind {r}/home /home && \
                     mount --bind {r}/varlib /var/lib/provhost && mount -t tmpfs provhost-lab /run && \
                     mkdir -p /run/sshd && hostname provhost-lab && exec {sshd_args}"
                );
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare", "--mount", "--uts"])
                    .args(["--propagation", "private", "sh", "-c", &script]);
                c
            }
            (Some(ns), _) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SSHD, "-D", "-e", "-f"])
                    .arg(&cfg);
                c
            }
            (None, Some(size)) => {
                let mut c = Command::new("unshare");
                let script = format!(
                    "mount -t tmpfs -o size={size} provhost-test {} && exec {sshd_args}",
                    self.dir.path().join("small").display()
                );
                c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
                c
            }
            (None, None) => {
                let mut c = Command::new(SSHD);
                c.args(["-D", "-e", "-f"]).arg(&cfg);
                c
            }
        };
        // If the test process dies without running Drop (killed by a time-out), the
        // listener dies with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sshd (apt-get install openssh-server)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut s) = TcpStream::connect_timeout(
                &format!("{}:{}", self.addr, self.port)
                    .parse()
                    .expect("addr"),
                Duration::from_millis(200),
            ) {
                s.set_read_timeout(Some(Duration::from_millis(500))).ok();
                let mut b = [0u8; 4];
                if s.read_exact(&mut b).is_ok() && &b == b"SSH-" {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// sshd's pid (its namespaces are the lab host's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill sshd and every connection (and command) it started, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            procs::kill_tree(c.id() as i32);
            let _ = c.wait();
        }
    }

    /// Start again on the same address and port (after [`Sshd::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        // The old listener is gone at once; retry briefly in case the port lingers.
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sshd did not restart on port {}", self.port);
    }

    /// Give the server a new host key (as a reinstall would) and restart it.
    pub fn new_host_key(&mut self) {
        self.kill();
        keygen(&self.host_key);
        self.restart();
    }

    /// The server's public host key line (`ssh-ed25519 AAAA… comment`).
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.host_key.with_extension("pub")).expect("host key .pub")
    }

    /// Record the server's host key in `known_hosts` (what an admin does for a strict host).
    pub fn trust(&self) {
        known_hosts::add_line(
            &self.known_hosts,
            &self.addr,
            self.port,
            self.host_public_key().trim(),
        )
        .expect("add host key");
    }

    pub fn config(&self) -> SshConfig {
        SshConfig {
            user: self.user.clone(),
            identity: self.client_key.clone(),
            known_hosts: self.known_hosts.clone(),
            port: self.port,
            connect_timeout_secs: 5,
            ..SshConfig::default()
        }
    }

    pub fn target(&self, policy: HostKeyPolicy) -> Target {
        Target {
            host: self.addr.clone(),
            port: self.port,
            user: self.user.clone(),
            identity: self.client_key.clone(),
            host_key: policy,
        }
    }

    /// A fresh pool configured for this server, and its host key trusted.
    pub fn pool(&self) -> Arc<Pool> {
        self.trust();
        Pool::new(self.config())
    }

    /// OpenSSH client options that reach this server (for benchmarks and cross-checks).
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}
