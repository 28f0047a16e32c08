//! The shipped `scripts/provisioning/qemu.rhai` against real QEMU (TCG) on this machine as
//! the VM host, with the project's test image and a bridged VM network in a namespace
//! (`common::testvm::TestNet`): load makes a linked clone, boots it, waits for real SSH and
//! writes the image marker; node_status, power_status and control_vm see it; QEMU killed
//! under it is noticed with the reason; capture makes a new image folder (checksums, size)
//! that boots; and the faults: a guest that never boots, a missing base image, an
//! unreachable VM host. The routines are called directly with a reservation `Ctx`, the way
//! the state flows call them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testimage;
use common::testvm::TestNet;
use common::vmguard::{qemu_or_skip, VmGuard};
use provhost::host::{
    CallOptions, Ctx, HostOptions, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::host::Host;
use provhost::prim::ssh::SshConfig;
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vm::{AccelChoice, VmConfig};
use provhost::prim::vmnet::VmnetPrims;

struct Rig {
    host: Arc<ScriptHost>,
    prims: Arc<VmPrims>,
    library: PathBuf,
    vm_root: PathBuf,
    net: TestNet,
    _dir: tempfile::TempDir,
}

/// A library of its own (captures must not land in the shared test-image cache) that links
/// to the test image, and a script host with the shipped modules and these settings.
fn rig(ssh_port: u16) -> Rig {
    let img = testimage::ensure();
    let net = TestNet::up();
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("lib");
    std::fs::create_dir_all(&library).expect("mkdir lib");
    std::os::unix::fs::symlink(&img.dir, library.join(&img.imagename)).expect("link image");
    let vm_root = dir.path().join("vms");
    let ssh = SshConfig {
        identity: img.key.clone(),
        known_hosts: dir.path().join("known_hosts"),
        port: ssh_port,
        connect_timeout_secs: 3,
        local_vmhost: "local".into(),
        ..SshConfig::default()
    };
    let vm = VmConfig {
        accel: AccelChoice::Tcg,
        vm_root: vm_root.display().to_string(),
        boot_timeout_secs: 120,
        ..VmConfig::default()
    };
    let prims = Arc::new(VmPrims::new(vm, &library));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = HostOptions {
        scripts_dir: root.join("scripts"),
        stdlib_dir: root.join("stdlib"),
        limits: Limits::default(),
    };
    let host = ScriptHost::new(
        opts,
        &[
            Arc::new(provhost::prim::remote::RemotePrims::new(ssh)),
            Arc::new(VmnetPrims::new(net.config.clone())),
            Arc::clone(&prims) as Arc<dyn provhost::host::Primitives>,
        ],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    Rig {
        host,
        prims,
        library,
        vm_root,
        net,
        _dir: dir,
    }
}

impl Rig {
    fn data(&self, node: &str, i: u8, image: &str, rev: i64) -> ReservationData {
        ReservationData {
            reservation_id: 7,
            computer_id: i64::from(i) + 1,
            computer_node_name: node.into(),
            computer_ip: self.net.vm_ip(i),
            vmhost_hostname: "local".into(),
            image_id: 3,
            image_name: image.into(),
            imagerevision_id: rev,
            vmprofile_repository_path: self.library.display().to_string(),
            ..ReservationData::default()
        }
    }

    fn call(&self, ctx: &Ctx, routine: &str, args: Vec<rhai::Dynamic>) -> Result<String, String> {
        let key = self
            .host
            .find_module("provisioning/qemu")
            .expect("qemu module");
        self.host
            .call(&key, routine, Some(ctx), args, &CallOptions::default())
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }

    fn guard(&self) -> VmGuard {
        VmGuard::new(Arc::clone(self.prims.vms()), local())
    }

    fn dir(&self, node: &str) -> String {
        self.vm_root.join(node).display().to_string()
    }
}

fn local() -> Host {
    Host::local(Arc::new(SshConfig::default()))
}

fn names(b: &MemoryBackend) -> Vec<String> {
    b.entries().into_iter().map(|(n, _)| n).collect()
}

fn needs(test: &str) -> bool {
    common::root_or_skip(test, "VM networks in namespaces, taps") && qemu_or_skip(test)
}

#[test]
fn load_boots_a_linked_clone_then_status_capture_and_reload_from_the_capture() {
    let test = "load_boots_a_linked_clone_then_status_capture_and_reload_from_the_capture";
    if !needs(test) {
        return;
    }
    let r = rig(22);
    let img = testimage::ensure();
    let mut guard = r.guard();
    guard.watch(&r.dir("qa1"));
    let b = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(r.data("qa1", 0, &img.imagename, 11), b.clone());

    assert_eq!(r.call(&ctx, "does_image_exist", vec![]).unwrap(), "true");
    assert_eq!(r.call(&ctx, "node_status", vec![]).unwrap(), "reload");
    let t = Instant::now();
    assert_eq!(r.call(&ctx, "load", vec![]).expect("load"), "true");
    eprintln!("load: {:.1} s", t.elapsed().as_secs_f64());
    let steps = names(&b);
    for step in ["transfervm", "vmsetupconfig", "startvm", "machinebooted"] {
        assert!(
            steps.iter().any(|s| s == step),
            "{step} missing from {:?}",
            b.entries()
        );
    }
    // A linked clone: the VM's disk is an overlay on the library's image.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(format!("{}/disk.qcow2", r.dir("qa1")))
        .arg("-U")
        .output()
        .expect("qemu-img info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!("{}/disk.qcow2", img.imagename)),
        "{info}"
    );
    // The image build's host key was pinned: the only key known for the guest.
    let kh = std::fs::read_to_string(r._dir.path().join("known_hosts")).expect("known_hosts");
    let guest: Vec<&str> = kh.lines().filter(|l| l.contains(&img.host_key())).collect();
    assert!(
        guest.len() == 1 && guest[0].ends_with(provhost::prim::ssh::known_hosts::PINNED),
        "{kh}"
    );

    // The image is there, but no OS module's post_load ran: not ready yet.
    assert_eq!(
        r.call(&ctx, "node_status", vec![]).unwrap(),
        "post_load",
        "{:?}",
        b.entries()
    );
    assert_eq!(r.call(&ctx, "power_status", vec![]).unwrap(), "on");
    assert_eq!(
        r.call(&ctx, "control_vm", vec!["status".into()]).unwrap(),
        "running"
    );
    // Another revision than the marker says: reload.
    let other = Ctx::new(r.data("qa1", 0, &img.imagename, 12), b.clone());
    assert_eq!(r.call(&other, "node_status", vec![]).unwrap(), "reload");

    // Capture into a new image folder; it has checksums and a size, and it boots.
    let newname = format!("provhost-capture-{}", std::process::id());
    let cap = Ctx::new(r.data("qa1", 0, &newname, 12), b.clone());
    assert_eq!(r.call(&cap, "does_image_exist", vec![]).unwrap(), "false");
    let t = Instant::now();
    assert_eq!(r.call(&cap, "capture", vec![]).expect("capture"), "true");
    eprintln!("capture: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(r.call(&cap, "power_status", vec![]).unwrap(), "off");
    let sums = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(r.library.join(&newname))
        .status()
        .expect("sha256sum");
    assert!(sums.success(), "captured image fails its SHA256SUMS");
    let size: i64 = r
        .call(&cap, "get_image_size", vec![])
        .unwrap()
        .parse()
        .expect("int");
    assert!(size > 10, "{size}");
    let b2 = Arc::new(MemoryBackend::default());
    let from_capture = Ctx::new(r.data("qa1", 0, &newname, 12), b2.clone());
    assert_eq!(
        r.call(&from_capture, "load", vec![])
            .expect("load the capture"),
        "true"
    );
    assert_eq!(
        r.call(&from_capture, "node_status", vec![]).unwrap(),
        "post_load"
    );

    // QEMU killed under the reservation: the next check notices and says why.
    let pid: i32 = std::fs::read_to_string(format!("{}/qemu.pid", r.dir("qa1")))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: the QEMU this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.call(&from_capture, "node_status", vec![]).unwrap(),
        "reload"
    );
    let last = b2.entries().last().cloned().expect("entry");
    assert_eq!(last.0, "statuscheck");
    assert!(
        last.1.contains("absent") && last.1.contains("killed or crashed"),
        "{last:?}"
    );

    assert_eq!(
        r.call(&from_capture, "control_vm", vec!["remove".into()])
            .unwrap(),
        "true"
    );
    assert!(!Path::new(&r.dir("qa1")).exists());
    assert!(!common::procs::running(&format!(
        "{}/qmp.sock",
        r.dir("qa1")
    )));
}

#[test]
fn a_guest_that_never_boots_fails_the_load_and_is_removed() {
    let test = "a_guest_that_never_boots_fails_the_load_and_is_removed";
    if !needs(test) {
        return;
    }
    let r = rig(22);
    let img = testimage::ensure();
    let mut guard = r.guard();
    guard.watch(&r.dir("qb1"));
    // An image whose kernel command line cannot boot: no init in the initrd, no root driver.
    let bad = r.library.join("provhost-neverboots");
    std::fs::create_dir_all(&bad).expect("mkdir");
    for f in [
        "disk.qcow2",
        "vmlinuz",
        "initrd.img",
        "ssh_host_ed25519_key.pub",
    ] {
        std::os::unix::fs::symlink(img.dir.join(f), bad.join(f)).expect("link");
    }
    std::fs::write(
        bad.join("cmdline"),
        "console=ttyS0 rdinit=/nonexistent root=/dev/vda panic=-1\n",
    )
    .expect("cmdline");
    let b = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(r.data("qb1", 1, "provhost-neverboots", 1), b.clone());
    let t = Instant::now();
    let e = r.call(&ctx, "load", vec![]).unwrap_err();
    eprintln!(
        "never boots: failed after {:.1} s: {e}",
        t.elapsed().as_secs_f64()
    );
    assert!(e.contains("VM qb1 did not boot"), "{e}");
    assert!(
        e.contains("Kernel panic") || e.contains("panicked") || e.contains("stopped"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(110), "{:?}", t.elapsed());
    assert!(
        names(&b).iter().any(|n| n == "startvm"),
        "{:?}",
        b.entries()
    );
    assert!(
        !Path::new(&r.dir("qb1")).exists(),
        "VM directory left behind"
    );
    assert!(
        !common::procs::running(&format!("{}/qmp.sock", r.dir("qb1"))),
        "QEMU left behind"
    );

    // A missing base image: a clear error naming the file, nothing started.
    let ctx = Ctx::new(r.data("qb1", 1, "provhost-no-such-image", 1), b.clone());
    let e = r.call(&ctx, "load", vec![]).unwrap_err();
    let want = format!(
        "qemu-img: base image {}/provhost-no-such-image/disk.qcow2 missing",
        r.library.display()
    );
    assert!(e.contains(&want), "{e}");
    assert_eq!(r.call(&ctx, "does_image_exist", vec![]).unwrap(), "false");
    let e = r.call(&ctx, "retrieve_image", vec![]).unwrap_err();
    assert!(e.contains("nor in [vm] image_sources"), "{e}");
}

#[test]
fn an_unreachable_vm_host_fails_node_status_fast() {
    let test = "an_unreachable_vm_host_fails_node_status_fast";
    if !needs(test) {
        return;
    }
    // A port nothing listens on: the VM host refuses at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let r = rig(port);
    let img = testimage::ensure();
    let mut data = r.data("qc1", 2, &img.imagename, 1);
    data.vmhost_hostname = "127.0.0.1".into();
    let ctx = Ctx::new(data, Arc::new(MemoryBackend::default()));
    let t = Instant::now();
    let e = r.call(&ctx, "node_status", vec![]).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn retrieve_image_copies_from_another_nodes_library_and_checks_the_sums() {
    let test = "retrieve_image_copies_from_another_nodes_library_and_checks_the_sums";
    if !common::tool_or_skip(test, common::sshd::SSHD) || !common::tool_or_skip(test, "sha256sum") {
        return;
    }
    let img = testimage::ensure();
    // The other management node: a real sshd, and its library with the test image and an
    // image whose SHA256SUMS does not match its files.
    let peer = common::sshd::Sshd::start();
    peer.trust();
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_lib = dir.path().join("peer-lib");
    std::fs::create_dir_all(&peer_lib).expect("mkdir");
    std::os::unix::fs::symlink(&img.dir, peer_lib.join(&img.imagename)).expect("link");
    let bad = peer_lib.join("provhost-badsums");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(bad.join("cmdline"), "console=ttyS0\n").expect("cmdline");
    std::fs::write(
        bad.join("SHA256SUMS"),
        format!("{}  cmdline\n", "0".repeat(64)),
    )
    .expect("sums");
    let library = dir.path().join("lib");
    std::fs::create_dir_all(&library).expect("mkdir");

    let vm = VmConfig {
        accel: AccelChoice::Tcg,
        image_sources: vec![format!("127.0.0.1:{}:{}", peer.port, peer_lib.display())],
        ..VmConfig::default()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: root.join("scripts"),
            stdlib_dir: root.join("stdlib"),
            limits: Limits::default(),
        },
        &[
            Arc::new(provhost::prim::remote::RemotePrims::new(SshConfig {
                local_vmhost: "local".into(),
                ..peer.config()
            })),
            Arc::new(VmnetPrims::new(Default::default())),
            Arc::new(VmPrims::new(vm, &library)),
        ],
    );
    assert!(host.load_all().is_empty());
    let key = host.find_module("provisioning/qemu").expect("qemu module");
    let call = |image: &str, routine: &str| {
        let data = ReservationData {
            computer_id: 9,
            computer_node_name: "qr1".into(),
            computer_ip: "10.79.0.99".into(),
            vmhost_hostname: "local".into(),
            image_name: image.into(),
            ..ReservationData::default()
        };
        let ctx = Ctx::new(data, Arc::new(MemoryBackend::default()));
        host.call(&key, routine, Some(&ctx), vec![], &CallOptions::default())
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    };
    assert_eq!(call(&img.imagename, "does_image_exist").unwrap(), "false");
    let t = Instant::now();
    assert_eq!(
        call(&img.imagename, "retrieve_image").expect("retrieve"),
        "true"
    );
    eprintln!("retrieve_image: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(call(&img.imagename, "does_image_exist").unwrap(), "true");
    let ok = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(library.join(&img.imagename))
        .status()
        .expect("sha256sum");
    assert!(ok.success());

    let e = call("provhost-badsums", "retrieve_image").unwrap_err();
    assert!(
        e.contains("provhost-badsums") && e.contains("checksum mismatch"),
        "{e}"
    );
    assert!(!library.join("provhost-badsums").exists());
    assert!(!library.join("provhost-badsums.part").exists());
}
