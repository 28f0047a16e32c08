//! The shipped `scripts/provisioning/libvirt.rhai` against a real libvirtd (started by the
//! test, without systemd, inside the VM-host network namespace that holds the bridge) with
//! the project's test image: load defines and starts a domain on a linked clone, the guest
//! answers on real SSH at its own address and carries the image marker; node_status,
//! power_status and control_vm see it; capture shuts it down and makes a new image folder
//! that checks out; remove leaves no domain, directory or QEMU behind. The
//! routines are called with a reservation `Ctx`, the way the state flows call them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::libvirtd::{virsh, Libvirtd};
use common::testimage;
use common::testvm::TestNet;
use common::vmguard::qemu_or_skip;
use provhost::host::{
    CallOptions, Ctx, HostOptions, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::ssh::SshConfig;
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vm::{AccelChoice, VmConfig};
use provhost::prim::vmnet::VmnetPrims;

struct Rig {
    host: Arc<ScriptHost>,
    library: PathBuf,
    vm_root: PathBuf,
    _dir: tempfile::TempDir,
}

/// A library of its own that links to the test image (captures land here, not in the
/// shared cache) and a script host with the shipped modules and these settings.
fn rig(net: &TestNet) -> Rig {
    let img = testimage::ensure();
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("lib");
    std::fs::create_dir_all(&library).expect("mkdir lib");
    std::os::unix::fs::symlink(&img.dir, library.join(&img.imagename)).expect("link image");
    let vm_root = dir.path().join("vms");
    let ssh = SshConfig {
        identity: img.key.clone(),
        known_hosts: dir.path().join("known_hosts"),
        connect_timeout_secs: 3,
        local_vmhost: "local".into(),
        ..SshConfig::default()
    };
    let vm = VmConfig {
        accel: AccelChoice::Tcg,
        vm_root: vm_root.display().to_string(),
        boot_timeout_secs: 180,
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
            Arc::new(provhost::prim::remote::RemotePrims::new(ssh)),
            Arc::new(VmnetPrims::new(net.config.clone())),
            Arc::new(VmPrims::new(vm, &library)),
        ],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    Rig {
        host,
        library,
        vm_root,
        _dir: dir,
    }
}

impl Rig {
    fn data(&self, net: &TestNet, node: &str, image: &str, rev: i64) -> ReservationData {
        ReservationData {
            reservation_id: 9,
            computer_id: 41,
            computer_node_name: node.into(),
            computer_ip: net.vm_ip(0),
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
            .find_module("provisioning/libvirt")
            .expect("libvirt module");
        self.host
            .call(&key, routine, Some(ctx), args, &CallOptions::default())
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }
}

fn names(b: &MemoryBackend) -> Vec<String> {
    b.entries().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn libvirt_domain_load_status_capture_and_remove_on_real_libvirtd() {
    let test = "libvirt_domain_load_status_capture_and_remove_on_real_libvirtd";
    if !common::root_or_skip(test, "libvirtd, VM networks in namespaces")
        || !qemu_or_skip(test)
        || !common::tool_or_skip(test, "/usr/sbin/libvirtd")
    {
        return;
    }
    let net = TestNet::up();
    let t = Instant::now();
    let daemon = Libvirtd::start(Some(&net.config.netns)).expect("libvirtd");
    eprintln!("libvirtd ready in {:.1} s", t.elapsed().as_secs_f64());
    let r = rig(&net);
    let img = testimage::ensure();
    let node = format!("lv{}", std::process::id() % 100_000);
    let b = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(r.data(&net, &node, &img.imagename, 5), b.clone());

    assert_eq!(r.call(&ctx, "power_status", vec![]).unwrap(), "off");
    assert_eq!(
        r.call(&ctx, "control_vm", vec!["status".into()]).unwrap(),
        "absent"
    );
    assert_eq!(r.call(&ctx, "node_status", vec![]).unwrap(), "reload");
    assert_eq!(r.call(&ctx, "does_image_exist", vec![]).unwrap(), "true");
    let t = Instant::now();
    assert_eq!(r.call(&ctx, "load", vec![]).expect("load"), "true");
    eprintln!("libvirt load: {:.1} s", t.elapsed().as_secs_f64());
    let steps = names(&b);
    for step in ["transfervm", "vmsetupconfig", "startvm", "machinebooted"] {
        assert!(steps.iter().any(|s| s == step), "{step} missing: {steps:?}");
    }
    // libvirtd knows the domain, runs it, and the XML is the script's template.
    assert!(daemon.domains().contains(&node), "{:?}", daemon.domains());
    let xml = virsh(&["dumpxml", &node]).expect("dumpxml");
    assert!(xml.contains("<source bridge='br0'/>"), "{xml}");
    assert!(
        xml.contains(&format!("testip={}/24", net.vm_ip(0))),
        "{xml}"
    );
    // The image is there, but no OS module's post_load ran: not ready yet.
    assert_eq!(r.call(&ctx, "node_status", vec![]).unwrap(), "post_load");
    assert_eq!(r.call(&ctx, "power_status", vec![]).unwrap(), "on");
    assert_eq!(
        r.call(&ctx, "control_vm", vec!["status".into()]).unwrap(),
        "running"
    );
    // Another revision than the marker says: reload.
    let other = Ctx::new(r.data(&net, &node, &img.imagename, 6), b.clone());
    assert_eq!(r.call(&other, "node_status", vec![]).unwrap(), "reload");

    // Capture: ACPI shutdown (the image's power-button watcher), a new checked image folder.
    let newname = format!("provhost-lvcapture-{}", std::process::id());
    let cap = Ctx::new(r.data(&net, &node, &newname, 6), b.clone());
    let t = Instant::now();
    assert_eq!(r.call(&cap, "capture", vec![]).expect("capture"), "true");
    eprintln!("libvirt capture: {:.1} s", t.elapsed().as_secs_f64());
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

    // Remove leaves nothing behind. (That a capture boots is the qemu module's test: the
    // folder is the same, made by stdlib/vmimage.rhai.)
    assert_eq!(
        r.call(&cap, "control_vm", vec!["remove".into()]).unwrap(),
        "true"
    );
    assert!(!daemon.domains().contains(&node), "{:?}", daemon.domains());
    assert!(!r.vm_root.join(&node).exists(), "VM directory left behind");
    assert_eq!(
        r.call(&cap, "control_vm", vec!["status".into()]).unwrap(),
        "absent"
    );
    drop(daemon);
    assert!(
        !common::procs::running(&format!("{}/disk.qcow2", r.vm_root.join(&node).display())),
        "QEMU left behind"
    );
}
