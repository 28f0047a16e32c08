//! `provhost demo` on a real VM: this machine is the management node and the VM host. The
//! test image is built (first run, ~1–2 min) or found in the image library and recorded in
//! a fresh SQLite database; a VM-host network namespace with a bridge (`prim::vmnet`) gives
//! the VM its own address; a second namespace plays the user's machine with an address of
//! its own, so the guest firewall really tells the management node and the user apart. The
//! shipped `provisioning/qemu` and `os/linux` modules do the work; the user logs in over
//! real SSH with a key the demo made. Everything the demo started — VMs, namespaces, the
//! user's ssh — is removed at the end, on an error and on Ctrl-C.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

use super::lifecycle::{self, Plan, UserLogin};
use super::{fresh_db, load_scripts, DemoError, RunningDaemon};
use crate::config::Config;
use crate::db::inventory::{add_computer, add_user, add_vmhost, NewComputer};
use crate::host::Kind;
use crate::image::build::{self, BuildOptions};
use crate::prim::host::Host;
use crate::prim::vm::bind::VmPrims;
use crate::prim::vm::Vms;
use crate::prim::vmnet::{VmNet, VmnetConfig, VmnetPrims};
use crate::state::Timings;

/// The user's machine: a namespace joined to the VM-host namespace by a veth.
const USER_NS: &str = "provhost-demo-user";
const USER_IP: &str = "10.78.1.2";
const USER_GW: &str = "10.78.1.1";
const VM_IP: &str = "10.78.0.10";
const VM_NAME: &str = "vm1.demo";
const LOGIN: &str = "demo";

/// The demo's VM-host network: its own names and addresses, apart from `[vmnet]`'s, so the
/// demo never touches a VM host network a daemon on this machine uses.
fn demo_net() -> VmnetConfig {
    VmnetConfig {
        netns: "provhost-demo".into(),
        bridge: "phdemo0".into(),
        gateway: "10.78.0.1/24".into(),
        uplink: "10.78.255.1/30".into(),
        uplink_dev: "phdemo0u".into(),
        timeout_secs: 30,
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Can this machine run the real demo? Root (namespaces, taps), QEMU, qemu-img, iproute2,
/// ssh, and the image build's tools; `Err` says what is missing and how to get it.
pub(super) fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("it needs root for network namespaces and taps; run it as root".into());
    }
    let missing: Vec<&str> = [
        "qemu-system-x86_64",
        "qemu-img",
        "ip",
        "ssh",
        "ssh-keygen",
        "debootstrap",
        "mke2fs",
    ]
    .into_iter()
    .filter(|t| !on_path(t))
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} not installed; `make deps` (tools/install-deps.sh) installs them",
            missing.join(", ")
        ));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing (no tap devices)".into());
    }
    Ok(())
}

fn sh(cmd: &str) -> std::io::Result<std::process::Output> {
    std::process::Command::new("sh").arg("-c").arg(cmd).output()
}

fn must(cmd: &str, what: &str) -> Result<(), DemoError> {
    let out = sh(cmd)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DemoError::Setup(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// What the demo started, removed on drop-like `clean` (also after an error or Ctrl-C).
struct Started {
    vms: Arc<Vms>,
    vm_root: String,
    net: VmNet,
    local: Host,
}

impl Started {
    /// Remove every VM under the demo's VM root, the user's namespace and the VM-host
    /// network. Safe to run when some or none of it exists (a previous demo that was
    /// killed); returns what it removed.
    fn clean(&self) -> Vec<String> {
        let mut removed = Vec::new();
        if let Ok(vms) = self.vms.list(&self.local, &self.vm_root) {
            for (dir, _) in vms {
                if self.vms.kill(&self.local, &dir).unwrap_or(false) {
                    removed.push(format!("VM {dir}"));
                }
            }
        }
        let _ = sh(&format!(
            "for p in $(ip netns pids {USER_NS} 2>/dev/null); do kill -9 $p; done"
        ));
        if sh(&format!("ip netns del {USER_NS} 2>/dev/null"))
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            removed.push(format!("namespace {USER_NS}"));
        }
        match self.net.down(&self.local) {
            Ok(()) => removed.push(format!("VM-host network {}", demo_net().netns)),
            Err(e) => eprintln!("provhost demo: removing the VM-host network: {e}"),
        }
        removed
    }
}

/// The user's machine: namespace, veth into the VM-host namespace, default route.
fn user_namespace() -> Result<(), DemoError> {
    let vns = demo_net().netns;
    must(
        &format!(
            "set -e; ip netns add {USER_NS}
             ip -n {vns} link add phdemoc type veth peer name eth0 netns {USER_NS}
             ip -n {vns} addr add {USER_GW}/24 dev phdemoc; ip -n {vns} link set phdemoc up
             ip -n {USER_NS} link set lo up; ip -n {USER_NS} addr add {USER_IP}/24 dev eth0
             ip -n {USER_NS} link set eth0 up; ip -n {USER_NS} route add default via {USER_GW}"
        ),
        "making the user's network namespace",
    )
}

/// An ed25519 key pair at `path` (made once).
fn keypair(path: &Path) -> Result<String, DemoError> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        must(
            &format!(
                "ssh-keygen -q -t ed25519 -N '' -C provhost-demo-user -f {}",
                crate::prim::vmnet::q(&path.display().to_string())
            ),
            "making the demo user's SSH key",
        )?;
    }
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok(public.trim().to_string())
}

/// The demo user logs in from the user's namespace with real OpenSSH and stays logged in
/// (a `sleep` on the VM) until the daemon has seen the connection.
struct SshUser {
    key: PathBuf,
    known_hosts: PathBuf,
}

impl UserLogin for SshUser {
    async fn login(&mut self, out: &mut dyn Write) -> Result<Box<dyn std::any::Any>, DemoError> {
        let t = Instant::now();
        let mut last = String::new();
        // Bounded: at most 20 tries within 60 s (the firewall opens as access is granted).
        for _ in 0..20 {
            if t.elapsed() > Duration::from_secs(60) {
                break;
            }
            let mut child = tokio::process::Command::new("ip")
                .args(["netns", "exec", USER_NS, "ssh", "-i"])
                .arg(&self.key)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=5",
                    &format!("{LOGIN}@{VM_IP}"),
                    "echo \"logged in to $(hostname) as $(id -un) (uid $(id -u)) from ${SSH_CLIENT%% *}\"; exec sleep 600",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take();
            let mut line = String::new();
            if let Some(s) = stdout {
                let mut r = tokio::io::BufReader::new(s);
                let _ = tokio::time::timeout(Duration::from_secs(15), r.read_line(&mut line)).await;
            }
            if line.starts_with("logged in") {
                writeln!(
                    out,
                    "  user  $ ip netns exec {USER_NS} ssh {LOGIN}@{VM_IP}\n  user  {}",
                    line.trim()
                )?;
                return Ok(Box::new(child));
            }
            let _ = child.start_kill();
            if let Ok(o) = child.wait_with_output().await {
                last = String::from_utf8_lossy(&o.stderr).trim().to_string();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Err(DemoError::Setup(format!(
            "the user could not log in to {VM_IP} over SSH from {USER_IP} within 60 s: {last}"
        )))
    }
}

pub(super) async fn run(config: &Config, out: &mut impl Write) -> Result<(), DemoError> {
    let data = std::path::absolute(&config.paths.data_dir)?;
    let vm_root = data.join("demo-vms");
    let library = std::path::absolute(config.images.library(&config.paths.data_dir))?;
    let vm_cfg = crate::prim::vm::VmConfig {
        vm_root: vm_root.display().to_string(),
        ..config.vm.clone()
    };
    let vm_prims = Arc::new(VmPrims::new(vm_cfg, &library));
    let local = Host::local(Arc::new(config.ssh.clone()));
    let started = Started {
        vms: Arc::clone(vm_prims.vms()),
        vm_root: vm_root.display().to_string(),
        net: VmNet::new(&demo_net()).map_err(|e| DemoError::Setup(e.to_string()))?,
        local: local.clone(),
    };
    // Leftovers of a demo that was killed: gone before anything starts.
    started.clean();

    let result = tokio::select! {
        r = steps(config, &data, &library, &vm_prims, out) => r,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    let removed = started.clean();
    writeln!(
        out,
        "\nprovhost demo: removed {}",
        if removed.is_empty() {
            "nothing (nothing was left)".to_string()
        } else {
            removed.join(", ")
        }
    )?;
    result
}

async fn steps(
    config: &Config,
    data: &Path,
    library: &Path,
    vm_prims: &Arc<VmPrims>,
    out: &mut impl Write,
) -> Result<(), DemoError> {
    // 1. The test image, built once and cached in the library.
    let pubkey = crate::image::key::node_public_key(&config.ssh.identity)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    writeln!(
        out,
        "provhost demo: the test image in {} (built on the first run, 1-2 minutes)",
        library.display()
    )?;
    let opts_build = BuildOptions {
        library: library.to_path_buf(),
        pubkey,
        cache_dir: config.images.build_cache(),
        mirror: None,
        timeout: Duration::from_secs(1200),
    };
    let t = Instant::now();
    let built = tokio::task::spawn_blocking(move || {
        build::build_test_image(&opts_build, &mut |step| {
            eprintln!("  [{:6.1} s] image: {step}", t.elapsed().as_secs_f64());
        })
    })
    .await
    .map_err(|e| DemoError::Setup(format!("the image build thread: {e}")))?
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    writeln!(
        out,
        "  test image {} ({} MB): {}",
        built.imagename,
        built.size_mb,
        if built.built {
            format!("built in {:.1} s", built.secs)
        } else {
            "up to date".to_string()
        }
    )?;

    // 2. The database: image, VM host, VM, user with an SSH key.
    let db = fresh_db(config, "demo.db", out).await?;
    let reg = crate::db::image::register_library_image(
        &db,
        build::IMAGE_NAME,
        "provhost test image (Debian 12 minbase, sshd)",
        "linux",
        &built.imagename,
        built.size_mb,
        "built by provhost demo",
    )
    .await?;
    let mut vmhost = NewComputer::lab("local", "127.0.0.1");
    vmhost.provisioning = "none".into();
    vmhost.computer_type = "blade".into();
    let vmhost_computer = add_computer(&db, &vmhost).await?;
    let vm_root = vm_prims.vms().config().vm_root.clone();
    let lib = library.display().to_string();
    let vmhost_id = add_vmhost(&db, vmhost_computer, "demo-qemu", &vm_root, &lib, &vm_root).await?;
    // Linked clones of the library's image (VCL's `shared`); `dedicated` would copy it whole.
    crate::db::inventory::set_vmprofile_vmdisk(&db, "demo-qemu", "shared").await?;
    let mut computer = NewComputer::lab(VM_NAME, VM_IP);
    computer.provisioning = "qemu".into();
    computer.computer_type = "virtualmachine".into();
    computer.vmhost_id = Some(vmhost_id);
    let computer_id = add_computer(&db, &computer).await?;
    let user_key = data.join("demo").join("user_ed25519");
    let user_pub = keypair(&user_key)?;
    add_user(&db, LOGIN, Some(20001)).await?;
    crate::db::inventory::set_user_ssh_keys(&db, LOGIN, &user_pub).await?;
    let known_hosts = data.join("demo").join("known_hosts");
    let host_key = std::fs::read_to_string(built.dir.join("ssh_host_ed25519_key.pub"))?;
    std::fs::write(
        &known_hosts,
        format!(
            "{VM_IP} {}\n",
            host_key
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )?;
    writeln!(out, "  VM host: this machine (VM-host namespace {}, bridge {}, {}); VM {VM_NAME} at {VM_IP} from image {} (revision {}); user {LOGIN} with an SSH key", demo_net().netns, demo_net().bridge, demo_net().gateway, build::IMAGE_NAME, reg.revision)?;

    // 3. Networks: the VM-host bridge and the user's machine.
    let local = Host::local(Arc::new(config.ssh.clone()));
    VmNet::new(&demo_net())
        .and_then(|n| n.up(&local))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    user_namespace()?;
    writeln!(out, "  user's machine: namespace {USER_NS} at {USER_IP}; the management node reaches the VMs from {}", demo_net().uplink.split('/').next().unwrap_or(""))?;

    // 4. The daemon, with the shipped qemu and linux modules.
    let families: Vec<Arc<dyn crate::host::Primitives>> = vec![
        // The demo's VM host (`local` in its database) is this machine, by configuration.
        Arc::new(crate::prim::remote::RemotePrims::new(
            crate::prim::ssh::SshConfig {
                local_vmhost: "local".into(),
                ..config.ssh.clone()
            },
        )),
        Arc::clone(vm_prims) as Arc<dyn crate::host::Primitives>,
        Arc::new(VmnetPrims::new(demo_net())),
    ];
    let host = load_scripts(
        config,
        &families,
        &[(Kind::Provisioning, "qemu"), (Kind::Os, "linux")],
        out,
    )?;
    let timings = Timings {
        acknowledgetimeout: 300,
        initialconnecttimeout: 120,
        general_inuse_check: 5,
        acknowledge_poll_ms: 200,
        connect_poll: 2,
        ..Timings::default()
    };
    let daemon = RunningDaemon::start(config, &db, host, timings, out).await?;
    let plan = Plan {
        computer: VM_NAME,
        computer_id,
        image: build::IMAGE_NAME,
        user: LOGIN,
        user_ip: USER_IP,
        limit: Duration::from_secs(600),
    };
    let mut user = SshUser {
        key: user_key.clone(),
        known_hosts: known_hosts.clone(),
    };
    let result = lifecycle::run(&db, &plan, &mut user, out).await;
    daemon.stop().await;
    db.close().await;
    result?;

    let identity = config.ssh.identity.display();
    let by_hand = format!(
        "  ssh -i {identity} -o UserKnownHostsFile={} root@{VM_IP}",
        known_hosts.display()
    );
    let edit = "Change post-load: edit post_load in scripts/os/linux.rhai, or add scripts/site/NAME.rhai with `fn post_load(ctx)`; \
                `provhost check` says what is wrong, a running daemon picks the edit up at once. \
                The load steps (linked clone, QEMU, boot wait) are in scripts/provisioning/qemu.rhai.";
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        writeln!(
            out,
            "\nThe VM is up with a fresh image. SSH in by hand as root from this machine, in another terminal \
             (its firewall lets SSH in from the management node only):\n{by_hand}\n{edit}\n\n\
             Press Enter to remove the VM and the namespaces (Ctrl-C works too)."
        )?;
        out.flush()?;
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
    } else {
        writeln!(
            out,
            "\nThe VM is up with a fresh image; the demo removes it now (standard input is not a terminal). \
             Run `provhost demo` from a terminal and it waits for Enter, so that you can SSH in by hand as root:\n{by_hand}\n{edit}"
        )?;
    }
    Ok(())
}
