//! VM-host networking: a bridge inside a network namespace the VM host owns, joined to the
//! host's root namespace by a veth pair with a route to the VM subnet, so every VM has its
//! own address and the management node and each user reach it from distinct source IPs
//! (the guest firewall can tell them apart). The host's own network is not touched beyond
//! the veth and one route.
//!
//! ```text
//!  root ns  <uplink_dev> 10.77.255.1/30 ──veth── uplink0 10.77.255.2/30  (netns)
//!           route 10.77.0.0/24 via 10.77.255.2        <bridge> 10.77.0.1/24 ── tapN ── VM
//! ```
//!
//! Every operation is one shell script run through a [`Host`] (so a remote VM host works the
//! same over SSH), idempotent, bounded by a timeout, with every name validated and every
//! value quoted. Rhai: `vmnet::up(h, net)`, `vmnet::down(h, net)`, `vmnet::add_tap(h, net,
//! tap)`, `vmnet::del_tap(h, net, tap)`, `vmnet::status(h, net)`, `vmnet::defaults()`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Map, Module};
use serde::{Deserialize, Serialize};

use crate::budget::check_deadline;
use crate::prim::args::check_keys;
use crate::prim::host::{Host, RunError};
use crate::prim::ssh::ExecOptions;
use crate::prim::Primitives;

/// `[vmnet]` in provhost.toml: the defaults a script's `net` map falls back to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VmnetConfig {
    /// Network namespace on the VM host that holds the bridge and the VMs' taps.
    pub netns: String,
    /// Bridge inside the namespace.
    pub bridge: String,
    /// The bridge's address with prefix: the VMs' gateway; its subnet is the VM subnet.
    pub gateway: String,
    /// Root-namespace end of the uplink veth, with prefix (/30); the namespace end is the
    /// next address.
    pub uplink: String,
    /// Name of the root-namespace end of the uplink veth.
    pub uplink_dev: String,
    /// Time-out of one vmnet operation, in seconds.
    pub timeout_secs: u64,
}

impl Default for VmnetConfig {
    fn default() -> Self {
        VmnetConfig {
            netns: "provhost-vmh".into(),
            bridge: "phbr0".into(),
            gateway: "10.77.0.1/24".into(),
            uplink: "10.77.255.1/30".into(),
            uplink_dev: "phvmh0".into(),
            timeout_secs: 30,
        }
    }
}

/// Name of the namespace end of the uplink veth (inside the namespace, so never clashes).
pub const UPLINK_PEER: &str = "uplink0";

#[derive(Debug, thiserror::Error)]
pub enum VmnetError {
    #[error("vmnet: {what} {value:?} is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . -, not starting with - or .)")]
    BadIfName { what: &'static str, value: String },
    #[error("vmnet: netns {0:?} is not a valid namespace name (1-32 characters of A-Z a-z 0-9 _ . -, not starting with - or .)")]
    BadNetns(String),
    #[error(
        "vmnet: {what} {value:?} is not an IPv4 address with prefix like 10.77.0.1/24 ({why})"
    )]
    BadCidr {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("vmnet on {host}: {op} failed (exit {code}): {stderr}")]
    Command {
        host: String,
        op: &'static str,
        code: i64,
        stderr: String,
    },
    #[error("vmnet on {host}: {op}: {source}")]
    Run {
        host: String,
        op: &'static str,
        #[source]
        source: RunError,
    },
    #[error("vmnet on {host}: namespace {netns} still has processes (pids {pids}); stop its VMs before vmnet::down")]
    Busy {
        host: String,
        netns: String,
        pids: String,
    },
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(what: &'static str, s: &str) -> Result<Cidr, VmnetError> {
        let bad = |why: &str| VmnetError::BadCidr {
            what,
            value: s.to_string(),
            why: why.to_string(),
        };
        let (a, p) = s.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix must be 8..=30"));
        }
        let c = Cidr { addr, prefix };
        if addr == c.network() || addr == c.broadcast() {
            return Err(bad(
                "the network or broadcast address is not a host address",
            ));
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// `a.b.c.d/p` of the network.
    pub fn subnet(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.network())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn check_ifname(what: &'static str, s: &str) -> Result<(), VmnetError> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VmnetError::BadIfName {
            what,
            value: s.to_string(),
        })
    }
}

fn check_netns(s: &str) -> Result<(), VmnetError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VmnetError::BadNetns(s.to_string()))
    }
}

/// A checked VM-host network.
#[derive(Debug, Clone, PartialEq)]
pub struct VmNet {
    pub netns: String,
    pub bridge: String,
    pub gateway: Cidr,
    /// Root-namespace end of the uplink.
    pub uplink: Cidr,
    pub uplink_dev: String,
    pub timeout: Duration,
}

impl VmNet {
    pub fn new(c: &VmnetConfig) -> Result<VmNet, VmnetError> {
        check_netns(&c.netns)?;
        check_ifname("bridge", &c.bridge)?;
        check_ifname("uplink_dev", &c.uplink_dev)?;
        let gateway = Cidr::parse("gateway", &c.gateway)?;
        let uplink = Cidr::parse("uplink", &c.uplink)?;
        let net = VmNet {
            netns: c.netns.clone(),
            bridge: c.bridge.clone(),
            gateway,
            uplink,
            uplink_dev: c.uplink_dev.clone(),
            timeout: Duration::from_secs(c.timeout_secs.clamp(1, 600)),
        };
        let peer = net.uplink_peer();
        if !uplink.contains(peer) || peer == uplink.broadcast() {
            return Err(VmnetError::BadCidr {
                what: "uplink",
                value: c.uplink.clone(),
                why: format!("the namespace end {peer} (the next address) must be a host address in the same subnet"),
            });
        }
        if gateway.contains(uplink.addr) || uplink.contains(gateway.addr) {
            return Err(VmnetError::BadCidr {
                what: "uplink",
                value: c.uplink.clone(),
                why: format!("it overlaps the VM subnet {}", gateway.subnet()),
            });
        }
        Ok(net)
    }

    /// The namespace end of the uplink (the root namespace's next hop to the VMs).
    pub fn uplink_peer(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.uplink.addr).wrapping_add(1))
    }

    /// `ip netns add` … `ip route replace`: every step idempotent.
    pub fn up_script(&self) -> String {
        let ns = q(&self.netns);
        let br = q(&self.bridge);
        let dev = q(&self.uplink_dev);
        format!(
            "set -e\n\
             [ -e /run/netns/{ns} ] || ip netns add {ns}\n\
             ip -n {ns} link set lo up\n\
             ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1\n\
             ip -n {ns} link show {br} >/dev/null 2>&1 || ip -n {ns} link add {br} type bridge\n\
             ip -n {ns} addr replace {gw} dev {br}\n\
             ip -n {ns} link set {br} up\n\
             ip link show {dev} >/dev/null 2>&1 || ip link add {dev} type veth peer name {peer} netns {ns}\n\
             ip addr replace {up} dev {dev}\n\
             ip link set {dev} up\n\
             ip -n {ns} addr replace {peer_addr}/{prefix} dev {peer}\n\
             ip -n {ns} link set {peer} up\n\
             ip route replace {subnet} via {peer_ip} dev {dev}\n",
            gw = q(&self.gateway.to_string()),
            up = q(&self.uplink.to_string()),
            peer = UPLINK_PEER,
            peer_addr = self.uplink_peer(),
            peer_ip = self.uplink_peer(),
            prefix = self.uplink.prefix,
            subnet = q(&self.gateway.subnet()),
        )
    }

    /// Refuses (exit 3, pids on stdout) while processes live in the namespace; else deletes
    /// the veth (its peer and the route go with it) and the namespace (bridge and taps go
    /// with it). Nothing there is fine.
    pub fn down_script(&self) -> String {
        let ns = q(&self.netns);
        let dev = q(&self.uplink_dev);
        format!(
            "if [ -e /run/netns/{ns} ]; then\n\
             \x20 p=$(ip netns pids {ns} | tr '\\n' ' ')\n\
             \x20 if [ -n \"$p\" ]; then echo \"$p\"; exit 3; fi\n\
             fi\n\
             set -e\n\
             if ip link show {dev} >/dev/null 2>&1; then ip link del {dev}; fi\n\
             if [ -e /run/netns/{ns} ]; then ip netns del {ns}; fi\n"
        )
    }

    /// A tap in the namespace, on the bridge, up.
    pub fn add_tap_script(&self, tap: &str) -> Result<String, VmnetError> {
        check_ifname("tap", tap)?;
        let (ns, br, t) = (q(&self.netns), q(&self.bridge), q(tap));
        Ok(format!(
            "set -e\n\
             ip -n {ns} link show {t} >/dev/null 2>&1 || ip -n {ns} tuntap add dev {t} mode tap\n\
             ip -n {ns} link set {t} master {br}\n\
             ip -n {ns} link set {t} up\n"
        ))
    }

    pub fn del_tap_script(&self, tap: &str) -> Result<String, VmnetError> {
        check_ifname("tap", tap)?;
        let (ns, t) = (q(&self.netns), q(tap));
        Ok(format!(
            "if ip -n {ns} link show {t} >/dev/null 2>&1; then ip -n {ns} link del {t}; fi\n"
        ))
    }

    /// Prints `netns bridge uplink route` as 0/1 words.
    pub fn status_script(&self) -> String {
        let (ns, br, dev) = (q(&self.netns), q(&self.bridge), q(&self.uplink_dev));
        format!(
            "n=0; b=0; u=0; r=0\n\
             [ -e /run/netns/{ns} ] && n=1\n\
             [ $n = 1 ] && ip -n {ns} link show {br} >/dev/null 2>&1 && b=1\n\
             ip link show {dev} >/dev/null 2>&1 && u=1\n\
             ip route show {subnet} 2>/dev/null | grep -q via && r=1\n\
             echo $n $b $u $r\n",
            subnet = q(&self.gateway.subnet()),
        )
    }

    fn run(&self, host: &Host, op: &'static str, script: &str) -> Result<String, VmnetError> {
        let opts = ExecOptions {
            timeout: Some(self.timeout),
            max_output: Some(64 * 1024),
            kill_on_timeout: true,
        };
        let cmd = format!("sh -c {}", q(script));
        let out = host.run(&cmd, &opts).map_err(|source| VmnetError::Run {
            host: host.label(),
            op,
            source,
        })?;
        if out.code == 3 && op == "down" {
            return Err(VmnetError::Busy {
                host: host.label(),
                netns: self.netns.clone(),
                pids: out.stdout.trim().to_string(),
            });
        }
        if out.code != 0 {
            return Err(VmnetError::Command {
                host: host.label(),
                op,
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    pub fn up(&self, host: &Host) -> Result<(), VmnetError> {
        self.run(host, "up", &self.up_script()).map(drop)
    }

    pub fn down(&self, host: &Host) -> Result<(), VmnetError> {
        self.run(host, "down", &self.down_script()).map(drop)
    }

    pub fn add_tap(&self, host: &Host, tap: &str) -> Result<(), VmnetError> {
        let s = self.add_tap_script(tap)?;
        self.run(host, "add_tap", &s).map(drop)
    }

    pub fn del_tap(&self, host: &Host, tap: &str) -> Result<(), VmnetError> {
        let s = self.del_tap_script(tap)?;
        self.run(host, "del_tap", &s).map(drop)
    }

    /// What exists: (namespace, bridge, uplink veth, route).
    pub fn status(&self, host: &Host) -> Result<[bool; 4], VmnetError> {
        let out = self.run(host, "status", &self.status_script())?;
        let mut r = [false; 4];
        for (i, w) in out.split_whitespace().take(4).enumerate() {
            r[i] = w == "1";
        }
        Ok(r)
    }
}

/// Single-quote `s` for a POSIX shell.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `vmnet` Rhai module; `net` maps fall back to `[vmnet]`.
pub struct VmnetPrims {
    defaults: Arc<VmnetConfig>,
}

impl VmnetPrims {
    pub fn new(defaults: VmnetConfig) -> Self {
        VmnetPrims {
            defaults: Arc::new(defaults),
        }
    }
}

type Res<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    match check_deadline() {
        Err(stop) => stop,
        Ok(()) => e.to_string().into(),
    }
}

/// The keys of a `vmnet::` network map (the script-test fake takes the same).
pub const KEYS: &[&str] = &[
    "netns",
    "bridge",
    "gateway",
    "uplink",
    "uplink_dev",
    "timeout",
];

/// A `VmNet` from a script map over the defaults.
fn net_from(defaults: &VmnetConfig, m: &Map) -> Res<VmNet> {
    check_keys(m, KEYS, "vmnet")?;
    let mut c = defaults.clone();
    for (k, slot) in [
        ("netns", &mut c.netns),
        ("bridge", &mut c.bridge),
        ("gateway", &mut c.gateway),
        ("uplink", &mut c.uplink),
        ("uplink_dev", &mut c.uplink_dev),
    ] {
        if let Some(v) = m.get(k) {
            *slot = v
                .clone()
                .into_immutable_string()
                .map_err(|t| format!("vmnet: {k} must be a string, got {t}"))?
                .to_string();
        }
    }
    if let Some(v) = m.get("timeout") {
        c.timeout_secs =
            crate::prim::args::seconds(v, "vmnet: timeout", false, Duration::from_secs(600))?
                .as_secs()
                .max(1);
    }
    VmNet::new(&c).map_err(|e| e.to_string().into())
}

fn config_map(c: &VmnetConfig) -> Map {
    let mut m = Map::new();
    m.insert("netns".into(), c.netns.clone().into());
    m.insert("bridge".into(), c.bridge.clone().into());
    m.insert("gateway".into(), c.gateway.clone().into());
    m.insert("uplink".into(), c.uplink.clone().into());
    m.insert("uplink_dev".into(), c.uplink_dev.clone().into());
    m.insert("timeout".into(), Dynamic::from(c.timeout_secs as i64));
    m
}

impl Primitives for VmnetPrims {
    fn register(&self, engine: &mut Engine) {
        let mut m = Module::new();
        let net_doc = "/// `net` is a map over `[vmnet]`'s defaults: `#{ netns, bridge, gateway: \"10.77.0.1/24\", uplink: \"10.77.255.1/30\", uplink_dev, timeout }` (any key may be left out).";
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("defaults")
            .with_comments([
                "/// The `[vmnet]` settings as a map (the values `net` maps fall back to).",
            ])
            .with_params_info(["Map"])
            .set_into_module(&mut m, move || config_map(&d));
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("up")
            .with_comments([
                "/// Make the VM-host network on `host` (idempotent): namespace `netns` with bridge `bridge`",
                "/// at `gateway`, a veth `uplink_dev` (root side at `uplink`, the namespace side at the next",
                "/// address) and a route from the root namespace to the VM subnet. Forwarding is turned on",
                "/// in the namespace only.",
                net_doc,
            ])
            .with_params_info(["host: Host", "net: Map", "()"])
            .set_into_module(&mut m, move |h: &mut Host, net: Map| -> Res<()> {
                net_from(&d, &net)?.up(h).map_err(fail)
            });
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("down")
            .with_comments([
                "/// Remove the VM-host network (veth, route, namespace with its bridge and taps);",
                "/// idempotent. An error, changing nothing, while processes (VMs) still run in the namespace.",
                net_doc,
            ])
            .with_params_info(["host: Host", "net: Map", "()"])
            .set_into_module(&mut m, move |h: &mut Host, net: Map| -> Res<()> {
                net_from(&d, &net)?.down(h).map_err(fail)
            });
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("add_tap")
            .with_comments([
                "/// A tap device `tap` (at most 15 characters) in the namespace, attached to the bridge and",
                "/// up (idempotent); QEMU then uses it with `-netdev tap,ifname=TAP,script=no`.",
            ])
            .with_params_info(["host: Host", "net: Map", "tap: &str", "()"])
            .set_into_module(&mut m, move |h: &mut Host, net: Map, tap: &str| -> Res<()> {
                net_from(&d, &net)?.add_tap(h, tap).map_err(fail)
            });
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("del_tap")
            .with_comments(["/// Delete tap `tap` from the namespace (idempotent)."])
            .with_params_info(["host: Host", "net: Map", "tap: &str", "()"])
            .set_into_module(
                &mut m,
                move |h: &mut Host, net: Map, tap: &str| -> Res<()> {
                    net_from(&d, &net)?.del_tap(h, tap).map_err(fail)
                },
            );
        let d = Arc::clone(&self.defaults);
        FuncRegistration::new("status")
            .with_comments([
                "/// What exists of the network: `#{ netns, bridge, uplink, route }`, each a bool.",
            ])
            .with_params_info(["host: Host", "net: Map", "Map"])
            .set_into_module(&mut m, move |h: &mut Host, net: Map| -> Res<Map> {
                let s = net_from(&d, &net)?.status(h).map_err(fail)?;
                let mut r = Map::new();
                for (k, v) in ["netns", "bridge", "uplink", "route"].iter().zip(s) {
                    r.insert((*k).into(), Dynamic::from(v));
                }
                Ok(r)
            });
        engine.register_static_module("vmnet", m.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_derive_the_peer_and_subnet() {
        let n = VmNet::new(&VmnetConfig::default()).expect("defaults");
        assert_eq!(n.uplink_peer(), Ipv4Addr::new(10, 77, 255, 2));
        assert_eq!(n.gateway.subnet(), "10.77.0.0/24");
        let s = n.up_script();
        assert!(
            s.contains("ip route replace '10.77.0.0/24' via 10.77.255.2 dev 'phvmh0'"),
            "{s}"
        );
        assert!(s.contains("ip netns exec 'provhost-vmh' sysctl -qw net.ipv4.ip_forward=1"));
    }

    #[test]
    fn bad_names_and_addresses_are_named() {
        let base = VmnetConfig::default();
        let with = |f: &dyn Fn(&mut VmnetConfig)| {
            let mut c = base.clone();
            f(&mut c);
            VmNet::new(&c).expect_err("invalid").to_string()
        };
        let e = with(&|c| c.bridge = "br0; rm -rf /".into());
        assert!(e.contains("bridge") && e.contains("15 characters"), "{e}");
        let e = with(&|c| c.uplink_dev = "a-very-long-name0".into());
        assert!(e.contains("uplink_dev"), "{e}");
        let e = with(&|c| c.netns = "$(reboot)".into());
        assert!(e.contains("netns"), "{e}");
        let e = with(&|c| c.gateway = "10.77.0.1".into());
        assert!(e.contains("gateway") && e.contains("PREFIX"), "{e}");
        let e = with(&|c| c.gateway = "10.77.0.0/24".into());
        assert!(e.contains("network or broadcast"), "{e}");
        let e = with(&|c| c.uplink = "10.77.255.2/30".into());
        assert!(e.contains("next address"), "{e}");
        let e = with(&|c| c.uplink = "10.77.0.201/30".into());
        assert!(e.contains("overlaps"), "{e}");
        let n = VmNet::new(&base).expect("defaults");
        assert!(n.add_tap_script("tap'x").is_err());
        assert!(n.add_tap_script("vm-0123456789abcdef").is_err());
        assert!(n.add_tap_script("phtap7").is_ok());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(q("a'b"), "'a'\\''b'");
    }
}
