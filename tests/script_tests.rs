//! `provhost test`: the shipped modules' unit tests (`scripts/**/NAME.test.rhai`) pass
//! against the recording fake host, in well under a second each; a failing assertion and
//! an unexpected command fail with exit 1, naming the module, the test, file:line and the
//! command; a module without tests and a test file that does not compile are reported.

mod common;

use std::time::{Duration, Instant};

use common::cli::{project_dir, provhost, root};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The shipped modules, each of which must have tests that pass.
const SHIPPED: &[&str] = &[
    "provisioning/qemu",
    "provisioning/libvirt",
    "provisioning/lab",
    "provisioning/sim",
    "provisioning/vmware",
    "os/linux",
    "os/windows",
    "os/sim",
    "os/ubuntu",
];

#[test]
fn every_shipped_module_has_tests_and_they_pass() {
    let started = Instant::now();
    let out = provhost(&root(), &["test", "--scripts", "scripts"]);
    let took = started.elapsed();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    for m in SHIPPED {
        let passed = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("ok      {m}  test_")))
            .count();
        assert!(
            passed >= 3,
            "{m}: {passed} passing tests (want at least 3):\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
    let summary = stdout.lines().last().unwrap_or("");
    assert!(summary.contains(" passed, 0 failed, in "), "{summary}");
    // Milliseconds per test: the whole run (process start, compiling every module) in seconds.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// `scripts/` and `stdlib/` copied into a temp folder (mode 700: scripts writable by
/// others are refused) with `extra` test files written over them.
fn project_copy(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = project_dir();
    for (rel, content) in extra {
        std::fs::write(dir.path().join("scripts").join(rel), content).expect("write test");
    }
    dir
}

const FAILING: &str = r#"// line 1
fn test_passes(host) {
    assert_eq(load(fixture()), true);
}

fn test_wrong_value() {
    let ctx = fixture(#{ imagerevision_id: 7 });
    assert_eq(node_status(ctx), "ready", "a fresh computer");
}

fn test_unexpected_command() {
    let h = fixture().computer();
    h.run("reboot now");
}

fn test_caught_unexpected_command() {
    try { fixture().vmhost().run("rm -rf /srv/vms"); } catch {}
}
"#;

#[test]
fn a_failing_test_and_an_unexpected_command_exit_1_with_the_command_shown() {
    let dir = project_copy(&[("provisioning/sim.test.rhai", FAILING)]);
    let out = provhost(dir.path(), &["test", "provisioning/sim"]);
    let stdout = text(&out.stdout);
    assert_eq(out.status.code(), Some(1), &stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"))
            .to_string()
    };
    assert!(line("test_passes").starts_with("ok      provisioning/sim  test_passes"));
    let wrong = line("test_wrong_value");
    assert!(
        wrong.starts_with("FAILED  provisioning/sim  test_wrong_value  ")
            && wrong.contains("sim.test.rhai:8: assertion failed: a fresh computer: left \"reload\" != right \"ready\""),
        "{wrong}"
    );
    let unexpected = line("test_unexpected_command");
    assert!(
        unexpected.starts_with("FAILED  provisioning/sim  test_unexpected_command  ")
            && unexpected
                .contains("sim.test.rhai:13: unexpected command on computer: `reboot now`"),
        "{unexpected}"
    );
    let caught = line("test_caught_unexpected_command");
    assert!(
        caught.contains("FAILED")
            && caught.contains(
                "unexpected command on vmhost: `rm -rf /srv/vms` (the module caught the error"
            ),
        "{caught}"
    );
    assert!(
        stdout.contains("1 passed, 3 failed, in 1 file(s)"),
        "{stdout}"
    );
}

fn assert_eq(got: Option<i32>, want: Option<i32>, output: &str) {
    assert!(
        got == want,
        "exit {got:?}, want {want:?}; output:\n{output}"
    );
}

#[test]
fn a_broken_test_file_and_a_module_without_tests_are_reported() {
    let dir = project_copy(&[("os/sim.test.rhai", "fn test_x() {\n  let a = ;\n}\n")]);
    let out = provhost(dir.path(), &["test", "os/sim"]);
    let stdout = text(&out.stdout);
    assert_eq(out.status.code(), Some(1), &stdout);
    assert!(
        stdout.contains("FAILED  os/sim  (file)  scripts/os/sim.test.rhai:2: does not compile"),
        "{stdout}"
    );
    // A module with no test file: exit 2, naming the file to write.
    std::fs::remove_file(dir.path().join("scripts/os/sim.test.rhai")).expect("rm");
    let out = provhost(dir.path(), &["test", "os/sim"]);
    let stderr = text(&out.stderr);
    assert_eq(out.status.code(), Some(2), &stderr);
    assert!(
        stderr.contains("module os/sim has no tests: write them in scripts/os/sim.test.rhai"),
        "{stderr}"
    );
    // Test files are not modules: `check` passes with them present and does not list them.
    let out = provhost(dir.path(), &["check"]);
    assert_eq(out.status.code(), Some(0), &text(&out.stdout));
    assert!(!text(&out.stdout).contains(".test.rhai"));
}
