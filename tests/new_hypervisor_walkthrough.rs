//! docs/new-hypervisor.md is run as written: its blocks marked ```` ```sh walkthrough ````
//! run in order with `sh -e` in an empty temporary folder (the built `provhost` first on
//! `PATH`, `PROVHOST_SRC` the source checkout), each exiting 0 or the `exit=N` its tag
//! says; blocks tagged `walkthrough file=PATH` are saved to PATH first; each line of a
//! `walkthrough-output` block must appear in the output of the run block before it. The
//! walkthrough's module (`localdir`: a folder and a process per computer, no VM, no SSH)
//! then has served a real reservation through the daemon: its load-log shows `reserved`
//! and the module's own steps, and the walkthrough's clean-up left no process behind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced block of the page, with the tags of its opening line.
struct Block {
    line: usize,
    lang: String,
    tags: Vec<String>,
    body: String,
}

impl Block {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
    fn value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in page.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace().map(str::to_string);
                open = Some(Block {
                    line: i + 1,
                    lang: words.next().unwrap_or_default(),
                    tags: words.collect(),
                    body: String::new(),
                });
            }
            (Some(b), Some("")) => out.push(b),
            (Some(mut b), _) => {
                b.body.push_str(line);
                b.body.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "docs/new-hypervisor.md: a fenced block is not closed"
    );
    out
}

/// Stops what the walkthrough started if it did not get to its own clean-up: the daemon
/// (`serve.pid`) and every process whose command line names the temporary folder (the
/// `localdir` computers' `tail -f`).
struct Leftovers(PathBuf);

impl Leftovers {
    fn processes(&self) -> Vec<(i32, String)> {
        let dir = self.0.to_string_lossy().into_owned();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(&dir) {
                found.push((pid, cmd));
            }
        }
        found
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("serve.pid")) {
            let pid = pid.trim();
            let is_provhost = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("provhost"))
                .unwrap_or(false);
            if is_provhost {
                let _ = Command::new("kill").args(["-TERM", pid]).status();
                for _ in 0..300 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        for (pid, _) in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn provhost(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVHOST_CONFIG")
        .env_remove("PROVHOST_DATABASE_URL")
        .output()
        .expect("run provhost");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "provhost {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn new_hypervisor_walkthrough_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/new-hypervisor.md"))
        .expect("docs/new-hypervisor.md");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let guard = Leftovers(dir.to_path_buf());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_provhost"))
        .parent()
        .expect("the binary's folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    let mut last: Option<(usize, String)> = None;
    for b in blocks(&page) {
        let marked = b.has("walkthrough");
        if let Some(file) = b.value("file") {
            assert!(marked, "line {}: file= without walkthrough", b.line);
            let target = dir.join(file);
            std::fs::create_dir_all(target.parent().expect("a folder")).expect("mkdir");
            std::fs::write(&target, &b.body).expect("write a walkthrough file");
            continue;
        }
        if b.has("walkthrough-output") {
            let (at, output) = last
                .as_ref()
                .unwrap_or_else(|| panic!("line {}: output block before any run block", b.line));
            for want in b.body.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                assert!(
                    output.lines().any(|l| l.contains(want)),
                    "line {}: the block at line {at} did not print\n{want}\nit printed:\n{output}",
                    b.line
                );
            }
            continue;
        }
        if !marked {
            continue;
        }
        assert_eq!(b.lang, "sh", "line {}: only sh blocks are run", b.line);
        let expected: i32 = b
            .value("exit")
            .map(|v| v.parse().expect("exit=N"))
            .unwrap_or(0);
        let out = Command::new("timeout")
            .args(["180", "sh", "-ec", &b.body])
            .current_dir(dir)
            .env("PATH", &path)
            .env("PROVHOST_SRC", root)
            .env_remove("PROVHOST_CONFIG")
            .env_remove("PROVHOST_DATABASE_URL")
            .env_remove("PROVHOST_LOG")
            .output()
            .expect("run a walkthrough block");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(expected),
            "docs/new-hypervisor.md line {}:\n{}exited {:?} (expected {expected}):\n{output}\nserve.log:\n{}",
            b.line,
            b.body,
            out.status.code(),
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        ran += 1;
        last = Some((b.line, output));
    }
    assert!(ran >= 15, "only {ran} walkthrough blocks ran: a tag lost?");

    // The reservation got to `reserved` through the module's load, and on to the reload.
    let log1 = provhost(dir, &["log", "1"]);
    for step in [
        "statuscheck",
        "transfervm",
        "startvm",
        "machinebooted",
        "loadimagecomplete",
        "nodeready",
        "reserved (ready for Connect)",
        "acknowledgetimeout",
        "connected",
        "reclaim: user access to hello1 revoked",
        "reclaim: user ann deleted from hello1",
    ] {
        assert!(
            log1.contains(step),
            "load-log of reservation 1 lacks {step}:\n{log1}"
        );
    }
    let log2 = provhost(dir, &["log", "2"]);
    assert!(
        log2.contains("transfervm") && log2.contains("reload complete"),
        "the reload ran the module's load:\n{log2}"
    );
    // The walkthrough's clean-up left nothing running: no daemon, no computer.
    let left = guard.processes();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    drop(guard);
}
