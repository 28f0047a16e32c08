//! The example site hooks (examples/site/) run on the real test VM, as a site would use
//! them from scripts/site/: the login banner lands in sshd's Banner and /etc/motd (seen by
//! a real SSH client), the per-image time zone follows the image's name, and the package
//! hook — which has no mirror to reach from the test network — fails with a message naming
//! the packages (its policy is `on_failure: "warn"`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::testimage;
use common::testvm::{TestNet, TestVm};
use common::vmguard::qemu_or_skip;
use provhost::host::{
    CallOptions, Ctx, HostOptions, Kind, Limits, MemoryBackend, ReservationData, ScriptHost,
};
use provhost::prim::remote::RemotePrims;
use provhost::prim::ssh::SshConfig;

#[test]
fn example_site_hooks_run_on_the_test_vm() {
    let test = "example_site_hooks_run_on_the_test_vm";
    if !common::root_or_skip(test, "a VM network in a namespace") || !qemu_or_skip(test) {
        return;
    }
    let img = testimage::ensure();
    let net = TestNet::up();
    let vm = TestVm::boot(&net, &img, 1);
    vm.wait_ssh(Duration::from_secs(120));

    let scripts = tempfile::tempdir().expect("scripts");
    let site = scripts.path().join("scripts/site");
    std::fs::create_dir_all(&site).expect("mkdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for hook in ["login_banner", "install_package", "image_timezone"] {
        std::fs::copy(
            root.join(format!("examples/site/{hook}.rhai")),
            site.join(format!("{hook}.rhai")),
        )
        .expect("copy hook");
    }
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: scripts.path().join("scripts"),
            stdlib_dir: root.join("stdlib"),
            limits: Limits::default(),
        },
        &[Arc::new(RemotePrims::new(SshConfig {
            identity: vm.key.clone(),
            known_hosts: vm.known_hosts.clone(),
            connect_timeout_secs: 5,
            ..SshConfig::default()
        }))],
    );
    let errors = host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let backend = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(
        ReservationData {
            reservation_id: 1,
            computer_node_name: "testvm1".into(),
            computer_private_ip: vm.ip.clone(),
            computer_ssh_port: 22,
            image_name: img.imagename.clone(),
            image_pretty_name: "Debian 12 statistics lab".into(),
            image_os_type: "linux".into(),
            ..ReservationData::default()
        },
        backend.clone(),
    );
    let call = |name: &str| {
        host.call(
            &(Kind::Site, name.to_string()),
            "post_load",
            Some(&ctx),
            vec![],
            &CallOptions::default(),
        )
    };

    // The login banner: both files, sshd told once, and a real SSH client sees it.
    assert_eq!(call("login_banner").expect("banner").as_bool(), Ok(true));
    assert_eq!(
        call("login_banner").expect("idempotent").as_bool(),
        Ok(true)
    );
    // sshd re-executes on SIGHUP: wait until it answers again.
    vm.wait_ssh(Duration::from_secs(30));
    let out = vm.ssh("cat /etc/motd; grep -c '^Banner /etc/issue.net' /etc/ssh/sshd_config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("provided by Example University"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.trim_end().ends_with('1'), "Banner added once: {text}");
    // (The harness's ssh runs at LogLevel=ERROR, which hides banners: this one at INFO.)
    let out = std::process::Command::new("timeout")
        .args(["20", "ssh", "-i"])
        .arg(&vm.key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", vm.known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "LogLevel=INFO", "-o", "ConnectTimeout=5"])
        .arg(format!("root@{}", vm.ip))
        .arg("true")
        .output()
        .expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Use is logged"),
        "the pre-login banner: {stderr}"
    );

    // The per-image time zone: this image's pretty name maps to America/New_York.
    match call("image_timezone") {
        Ok(v) => {
            assert_eq!(v.as_bool(), Ok(true));
            let out = vm.ssh("readlink /etc/localtime; cat /etc/timezone");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("/usr/share/zoneinfo/America/New_York"),
                "{text}"
            );
            assert!(text.contains("America/New_York\n"), "{text}");
        }
        Err(e) => {
            // An image without tzdata: the hook says so, naming the zone file.
            let e = e.to_string();
            assert!(e.contains("/usr/share/zoneinfo/America/New_York"), "{e}");
            assert!(!vm
                .ssh("test -e /usr/share/zoneinfo/America/New_York")
                .status
                .success());
        }
    }

    // The package hook: no mirror reachable from the test network, so it fails, naming
    // the packages; its module asks for a warning, not a failed reservation.
    let err = call("install_package")
        .expect_err("no mirror here")
        .to_string();
    assert!(err.contains("installing htop tmux failed"), "{err}");
    let m = host
        .module(&(Kind::Site, "install_package".into()))
        .expect("loaded");
    assert_eq!(m.info.on_failure, provhost::host::OnFailure::Warn);
    assert!(
        backend
            .entries()
            .iter()
            .any(|e| format!("{e:?}").contains("login banner set")),
        "{:?}",
        backend.entries()
    );
}
