//! A 3-node MariaDB Galera cluster on loopback for tests (the recipe of
//! `/work/shared/GALERA.md`, docs/galera.md): each node its own data folder under one temp
//! folder, its own free ports (SQL, group communication, IST, SST), started by the harness
//! (node 1 bootstraps, 2 and 3 join by rsync SST) and torn down on drop — also when the test
//! panics: SIGTERM, then SIGKILL of the node's process tree after a bounded wait, then the
//! folder removed.
//!
//! When `mariadbd`, `mariadb-install-db`, the Galera library or `rsync` is missing,
//! [`Galera::start`] prints a loud SKIP line and returns `None` (CI installs them:
//! `tools/install-deps.sh` lists `galera-4 rsync`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::procs;

/// Where Debian's galera-4 puts the provider.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
/// The SQL user the harness creates on the cluster (replicated to every node).
pub const USER: &str = "ph";
const PASSWORD: &str = "ph-galera-test";

/// How long a node may take to reach `Synced` (the recipe measured 4-5 s for a join).
const SYNC_WAIT: Duration = Duration::from_secs(120);

pub struct Node {
    pub n: usize,
    pub dir: PathBuf,
    pub sql_port: u16,
    gcomm_port: u16,
    ist_port: u16,
    sst_port: u16,
    child: Option<Child>,
}

impl Node {
    fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Is the node's process still there (not exited, not killed)?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

pub struct Galera {
    pub root: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

/// A port nothing listens on right now (the kernel's pick; the cluster binds it soon after).
fn free_port(taken: &mut Vec<u16>) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a free loopback port");
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
    panic!("no free loopback port after 100 tries")
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).exists()
}

impl Galera {
    /// Start a 3-node cluster and create the test user. `None` (with a SKIP line) when the
    /// packages are missing or the tests do not run as root (mariadbd runs as `mysql`).
    pub fn start(test: &str) -> Option<Galera> {
        let missing: Vec<&str> = [
            ("mariadbd", have("mariadbd")),
            ("mariadb-install-db", have("mariadb-install-db")),
            ("mariadb", have("mariadb")),
            ("rsync", have("rsync")),
            (PROVIDER, Path::new(PROVIDER).exists()),
        ]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            let line = format!(
                "\n!!!!!!!! SKIP {test}: Galera cluster tests need {} (apt-get install mariadb-server galera-4 rsync; \
                 tools/install-deps.sh does) — this test did NOT run !!!!!!!!\n",
                missing.join(", ")
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return None;
        }
        if !super::root_or_skip(
            test,
            "mariadbd runs as the mysql user in folders root makes",
        ) {
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("provhost-galera-")
            .tempdir()
            .expect("temp folder for the cluster");
        let mut taken = Vec::new();
        let nodes: Vec<Node> = (1..=3)
            .map(|n| Node {
                n,
                dir: root.path().join(format!("node{n}")),
                sql_port: free_port(&mut taken),
                gcomm_port: free_port(&mut taken),
                ist_port: free_port(&mut taken),
                sst_port: free_port(&mut taken),
                child: None,
            })
            .collect();
        let peers: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.gcomm_port))
            .collect();
        let address = format!("gcomm://{}", peers.join(","));
        for node in &nodes {
            std::fs::create_dir_all(node.dir.join("data")).expect("node data folder");
            std::fs::write(node.cnf(), cnf(node, &address)).expect("write my.cnf");
        }
        // mariadbd refuses a data folder it cannot write; the temp folder is root's 0700.
        let chown = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(root.path())
            .status();
        assert!(
            matches!(chown, Ok(s) if s.success()),
            "chown mysql of {}: {chown:?}",
            root.path().display()
        );
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the cluster folder");
        for node in &nodes {
            let out = Command::new("mariadb-install-db")
                .arg(format!("--defaults-file={}", node.cnf().display()))
                .args(["--user=mysql", "--skip-test-db"])
                .output()
                .expect("run mariadb-install-db");
            assert!(
                out.status.success(),
                "mariadb-install-db for node {}: {}",
                node.n,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut g = Galera { root, nodes };
        let t = Instant::now();
        g.spawn(0, &["--wsrep-new-cluster"]);
        g.wait_synced(0, 1);
        g.spawn(1, &[]);
        g.wait_synced(1, 2);
        g.spawn(2, &[]);
        g.wait_synced(2, 3);
        eprintln!(
            "galera: 3 nodes Synced in {:.1?} (SQL ports {:?})",
            t.elapsed(),
            g.nodes.iter().map(|n| n.sql_port).collect::<Vec<_>>()
        );
        g.sql(
            0,
            &format!(
                "CREATE USER {USER}@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO {USER}@'127.0.0.1'"
            ),
        )
        .expect("create the test user");
        Some(g)
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("stdout.log"))
            .expect("node stdout log");
        let child = Command::new("mariadbd")
            .arg(format!("--defaults-file={}", node.cnf().display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        node.child = Some(child);
    }

    /// Run SQL on node `i` through its socket as root (the harness's own access).
    pub fn sql(&self, i: usize, sql: &str) -> Result<String, String> {
        let node = &self.nodes[i];
        let out = Command::new("timeout")
            .arg("20")
            .arg("mariadb")
            .arg(format!("--defaults-file={}", node.cnf().display()))
            .arg("-NBe")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Wait until node `i` says `Synced` in a cluster of `size`; panics with the end of
    /// its error log when it does not (or died).
    pub fn wait_synced(&mut self, i: usize, size: usize) {
        let want = format!("{size} Synced");
        let deadline = Instant::now() + SYNC_WAIT;
        while Instant::now() < deadline {
            let got = self.sql(
                i,
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN \
                 ('wsrep_cluster_size','wsrep_local_state_comment') ORDER BY VARIABLE_NAME",
            );
            if let Ok(text) = got {
                if text.split_whitespace().collect::<Vec<_>>().join(" ") == want {
                    return;
                }
            }
            if !self.nodes[i].alive() {
                panic!(
                    "galera node {} exited while starting:\n{}",
                    i + 1,
                    self.error_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "galera node {} not {want} within {SYNC_WAIT:?}:\n{}",
            i + 1,
            self.error_tail(i)
        );
    }

    fn error_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The URL of node `i` for `database` (the harness's SQL user, over TCP).
    pub fn url(&self, i: usize, database: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.nodes[i].sql_port
        )
    }

    /// One global status value of node `i` (e.g. `wsrep_local_cert_failures`, `Questions`).
    pub fn status(&self, i: usize, name: &str) -> i64 {
        self.sql(
            i,
            &format!("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{name}'"),
        )
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
    }

    /// SIGKILL node `i` (mariadbd and anything it started) and reap it.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(pid) = node.pid() {
            procs::kill_tree(pid);
        }
        if let Some(mut c) = node.child.take() {
            let _ = c.wait();
        }
    }

    /// Stop node `i`: SIGTERM, at most 30 s for it to exit, then SIGKILL of its tree.
    fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: signalling the mariadbd this harness started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        procs::kill_tree(pid);
        let _ = child.wait();
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            self.stop(i);
        }
    }
}

fn cnf(node: &Node, address: &str) -> String {
    let d = node.dir.display();
    format!(
        "[mysqld]
user=mysql
datadir={d}/data
socket={d}/mysql.sock
pid_file={d}/mariadbd.pid
log_error={d}/error.log
port={port}
bind_address=127.0.0.1
skip_name_resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=48M
innodb_flush_log_at_trx_commit=2
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
max_connections=500
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name=provhost_test
wsrep_cluster_address={address}
wsrep_node_name=node{n}
wsrep_node_address=127.0.0.1
wsrep_node_incoming_address=127.0.0.1:{port}
wsrep_provider_options=\"base_port={gcomm};gmcast.listen_addr=tcp://127.0.0.1:{gcomm};ist.recv_addr=127.0.0.1:{ist};gcache.size=64M;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;evs.keepalive_period=PT0.5S\"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{sst}
wsrep_slave_threads=2
[client]
socket={d}/mysql.sock
user=root
",
        port = node.sql_port,
        n = node.n,
        gcomm = node.gcomm_port,
        ist = node.ist_port,
        sst = node.sst_port,
    )
}
