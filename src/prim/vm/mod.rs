//! VM control: QEMU processes on a VM host — the management node itself or a machine
//! reached over SSH, through the same [`Host`] — and their QMP sockets.
//!
//! A VM is identified by its **run directory** on the VM host, which holds everything
//! about the running process: `qemu.pid` (written by QEMU), `qmp.sock`, `console.log`
//! (the serial console) and `vm.conf` (name, accelerator, tap; what clean-up needs). So
//! nothing lives only in this process: a restarted daemon finds its VMs again
//! ([`Vms::list`]) and can stop them. A pid is only ever signalled after
//! `/proc/PID/cmdline` shows it is the QEMU of that directory.
//!
//! Commands run through [`Host::run`] (bounded like every command); QMP goes to the local
//! socket or, for a remote VM host, through SSH streamlocal forwarding
//! ([`crate::prim::ssh::forward`]). Every wait is bounded. The accelerator is chosen by
//! [`accel`]. The Rhai binding is [`bind::VmPrims`] (module `vm`).

pub mod accel;
pub mod bind;
pub mod qmp;
pub mod spec;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::prim::host::{Host, RunError};
use crate::prim::ssh::io::Deadline;
use crate::prim::ssh::{ExecOptions, Output};
pub use accel::AccelChoice;
use qmp::{Qmp, QmpError};
pub use spec::{quote, VmSpec};

/// `[vm]` in provhost.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VmConfig {
    /// `"auto"` (prove KVM with a short real boot once per VM host, else TCG), `"kvm"` or
    /// `"tcg"`. A spec's own `accel` wins.
    pub accel: AccelChoice,
    /// The QEMU binary on VM hosts.
    pub qemu: String,
    /// One QMP connect, read or write, in seconds.
    pub qmp_timeout_secs: u64,
    /// Starting QEMU (until it has daemonized), in seconds.
    pub start_timeout_secs: u64,
    /// The KVM proof boot, in seconds.
    pub kvm_probe_secs: u64,
    /// Where VM run directories go on a VM host when its vmprofile names no `vmpath`.
    pub vm_root: String,
    /// Other management nodes' image libraries `retrieve_image` copies from, as
    /// `host:/path` or `host:port:/path` (reached over SSH as `[ssh] user`, strict host keys).
    pub image_sources: Vec<String>,
    /// How long a provisioning module waits for a started VM to answer on SSH, in seconds.
    pub boot_timeout_secs: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            accel: AccelChoice::Auto,
            qemu: "qemu-system-x86_64".into(),
            qmp_timeout_secs: 5,
            start_timeout_secs: 60,
            kvm_probe_secs: 10,
            vm_root: "/var/lib/provhost/vms".into(),
            image_sources: Vec::new(),
            boot_timeout_secs: 300,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("VM {vm}: bad spec: {detail}")]
    Spec { vm: String, detail: String },
    #[error(
        "VM {vm} on {host}: {what} {path} missing; check the path (image library, VM directory)"
    )]
    MissingFile {
        vm: String,
        host: String,
        what: String,
        path: String,
    },
    #[error("VM {vm} on {host}: already running (pid {pid}, run directory {dir}); stop it first (vm::stop)")]
    AlreadyRunning {
        vm: String,
        host: String,
        dir: String,
        pid: i64,
    },
    #[error("VM {vm} on {host}: {net}: {detail}; set up the VM network first (vmnet::up)")]
    Network {
        vm: String,
        host: String,
        /// "tap T on bridge B in netns N".
        net: String,
        detail: String,
    },
    #[error("VM {vm} on {host}: QEMU did not start: {detail}")]
    QemuFailed {
        vm: String,
        host: String,
        detail: String,
    },
    #[error("VM {dir} on {host}: {what}: {source}")]
    Run {
        dir: String,
        host: String,
        what: &'static str,
        #[source]
        source: Box<RunError>,
    },
    #[error("VM {dir} on {host}: {what} failed (exit {code}): {stderr}")]
    Command {
        dir: String,
        host: String,
        what: &'static str,
        code: i64,
        stderr: String,
    },
    #[error("QMP socket {sock} on {host} gone: QEMU is not running ({reason})")]
    QmpGone {
        sock: String,
        host: String,
        reason: String,
    },
    #[error(
        "QMP socket {sock} on {host} gone while QEMU (pid {pid}) still runs; end it with vm::kill"
    )]
    QmpSocketMissing {
        sock: String,
        host: String,
        pid: i64,
    },
    #[error("QMP on {sock} ({host}): {source}")]
    Qmp {
        sock: String,
        host: String,
        #[source]
        source: QmpError,
    },
    #[error("VM {dir} on {host}: QEMU (pid {pid}) still alive after SIGKILL")]
    Unkillable { dir: String, host: String, pid: i64 },
}

/// What [`Vms::status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// QMP's run state (`running`, `paused`, `shutdown`, `prelaunch`, `guest-panicked`, …),
    /// `absent` (no QEMU for this directory) or `unreachable` (QEMU runs, QMP does not
    /// answer).
    pub state: String,
    pub pid: Option<i64>,
    /// The VM's name from `vm.conf` (empty when unknown).
    pub name: String,
    /// Why, for `absent` and `unreachable`; empty otherwise.
    pub reason: String,
}

/// What [`Vms::start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: i64,
    pub accel: String,
    pub accel_reason: String,
}

/// How [`Vms::stop`] ended the VM: `"absent"` (nothing ran), `"powerdown"` (the guest
/// shut down), `"quit"` (QMP quit) or `"kill"` (SIGKILL).
pub type StopHow = &'static str;

/// The VM controller of one process: configuration plus the accelerator verdict per VM
/// host (kept for the process's life).
pub struct Vms {
    cfg: VmConfig,
    verdicts: Mutex<HashMap<String, accel::Verdict>>,
}

/// The state of a run directory as one shell command sees it.
#[derive(Debug, Default)]
struct Probe {
    nodir: bool,
    name: String,
    pid: Option<i64>,
    alive: bool,
    sock: bool,
    tap: Option<String>,
    netns: Option<String>,
}

fn norm(dir: &str) -> String {
    let t = dir.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

/// The first lines of a command's stderr (else stdout), for messages.
fn first_lines(o: &Output) -> String {
    let text = if o.stderr.trim().is_empty() {
        &o.stdout
    } else {
        &o.stderr
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(5)
        .collect();
    if lines.is_empty() {
        format!("exit code {}", o.code)
    } else {
        lines.join(" | ")
    }
}

impl Vms {
    pub fn new(cfg: VmConfig) -> Vms {
        Vms {
            cfg,
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    fn qmp_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.qmp_timeout_secs.max(1))
    }

    fn sh(
        &self,
        host: &Host,
        dir: &str,
        what: &'static str,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Output, VmError> {
        let opts = ExecOptions {
            timeout: Some(timeout),
            max_output: Some(64 * 1024),
            kill_on_timeout: true,
        };
        host.run(cmd, &opts).map_err(|e| VmError::Run {
            dir: dir.into(),
            host: host.label(),
            what,
            source: Box::new(e),
        })
    }

    fn probe(&self, host: &Host, dir: &str) -> Result<Probe, VmError> {
        let d = quote(dir);
        let arg = quote(&format!(
            "unix:{},server=on,wait=off",
            spec::qmp_socket(dir)
        ));
        let cmd = format!(
            "d={d}; [ -d \"$d\" ] || {{ echo nodir; exit 0; }}; \
             [ -f \"$d/vm.conf\" ] && grep -E '^(name|tap|netns)=' \"$d/vm.conf\"; \
             [ -S \"$d/qmp.sock\" ] && echo sock; \
             [ -f \"$d/qemu.pid\" ] || exit 0; pid=$(cat \"$d/qemu.pid\"); \
             case \"$pid\" in ''|*[!0-9]*) exit 0;; esac; echo \"pid=$pid\"; \
             tr '\\0' '\\n' < /proc/$pid/cmdline 2>/dev/null | grep -qxF -- {arg} && echo alive; exit 0"
        );
        let o = self.sh(host, dir, "checking the VM", &cmd, Duration::from_secs(15))?;
        let mut p = Probe::default();
        for line in o.stdout.lines() {
            match line.split_once('=') {
                Some(("name", v)) => p.name = v.into(),
                Some(("tap", v)) if !v.is_empty() => p.tap = Some(v.into()),
                Some(("netns", v)) if !v.is_empty() => p.netns = Some(v.into()),
                Some(("pid", v)) => p.pid = v.parse().ok(),
                _ => match line {
                    "nodir" => p.nodir = true,
                    "sock" => p.sock = true,
                    "alive" => p.alive = true,
                    _ => {}
                },
            }
        }
        Ok(p)
    }

    fn absent_reason(dir: &str, p: &Probe) -> String {
        if p.nodir {
            format!("run directory {dir} does not exist")
        } else if let Some(pid) = p.pid {
            format!(
                "QEMU pid {pid} from {} is gone: it was killed or crashed (see {})",
                spec::pid_file(dir),
                spec::console_log(dir)
            )
        } else {
            format!(
                "no pid file {}: QEMU exited or was never started",
                spec::pid_file(dir)
            )
        }
    }

    /// A QMP session to the VM of `dir`.
    pub fn connect(&self, host: &Host, dir: &str) -> Result<Qmp, VmError> {
        let dir = norm(dir);
        let sock = spec::qmp_socket(&dir);
        let t = self.qmp_timeout();
        let stream: Result<Box<dyn qmp::Stream>, String> = match host {
            Host::Local(_) => qmp::connect_local(&sock, t)
                .map(|s| Box::new(s) as Box<dyn qmp::Stream>)
                .map_err(|e| e.to_string()),
            Host::Remote { pool, target } => pool
                .open_unix_socket(target, &sock, t)
                .map(|s| Box::new(s) as Box<dyn qmp::Stream>)
                .map_err(|e| e.to_string()),
        };
        let failure = match stream {
            Ok(s) => match Qmp::handshake(s, t) {
                Ok(q) => return Ok(q),
                Err(e) => e,
            },
            Err(detail) => QmpError::Io(detail),
        };
        // Say why: no QEMU (or one that is exiting), QEMU without its socket, or else
        // QMP's own failure.
        let p = self.probe(host, &dir)?;
        Err(match (p.alive, p.sock, p.pid) {
            (false, _, _) => VmError::QmpGone {
                sock,
                host: host.label(),
                reason: Self::absent_reason(&dir, &p),
            },
            (true, false, Some(pid)) => VmError::QmpSocketMissing {
                sock,
                host: host.label(),
                pid,
            },
            _ => VmError::Qmp {
                sock,
                host: host.label(),
                source: failure,
            },
        })
    }

    /// Run one QMP command on the VM of `dir`; its `return` value.
    pub fn qmp(
        &self,
        host: &Host,
        dir: &str,
        cmd: &str,
        args: Option<Value>,
    ) -> Result<Value, VmError> {
        let mut q = self.connect(host, dir)?;
        q.execute(cmd, args).map_err(|e| VmError::Qmp {
            sock: spec::qmp_socket(&norm(dir)),
            host: host.label(),
            source: e,
        })
    }

    /// The VM's state: QMP's run state when QEMU runs, else `absent` with the reason.
    pub fn status(&self, host: &Host, dir: &str) -> Result<VmStatus, VmError> {
        let dir = norm(dir);
        let p = self.probe(host, &dir)?;
        let mut st = VmStatus {
            state: "absent".into(),
            pid: p.pid,
            name: p.name.clone(),
            reason: String::new(),
        };
        if !p.alive {
            st.reason = Self::absent_reason(&dir, &p);
            return Ok(st);
        }
        match self.qmp(host, &dir, "query-status", None) {
            Ok(v) => {
                st.state = v
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .into();
            }
            Err(e) => {
                st.state = "unreachable".into();
                st.reason = e.to_string();
            }
        }
        Ok(st)
    }

    /// Start QEMU for `spec`. Fails, leaving nothing behind, when the VM already runs, a
    /// file is missing, the network cannot be set up or QEMU refuses to start.
    pub fn start(&self, host: &Host, spec: &VmSpec) -> Result<Started, VmError> {
        let mut spec = spec.clone();
        spec.dir = norm(&spec.dir);
        spec.check()?;
        let dir = spec.dir.clone();
        let p = self.probe(host, &dir)?;
        if p.alive {
            return Err(VmError::AlreadyRunning {
                vm: spec.name.clone(),
                host: host.label(),
                dir,
                pid: p.pid.unwrap_or(0),
            });
        }
        let mut files = String::new();
        for (what, v) in [
            ("disk", &spec.disk),
            ("kernel", &spec.kernel),
            ("initrd", &spec.initrd),
        ] {
            if let Some(f) = v {
                files.push_str(&format!(
                    "[ -e {q} ] || {{ echo {what} {q} >&2; exit 3; }}; ",
                    q = quote(f)
                ));
            }
        }
        self.check_files(host, &spec, &files)?;
        let (accel, accel_reason) = self.resolve_accel(host, &spec)?;
        let d = quote(&dir);
        let mut cmd = format!(
            "mkdir -p {d} || exit 1; rm -f {d}/qmp.sock {d}/qemu.pid {d}/console.log; printf '%s' {conf} > {d}/vm.conf || exit 1; ",
            conf = quote(&spec.conf(&accel))
        );
        if let (Some(tap), Some(br)) = (&spec.tap, &spec.bridge) {
            let ip = spec.ip();
            let (tap, br) = (quote(tap), quote(br));
            cmd.push_str(&format!(
                "{{ {ip} link show {tap} >/dev/null 2>&1 || {ip} tuntap add dev {tap} mode tap; }} && {ip} link set {tap} master {br} && {ip} link set {tap} up || exit 4; "
            ));
        }
        cmd.push_str(&format!(
            "{}{} || exit 5",
            spec.netns_prefix(),
            spec.qemu_command(&self.cfg.qemu, &accel)
        ));
        let o = self.sh(
            host,
            &dir,
            "starting QEMU",
            &cmd,
            Duration::from_secs(self.cfg.start_timeout_secs.max(1)),
        )?;
        if o.code != 0 {
            // Leave nothing behind: a tap we made, a QEMU that half started.
            let _ = self.cleanup(host, &dir, &spec.tap, &spec.netns);
            let detail = first_lines(&o);
            return Err(match o.code {
                4 => VmError::Network {
                    vm: spec.name.clone(),
                    host: host.label(),
                    net: format!(
                        "tap {} on bridge {}{}",
                        spec.tap.as_deref().unwrap_or_default(),
                        spec.bridge.as_deref().unwrap_or_default(),
                        spec.netns
                            .as_ref()
                            .map(|n| format!(" in netns {n}"))
                            .unwrap_or_default()
                    ),
                    detail,
                },
                5 => VmError::QemuFailed {
                    vm: spec.name.clone(),
                    host: host.label(),
                    detail,
                },
                code => VmError::Command {
                    dir,
                    host: host.label(),
                    what: "preparing the run directory",
                    code,
                    stderr: detail,
                },
            });
        }
        let p = self.probe(host, &dir)?;
        match (p.alive, p.pid) {
            (true, Some(pid)) => {
                tracing::info!(vm = %spec.name, host = %host.label(), pid, accel = %accel, "VM started");
                Ok(Started {
                    pid,
                    accel,
                    accel_reason,
                })
            }
            _ => {
                let log = self
                    .sh(
                        host,
                        &dir,
                        "reading the console log",
                        &format!("tail -c 2000 {}", quote(&spec::console_log(&dir))),
                        Duration::from_secs(10),
                    )
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                let _ = self.cleanup(host, &dir, &spec.tap, &spec.netns);
                Err(VmError::QemuFailed {
                    vm: spec.name.clone(),
                    host: host.label(),
                    detail: format!(
                        "it exited right after starting; console: {}",
                        log.trim().lines().last().unwrap_or("(empty)")
                    ),
                })
            }
        }
    }

    fn check_files(&self, host: &Host, spec: &VmSpec, checks: &str) -> Result<(), VmError> {
        if checks.is_empty() {
            return Ok(());
        }
        let o = self.sh(
            host,
            &spec.dir,
            "checking the VM's files",
            &format!("{checks}exit 0"),
            Duration::from_secs(15),
        )?;
        if o.code == 3 {
            let line = o.stderr.trim();
            let (what, path) = line.split_once(' ').unwrap_or(("file", line));
            return Err(VmError::MissingFile {
                vm: spec.name.clone(),
                host: host.label(),
                what: what.into(),
                path: path.into(),
            });
        }
        Ok(())
    }

    /// Remove what a stopped VM leaves: a stale pid file, the socket, its tap.
    fn cleanup(
        &self,
        host: &Host,
        dir: &str,
        tap: &Option<String>,
        netns: &Option<String>,
    ) -> Result<(), VmError> {
        let d = quote(dir);
        let mut cmd = format!("rm -f {d}/qemu.pid {d}/qmp.sock; ");
        if let Some(tap) = tap {
            let ip = match netns {
                Some(ns) => format!("ip -n {}", quote(ns)),
                None => "ip".into(),
            };
            cmd.push_str(&format!("{ip} link del {} 2>/dev/null; ", quote(tap)));
        }
        cmd.push_str("exit 0");
        self.sh(host, dir, "cleaning up", &cmd, Duration::from_secs(15))?;
        Ok(())
    }

    /// Wait until the QEMU of `dir` is gone, for at most `d`; true when it is.
    fn wait_gone(&self, host: &Host, dir: &str, d: Duration) -> Result<bool, VmError> {
        let dl = Deadline::new(d);
        // Bounded by the deadline; the count is a second guard.
        for _ in 0..100_000u32 {
            if !self.probe(host, dir)?.alive {
                return Ok(true);
            }
            if dl.expired() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200).min(dl.left()));
        }
        Ok(false)
    }

    /// Stop the VM: ACPI power-down, up to `grace` for the guest to shut down, then QMP
    /// `quit` (5 s), then SIGKILL. Cleans up the run directory's pid file, socket and tap.
    pub fn stop(&self, host: &Host, dir: &str, grace: Duration) -> Result<StopHow, VmError> {
        let dir = norm(dir);
        let p = self.probe(host, &dir)?;
        if !p.alive {
            self.cleanup(host, &dir, &p.tap, &p.netns)?;
            return Ok("absent");
        }
        if !grace.is_zero()
            && self.qmp(host, &dir, "system_powerdown", None).is_ok()
            && self.wait_gone(host, &dir, grace)?
        {
            self.cleanup(host, &dir, &p.tap, &p.netns)?;
            return Ok("powerdown");
        }
        if self.qmp(host, &dir, "quit", None).is_ok()
            && self.wait_gone(host, &dir, Duration::from_secs(5))?
        {
            self.cleanup(host, &dir, &p.tap, &p.netns)?;
            return Ok("quit");
        }
        self.kill_probed(host, &dir, &p)?;
        Ok("kill")
    }

    /// SIGKILL the VM's QEMU (after checking its command line) and clean up. `false` when
    /// nothing ran.
    pub fn kill(&self, host: &Host, dir: &str) -> Result<bool, VmError> {
        let dir = norm(dir);
        let p = self.probe(host, &dir)?;
        if !p.alive {
            self.cleanup(host, &dir, &p.tap, &p.netns)?;
            return Ok(false);
        }
        self.kill_probed(host, &dir, &p)?;
        Ok(true)
    }

    fn kill_probed(&self, host: &Host, dir: &str, p: &Probe) -> Result<(), VmError> {
        let Some(pid) = p.pid else { return Ok(()) };
        let arg = quote(&format!(
            "unix:{},server=on,wait=off",
            spec::qmp_socket(dir)
        ));
        // Check and kill in one command, so the pid cannot be reused in between.
        let cmd = format!(
            "tr '\\0' '\\n' < /proc/{pid}/cmdline 2>/dev/null | grep -qxF -- {arg} && kill -9 {pid}; exit 0"
        );
        self.sh(host, dir, "killing QEMU", &cmd, Duration::from_secs(15))?;
        if !self.wait_gone(host, dir, Duration::from_secs(5))? {
            return Err(VmError::Unkillable {
                dir: dir.into(),
                host: host.label(),
                pid,
            });
        }
        self.cleanup(host, dir, &p.tap, &p.netns)
    }

    /// Every VM run directory directly under `root` (those with a `vm.conf` or a pid
    /// file), with its status; at most 10 000.
    pub fn list(&self, host: &Host, root: &str) -> Result<Vec<(String, VmStatus)>, VmError> {
        let root = norm(root);
        let cmd = format!(
            "for d in {}/*/; do [ -f \"${{d}}vm.conf\" ] || [ -f \"${{d}}qemu.pid\" ] || continue; echo \"${{d%/}}\"; done | head -n 10000",
            quote(&root)
        );
        let o = self.sh(host, &root, "listing VMs", &cmd, Duration::from_secs(30))?;
        let mut out = Vec::new();
        for dir in o.stdout.lines().filter(|l| !l.is_empty()) {
            out.push((dir.to_string(), self.status(host, dir)?));
        }
        Ok(out)
    }

    /// Wait up to `timeout` for `needle` to appear in the VM's serial console log; true
    /// when it did. Ends early (false) when QEMU is gone.
    pub fn wait_console(
        &self,
        host: &Host,
        dir: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<bool, VmError> {
        let dir = norm(dir);
        let dl = Deadline::new(timeout);
        let cmd = format!(
            "grep -qF -- {} {} && echo found; exit 0",
            quote(needle),
            quote(&spec::console_log(&dir))
        );
        let start = Instant::now();
        for i in 0..100_000u32 {
            let o = self.sh(
                host,
                &dir,
                "reading the console log",
                &cmd,
                Duration::from_secs(15),
            )?;
            if o.stdout.contains("found") {
                return Ok(true);
            }
            if i % 10 == 9 && !self.probe(host, &dir)?.alive {
                return Ok(false);
            }
            if dl.expired() {
                tracing::debug!(dir = %dir, secs = start.elapsed().as_secs_f64(), "console wait timed out");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(250).min(dl.left()));
        }
        Ok(false)
    }
}
