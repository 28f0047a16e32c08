//! The daemon provisions a real VM: a reservation on a computer of provisioning module
//! `qemu` (or `libvirt`, on a real libvirtd) whose VM host is this machine ("local") goes
//! new → linked clone of the test image → boot → real SSH → the shipped os/linux.rhai
//! post-load → reserved → the user is added and let in → the reservation ends → reclaim →
//! VCL's reload request → a fresh VM → available. Also: VCL's web "Create image" captured
//! by the daemon and the new revision booting; and `retrieve_image` between two management
//! nodes (two daemons, two libraries, one MariaDB, a real sshd for the partner node). Real
//! QEMU under TCG, a bridged VM network in a namespace, SQLite unless said.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::flows::Rig;
use common::libvirtd::Libvirtd;
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

/// Everything one of these tests needs; dropping it kills the VM, then the network.
struct Setup {
    rig: Rig,
    img: testimage::TestImage,
    prims: Arc<VmPrims>,
    ssh: SshConfig,
    vm_root: std::path::PathBuf,
    computer: i64,
    ip: String,
    dir: tempfile::TempDir,
    _guard: VmGuard,
    /// For `libvirt`: the daemon, inside the VM-host namespace (stopped before the network).
    _libvirtd: Option<Libvirtd>,
    net: TestNet,
}

/// The test image, a VM network, a SQLite rig with the shipped `module` (qemu or libvirt,
/// with a libvirtd started in the VM-host namespace) and os/linux.rhai, this machine as VM
/// host "local" (vmprofile: the test image library, linked clones) and one VM computer
/// `qvm1` on it.
async fn setup(module: &str) -> Option<Setup> {
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
        local_vmhost: "local".into(),
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
    let rig = Rig::with_limits(Backend::Sqlite, 0, &linux, 0.1, &families, limits).await?;
    let file = format!("provisioning/{module}.rhai");
    rig.scripts.write(
        &file,
        std::fs::read(format!("{}/scripts/{file}", env!("CARGO_MANIFEST_DIR"))).expect("module"),
    );
    let libvirtd = if module == "libvirt" {
        let ns = net.config.netns.clone();
        Some(
            tokio::task::spawn_blocking(move || Libvirtd::start(Some(&ns)))
                .await
                .expect("join")
                .expect("libvirtd"),
        )
    } else {
        None
    };
    let errors = rig.host.load_all();
    assert!(errors.is_empty(), "{errors:?}");

    let db = &rig.t.db;
    let ip = net.vm_ip(0);
    let computer = vm_computer(
        db,
        &img.library.display().to_string(),
        &vm_root,
        &ip,
        module,
        None,
    )
    .await;
    inventory::add_image_as(
        db,
        "testimg",
        "provhost test image",
        "linux",
        &img.imagename,
    )
    .await
    .expect("image");

    Some(Setup {
        rig,
        img,
        prims,
        ssh,
        vm_root,
        computer,
        ip,
        dir,
        _guard: guard,
        _libvirtd: libvirtd,
        net,
    })
}

/// This machine as VM host "local" (vmprofile `qemu-test`: images from `repository`, or
/// `[images] library` when empty; VMs under `vm_root`; linked clones) and one VM computer
/// `qvm1` at `ip` of provisioning `module`, pinned to management node `node` when given.
async fn vm_computer(
    db: &provhost::db::Db,
    repository: &str,
    vm_root: &std::path::Path,
    ip: &str,
    module: &str,
    node: Option<i64>,
) -> i64 {
    let mut vmhost = NewComputer::lab("local", "127.0.0.1");
    vmhost.computer_type = "blade".into();
    let vmhost = inventory::add_computer(db, &vmhost)
        .await
        .expect("vm host computer");
    let root = vm_root.display().to_string();
    let vh = inventory::add_vmhost(db, vmhost, "qemu-test", "", repository, &root)
        .await
        .expect("vmhost");
    inventory::set_vmprofile_vmdisk(db, "qemu-test", "shared")
        .await
        .expect("vmdisk");
    inventory::add_computer(
        db,
        &NewComputer {
            hostname: "qvm1".into(),
            ip: ip.to_string(),
            private_ip: ip.to_string(),
            provisioning: module.into(),
            computer_type: "virtualmachine".into(),
            state: "available".into(),
            vmhost_id: Some(vh),
            ssh_port: 22,
            management_node_id: node,
        },
    )
    .await
    .expect("vm computer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_gets_a_real_vm_then_reclaim_reloads_it() {
    let test = "a_reservation_gets_a_real_vm_then_reclaim_reloads_it";
    if !common::root_or_skip(test, "VM networks in namespaces, taps") || !qemu_or_skip(test) {
        return;
    }
    let Some(s) = setup("qemu").await else { return };
    life_cycle(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_gets_a_libvirt_domain_then_reclaim_reloads_it() {
    let test = "a_reservation_gets_a_libvirt_domain_then_reclaim_reloads_it";
    if !common::root_or_skip(test, "libvirtd, VM networks in namespaces")
        || !qemu_or_skip(test)
        || !common::tool_or_skip(test, "/usr/sbin/libvirtd")
    {
        return;
    }
    let Some(s) = setup("libvirt").await else {
        return;
    };
    life_cycle(&s).await;
    let domains = s
        ._libvirtd
        .as_ref()
        .map(|d| d.domains())
        .unwrap_or_default();
    assert_eq!(
        domains,
        vec!["qvm1".to_string()],
        "one domain for one computer"
    );
}

/// new → VM → real SSH → reserved → connected → end → reclaim → reload → available.
async fn life_cycle(s: &Setup) {
    let (rig, img, ssh, computer, ip) = (&s.rig, &s.img, &s.ssh, s.computer, s.ip.clone());
    let db = &rig.t.db;
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("qvm1", "testimg").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    wait_step(rig, c.reservation_id, "nodeready").await;
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
    let out = marker_with(ssh, &img.key, &ip).await;
    assert!(out.starts_with(&img.imagename), "{out:?}");

    provhost::db::flow::acknowledge(db, c.reservation_id, "10.80.0.2")
        .await
        .expect("ack");
    wait_step(rig, c.reservation_id, "connected").await;
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
    if s._libvirtd.is_none() {
        let vms = s.prims.vms().list(
            &Host::local(Arc::new(SshConfig::default())),
            &s.vm_root.display().to_string(),
        );
        let vms = vms.expect("list");
        assert_eq!(vms.len(), 1, "one VM for one computer: {vms:?}");
    }
}

/// `provhost serve` for this setup, as a child process killed on drop.
fn serve(s: &Setup, log: &str) -> common::procs::KillOnDrop {
    let d = s.dir.path();
    let n = &s.net.config;
    let cfg = d.join("provhost.toml");
    let text = format!(
        "[paths]\nscripts = {:?}\nstdlib = {:?}\ndata_dir = {:?}\n\n[scripts]\ncall_timeout_secs = 300\n\n\
         [database]\nurl = {:?}\n\n[daemon]\nnode = \"mn1.test\"\npoll_interval_secs = 1\nlease_secs = 5\nheartbeat_secs = 1\nlease_wait_secs = 60\n\n\
         [daemon.timings]\nacknowledgetimeout = 600\nacknowledge_poll_ms = 100\ninitialconnecttimeout = 2\nconnect_poll = 1\n\n\
         [ssh]\nidentity = {:?}\nknown_hosts = {:?}\nconnect_timeout_secs = 3\nlocal_vmhost = \"local\"\n\n\
         [vm]\naccel = \"tcg\"\nvm_root = {:?}\nboot_timeout_secs = 150\n\n[images]\nlibrary = {:?}\n\n\
         [vmnet]\nnetns = {:?}\nbridge = {:?}\ngateway = {:?}\nuplink = {:?}\nuplink_dev = {:?}\n",
        s.rig.scripts.scripts,
        concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib"),
        d.join("data"),
        s.rig.t.url,
        s.img.key,
        d.join("known_hosts_serve"),
        s.vm_root,
        s.img.library,
        n.netns,
        n.bridge,
        n.gateway,
        n.uplink,
        n.uplink_dev,
    );
    std::fs::write(&cfg, text).expect("config");
    let out = std::fs::File::create(d.join(log)).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env("PROVHOST_LOG", "info")
        .env_remove("PROVHOST_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn provhost serve");
    common::procs::KillOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_load_restarts_removes_the_half_made_vm_and_loads_again() {
    let test = "daemon_killed_mid_load_restarts_removes_the_half_made_vm_and_loads_again";
    if !common::root_or_skip(test, "VM networks in namespaces, taps") || !qemu_or_skip(test) {
        return;
    }
    let Some(s) = setup("qemu").await else { return };
    let rig = &s.rig;
    let c = rig.request("qvm1", "testimg").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    let local = Host::local(Arc::new(SshConfig::default()));
    let dir = s.vm_root.join("qvm1").display().to_string();

    let mut first = serve(&s, "first.log");
    wait_step(rig, c.reservation_id, "startvm").await;
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    let vms = Arc::clone(s.prims.vms());
    let (l, d) = (local.clone(), dir.clone());
    let half = tokio::task::spawn_blocking(move || vms.status(&l, &d))
        .await
        .expect("join")
        .expect("status");
    assert_eq!(
        half.state, "running",
        "the half-made VM outlives the daemon: {half:?}"
    );

    let _second = serve(&s, "second.log");
    wait_step(rig, c.reservation_id, "nodeready").await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains("recovered after a daemon restart")),
        "{log:#?}"
    );
    assert_eq!(
        log.iter().filter(|(n, _)| n == "startvm").count(),
        2,
        "loaded again: {log:#?}"
    );
    let vms = Arc::clone(s.prims.vms());
    let root = s.vm_root.display().to_string();
    let list = tokio::task::spawn_blocking(move || vms.list(&local, &root))
        .await
        .expect("join")
        .expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].1.state, "running");
    assert_ne!(list[0].1.pid, half.pid, "the half-made VM was replaced");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", half.pid.unwrap_or(0))).exists()
            || std::fs::read_to_string(format!("/proc/{}/cmdline", half.pid.unwrap_or(0)))
                .map(|c| c.is_empty())
                .unwrap_or(true),
        "the half-made QEMU still runs"
    );
}

/// Check `<library>/<imagename>` against its SHA256SUMS.
fn sums_ok(library: &std::path::Path, imagename: &str) -> bool {
    std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(library.join(imagename))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The image marker (`/root/currentimage.txt`) of the VM at `ip`, over real SSH.
async fn marker(s: &Setup, ip: &str) -> String {
    marker_with(&s.ssh, &s.img.key, ip).await
}

/// The image marker of the VM at `ip`, as root with `key` through a pool made from `ssh`.
async fn marker_with(ssh: &SshConfig, key: &std::path::Path, ip: &str) -> String {
    let target = Target {
        host: ip.to_string(),
        port: 22,
        user: "root".into(),
        identity: key.to_path_buf(),
        host_key: HostKeyPolicy::AcceptNew,
    };
    let pool = provhost::prim::ssh::Pool::new(ssh.clone());
    tokio::task::spawn_blocking(move || {
        pool.exec(
            &target,
            "cat /root/currentimage.txt",
            &ExecOptions::default(),
        )
    })
    .await
    .expect("join")
    .expect("ssh into the VM")
    .stdout
}

/// VCL's "Create image" on a reservation of a real VM: the web front end inserts the next
/// `imagerevision` (`deleted = 1`, `production = 0`), points the reservation at it and
/// puts the request in state `image`; the daemon captures the VM into the library
/// (SHA256SUMS), records the size, un-deletes the revision with its `datecreated`, and
/// reloads the computer from the new revision; a new reservation for that revision finds
/// the VM ready (its marker names the revision) without another load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_through_the_daemon_then_the_new_revision_boots() {
    let test = "create_image_through_the_daemon_then_the_new_revision_boots";
    if !common::root_or_skip(test, "VM networks in namespaces, taps") || !qemu_or_skip(test) {
        return;
    }
    let started = std::time::Instant::now();
    let Some(s) = setup("qemu").await else { return };
    let (rig, img) = (&s.rig, &s.img);
    // A library of this test's own (captures must not land in the shared test-image cache).
    let library = s.dir.path().join("lib");
    std::fs::create_dir_all(&library).expect("mkdir lib");
    std::os::unix::fs::symlink(&img.dir, library.join(&img.imagename)).expect("link image");
    rig.t
        .exec(&format!(
            "UPDATE `vmprofile` SET `repositorypath` = '{}' WHERE `profilename` = 'qemu-test'",
            library.display()
        ))
        .await;

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("qvm1", "testimg").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    wait_step(rig, c.reservation_id, "nodeready").await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "10.80.0.2")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "inuse", T).await;

    // The web front end's "Create image" (an update of image testimg): the next revision,
    // hidden until vcld reports success, the reservation pointed at it, state image.
    let newname = "testimg-v1";
    rig.t
        .exec(&format!(
            "INSERT INTO `imagerevision` (`imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `comments`, `imagename`) \
             VALUES ({}, 1, 1, '2000-01-01 00:00:00', 1, 0, 'made by the web front end', '{newname}')",
            c.image_id
        ))
        .await;
    let rev = rig
        .t
        .scalar(&format!(
            "SELECT `id` FROM `imagerevision` WHERE `imagename` = '{newname}'"
        ))
        .await;
    rig.t
        .exec(&format!(
            "UPDATE `reservation` SET `imagerevisionid` = {rev} WHERE `id` = {}",
            c.reservation_id
        ))
        .await;
    let image_state = provhost::vcl::state_id("image").expect("state image");
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `stateid` = {image_state}, `laststateid` = 8, `forimaging` = 1 WHERE `id` = {} AND `stateid` = 8",
            c.request_id
        ))
        .await;
    rig.wait_state(c.request_id, "complete", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains(&format!("captured {newname}"))),
        "{log:#?}"
    );

    // What VCL's web front end looks for: the revision live, dated, the image's size.
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `deleted` FROM `imagerevision` WHERE `id` = {rev}"
            ))
            .await,
        0,
        "the captured revision is still deleted"
    );
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `imagerevision` WHERE `id` = {rev} AND `datecreated` > '2001-01-01 00:00:00'"
            ))
            .await,
        1,
        "datecreated was not set at capture"
    );
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT COUNT(*) FROM `imagerevision` WHERE `imageid` = {}",
                c.image_id
            ))
            .await,
        2,
        "the web's revision was used, no other made"
    );
    let size = rig
        .t
        .scalar(&format!(
            "SELECT `size` FROM `image` WHERE `id` = {}",
            c.image_id
        ))
        .await;
    let du = std::process::Command::new("du")
        .arg("-sm")
        .arg(library.join(newname))
        .output()
        .expect("du");
    let du: i64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du -sm");
    assert!(size > 10 && size == du, "image.size {size}, du -sm {du}");
    assert!(sums_ok(&library, newname), "{newname} fails its SHA256SUMS");
    assert!(!library.join(format!("{newname}.part")).exists());

    // The capture's reload request loads the new revision.
    let reload = rig
        .t
        .scalar(&format!(
            "SELECT MAX(`requestid`) FROM `reservation` WHERE `computerid` = {}",
            s.computer
        ))
        .await;
    assert_ne!(reload, c.request_id);
    rig.wait_state(reload, "complete", T).await;
    let reload_res = rig
        .t
        .scalar(&format!(
            "SELECT `id` FROM `reservation` WHERE `requestid` = {reload}"
        ))
        .await;
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `imagerevisionid` FROM `reservation` WHERE `id` = {reload_res}"
            ))
            .await,
        rev
    );
    let names = rig.names(reload_res).await;
    assert!(
        names.iter().any(|n| n == "machinebooted"),
        "the reload did not boot: {names:?}"
    );
    assert_eq!(rig.computer_state(s.computer).await, "available");

    // The user makes the revision production (makeproduction) and reserves it: the VM the
    // reload booted is ready as it is.
    provhost::db::image::make_production(&rig.t.db, rev)
        .await
        .expect("make production");
    let n = rig.request("qvm1", "testimg").await;
    assert_eq!(n.imagerevision_id, rev);
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            n.request_id
        ))
        .await;
    wait_step(rig, n.reservation_id, "nodeready").await;
    wait_step(rig, n.reservation_id, "reserved").await;
    let names = rig.names(n.reservation_id).await;
    assert!(
        names.iter().any(|n| n == "statuscheck") && !names.iter().any(|n| n == "startvm"),
        "node_status should have found the VM ready: {names:?}"
    );
    let m = marker(&s, &s.ip).await;
    assert!(
        m.starts_with(newname) && m.contains(&format!("imagerevision_id={rev}")),
        "{m}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
    eprintln!("{test}: {:.1} s wall", started.elapsed().as_secs_f64());
}

/// Two management nodes on one MariaDB database, each with its own daemon and image
/// library: node A (mn1) has the test image, node B (mn2) does not, and B's
/// `[vm] image_sources` names A's library over SSH (a real sshd on loopback standing for
/// node A). A reservation for B's computer: doesimageexists → copyfrompartnerMN → the copy
/// (SHA256SUMS checked) → a linked clone of B's own copy boots → reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_image_between_two_management_nodes_on_one_mariadb() {
    let test = "retrieve_image_between_two_management_nodes_on_one_mariadb";
    if !common::root_or_skip(test, "VM networks in namespaces, taps")
        || !qemu_or_skip(test)
        || !common::tool_or_skip(test, common::sshd::SSHD)
    {
        return;
    }
    let started = std::time::Instant::now();
    let img = tokio::task::spawn_blocking(testimage::ensure)
        .await
        .expect("test image");
    let net = tokio::task::spawn_blocking(TestNet::up)
        .await
        .expect("test net");
    let dir = tempfile::tempdir().expect("tempdir");
    // Node A's SSH: a real sshd that lets node B in with the key B uses everywhere.
    let node_a = common::sshd::Sshd::start();
    node_a.trust();
    let pubkey = std::fs::read_to_string(img.key.with_extension("pub")).expect("test key .pub");
    let mut keys = std::fs::OpenOptions::new()
        .append(true)
        .open(node_a.path("authorized_keys"))
        .expect("authorized_keys");
    std::io::Write::write_all(&mut keys, pubkey.as_bytes()).expect("add key");
    drop(keys);

    let lib_a = dir.path().join("lib-a");
    let lib_b = dir.path().join("lib-b");
    std::fs::create_dir_all(&lib_a).expect("mkdir lib-a");
    std::fs::create_dir_all(&lib_b).expect("mkdir lib-b");
    std::os::unix::fs::symlink(&img.dir, lib_a.join(&img.imagename)).expect("link image");
    let vm_root = dir.path().join("vms");
    let ssh = SshConfig {
        identity: img.key.clone(),
        known_hosts: node_a.known_hosts.clone(),
        connect_timeout_secs: 3,
        local_vmhost: "local".into(),
        ..SshConfig::default()
    };
    let vm = VmConfig {
        accel: AccelChoice::Tcg,
        vm_root: vm_root.display().to_string(),
        boot_timeout_secs: 150,
        ..VmConfig::default()
    };
    let prims_a = Arc::new(VmPrims::new(vm.clone(), &lib_a));
    let prims_b = Arc::new(VmPrims::new(
        VmConfig {
            image_sources: vec![format!("127.0.0.1:{}:{}", node_a.port, lib_a.display())],
            ..vm
        },
        &lib_b,
    ));
    let local = Host::local(Arc::new(SshConfig::default()));
    let mut guard = VmGuard::new(Arc::clone(prims_b.vms()), local);
    guard.watch(&vm_root.join("qvm1").display().to_string());
    let linux = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/os/linux.rhai"
    ))
    .expect("linux.rhai");
    let families = |prims: Arc<VmPrims>| -> Vec<Arc<dyn provhost::host::Primitives>> {
        vec![
            Arc::new(RemotePrims::new(ssh.clone())),
            Arc::new(VmnetPrims::new(net.config.clone())),
            prims,
        ]
    };
    let limits = provhost::host::Limits {
        call_timeout_secs: 300,
        ..common::scripts::test_limits()
    };
    let Some(rig) = Rig::with_limits(
        Backend::MySql,
        0,
        &linux,
        0.1,
        &families(prims_a),
        limits.clone(),
    )
    .await
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
    let host_b = provhost::host::ScriptHost::new(
        provhost::host::HostOptions {
            scripts_dir: rig.scripts.scripts.clone(),
            stdlib_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/stdlib").into(),
            limits,
        },
        &families(prims_b),
    );
    let errors = host_b.load_all();
    assert!(errors.is_empty(), "{errors:?}");

    let db = &rig.t.db;
    let mn2 = inventory::add_management_node(db, "mn2.test", "127.0.0.2")
        .await
        .expect("mn2");
    // No repositorypath: each node's VMs come from its own `[images] library`.
    let ip = net.vm_ip(0);
    let computer = vm_computer(db, "", &vm_root, &ip, "qemu", Some(mn2)).await;
    inventory::add_image_as(
        db,
        "testimg",
        "provhost test image",
        "linux",
        &img.imagename,
    )
    .await
    .expect("image");

    let (daemon_a, stop_a) = rig.spawn(rig.config()).await;
    let daemon_b = provhost::daemon::Daemon::new(
        rig.t.connect_again().await,
        Arc::clone(&host_b),
        provhost::daemon::DaemonConfig {
            node: "mn2.test".into(),
            ..rig.config()
        },
        None,
    )
    .await
    .expect("daemon of mn2");
    let (stop_b, rx) = tokio::sync::oneshot::channel::<()>();
    let daemon_b = tokio::spawn(async move {
        daemon_b
            .run(
                async move {
                    let _ = rx.await;
                },
                false,
            )
            .await
            .expect("daemon mn2 run")
    });

    let c = rig.request("qvm1", "testimg").await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    assert_eq!(c.management_node_id, mn2, "the computer belongs to mn2");
    wait_step(&rig, c.reservation_id, "nodeready").await;
    wait_step(&rig, c.reservation_id, "reserved").await;
    assert_eq!(rig.computer_state(computer).await, "reserved");
    let log = rig.log(c.reservation_id).await;
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    let mut it = names.iter();
    for want in [
        "statuscheck",
        "loadimageblade",
        "doesimageexists",
        "copyfrompartnerMN",
        "transfervm",
        "startload",
        "transfervm",
        "startvm",
        "machinebooted",
        "loadimagecomplete",
        "nodeready",
    ] {
        assert!(
            it.any(|n| *n == want),
            "load-log lacks {want} in order: {names:?}"
        );
    }
    let from = format!("127.0.0.1:{}:{}", node_a.port, lib_a.display());
    assert!(
        log.iter()
            .any(|(n, t)| n == "transfervm" && t.contains("copying image") && t.contains(&from)),
        "{log:#?}"
    );
    // B's own copy: a real folder (not A's link) that passes its sums.
    let copy = lib_b.join(&img.imagename);
    assert!(
        std::fs::symlink_metadata(&copy)
            .map(|m| m.is_dir())
            .unwrap_or(false),
        "{} is not a folder",
        copy.display()
    );
    assert!(sums_ok(&lib_b, &img.imagename), "B's copy fails its sums");
    assert!(!lib_b.join(format!("{}.part", img.imagename)).exists());
    // The VM's disk is a linked clone of B's copy.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(vm_root.join("qvm1").join("disk.qcow2"))
        .output()
        .expect("qemu-img info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!("{}/disk.qcow2", copy.display())),
        "not backed by B's copy: {info}"
    );
    // The guest answers and names the image; the computer is held by mn2's flow.
    let out = marker_with(&ssh, &img.key, &ip).await;
    assert!(out.starts_with(&img.imagename), "{out:?}");
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `managementnodeid` FROM `provhost_computerlock` WHERE `requestid` = {}",
                c.request_id
            ))
            .await,
        mn2,
        "the flow ran on mn2"
    );

    let _ = stop_a.send(());
    let _ = stop_b.send(());
    daemon_a.await.expect("daemon mn1");
    daemon_b.await.expect("daemon mn2");
    eprintln!("{test}: {:.1} s wall", started.elapsed().as_secs_f64());
}
