//! The daemon provisions a real VM: a reservation on a computer of provisioning module
//! `qemu` whose VM host is this machine ("local") goes new → linked clone of the test
//! image → boot → real SSH → the shipped os/linux.rhai post-load → reserved → the user is
//! added and let in → the reservation ends → reclaim → VCL's reload request → a fresh VM
//! → available. Real QEMU under TCG, a bridged VM network in a namespace, SQLite.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::flows::Rig;
use common::testimage;
use common::testvm::TestNet;
use common::vmguard::{qemu_or_skip, VmGuard};
use provhost::db::inventory::{self, NewComputer};
use provhost::db::Backend;
use provhost::prim::host::Host;
use provhost::prim::remote::RemotePrims;
use provhost::prim::ssh::{ExecOptions, HostKeyPolicy, SshConfig, Target};
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vm::{AccelChoice, VmConfig};
use provhost::prim::vmnet::VmnetPrims;

const T: Duration = Duration::from_secs(240);

/// Wait (bounded) for load-log entry `name`; fail at once, with the texts, on `failed`.
async fn wait_step(rig: &Rig, reservation: i64, name: &str) {
    let t = std::time::Instant::now();
    loop {
        let log = rig.log(reservation).await;
        if log.iter().any(|(n, _)| n == name) {
            return;
        }
        assert!(
            !log.iter().any(|(n, _)| n == "failed") && t.elapsed() < T,
            "reservation {reservation}: no {name} entry: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_gets_a_real_vm_then_reclaim_reloads_it() {
    let test = "a_reservation_gets_a_real_vm_then_reclaim_reloads_it";
    if !common::root_or_skip(test, "VM networks in namespaces, taps") || !qemu_or_skip(test) {
        return;
    }
    let img = tokio::task::spawn_blocking(testimage::ensure)
        .await
        .expect("test image");
    let net = tokio::task::spawn_blocking(TestNet::up)
        .await
        .expect("test net");
    let dir = tempfile::tempdir().expect("tempdir");
    let vm_root = dir.path().join("vms");
    let ssh = SshConfig {
        identity: img.key.clone(),
        known_hosts: dir.path().join("known_hosts"),
        connect_timeout_secs: 3,
        ..SshConfig::default()
    };
    let prims = Arc::new(VmPrims::new(
        VmConfig {
            accel: AccelChoice::Tcg,
            vm_root: vm_root.display().to_string(),
            boot_timeout_secs: 150,
            ..VmConfig::default()
        },
        &img.library,
    ));
    let local = Host::local(Arc::new(SshConfig::default()));
    let mut guard = VmGuard::new(Arc::clone(prims.vms()), local);
    guard.watch(&vm_root.join("qvm1").display().to_string());
    let linux = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/os/linux.rhai"
    ))
    .expect("linux.rhai");
    let families: Vec<Arc<dyn provhost::host::Primitives>> = vec![
        Arc::new(RemotePrims::new(ssh.clone())),
        Arc::new(VmnetPrims::new(net.config.clone())),
        prims.clone(),
    ];
    let limits = provhost::host::Limits {
        call_timeout_secs: 300,
        ..common::scripts::test_limits()
    };
    let Some(rig) = Rig::with_limits(Backend::Sqlite, 0, &linux, 0.1, &families, limits).await
    else {
        return;
    };
    rig.scripts.write(
        "provisioning/qemu.rhai",
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/provisioning/qemu.rhai"
        ))
        .expect("qemu.rhai"),
    );
    let errors = rig.host.load_all();
    assert!(errors.is_empty(), "{errors:?}");

    let db = &rig.t.db;
    let mut vmhost = NewComputer::lab("local", "127.0.0.1");
    vmhost.computer_type = "blade".into();
    let vmhost = inventory::add_computer(db, &vmhost)
        .await
        .expect("vm host computer");
    let vh = inventory::add_vmhost(
        db,
        vmhost,
        "qemu-test",
        "",
        &img.library.display().to_string(),
        &vm_root.display().to_string(),
    )
    .await
    .expect("vmhost");
    rig.t
        .exec("UPDATE `vmprofile` SET `vmdisk` = 'shared' WHERE `profilename` = 'qemu-test'")
        .await;
    let ip = net.vm_ip(0);
    let computer = inventory::add_computer(
        db,
        &NewComputer {
            hostname: "qvm1".into(),
            ip: ip.clone(),
            private_ip: ip.clone(),
            provisioning: "qemu".into(),
            computer_type: "virtualmachine".into(),
            state: "available".into(),
            vmhost_id: Some(vh),
            ssh_port: 22,
            management_node_id: None,
        },
    )
    .await
    .expect("vm computer");
    inventory::add_image_as(
        db,
        "testimg",
        "provhost test image",
        "linux",
        &img.imagename,
    )
    .await
    .expect("image");

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("qvm1", "testimg").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    wait_step(&rig, c.reservation_id, "nodeready").await;
    let names = rig.names(c.reservation_id).await;
    let mut it = names.iter();
    for want in [
        "statuscheck",
        "loadimageblade",
        "doesimageexists",
        "startload",
        "transfervm",
        "vmsetupconfig",
        "startvm",
        "machinebooted",
        "loadimagecomplete",
        "nodeready",
    ] {
        assert!(
            it.any(|n| n == want),
            "load-log lacks {want} in order: {names:?}"
        );
    }

    // Real SSH into the VM, as the management node, at the computer's own address.
    let target = Target {
        host: ip.clone(),
        port: 22,
        user: "root".into(),
        identity: img.key.clone(),
        host_key: HostKeyPolicy::AcceptNew,
    };
    let pool = provhost::prim::ssh::Pool::new(ssh.clone());
    let out = tokio::task::spawn_blocking(move || {
        pool.exec(
            &target,
            "cat /root/currentimage.txt; hostname",
            &ExecOptions::default(),
        )
    })
    .await
    .expect("join")
    .expect("ssh into the VM");
    assert!(out.stdout.starts_with(&img.imagename), "{out:?}");

    provhost::db::flow::acknowledge(db, c.reservation_id, "10.80.0.2")
        .await
        .expect("ack");
    wait_step(&rig, c.reservation_id, "connected").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `end` = '2000-01-01 00:00:00' WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.wait_state(c.request_id, "complete", T).await;

    // Reclaim inserted VCL's reload request; the daemon loads a fresh VM.
    let reload = rig
        .t
        .scalar(&format!(
            "SELECT MAX(`requestid`) FROM `reservation` WHERE `computerid` = {computer}"
        ))
        .await;
    assert_ne!(reload, c.request_id);
    rig.wait_state(reload, "complete", T).await;
    assert_eq!(rig.computer_state(computer).await, "available");
    let reload_res = rig
        .t
        .scalar(&format!(
            "SELECT `id` FROM `reservation` WHERE `requestid` = {reload}"
        ))
        .await;
    let names = rig.names(reload_res).await;
    assert!(
        names.iter().any(|n| n == "machinebooted") && names.iter().any(|n| n == "nodeready"),
        "{names:?}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
    let vms = prims.vms().list(
        &Host::local(Arc::new(SshConfig::default())),
        &vm_root.display().to_string(),
    );
    let vms = vms.expect("list");
    assert_eq!(vms.len(), 1, "one VM for one computer: {vms:?}");
}
