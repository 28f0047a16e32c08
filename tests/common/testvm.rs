//! Bridged test VMs: a VM-host network per test ([`TestNet`]: a namespace with a bridge,
//! made by `prim::vmnet`, with unique names and subnets so tests run in parallel), client
//! namespaces with their own source addresses ([`Client`]), and VMs booted by `prim::vm`
//! from a linked clone of the test image ([`TestVm`]), reached with the real OpenSSH client
//! and the image's pinned host key. Drop guards kill QEMU and delete every namespace, veth and tap,
//! also when the test panics.
//!
//! Addresses for slot S (1..=60, picked free on this machine):
//! VM subnet 10.79.S.0/24 (gateway .1, VMs .10 + i), uplink 10.79.255.4S+1/30 (root ns) ↔
//! 4S+2 (VM-host ns), client N 10.80.(4S+N).2/24 with its gateway .1 in the VM-host ns.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::prim::host::Host;
use provhost::prim::ssh::SshConfig;
use provhost::prim::vm::{VmConfig, VmSpec, Vms};
use provhost::prim::vmnet::{VmNet, VmnetConfig};

use super::testimage::TestImage;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

fn ok(cmd: &str) {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn local_host() -> Host {
    Host::local(Arc::new(SshConfig::default()))
}

fn slot_in_use(s: u32) -> bool {
    let routes = sh("ip -4 route show; ip -4 -o addr show; ip netns list");
    let text = String::from_utf8_lossy(&routes.stdout);
    text.contains(&format!("10.79.{s}.0/24"))
        || text.contains(&format!("10.79.255.{}/", 4 * s + 1))
        || text.contains(&format!("phvt{s}-"))
}

/// A client namespace (a user's machine): own address, default route via the VM host.
#[derive(Debug, Clone)]
pub struct Client {
    pub ns: String,
    pub addr: String,
}

/// A VM-host network made with `prim::vmnet` on this machine, torn down on drop.
pub struct TestNet {
    pub net: VmNet,
    pub config: VmnetConfig,
    pub slot: u32,
    clients: Vec<Client>,
}

impl TestNet {
    /// Needs root and iproute2.
    pub fn up() -> TestNet {
        let pid = std::process::id();
        for _ in 0..60 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let slot = (pid.wrapping_mul(7) + n) % 60 + 1;
            if slot_in_use(slot) {
                continue;
            }
            let config = VmnetConfig {
                netns: format!("phvt{slot}-{pid}"),
                bridge: "br0".into(),
                gateway: format!("10.79.{slot}.1/24"),
                uplink: format!("10.79.255.{}/30", 4 * slot + 1),
                uplink_dev: format!("phvt{slot}u{}", pid % 10_000),
                timeout_secs: 30,
            };
            let net = VmNet::new(&config).expect("test vmnet config");
            let t = TestNet {
                net,
                config,
                slot,
                clients: Vec::new(),
            };
            t.net.up(&local_host()).expect("vmnet up");
            return t;
        }
        panic!("no free 10.79.S.0/24 slot for a test VM network");
    }

    /// The uplink's root-namespace address: the management node's source address.
    pub fn mgmt_addr(&self) -> String {
        self.net.uplink.addr.to_string()
    }

    /// Address of VM `i` (10.79.S.10+i).
    pub fn vm_ip(&self, i: u8) -> String {
        format!("10.79.{}.{}", self.slot, 10 + u32::from(i))
    }

    /// Client `n` (1..=3): namespace joined to the VM host by a veth.
    pub fn add_client(&mut self, n: u32) -> Client {
        assert!((1..=3).contains(&n), "client 1..=3");
        let x = 4 * self.slot + n;
        let ns = format!("{}-c{n}", self.config.netns);
        let vns = &self.config.netns;
        let c = Client {
            ns: ns.clone(),
            addr: format!("10.80.{x}.2"),
        };
        // Recorded first, so drop deletes it even when a step below fails.
        self.clients.push(c.clone());
        ok(&format!(
            "set -e; ip netns add {ns}; ip -n {vns} link add c{n} type veth peer name eth0 netns {ns}
             ip -n {vns} addr add 10.80.{x}.1/24 dev c{n}; ip -n {vns} link set c{n} up
             ip -n {ns} link set lo up; ip -n {ns} addr add 10.80.{x}.2/24 dev eth0
             ip -n {ns} link set eth0 up; ip -n {ns} route add default via 10.80.{x}.1"
        ));
        c
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Anything still running in the namespaces (a VM whose guard did not run) goes first.
        for ns in self
            .clients
            .iter()
            .map(|c| c.ns.clone())
            .chain([self.config.netns.clone()])
        {
            let _ = sh(&format!(
                "for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p; done"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
        for c in &self.clients {
            let _ = sh(&format!("ip netns del {}", c.ns));
        }
        if let Err(e) = self.net.down(&local_host()) {
            eprintln!("test vmnet down: {e}");
        }
    }
}

/// A QEMU VM on a [`TestNet`], booted from a linked clone of the test image (TCG) with
/// `prim::vm` (which makes its tap on the bridge and removes it when the VM ends).
pub struct TestVm {
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub tap: String,
    pub known_hosts: PathBuf,
    pub key: PathBuf,
    net: VmNet,
    vms: Vms,
    pub started: Instant,
}

impl TestVm {
    /// Start VM `i` (returns once QEMU has daemonized; see [`TestVm::wait_ssh`]).
    pub fn boot(net: &TestNet, image: &TestImage, i: u8) -> TestVm {
        let dir = tempfile::Builder::new()
            .prefix("provhost-testvm-")
            .tempdir()
            .expect("tempdir");
        let ip = net.vm_ip(i);
        let tap = format!("tap{i}");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("{ip} {}\n", image.host_key())).expect("known_hosts");
        let overlay = dir.path().join("disk.qcow2");
        ok(&format!(
            "qemu-img create -q -f qcow2 -b {} -F qcow2 {}",
            image.disk().display(),
            overlay.display()
        ));
        let vm = TestVm {
            ip: ip.clone(),
            tap: tap.clone(),
            known_hosts,
            key: image.key.clone(),
            net: net.net.clone(),
            vms: Vms::new(VmConfig::default()),
            started: Instant::now(),
            dir,
        };
        let d = vm.dir.path().display().to_string();
        let mut spec = VmSpec::new(&format!("testvm{i}"), &d);
        spec.disk = Some(overlay.display().to_string());
        spec.kernel = Some(image.kernel().display().to_string());
        spec.initrd = Some(image.initrd().display().to_string());
        spec.append = Some(format!(
            "{} testip={ip}/24 testgw={} testhostname=testvm{i}",
            image.cmdline(),
            net.net.gateway.addr
        ));
        spec.mac = Some(format!(
            "52:54:00:79:{:02x}:{:02x}",
            net.slot,
            10 + u32::from(i)
        ));
        spec.netns = Some(net.config.netns.clone());
        spec.bridge = Some(net.config.bridge.clone());
        spec.tap = Some(tap);
        spec.accel = Some("tcg".into());
        vm.vms
            .start(&local_host(), &spec)
            .unwrap_or_else(|e| panic!("prim::vm start: {e}"));
        vm
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Is the QEMU process alive?
    pub fn running(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        self.pid().is_some_and(|p| unsafe { libc::kill(p, 0) } == 0)
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// `ssh root@VM CMD` from namespace `ns` (the root namespace when `None`), with the pinned
    /// host key and a hard bound of `connect + 15 s`.
    pub fn ssh_from(&self, ns: Option<&str>, cmd: &str, connect: u32) -> Output {
        let mut c = Command::new("timeout");
        c.arg(format!("{}", connect + 15));
        if let Some(ns) = ns {
            c.args(["ip", "netns", "exec", ns]);
        }
        c.arg("ssh")
            .arg("-i")
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
            ])
            .arg(format!("ConnectTimeout={connect}"))
            .arg(format!("root@{}", self.ip))
            .arg(cmd)
            .output()
            .expect("run ssh")
    }

    pub fn ssh(&self, cmd: &str) -> Output {
        self.ssh_from(None, cmd, 5)
    }

    /// Wait until `ssh true` works from the root namespace; the seconds since boot, or a
    /// panic with the console after `timeout`.
    pub fn wait_ssh(&self, timeout: Duration) -> f64 {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.ssh_from(None, "true", 2).status.success() {
                return self.started.elapsed().as_secs_f64();
            }
            assert!(self.running(), "QEMU exited; console:\n{}", self.console());
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "VM {} did not answer SSH within {timeout:?}; console:\n{}",
            self.ip,
            self.console()
        );
    }

    /// One QMP command (`{"execute": …}`); the reply line (events skipped), bounded to 10 s.
    pub fn qmp(&self, execute: &str) -> String {
        let s = UnixStream::connect(self.dir.path().join("qmp.sock")).expect("QMP socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).expect("QMP greeting");
        let mut reply = |cmd: &str| -> String {
            writeln!(w, "{{\"execute\":\"{cmd}\"}}").expect("QMP write");
            for _ in 0..50 {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if !line.contains("\"event\"") {
                    return line.clone();
                }
            }
            String::new()
        };
        reply("qmp_capabilities");
        reply(execute)
    }

    /// Wait up to `timeout` for QEMU to exit; true when it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        !self.running()
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        if let Err(e) = self.vms.kill(&local_host(), &dir) {
            eprintln!("test VM {}: prim::vm kill: {e}", self.ip);
        }
        if let Some(p) = self.pid().filter(|_| self.running()) {
            // SAFETY: killing the QEMU this guard started (its pid file is in our temp dir).
            unsafe { libc::kill(p, libc::SIGKILL) };
            self.wait_exit(Duration::from_secs(5));
        }
        let _ = self.net.del_tap(&local_host(), &self.tap);
    }
}
