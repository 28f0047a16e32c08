//! What `provhost demo --sim` prints as next steps works as printed: the test copies each
//! printed command line and runs it with `sh -c` from the demo's folder — the daemon in the
//! background, a request, the user's Connect, the load-log — and the reservation gets to
//! the user connected. (The real-VM demo's printed SSH command is run in tests/demo_vm.rs.)

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sh(dir: &Path, line: &str) -> Output {
    Command::new("timeout")
        .args(["60", "sh", "-c", line])
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run a printed command")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The daemon started from the printed line; stopped with SIGTERM (as Ctrl-C would) on drop.
struct Daemon(Child);

impl Daemon {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.0.try_wait() {
            return Some(s);
        }
        // `sh -c` execs the one command, so this is provhost itself.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        self.0.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn demo_sim_next_steps_work_exactly_as_printed() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["scripts", "stdlib"] {
        let ok = Command::new("cp")
            .arg("-r")
            .arg(root.join(sub))
            .arg(dir.path())
            .status()
            .expect("cp")
            .success();
        assert!(ok, "copying {sub}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(["demo", "--sim"])
        .current_dir(dir.path())
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run provhost demo --sim");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // The demo served its status page on loopback and said where.
    assert!(
        stdout.contains("status page (while the demo runs): http://127.0.0.1:"),
        "{stdout}"
    );
    let exe = env!("CARGO_BIN_EXE_provhost");
    let printed: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(exe))
        .collect();
    let find = |what: &str| -> String {
        printed
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` command printed:\n{stdout}"))
            .to_string()
    };
    let (serve, new, connect, log) = (
        find(" serve "),
        find(" request new "),
        find(" request connect "),
        find(" log "),
    );

    let mut daemon = Daemon(
        Command::new("sh")
            .args(["-c", &format!("exec {serve}")])
            .current_dir(dir.path())
            .env_remove("PROVHOST_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the printed serve command"),
    );
    let created = sh(dir.path(), &new);
    assert!(
        created.status.success(),
        "`{new}` failed: {}{}",
        text(&created.stdout),
        text(&created.stderr)
    );
    // The printed `log` and `connect` name the reservation `request new` just made.
    let id = log
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert!(
        text(&created.stdout).contains(&format!("(reservation {id})")),
        "the demo predicted reservation {id}; request new said: {}",
        text(&created.stdout)
    );

    let wait_log = |want: &str| -> String {
        let t = Instant::now();
        loop {
            let out = sh(dir.path(), &log);
            let shown = text(&out.stdout);
            if out.status.success() && shown.contains(want) {
                return shown;
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "`{log}` never showed {want}:\n{shown}{}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_log("acknowledgetimeout");
    let acked = sh(dir.path(), &connect);
    assert!(
        acked.status.success(),
        "`{connect}` failed: {}",
        text(&acked.stderr)
    );
    wait_log("connected");

    let status = daemon.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not stop cleanly on SIGTERM: {status:?}"
    );
}
