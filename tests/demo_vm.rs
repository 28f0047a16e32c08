//! `provhost demo` as a user runs it, on a real VM: the binary in a fresh folder with the
//! project's scripts, standard input not a terminal. The test points the demo at the
//! shared test image (its key and library), so the image is found, not built again; the
//! demo then provisions a QEMU VM, the user logs in over real SSH from a namespace of its
//! own, the reservation ends and the reload boots a fresh VM; afterwards nothing the demo
//! started is left: no QEMU, no namespace.

mod common;

use std::process::{Command, Stdio};

use common::testimage;
use common::vmguard::qemu_or_skip;

fn netns_list() -> String {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn demo_provisions_a_real_vm_a_user_logs_in_and_everything_is_removed() {
    let test = "demo_provisions_a_real_vm_a_user_logs_in_and_everything_is_removed";
    if !common::root_or_skip(test, "the demo's network namespaces and taps") || !qemu_or_skip(test)
    {
        return;
    }
    let img = testimage::ensure();
    let dir = tempfile::tempdir().expect("tmp");
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.path().join("provhost.toml"),
        format!(
            "[paths]\nscripts = \"{root}/scripts\"\nstdlib = \"{root}/stdlib\"\ndata_dir = \"data\"\n\
             [ssh]\nidentity = \"{}\"\nknown_hosts = \"data/known_hosts\"\n\
             [images]\nlibrary = \"{}\"\n[vm]\naccel = \"tcg\"\n",
            img.key.display(),
            img.library.display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("PROVHOST_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run provhost demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "up to date",
        "transfervm",
        "startvm",
        "machinebooted",
        "nodeready",
        "logged in to vm1 as demo (uid 20001) from 10.78.1.2",
        "connected",
        "== vm1.demo is available again",
        "ssh -i ",
        "scripts/os/linux.rhai",
        "removed VM ",
        "namespace provhost-demo-user",
        "VM-host network provhost-demo",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}\n{stderr}"
        );
    }
    // Quiet: the timeline is the output; log lines are warnings at most.
    assert!(!stderr.contains(" INFO "), "{stderr}");
    let ns = netns_list();
    assert!(!ns.contains("provhost-demo"), "namespaces left: {ns}");
    assert!(
        !common::procs::running(&dir.path().join("data/demo-vms").display().to_string()),
        "a QEMU of the demo is still running"
    );
}
