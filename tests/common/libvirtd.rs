//! A real libvirtd for tests, without systemd: `virtlogd -d` then `libvirtd -d`, the
//! latter inside the VM host's network namespace so the taps it makes for bridged domains
//! land on that namespace's bridge (../shared/TESTVM-DEBIAN-LIBVIRT.md, part B). There is
//! one privileged libvirtd per machine (`/run/libvirtd.pid`, `/run/libvirt/`), so test
//! binaries take a file lock before starting one. Drop destroys and undefines every domain
//! the daemon still has (so no QEMU outlives the test), then stops both daemons by pid.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LOCK: &str = "/run/provhost-test-libvirtd.lock";
const LIBVIRTD_PID: &str = "/run/libvirtd.pid";
const VIRTLOGD_PID: &str = "/run/virtlogd.pid";
/// libvirtd probes QEMU's capabilities at start (~12 s on these machines, because the
/// root-only /dev/kvm makes it redo the cache each time); bounded well above that.
const READY: Duration = Duration::from_secs(90);

pub struct Libvirtd {
    libvirtd: Option<i32>,
    virtlogd: Option<i32>,
    _lock: File,
}

fn pid_from(path: &str) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// `virsh -c qemu:///system ARGS`, bounded by `timeout`.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg("60")
        .arg("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .map_err(|e| format!("virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn stop(pid: i32, what: &str) {
    // SAFETY: signalling a daemon this harness started (its pid file, written by it).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        eprintln!("libvirtd harness: {what} (pid {pid}) ignored SIGTERM for 10 s; killing it");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Libvirtd {
    /// Start virtlogd and libvirtd (in `netns` when given) and wait until `virsh` answers.
    /// Fails with a clear message when a libvirtd that this harness did not start runs.
    pub fn start(netns: Option<&str>) -> Result<Libvirtd, String> {
        let lock = File::create(LOCK).map_err(|e| format!("{LOCK}: {e}"))?;
        // SAFETY: flock on a file we own; blocks until another test binary's daemon is gone.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {LOCK}: {}", std::io::Error::last_os_error()));
        }
        if let Some(pid) = pid_from(LIBVIRTD_PID).filter(|p| alive(*p)) {
            return Err(format!(
                "a libvirtd not started by this test runs (pid {pid}, {LIBVIRTD_PID}); \
                 stop it (kill {pid}) and run the tests again"
            ));
        }
        let mut d = Libvirtd {
            libvirtd: None,
            virtlogd: None,
            _lock: lock,
        };
        if !pid_from(VIRTLOGD_PID).is_some_and(alive) {
            run(Command::new("/usr/sbin/virtlogd").arg("-d"), "virtlogd -d")?;
            d.virtlogd = wait_pid(VIRTLOGD_PID);
        }
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/sbin/libvirtd", "-d"]);
                c
            }
            None => {
                let mut c = Command::new("/usr/sbin/libvirtd");
                c.arg("-d");
                c
            }
        };
        run(&mut cmd, "libvirtd -d")?;
        d.libvirtd = wait_pid(LIBVIRTD_PID);
        let t = Instant::now();
        loop {
            match virsh(&["version"]) {
                Ok(_) => return Ok(d),
                Err(e) if t.elapsed() > READY => {
                    return Err(format!(
                        "libvirtd did not answer within {} s: {e}",
                        READY.as_secs()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Names of every domain libvirtd knows (running or defined).
    pub fn domains(&self) -> Vec<String> {
        virsh(&["list", "--all", "--name"])
            .map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The daemon writes its pid file shortly after forking; bounded.
fn wait_pid(path: &str) -> Option<i32> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Some(p) = pid_from(path).filter(|p| alive(*p)) {
            return Some(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if self.libvirtd.is_some() {
            for name in self.domains() {
                let _ = virsh(&["destroy", &name]);
                let _ = virsh(&["undefine", &name]);
            }
        }
        if let Some(pid) = self.libvirtd.take() {
            stop(pid, "libvirtd");
        }
        if let Some(pid) = self.virtlogd.take() {
            stop(pid, "virtlogd");
        }
    }
}
