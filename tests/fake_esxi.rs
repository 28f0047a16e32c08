//! provisioning/vmware against a NAMED FAKE: no ESXi runs here, so a real sshd whose
//! `ForceCommand` is tests/fixtures/fake_esxi.py plays an ESXi host on 127.0.0.1 and the
//! guest of its VM on 127.0.0.2. The fake checks every `vim-cmd` and `vmkfstools` call
//! against the syntax ESXi accepts, answers as ESXi does, and keeps the registered VMs,
//! their power state and snapshots in a state file and the disks as files. The routines
//! run as `provhost call` runs them (`ScriptHost::call` with the real SSH primitives);
//! tests are named `fake_esxi_*`: passing them says vmware.rhai speaks the fake's ESXi,
//! not that it works on a real one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::namedfake::NamedFake;
use provhost::host::{Ctx, Kind, MemoryBackend, Primitives, ReservationData};
use provhost::prim::remote::RemotePrims;
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vmnet::VmnetPrims;

struct FakeEsxi {
    fake: NamedFake,
    backend: Arc<MemoryBackend>,
}

impl std::ops::Deref for FakeEsxi {
    type Target = NamedFake;
    fn deref(&self) -> &NamedFake {
        &self.fake
    }
}

impl FakeEsxi {
    fn start() -> FakeEsxi {
        let prepare = |state: &Path| {
            for d in ["vmfs/volumes/datastore1", "vmfs/volumes/repo/deb12"] {
                std::fs::create_dir_all(state.join(d)).expect("datastores");
            }
            // The image in the repository: a (small) virtual disk descriptor.
            std::fs::write(
                state.join("vmfs/volumes/repo/deb12/deb12.vmdk"),
                "# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentSparse\"\n",
            )
            .expect("image");
            std::fs::write(state.join("guest_name"), "vm1\n").expect("guest name");
        };
        // The ESXi host is strict (its key known), the guest accept-new.
        let fake = NamedFake::start(
            "fake_esxi.py",
            "ListenAddress 127.0.0.2\n",
            prepare,
            (Kind::Provisioning, "vmware"),
            |sshd, state| {
                let families: Vec<Arc<dyn Primitives>> = vec![
                    Arc::new(RemotePrims::new(sshd.config())),
                    Arc::new(VmPrims::new(Default::default(), &state.join("library"))),
                    Arc::new(VmnetPrims::new(Default::default())),
                ];
                families
            },
        );
        FakeEsxi {
            fake,
            backend: Arc::new(MemoryBackend::default()),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.state.path().join(rel)
    }

    /// The reservation: computer vm1 (the guest at 127.0.0.2), image deb12 (id 5,
    /// revision 0) on the ESXi host 127.0.0.1, datastore1 and the repository.
    fn ctx(&self, f: impl FnOnce(&mut ReservationData)) -> Ctx {
        let mut d = ReservationData {
            reservation_id: 1,
            request_state: "new".into(),
            computer_id: 1,
            computer_node_name: "vm1".into(),
            computer_private_ip: "127.0.0.2".into(),
            computer_ssh_port: i64::from(self.sshd.port),
            computer_type: "virtualmachine".into(),
            computer_eth0_mac: "00:50:56:00:00:01".into(),
            vmhost_hostname: "127.0.0.1".into(),
            vmprofile_datastore_path: self.path("vmfs/volumes/datastore1").display().to_string(),
            vmprofile_repository_path: self.path("vmfs/volumes/repo").display().to_string(),
            image_id: 5,
            image_name: "deb12".into(),
            imagerevision_id: 9,
            image_os_type: "linux".into(),
            ..ReservationData::default()
        };
        f(&mut d);
        Ctx::new(d, self.backend.clone())
    }

    fn ok(&self, ctx: &Ctx, routine: &str) -> String {
        match self.call(ctx, routine, Vec::new()) {
            Ok(v) => v.to_string(),
            Err(e) => panic!("{routine}: {e}\ntools:\n{}", self.tools_text()),
        }
    }

    fn esxi(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("esxi.json")).unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).expect("esxi.json")
    }

    /// The registered VMs as (name, vmx, power, snapshots).
    fn vms(&self) -> Vec<(String, String, String, Vec<String>)> {
        let s = self.esxi();
        let mut out: Vec<(String, String, String, Vec<String>)> = s["vms"]
            .as_object()
            .map(|m| {
                m.values()
                    .map(|v| {
                        (
                            v["name"].as_str().unwrap_or("").to_string(),
                            v["vmx"].as_str().unwrap_or("").to_string(),
                            v["power"].as_str().unwrap_or("").to_string(),
                            v["snapshots"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|x| x.as_str().map(String::from))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn tools(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("tools.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("tools line"))
            .collect()
    }

    fn tools_text(&self) -> String {
        std::fs::read_to_string(self.path("tools.jsonl")).unwrap_or_default()
    }

    /// Every vim-cmd/vmkfstools call had the syntax ESXi accepts.
    fn assert_all_accepted(&self) {
        let tools = self.tools();
        assert!(
            !tools.is_empty(),
            "no vim-cmd or vmkfstools call reached the fake"
        );
        for t in &tools {
            assert_eq!(
                t["accepted"],
                serde_json::Value::Bool(true),
                "ESXi would refuse: {t}"
            );
        }
    }

    /// What OS post_load leaves last in the guest (stdlib postload's marker).
    fn mark_post_loaded(&self, ctx: &Ctx) {
        let marker = format!(
            "imagerevision={} computer={}",
            ctx.data().imagerevision_id,
            ctx.data().computer_id
        );
        let out = std::process::Command::new("ssh")
            .args(self.sshd.ssh_args())
            .args(["-o", "StrictHostKeyChecking=no", "-l", &self.sshd.user, "127.0.0.2"])
            .arg(format!(
                "mkdir -p /var/lib/provhost && printf '%s\\n' '{marker}' > /var/lib/provhost/post_load"
            ))
            .output()
            .expect("ssh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn vm_dir(f: &FakeEsxi, name: &str) -> PathBuf {
    f.path("vmfs/volumes/datastore1").join(name)
}

#[test]
fn fake_esxi_full_load_node_status_power_reload_and_removal() {
    let f = FakeEsxi::start();
    let ctx = f.ctx(|_| {});
    assert_eq!(
        f.ok(&ctx, "does_image_exist"),
        "true",
        "the repository has it"
    );
    assert_eq!(
        f.ok(&ctx, "node_status"),
        "reload",
        "nothing registered yet"
    );

    assert_eq!(f.ok(&ctx, "load"), "true");
    let vmx = vm_dir(&f, "vm1_5-v0/vm1_5-v0.vmx");
    assert_eq!(
        f.vms(),
        vec![(
            "vm1".into(),
            vmx.display().to_string(),
            "on".into(),
            vec!["register".into()]
        )],
        "registered, a snapshot before the first write, powered on"
    );
    assert!(
        f.path("vmfs/volumes/datastore1/deb12/deb12.vmdk").is_file(),
        "copied from the repository to the datastore"
    );
    let text = std::fs::read_to_string(&vmx).expect("vmx");
    assert!(
        text.contains("ethernet0.address = \"00:50:56:00:00:01\""),
        "{text}"
    );
    // The guest answers (the VM runs) and has the image marker.
    let marker = std::fs::read_to_string(vm_dir(&f, "vm1_5-v0/guestfs/root/currentimage.txt"))
        .expect("marker in the guest");
    assert!(marker.starts_with("deb12\n"), "{marker}");

    assert_eq!(
        f.ok(&ctx, "node_status"),
        "post_load",
        "OS post_load has not run"
    );
    f.mark_post_loaded(&ctx);
    assert_eq!(f.ok(&ctx, "node_status"), "ready");
    assert_eq!(f.ok(&ctx, "power_status"), "on");

    let off = rhai::Dynamic::from("off");
    assert_eq!(
        f.call(&ctx, "control_vm", vec![off])
            .expect("off")
            .to_string(),
        "true"
    );
    assert_eq!(f.ok(&ctx, "power_status"), "off");
    assert_eq!(
        f.ok(&ctx, "node_status"),
        "reload",
        "a VM that is off needs a reload"
    );
    let on = rhai::Dynamic::from("on");
    assert_eq!(
        f.call(&ctx, "control_vm", vec![on])
            .expect("on")
            .to_string(),
        "true"
    );
    assert_eq!(f.ok(&ctx, "power_status"), "on");

    // A reload of another revision (VCL's reclaim → reload): the old VM goes, the new one
    // starts without the old guest's files.
    let ctx2 = f.ctx(|d| {
        d.request_state = "reload".into();
        d.imagerevision_revision = 1;
        d.imagerevision_id = 10;
    });
    assert_eq!(f.ok(&ctx2, "load"), "true");
    let vms = f.vms();
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert!(vms[0].1.ends_with("vm1_5-v1/vm1_5-v1.vmx"), "{vms:?}");
    assert!(
        !vm_dir(&f, "vm1_5-v0").exists(),
        "the old VM's folder is deleted"
    );
    assert_eq!(f.ok(&ctx2, "node_status"), "post_load");

    // Reclaim for good: nothing of this computer is left on the host.
    let remove = rhai::Dynamic::from("remove");
    assert_eq!(
        f.call(&ctx2, "control_vm", vec![remove])
            .expect("remove")
            .to_string(),
        "true"
    );
    assert!(f.vms().is_empty(), "{:?}", f.vms());
    assert!(!vm_dir(&f, "vm1_5-v1").exists());
    assert!(
        f.path("vmfs/volumes/datastore1/deb12/deb12.vmdk").is_file(),
        "the image stays"
    );
    assert_eq!(f.ok(&ctx2, "power_status"), "off");
    f.assert_all_accepted();
}

#[test]
fn fake_esxi_capture_of_a_dedicated_vm_makes_the_new_revision() {
    let f = FakeEsxi::start();
    let ctx = f.ctx(|d| d.request_forimaging = true);
    assert_eq!(f.ok(&ctx, "load"), "true");
    let vms = f.vms();
    assert_eq!(vms.len(), 1);
    assert!(
        vms[0].3.is_empty(),
        "a dedicated disk needs no snapshot: {vms:?}"
    );
    assert!(
        vm_dir(&f, "vm1_5-v0/deb12.vmdk").is_file(),
        "the VM's own copy"
    );

    let new = f.ctx(|d| {
        d.request_forimaging = true;
        d.image_name = "deb12-r1".into();
    });
    assert_eq!(f.ok(&new, "capture"), "true");
    assert_eq!(f.vms()[0].2, "off", "powered off before the copy");
    assert!(f
        .path("vmfs/volumes/datastore1/deb12-r1/deb12-r1.vmdk")
        .is_file());
    let repo = f.path("vmfs/volumes/repo/deb12-r1/deb12-r1.vmdk");
    assert!(repo.is_file());
    let format = std::fs::read_to_string(repo.with_extension("vmdk.format")).expect("format");
    assert_eq!(
        format.trim(),
        "2gbsparse",
        "the repository keeps 2 GB sparse extents"
    );
    // Capturing onto an existing image is refused.
    let err = f.call(&new, "capture", Vec::new()).expect_err("exists");
    assert!(err.to_string().contains("already exists"), "{err}");
    f.assert_all_accepted();
}

#[test]
fn fake_esxi_catches_bad_syntax_and_a_broken_vmx() {
    let f = FakeEsxi::start();
    let pool = f.sshd.pool();
    let esxi = provhost::prim::host::Host::remote(
        pool,
        f.sshd.target(provhost::prim::ssh::HostKeyPolicy::Strict),
    );
    let run = |cmd: &str| esxi.run(cmd, &Default::default()).expect("runs");
    let r = run("vim-cmd vmsvc/power.on");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Insufficient"), "{r:?}");
    let r = run("vim-cmd vmsvc/power.on twelve");
    assert!(r.stderr.contains("invalid VM id"), "{r:?}");
    let r = run("vmkfstools -i /a.vmdk");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad arguments"), "{r:?}");
    let src = f.path("vmfs/volumes/repo/deb12/deb12.vmdk");
    let r = run(&format!(
        "vmkfstools -i {} {}/x.vmdk -d thinn",
        src.display(),
        f.path("vmfs/volumes/datastore1").display()
    ));
    assert!(r.stderr.contains("bad options"), "{r:?}");
    let r = run("vim-cmd vmsvc/getallvm");
    assert!(r.stderr.contains("unknown command"), "{r:?}");
    let rejected = f
        .tools()
        .iter()
        .filter(|t| t["accepted"] == serde_json::Value::Bool(false))
        .count();
    assert_eq!(rejected, 5, "{}", f.tools_text());

    // A .vmx ESXi cannot read is refused at registration, and the module says so.
    let dir = vm_dir(&f, "bad");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("bad.vmx"), "displayName = vm1\n").expect("vmx");
    let r = run(&format!(
        "vim-cmd solo/registervm {}",
        dir.join("bad.vmx").display()
    ));
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("InvalidVmConfig"), "{r:?}");
    // A static MAC outside VMware's range in a .vmx is refused too; the module never writes
    // one (it lets ESXi generate the address instead).
    let ctx = f.ctx(|d| d.computer_eth0_mac = "52:54:00:00:00:01".into());
    assert_eq!(f.ok(&ctx, "load"), "true");
    let text = std::fs::read_to_string(vm_dir(&f, "vm1_5-v0/vm1_5-v0.vmx")).expect("vmx");
    assert!(
        text.contains("ethernet0.addressType = \"generated\""),
        "{text}"
    );
    // A VM whose disk is missing does not power on: load fails naming it.
    std::fs::remove_file(f.path("vmfs/volumes/datastore1/deb12/deb12.vmdk")).expect("rm disk");
    std::fs::remove_dir_all(f.path("vmfs/volumes/repo/deb12")).expect("rm repo image");
    let err = f.call(&ctx, "load", Vec::new()).expect_err("no image");
    assert!(err.to_string().contains("deb12.vmdk is not on"), "{err}");
    assert!(
        f.vms().is_empty(),
        "the old VM was removed, no new one registered: {:?}",
        f.vms()
    );
}
