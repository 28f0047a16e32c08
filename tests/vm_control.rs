//! `prim::vm` on real QEMU (TCG): start, status, QMP, stop, kill, list and "a restarted
//! daemon finds its VMs", locally and on a VM host reached over SSH (a real sshd on
//! loopback; QMP through streamlocal forwarding); the faults (QMP socket gone, QEMU killed,
//! missing files, bad network) and the accelerator fallback. Most VMs here boot no OS at
//! all (QEMU sits in its firmware), which is enough for process and QMP control and cheap
//! on a shared 2-core machine.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::vmguard::{qemu_or_skip, VmGuard};
use provhost::host::{
    CallOptions, Ctx, HostOptions, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::host::Host;
use provhost::prim::ssh::{HostKeyPolicy, SshConfig};
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vm::{AccelChoice, VmConfig, VmError, VmSpec, Vms};

fn tcg() -> VmConfig {
    VmConfig {
        accel: AccelChoice::Tcg,
        ..VmConfig::default()
    }
}

fn firmware_vm(name: &str, root: &std::path::Path) -> VmSpec {
    let mut s = VmSpec::new(name, &root.join(name).display().to_string());
    s.memory_mb = 64;
    s
}

fn local() -> Host {
    Host::local(Arc::new(SshConfig::default()))
}

fn kill_pid(pid: i64) {
    // SAFETY: signalling the QEMU this test started (its pid came from its own pid file).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// The whole life of a VM against one host; shared by the local and the SSH test.
fn lifecycle(host: &Host, root: &std::path::Path) {
    let vms = Arc::new(Vms::new(tcg()));
    let mut guard = VmGuard::new(Arc::clone(&vms), host.clone());
    let spec = firmware_vm("fw1", root);
    let dir = spec.dir.clone();
    guard.watch(&dir);

    let absent = vms.status(host, &dir).expect("status");
    assert_eq!(absent.state, "absent");
    assert!(absent.reason.contains("does not exist"), "{absent:?}");

    let started = vms.start(host, &spec).expect("start");
    assert_eq!(started.accel, "tcg");
    let st = vms.status(host, &dir).expect("status");
    assert_eq!(st.state, "running", "{st:?}");
    assert_eq!(st.pid, Some(started.pid));
    assert_eq!(st.name, "fw1");
    let r = vms.qmp(host, &dir, "query-status", None).expect("qmp");
    assert_eq!(r["running"], true);
    let e = vms.qmp(host, &dir, "no-such-command", None).unwrap_err();
    assert!(e.to_string().contains("CommandNotFound"), "{e}");
    vms.qmp(host, &dir, "stop", None).expect("pause");
    assert_eq!(vms.status(host, &dir).expect("status").state, "paused");
    vms.qmp(host, &dir, "cont", None).expect("cont");
    let e = vms.start(host, &spec).unwrap_err();
    assert!(matches!(e, VmError::AlreadyRunning { .. }), "{e}");
    assert!(e.to_string().contains("already running"), "{e}");

    // A "restarted daemon": a new controller finds the VM from the run directory alone.
    let fresh = Vms::new(tcg());
    let found = fresh.list(host, &root.display().to_string()).expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, dir);
    assert_eq!(found[0].1.state, "running");
    // The firmware has no ACPI handler: the power button does nothing, so `quit` ends it.
    let t = Instant::now();
    assert_eq!(
        fresh
            .stop(host, &dir, Duration::from_secs(1))
            .expect("stop"),
        "quit"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let st = vms.status(host, &dir).expect("status");
    assert_eq!(st.state, "absent");
    assert!(st.reason.contains("no pid file"), "{st:?}");
    assert_eq!(
        vms.stop(host, &dir, Duration::ZERO).expect("stop"),
        "absent"
    );

    // QEMU killed under us: status says absent and why; QMP says the socket is gone.
    let started = vms.start(host, &spec).expect("start again");
    kill_pid(started.pid);
    let t = Instant::now();
    let st = loop {
        let st = vms.status(host, &dir).expect("status");
        if st.state == "absent" || t.elapsed() > Duration::from_secs(5) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.state, "absent");
    assert!(st.reason.contains("killed or crashed"), "{st:?}");
    assert!(st.reason.contains(&started.pid.to_string()), "{st:?}");
    let e = vms.qmp(host, &dir, "query-status", None).unwrap_err();
    assert!(
        e.to_string().contains("QMP socket") && e.to_string().contains("gone: QEMU is not running"),
        "{e}"
    );

    // The QMP socket removed while QEMU runs: status "unreachable", qmp names it, kill works.
    let started = vms.start(host, &spec).expect("start a third time");
    std::fs::remove_file(root.join("fw1/qmp.sock")).expect("rm qmp.sock");
    let st = vms.status(host, &dir).expect("status");
    assert_eq!(st.state, "unreachable", "{st:?}");
    let e = vms.qmp(host, &dir, "query-status", None).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("gone while QEMU (pid {})", started.pid)),
        "{e}"
    );
    assert!(vms.kill(host, &dir).expect("kill"));
    assert_eq!(vms.status(host, &dir).expect("status").state, "absent");
    assert!(!vms.kill(host, &dir).expect("kill again"));
    assert!(
        !common::procs::running(&format!("{dir}/qmp.sock")),
        "QEMU left behind"
    );
}

#[test]
fn local_vm_start_status_qmp_stop_kill_list() {
    if !qemu_or_skip("local_vm_start_status_qmp_stop_kill_list") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    lifecycle(&local(), root.path());
}

#[test]
fn vm_host_over_ssh_qmp_through_streamlocal() {
    if !qemu_or_skip("vm_host_over_ssh_qmp_through_streamlocal")
        || !common::tool_or_skip(
            "vm_host_over_ssh_qmp_through_streamlocal",
            common::sshd::SSHD,
        )
    {
        return;
    }
    let s = Sshd::start();
    s.trust();
    let host = Host::remote(s.pool(), s.target(HostKeyPolicy::Strict));
    let root = tempfile::tempdir().expect("tempdir");
    lifecycle(&host, root.path());
}

#[test]
fn bad_specs_missing_files_and_networks_are_named() {
    if !qemu_or_skip("bad_specs_missing_files_and_networks_are_named") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let vms = Arc::new(Vms::new(tcg()));
    let host = local();
    let mut guard = VmGuard::new(Arc::clone(&vms), host.clone());
    let mut spec = firmware_vm("bad1", root.path());
    guard.watch(&spec.dir);
    spec.disk = Some(root.path().join("nope/disk.qcow2").display().to_string());
    let e = vms.start(&host, &spec).unwrap_err().to_string();
    assert!(
        e.contains("disk") && e.contains("nope/disk.qcow2 missing"),
        "{e}"
    );

    let mut spec = firmware_vm("bad2", root.path());
    guard.watch(&spec.dir);
    spec.netns = Some("pv-nonexist0".into());
    spec.bridge = Some("br0".into());
    spec.tap = Some("pvt-bad2".into());
    spec.mac = Some("52:54:00:00:00:02".into());
    let e = vms.start(&host, &spec).unwrap_err().to_string();
    assert!(
        e.contains("tap pvt-bad2 on bridge br0 in netns pv-nonexist0") && e.contains("vmnet::up"),
        "{e}"
    );
    assert_eq!(
        vms.status(&host, &spec.dir).expect("status").state,
        "absent"
    );

    let mut spec = firmware_vm("bad3", root.path());
    guard.watch(&spec.dir);
    spec.memory_mb = 5;
    let e = vms.start(&host, &spec).unwrap_err().to_string();
    assert!(e.contains("VM bad3: bad spec: memory_mb 5"), "{e}");

    // QEMU's own refusal comes back with its message, and nothing is left running.
    let mut spec = firmware_vm("bad4", root.path());
    guard.watch(&spec.dir);
    let disk = root.path().join("not-qcow2.img");
    std::fs::write(&disk, b"this is no qcow2 image").expect("write");
    spec.disk = Some(disk.display().to_string());
    let e = vms.start(&host, &spec).unwrap_err().to_string();
    assert!(
        e.contains("VM bad4 on local: QEMU did not start") && e.contains("qcow2"),
        "{e}"
    );
    assert_eq!(
        vms.status(&host, &spec.dir).expect("status").state,
        "absent"
    );
}

const SCRIPT: &str = r#"
const MODULE = #{ kind: "site", name: "vmtest", version: "1" };

fn post_load(ctx) { true }

fn drive(ctx, root) {
    let h = local_host();
    let dir = `${root}/s1`;
    let r = vm::start(h, #{ name: "s1", dir: dir, memory_mb: 64, accel: "tcg" });
    let s = vm::status(h, dir);
    let q = vm::qmp(h, dir, #{ execute: "query-status" });
    let l = vm::list(h, root);
    let info = vm::info(h, dir);
    let how = vm::stop(h, dir, #{ grace: 0 });
    let err = "";
    try { vm::qmp(h, dir, #{ execute: "query-status" }); } catch (e) { err = e; }
    let bad = "";
    try { vm::start(h, #{ name: "s2", dir: `${root}/s2`, memry_mb: 64 }); } catch (e) { bad = e; }
    #{ accel: r.accel, status: s, qmp: q.status, listed: l.len(), pid_ok: info.pid == r.pid,
       how: how, after: vm::status(h, dir), err: err, bad: bad, mac: vm::mac_for_ip("10.77.0.10") }
}
"#;

#[test]
fn rhai_module_vm_drives_a_vm() {
    if !qemu_or_skip("rhai_module_vm_drives_a_vm") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts/site")).expect("mkdir");
    std::fs::write(dir.path().join("scripts/site/vmtest.rhai"), SCRIPT).expect("script");
    let prims = Arc::new(VmPrims::new(tcg(), &dir.path().join("images")));
    let mut guard = VmGuard::new(Arc::clone(prims.vms()), local());
    let root = dir.path().join("vms");
    guard.watch(&root.join("s1").display().to_string());
    let opts = HostOptions {
        scripts_dir: dir.path().join("scripts"),
        stdlib_dir: dir.path().join("stdlib"),
        limits: Limits::default(),
    };
    let host = ScriptHost::new(
        opts,
        &[
            Arc::new(provhost::prim::remote::RemotePrims::new(
                SshConfig::default(),
            )),
            prims,
        ],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let ctx = Ctx::new(
        ReservationData::default(),
        Arc::new(MemoryBackend::default()),
    );
    let key = host.find_module("site/vmtest").expect("module");
    let out = host
        .call(
            &key,
            "drive",
            Some(&ctx),
            vec![root.display().to_string().into()],
            &CallOptions::default(),
        )
        .expect("drive");
    let m = out.cast::<rhai::Map>();
    let get = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
    assert_eq!(get("accel"), "tcg");
    assert_eq!(get("status"), "running");
    assert_eq!(get("qmp"), "running");
    assert_eq!(get("listed"), "1");
    assert_eq!(get("pid_ok"), "true");
    assert_eq!(get("how"), "quit");
    assert_eq!(get("after"), "absent");
    assert!(get("err").contains("gone: QEMU is not running"), "{m:?}");
    assert!(get("bad").contains("unknown option \"memry_mb\""), "{m:?}");
    assert_eq!(get("mac"), "52:54:00:4d:00:0a");
}

#[test]
fn accel_auto_proves_kvm_by_booting_and_falls_back_to_tcg() {
    if !qemu_or_skip("accel_auto_proves_kvm_by_booting_and_falls_back_to_tcg") {
        return;
    }
    // The test image's kernel (built on first use on this machine).
    let kernel = common::testimage::ensure().kernel().display().to_string();
    let root = tempfile::tempdir().expect("tempdir");
    let vms = Arc::new(Vms::new(VmConfig::default()));
    let host = local();
    let mut guard = VmGuard::new(Arc::clone(&vms), host.clone());
    let mut spec = firmware_vm("acc1", root.path());
    spec.kernel = Some(kernel);
    spec.append = Some("console=ttyS0 root=/dev/nonexistent panic=-1".into());
    guard.watch(&spec.dir);
    let t = Instant::now();
    let started = vms.start(&host, &spec).expect("start");
    let first = t.elapsed();
    eprintln!(
        "accel auto: {} ({}) after {:.1} s",
        started.accel,
        started.accel_reason,
        first.as_secs_f64()
    );
    let kvm_usable = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" vmx") || c.contains(" svm"))
        .unwrap_or(false);
    if !kvm_usable {
        assert_eq!(started.accel, "tcg", "{started:?}");
        assert!(
            started.accel_reason.contains("KVM") || started.accel_reason.contains("/dev/kvm"),
            "{started:?}"
        );
    }
    assert!(first < Duration::from_secs(25), "{first:?}");
    assert!(
        !common::procs::running("provhost-kvmprobe"),
        "the KVM probe QEMU was left behind"
    );
    // The verdict is kept: the next start does not prove again.
    assert_eq!(
        vms.accel_verdict(&host).map(|v| v.accel),
        Some(started.accel.clone())
    );
    vms.kill(&host, &spec.dir).expect("kill");
    let t = Instant::now();
    let again = vms.start(&host, &spec).expect("start again");
    assert_eq!(again.accel_reason, started.accel_reason);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
