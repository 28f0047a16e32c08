//! Process-tree cleanup: sshd forks a process per connection (which calls setsid, so it
//! leaves the listener's process group), so killing a test sshd means killing its whole
//! tree of descendants, found through /proc.

use std::collections::HashMap;

/// Parent pid of every process, from /proc/*/stat.
fn parents() -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<i32>().ok())
        {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<i32> {
    let map = parents();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    // Bounded by the number of processes.
    for _ in 0..map.len() + 1 {
        let Some(p) = frontier.pop() else { break };
        for (&child, &parent) in &map {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// SIGKILL `root` and all its descendants (collected first, so none escape to init).
pub fn kill_tree(root: i32) {
    let mut all = descendants(root);
    all.push(root);
    for pid in all {
        // SAFETY: signalling processes this test started (the tree under its own child).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Is a process whose command line contains `needle` running?
pub fn running(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                let text: String = String::from_utf8_lossy(&c).replace('\0', " ");
                text.contains(needle)
            })
            .unwrap_or(false)
    })
}

/// A child process (e.g. `provhost serve`) killed and reaped when dropped, also on panic.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
