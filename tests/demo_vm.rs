//! `provhost demo` as a user runs it, on a real VM: the binary in a fresh folder with the
//! project's scripts, on a terminal (a pty from `script`), so the demo waits for Enter with
//! the VM up while the test runs the SSH command it printed, as printed. The test points the demo at the
//! shared test image (its key and library), so the image is found, not built again; the
//! demo then provisions a QEMU VM, the user logs in over real SSH from a namespace of its
//! own, the reservation ends and the reload boots a fresh VM; afterwards nothing the demo
//! started is left: no QEMU, no namespace.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::testimage;
use common::vmguard::qemu_or_skip;

/// `provhost demo` under `script` (a pseudo-terminal), its output collected as it comes.
/// Dropping it without `press_enter_and_wait` interrupts the demo (Ctrl-C), which removes
/// what it started.
struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Demo {
    fn start(dir: &Path, exe: &str) -> Demo {
        let mut child = Command::new("script")
            .args(["-qfec", &format!("{exe} demo"), "/dev/null"])
            .current_dir(dir)
            .env_remove("PROVHOST_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run provhost demo under script");
        let output = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().expect("demo stdout");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Demo { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait (bounded) until the output contains `text`; false on time-out or exit.
    fn wait_for(&mut self, text: &str, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.output().contains(text) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.output().contains(text);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    fn press_enter_and_wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
        }
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread take the last output.
                std::thread::sleep(Duration::from_millis(300));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Ctrl-C through the terminal: the demo removes its VM and namespaces.
            if let Some(stdin) = self.child.stdin.as_mut() {
                let _ = stdin.write_all(&[3]);
                let _ = stdin.flush();
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(120) {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
    // A terminal, as `make demo` run by a person has: `script` gives the demo a pty, so it
    // waits for Enter with the VM up; meanwhile the test runs the SSH command the demo
    // printed, exactly as printed, from the same folder.
    let exe = env!("CARGO_BIN_EXE_provhost");
    let mut demo = Demo::start(dir.path(), exe);
    let waiting = demo.wait_for("Press Enter", Duration::from_secs(900));
    assert!(
        waiting,
        "the demo never got to waiting for Enter:\n{}",
        demo.output()
    );
    let printed = demo.output();
    let ssh_line = printed
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .find(|l| l.starts_with("ssh -i "))
        .unwrap_or_else(|| panic!("no ssh command printed:\n{printed}"))
        .to_string();
    let mut ssh = Command::new("timeout")
        .args(["60", "sh", "-c", &ssh_line])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the printed ssh command");
    ssh.stdin
        .take()
        .expect("ssh stdin")
        .write_all(b"hostname; id -un; exit\n")
        .expect("write to ssh");
    let by_hand = ssh.wait_with_output().expect("ssh output");
    let by_hand_out = String::from_utf8_lossy(&by_hand.stdout);
    assert!(
        by_hand.status.success() && by_hand_out.contains("vm1") && by_hand_out.contains("root"),
        "the printed command `{ssh_line}` did not log in as root on vm1: {by_hand_out}\n{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );
    let status = demo.press_enter_and_wait(Duration::from_secs(600));
    let stdout = demo.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "demo failed or hung: {status:?}\n{stdout}"
    );
    // Quiet: the timeline is the output (the terminal carries stderr too); log lines are
    // warnings at most, and nothing else on a terminal is coloured but what we print.
    assert!(!stdout.contains(" INFO "), "{stdout}");
    let ns = netns_list();
    assert!(!ns.contains("provhost-demo"), "namespaces left: {ns}");
    assert!(
        !common::procs::running(&dir.path().join("data/demo-vms").display().to_string()),
        "a QEMU of the demo is still running"
    );
}
