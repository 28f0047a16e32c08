//! The `provhost` binary run as a person runs it: this checkout's root, a temp copy of its
//! `scripts/` and `stdlib/` (a fresh machine's layout), the binary run in a folder with
//! the operator's environment (`PROVHOST_CONFIG`, `PROVHOST_DATABASE_URL`, `PROVHOST_LOG`)
//! cleared, and checks of its exit code and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// This checkout.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/` and `stdlib/` of this project copied into `dir`.
pub fn copy_project(dir: &Path) {
    for sub in ["scripts", "stdlib"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(root().join(sub))
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copying {sub}");
    }
}

/// A temp folder with this project's `scripts/` and `stdlib/`.
pub fn project_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    copy_project(dir.path());
    dir
}

/// `provhost ARGS` run in `dir`, its environment free of the operator's settings.
#[allow(
    clippy::option_env_unwrap,
    reason = "Cargo names the binary to integration tests only; examples/bench_ssh.rs compiles \
              tests/common without it and never calls this"
)]
pub fn provhost(dir: &Path, args: &[&str]) -> Output {
    let bin = option_env!("CARGO_BIN_EXE_provhost").expect("built by cargo test for tests/");
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .env_remove("PROVHOST_DATABASE_URL")
        .env_remove("PROVHOST_LOG")
        .output()
        .expect("run provhost")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code `code`, and stderr contains every one of `words`.
#[track_caller]
pub fn fails(o: &Output, code: i32, words: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    for w in words {
        assert!(err.contains(w), "{w:?} missing in: {err}");
    }
    err
}

/// Exit 0; its stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}
