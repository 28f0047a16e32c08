//! "Lab hosts": each a network namespace joined to this machine by a veth pair, with its
//! own address (10.213.N.2/30; this side 10.213.N.1) and its own sshd listening on port 22.
//! Names carry the test process id and a counter, so parallel tests never collide; drop
//! kills the sshd, deletes the veth pair and the namespace. All traffic stays on this
//! machine: the only addresses used are those of namespaces made here.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sshd::{Sshd, SshdOptions};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn subnet_in_use(third: u32) -> bool {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output();
    let needle = format!("10.213.{third}.");
    out.map(|o| String::from_utf8_lossy(&o.stdout).contains(&needle))
        .unwrap_or(true)
}

pub struct LabHost {
    pub ns: String,
    pub veth: String,
    /// The lab host's address.
    pub addr: String,
    /// This machine's address on the link.
    pub gateway: String,
    /// Its sshd (dropped before the namespace goes).
    pub sshd: Option<Sshd>,
}

impl LabHost {
    /// A namespace with a veth link and an sshd on port 22. Needs root and iproute2.
    pub fn start() -> LabHost {
        LabHost::start_with(22, false)
    }

    /// A lab host that is a computer of its own for an OS module: private /etc, /home,
    /// /var/lib/provhost and host name (see `SshdOptions::isolated`), sshd on `port`.
    pub fn start_isolated(port: u16) -> LabHost {
        LabHost::start_with(port, true)
    }

    fn start_with(port: u16, isolated: bool) -> LabHost {
        let pid = std::process::id();
        // Bounded search for a free /24 slot; the pid spreads parallel test processes.
        for _ in 0..250 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let third = (pid.wrapping_mul(7) + n) % 250 + 1;
            if subnet_in_use(third) {
                continue;
            }
            let ns = format!("provhost-{pid}-{n}");
            let veth = format!("ph{}x{n}", pid % 100_000);
            let peer = format!("{veth}p");
            let addr = format!("10.213.{third}.2");
            let gateway = format!("10.213.{third}.1");
            let mut lab = LabHost {
                ns: ns.clone(),
                veth: veth.clone(),
                addr: addr.clone(),
                gateway: gateway.clone(),
                sshd: None,
            };
            let setup = (|| {
                ip(&["netns", "add", &ns])?;
                ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
                ip(&["link", "set", &peer, "netns", &ns])?;
                ip(&["addr", "add", &format!("{gateway}/30"), "dev", &veth])?;
                ip(&["link", "set", &veth, "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/30"),
                    "dev",
                    &peer,
                ])?;
                ip(&["-n", &ns, "link", "set", &peer, "up"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])
            })();
            match setup {
                Ok(()) => {
                    lab.sshd = Some(Sshd::start_with(SshdOptions {
                        addr: Some(addr),
                        port: Some(port),
                        netns: Some(ns),
                        tmpfs: None,
                        isolated,
                        extra_config: None,
                    }));
                    return lab;
                }
                Err(e) => {
                    drop(lab);
                    panic!("lab host setup failed: {e}");
                }
            }
        }
        panic!("no free 10.213.N.0/30 slot for a lab host");
    }

    pub fn sshd(&self) -> &Sshd {
        self.sshd.as_ref().expect("lab host sshd")
    }

    pub fn sshd_mut(&mut self) -> &mut Sshd {
        self.sshd.as_mut().expect("lab host sshd")
    }

    /// Run `sh -c cmd` inside the lab host (its network, mount and UTS namespaces, as
    /// root): what a local user of that computer would see.
    pub fn sh(&self, cmd: &str) -> std::process::Output {
        let pid = self.sshd().pid().expect("lab host sshd runs");
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "-m", "-u", "sh", "-c", cmd])
            .output()
            .expect("nsenter")
    }

    /// `sh`, asserting success, stdout as text.
    pub fn sh_ok(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Take the lab host's link down: it stops answering (packets go nowhere).
    pub fn unplug(&self) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            &format!("{}p", self.veth),
            "down",
        ])
        .expect("link down");
    }
}

impl Drop for LabHost {
    fn drop(&mut self) {
        drop(self.sshd.take());
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
