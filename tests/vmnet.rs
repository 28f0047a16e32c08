//! VM-host networking (`prim::vmnet`) on this machine: up and down are idempotent through
//! the Rhai binding, down refuses while something runs in the namespace, and one bridged
//! VM booted from the test image is reached from the root namespace and two client
//! namespaces with distinct source addresses, which a guest nftables rule tells apart.
//! Needs root, iproute2 and (for the VM) QEMU; the VM runs under TCG.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs::KillOnDrop;
use common::testimage;
use common::testvm::{local_host, TestNet, TestVm};
use provhost::host::engine::{build, Limits, Primitives};
use provhost::prim::remote::RemotePrims;
use provhost::prim::ssh::SshConfig;
use provhost::prim::vmnet::{VmNet, VmnetConfig, VmnetError, VmnetPrims};
use rhai::{Dynamic, Map};

fn needs(test: &str, tools: &[&str]) -> bool {
    common::root_or_skip(test, "network namespaces, bridges, taps")
        && tools.iter().all(|t| common::tool_or_skip(test, t))
}

/// Names and addresses no other test uses: 10.81.K.0/24 for VMs, 10.81.255.4K+1/30 uplink.
fn private_net(k: u32) -> VmnetConfig {
    let pid = std::process::id();
    let k = (pid % 30) * 2 + k; // 0..=61
    VmnetConfig {
        netns: format!("phvn{k}-{pid}"),
        bridge: "br0".into(),
        gateway: format!("10.81.{}.1/24", k + 1),
        uplink: format!("10.81.255.{}/30", 4 * k + 1),
        uplink_dev: format!("phvn{k}u{}", pid % 10_000),
        timeout_secs: 30,
    }
}

/// Removes what a failed test left (veth, namespace); harmless when already gone.
struct Cleanup(VmnetConfig);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p; done; ip link del {dev} 2>/dev/null; ip netns del {ns} 2>/dev/null; true",
                ns = self.0.netns,
                dev = self.0.uplink_dev
            ))
            .status();
    }
}

fn engine() -> rhai::Engine {
    let families: Vec<Arc<dyn Primitives>> = vec![
        Arc::new(RemotePrims::new(SshConfig::default())),
        Arc::new(VmnetPrims::new(VmnetConfig::default())),
    ];
    build(&Limits::default(), "stdlib".into(), &families)
}

fn net_literal(c: &VmnetConfig) -> String {
    format!(
        "#{{ netns: \"{}\", bridge: \"{}\", gateway: \"{}\", uplink: \"{}\", uplink_dev: \"{}\" }}",
        c.netns, c.bridge, c.gateway, c.uplink, c.uplink_dev
    )
}

fn sh_ok(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn up_and_down_twice_through_rhai_leave_nothing_behind() {
    if !needs("vmnet up/down", &["ip"]) {
        return;
    }
    let c = private_net(0);
    let _cleanup = Cleanup(c.clone());
    let e = engine();
    let net = net_literal(&c);
    let up: Map = e
        .eval(&format!(
            "let h = local_host(); let n = {net};
             vmnet::up(h, n); vmnet::up(h, n);
             vmnet::add_tap(h, n, \"tap0\"); vmnet::add_tap(h, n, \"tap0\");
             vmnet::status(h, n)"
        ))
        .expect("up twice");
    for k in ["netns", "bridge", "uplink", "route"] {
        assert_eq!(
            up.get(k).and_then(|v| v.as_bool().ok()),
            Some(true),
            "{k} after up: {up:?}"
        );
    }
    // One address each, not two, after the second up; the tap is on the bridge.
    let addrs = sh_ok(&format!("ip -n {} -4 -o addr show dev br0", c.netns));
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    let tap = sh_ok(&format!("ip -n {} link show tap0", c.netns));
    assert!(tap.contains("master br0"), "{tap}");
    // The root namespace reaches the bridge through the uplink and the route.
    // (A closed port answers with a reset at once; an unreachable one would time out.)
    let probe = Command::new("timeout")
        .args(["5", "bash", "-c"])
        .arg(format!(
            "echo > /dev/tcp/{}/9",
            c.gateway.trim_end_matches("/24")
        ))
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&probe.stderr);
    assert!(
        err.contains("Connection refused"),
        "bridge not reached: {err}"
    );

    let down: Map = e
        .eval(&format!(
            "let h = local_host(); let n = {net};
             vmnet::down(h, n); vmnet::down(h, n);
             vmnet::status(h, n)"
        ))
        .expect("down twice");
    for k in ["netns", "bridge", "uplink", "route"] {
        assert_eq!(
            down.get(k).and_then(|v| v.as_bool().ok()),
            Some(false),
            "{k} after down: {down:?}"
        );
    }
    let left = sh_ok("ip netns list; ip -o link show; ip -4 route show");
    assert!(
        !left.contains(&c.netns) && !left.contains(&c.uplink_dev),
        "{left}"
    );

    // Bad names and keys are errors that name the thing, and nothing is made.
    let err = e
        .eval::<Dynamic>(&format!(
            "vmnet::up(local_host(), #{{ netns: \"{}\", bridge: \"br0; reboot\" }})",
            c.netns
        ))
        .expect_err("bad bridge")
        .to_string();
    assert!(
        err.contains("bridge") && err.contains("15 characters"),
        "{err}"
    );
    let err = e
        .eval::<Dynamic>("vmnet::up(local_host(), #{ bridg: \"br0\" })")
        .expect_err("typo")
        .to_string();
    assert!(err.contains("bridg") && err.contains("known:"), "{err}");
    assert!(!sh_ok("ip netns list").contains(&c.netns));
}

#[test]
fn down_refuses_while_a_process_runs_in_the_namespace() {
    if !needs("vmnet busy", &["ip"]) {
        return;
    }
    let c = private_net(1);
    let _cleanup = Cleanup(c.clone());
    let net = VmNet::new(&c).expect("config");
    let h = local_host();
    net.up(&h).expect("up");
    let sleeper = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &c.netns, "sleep", "120"])
            .spawn()
            .expect("sleep in the namespace"),
    );
    // `ip netns exec` needs a moment to enter the namespace.
    let end = Instant::now() + Duration::from_secs(5);
    while sh_ok(&format!("ip netns pids {}", c.netns))
        .trim()
        .is_empty()
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = net.down(&h).expect_err("busy");
    assert!(matches!(err, VmnetError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("stop its VMs"), "{err}");
    assert_eq!(
        net.status(&h).expect("status"),
        [true; 4],
        "down changed nothing"
    );
    drop(sleeper);
    net.down(&h).expect("down once the process is gone");
    assert_eq!(net.status(&h).expect("status"), [false; 4]);
}

/// The same operations on a VM host reached over SSH (a real sshd on loopback, as root).
#[test]
fn up_and_down_work_on_a_vm_host_over_ssh() {
    if !needs("vmnet over ssh", &["ip", common::sshd::SSHD]) {
        return;
    }
    let c = private_net(2);
    let _cleanup = Cleanup(c.clone());
    let sshd = common::sshd::Sshd::start();
    let pool = sshd.pool();
    let h = provhost::prim::host::Host::remote(
        pool,
        sshd.target(provhost::prim::ssh::HostKeyPolicy::Strict),
    );
    let net = VmNet::new(&c).expect("config");
    net.up(&h).expect("up over ssh");
    net.up(&h).expect("up again");
    net.add_tap(&h, "tap3").expect("tap");
    assert_eq!(net.status(&h).expect("status"), [true; 4]);
    assert!(sh_ok(&format!("ip -n {} link show tap3", c.netns)).contains("master br0"));
    net.del_tap(&h, "tap3").expect("del tap");
    net.del_tap(&h, "tap3").expect("del tap again");
    net.down(&h).expect("down over ssh");
    assert_eq!(net.status(&h).expect("status"), [false; 4]);
}

/// One VM for every check: the boot (bridged, own IP), source addresses seen by the guest,
/// a guest firewall admitting one client and dropping the other, and ACPI power-off.
#[test]
fn a_bridged_vm_tells_clients_apart_by_source_address() {
    if !needs(
        "bridged VM",
        &["ip", "qemu-system-x86_64", "qemu-img", "ssh", "timeout"],
    ) {
        return;
    }
    let image = testimage::ensure();
    let mut net = TestNet::up();
    let c1 = net.add_client(1);
    let c2 = net.add_client(2);
    let vm = TestVm::boot(&net, &image, 0);
    let secs = vm.wait_ssh(Duration::from_secs(120));
    eprintln!("boot to SSH over the bridge: {secs:.1} s");

    let seen = |ns: Option<&str>| -> String {
        let out = vm.ssh_from(ns, "echo $SSH_CLIENT; hostname", 5);
        assert!(
            out.status.success(),
            "ssh from {ns:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let root = seen(None);
    assert!(root.starts_with(&format!("{} ", net.mgmt_addr())), "{root}");
    assert!(
        root.contains("testvm0"),
        "hostname from testhostname=: {root}"
    );
    assert!(seen(Some(&c1.ns)).starts_with(&format!("{} ", c1.addr)));
    assert!(seen(Some(&c2.ns)).starts_with(&format!("{} ", c2.addr)));

    // The firewall by source address: the management node and client 1 only.
    let rules = format!(
        "table inet filter {{\n  chain input {{\n    type filter hook input priority 0; policy drop;\n    iif lo accept\n    ct state established,related accept\n    ip saddr {{ {}, {} }} tcp dport 22 accept\n  }}\n}}\n",
        net.mgmt_addr(),
        c1.addr
    );
    let out = vm.ssh(&format!(
        "printf '%s' '{rules}' | nft -f - && nft list ruleset | grep -c saddr"
    ));
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        vm.ssh_from(Some(&c1.ns), "true", 3).status.success(),
        "client 1 admitted"
    );
    let t = Instant::now();
    let blocked = vm.ssh_from(Some(&c2.ns), "true", 3);
    assert_eq!(blocked.status.code(), Some(255), "client 2 dropped");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "dropped, not refused"
    );
    assert!(vm.ssh("true").status.success(), "management node admitted");

    // The image's power-button watcher: ACPI power-off ends QEMU.
    let t = Instant::now();
    let reply = vm.qmp("system_powerdown");
    assert!(reply.contains("return"), "{reply}");
    assert!(
        vm.wait_exit(Duration::from_secs(30)),
        "QEMU still running 30 s after system_powerdown; console:\n{}",
        vm.console()
    );
    eprintln!(
        "system_powerdown to QEMU gone: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(vm.console().contains("TESTVM-POWERDOWN"));
}
