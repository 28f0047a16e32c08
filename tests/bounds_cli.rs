//! Bounds an operator can reach from the command line: a timeout too large for the clock
//! (`call --timeout 18446744073709551615`) is capped, not a panic; a duration out of range
//! in `provhost.toml` is refused at load, naming the file, the key, the value and the range.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn provhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(root())
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run provhost")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn call_with_the_largest_timeout_runs_instead_of_panicking() {
    let out = provhost(&[
        "call",
        "provisioning/sim",
        "node_status",
        "--timeout",
        "18446744073709551615",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert_eq!(stdout.trim(), "\"reload\"");
}

#[test]
fn a_config_with_a_huge_duration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("provhost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nscripts = {:?}\nstdlib = {:?}\n\n[scripts]\ncall_timeout_secs = 9223372036854775807\n",
            root().join("scripts"),
            root().join("stdlib")
        ),
    )
    .expect("write config");
    let cfg_arg = cfg.display().to_string();
    let out = provhost(&[
        "--config",
        &cfg_arg,
        "call",
        "provisioning/sim",
        "node_status",
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&cfg_arg)
            && stderr.contains(
                "[scripts] call_timeout_secs = 9223372036854775807 is out of range: allowed 1 to 31536000 seconds"
            ),
        "{stderr}"
    );
}
