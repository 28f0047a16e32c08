//! VM provisioning benchmark on this machine as the VM host (QEMU under TCG unless KVM
//! really works): N new reservations at once, each on its own VM computer, through the
//! daemon with the shipped `provisioning/qemu` and `os/linux` modules and the test image.
//!
//! Run (as root, after the tests built the test image): `cargo run --example bench_loads --
//! [--n 10] [--vmdisk shared|dedicated]`
//!
//! Measures: wall time from "all N requests inserted" to "all N reservations reached
//! `nodeready`"; the load-log steps of each reservation as the harness saw them appear
//! (polled every 250 ms; median and max over the N reservations); peak RSS of this process
//! (daemon + harness, VmHWM) and of each QEMU; this process's RSS while it manages the N
//! running VMs. (The disk step alone, linked clone against full copy, is in `bench_vm`.)
//! Everything it starts (VMs, the VM-host namespace) is removed at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provhost::daemon::{Daemon, DaemonConfig};
use provhost::db::inventory::{self, add_computer, add_user, NewComputer};
use provhost::db::requests::{new_request, ComputerChoice, NewRequest};
use provhost::db::Db;
use provhost::host::{HostOptions, Limits, ScriptHost};
use provhost::image::build::{build_test_image, BuildOptions, IMAGE_NAME};
use provhost::prim::host::Host;
use provhost::prim::ssh::SshConfig;
use provhost::prim::vm::bind::VmPrims;
use provhost::prim::vm::VmConfig;
use provhost::prim::vmnet::{VmNet, VmnetConfig, VmnetPrims};
use provhost::state::Timings;

const STEPS: &[&str] = &[
    "statuscheck",
    "startload",
    "transfervm",
    "vmsetupconfig",
    "startvm",
    "machinebooted",
    "loadimagecomplete",
    "nodeready",
];

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Pids of the QEMUs whose command line mentions `root`.
fn qemus(root: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let t = String::from_utf8_lossy(&c);
                    t.starts_with("qemu-system") && t.contains(root)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let n: usize = arg("--n", "10").parse().unwrap_or(10);
    let vmdisk = arg("--vmdisk", "shared");
    let lib = PathBuf::from(
        std::env::var("PROVHOST_TESTIMAGE_DIR").unwrap_or("/var/cache/provhost/testimage".into()),
    );
    let key = lib.join("id_ed25519");
    assert!(
        key.exists(),
        "{} missing: run the tests once (they build the test image and its key)",
        key.display()
    );
    let built = build_test_image(
        &BuildOptions {
            library: lib.clone(),
            pubkey: lib.join("id_ed25519.pub"),
            cache_dir: PathBuf::from(provhost::image::DEFAULT_BUILD_CACHE),
            mirror: None,
            timeout: Duration::from_secs(1200),
        },
        &mut |s| eprintln!("image: {s}"),
    )
    .expect("test image");
    let tmp = tempfile::tempdir().expect("tmp");

    let vm_root = tmp.path().join("vms").display().to_string();
    let net_cfg = VmnetConfig {
        netns: "phbench".into(),
        bridge: "phbench0".into(),
        gateway: "10.82.0.1/24".into(),
        uplink: "10.82.255.1/30".into(),
        uplink_dev: "phbenchu".into(),
        timeout_secs: 30,
    };
    let local = Host::local(Arc::new(SshConfig::default()));
    let net = VmNet::new(&net_cfg).expect("net");
    net.up(&local).expect("vmnet up");
    let ssh = SshConfig {
        identity: key.clone(),
        known_hosts: tmp.path().join("known_hosts"),
        // 10 s, the default: with many TCG guests on few cores, sshd's key exchange is slow.
        connect_timeout_secs: 10,
        local_vmhost: "local".into(),
        ..SshConfig::default()
    };
    let prims = Arc::new(VmPrims::new(
        VmConfig {
            vm_root: vm_root.clone(),
            boot_timeout_secs: 900,
            ..VmConfig::default()
        },
        &lib,
    ));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: root.join("scripts"),
            stdlib_dir: root.join("stdlib"),
            limits: Limits::default(),
        },
        &[
            Arc::new(provhost::prim::remote::RemotePrims::new(ssh)),
            prims.clone(),
            Arc::new(VmnetPrims::new(net_cfg.clone())),
        ],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");

    let db = Db::connect(&format!("sqlite://{}/bench.db", tmp.path().display()))
        .await
        .expect("db");
    provhost::db::schema::init(&db, "bench-mn")
        .await
        .expect("init");
    provhost::db::image::register_library_image(
        &db,
        IMAGE_NAME,
        "test image",
        "linux",
        &built.imagename,
        built.size_mb,
        "bench",
    )
    .await
    .expect("image");
    add_user(&db, "bench", Some(30001)).await.expect("user");
    let mut vh = NewComputer::lab("local", "127.0.0.1");
    vh.provisioning = "none".into();
    vh.computer_type = "blade".into();
    let vh = add_computer(&db, &vh).await.expect("vmhost computer");
    let lib_s = lib.display().to_string();
    let vh = inventory::add_vmhost(&db, vh, "bench", &vm_root, &lib_s, &vm_root)
        .await
        .expect("vmhost");
    inventory::set_vmprofile_vmdisk(&db, "bench", &vmdisk)
        .await
        .expect("vmdisk");
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("bvm{i}");
        let ip = format!("10.82.0.{}", 10 + i);
        let mut c = NewComputer::lab(&name, &ip);
        c.provisioning = "qemu".into();
        c.computer_type = "virtualmachine".into();
        c.vmhost_id = Some(vh);
        add_computer(&db, &c).await.expect("computer");
        names.push(name);
    }
    let daemon = Daemon::new(
        db.clone(),
        Arc::clone(&host),
        DaemonConfig {
            node: "bench-mn".into(),
            poll_interval_secs: 1,
            timings: Timings {
                acknowledgetimeout: 3600,
                ..Timings::default()
            },
            ..DaemonConfig::default()
        },
        None,
    )
    .await
    .expect("daemon");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        daemon
            .run(
                async move {
                    let _ = stopped.await;
                },
                false,
            )
            .await
    });

    let t0 = Instant::now();
    let mut res = Vec::new();
    for name in &names {
        let c = new_request(
            &db,
            &NewRequest {
                image: IMAGE_NAME.into(),
                computer: ComputerChoice::Named(name.clone()),
                user: "bench".into(),
                start: None,
                end: Some("+2h".into()),
            },
        )
        .await
        .expect("request");
        res.push(c.reservation_id);
    }
    // Harness-observed time each step first appeared, per reservation; bounded at 30 min.
    let mut seen: BTreeMap<(i64, String), f64> = BTreeMap::new();
    let mut qemu_peak: BTreeMap<u32, u64> = BTreeMap::new();
    let mut failed;
    loop {
        let mut done = 0;
        failed = 0;
        for r in &res {
            let tl = provhost::db::loadlog::timeline(&db, *r)
                .await
                .expect("timeline");
            for e in &tl {
                seen.entry((*r, e.loadstatename.clone()))
                    .or_insert(t0.elapsed().as_secs_f64());
            }
            if tl.iter().any(|e| e.loadstatename == "nodeready") {
                done += 1;
            } else if tl.iter().any(|e| e.loadstatename == "failed") {
                failed += 1;
                eprintln!("reservation {r} failed: {:?}", tl.last());
            }
        }
        for pid in qemus(&vm_root) {
            let hwm = kb(&format!("/proc/{pid}/status"), "VmHWM:");
            let e = qemu_peak.entry(pid).or_insert(0);
            *e = (*e).max(hwm);
        }
        if done + failed >= n || t0.elapsed() > Duration::from_secs(1800) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let rss_managing = kb("/proc/self/status", "VmRSS:");
    println!(
        "{n} concurrent loads (vmdisk {vmdisk}, accel per [vm] default): all nodeready after {wall:.1} s, {failed} failed"
    );
    println!("load-log steps, seconds since the requests were inserted (median / max over {n}):");
    for step in STEPS {
        let v: Vec<f64> = res
            .iter()
            .filter_map(|r| seen.get(&(*r, step.to_string())).copied())
            .collect();
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!("  {step:<18} {:>7.1} / {:>7.1}", median(v), max);
    }
    // The accelerator probe's QEMUs (`[vm] accel = "auto"`) boot a bare kernel for ~10 s.
    let (vms, probes): (Vec<u64>, Vec<u64>) = qemu_peak
        .values()
        .map(|k| k / 1024)
        .partition(|mb| *mb >= 64);
    println!(
        "peak RSS: provhost (daemon + harness) {} MB; each VM's QEMU {:?} MB; {} accelerator-probe QEMUs {:?} MB",
        kb("/proc/self/status", "VmHWM:") / 1024,
        vms,
        probes.len(),
        probes
    );
    println!(
        "provhost RSS while managing {} running VMs: {} MB",
        qemus(&vm_root).len(),
        rss_managing / 1024
    );

    let _ = stop.send(());
    let _ = task.await;
    for (dir, _) in prims.vms().list(&local, &vm_root).unwrap_or_default() {
        let _ = prims.vms().kill(&local, &dir);
    }
    if let Err(e) = net.down(&local) {
        eprintln!("vmnet down: {e}");
    }
    db.close().await;
}
