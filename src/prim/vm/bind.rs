//! The Rhai binding of VM control: the `vm` module (`vm::start`, `vm::status`, `vm::info`,
//! `vm::qmp`, `vm::stop`, `vm::kill`, `vm::list`, `vm::wait_console`, `vm::mac_for_ip`),
//! registered by [`VmPrims`]. Every function takes the VM host as a `Host` (`local_host()`,
//! `ctx.vmhost()`, `remote_host(#{..})`) and names the VM by its run directory.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FuncRegistration, Map, Module};

use super::{VmConfig, VmSpec, VmStatus, Vms};
use crate::budget::check_deadline;
use crate::prim::args::{check_keys, seconds};
use crate::prim::host::Host;
use crate::prim::Primitives;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The VM primitive family: give it to `ScriptHost::new`.
pub struct VmPrims {
    vms: Arc<Vms>,
    library: String,
}

impl VmPrims {
    /// `library`: this management node's image library (`[images] library`).
    pub fn new(cfg: VmConfig, library: &std::path::Path) -> Self {
        VmPrims {
            vms: Arc::new(Vms::new(cfg)),
            library: library.display().to_string(),
        }
    }
    /// The controller scripts use (for Rust callers in the same process).
    pub fn vms(&self) -> &Arc<Vms> {
        &self.vms
    }
}

/// The routine's own stop (deadline, cancel) wins over the primitive's error message.
fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    match check_deadline() {
        Err(stop) => stop,
        Ok(()) => e.to_string().into(),
    }
}

const SPEC_KEYS: &[&str] = &[
    "name",
    "dir",
    "disk",
    "kernel",
    "initrd",
    "append",
    "memory_mb",
    "cpus",
    "mac",
    "netns",
    "bridge",
    "tap",
    "accel",
];

/// A spec from a script map; `()` or a missing key means "not given".
pub fn spec_from_map(m: &Map) -> Res<VmSpec> {
    check_keys(m, SPEC_KEYS, "vm::start")?;
    let string = |k: &str| -> Res<Option<String>> {
        match m.get(k) {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) => v
                .clone()
                .into_immutable_string()
                .map(|s| Some(s.to_string()))
                .map_err(|t| format!("vm::start: {k} must be a string, got {t}").into()),
        }
    };
    let int = |k: &str, default: u32| -> Res<u32> {
        match m.get(k) {
            None => Ok(default),
            Some(v) => {
                let n = v
                    .as_int()
                    .map_err(|t| format!("vm::start: {k} must be an int, got {t}"))?;
                u32::try_from(n).map_err(|_| format!("vm::start: {k} {n} out of range").into())
            }
        }
    };
    let name = string("name")?.ok_or("vm::start: spec needs name")?;
    let dir = string("dir")?.ok_or("vm::start: spec needs dir (the VM's run directory)")?;
    let mut s = VmSpec::new(&name, &dir);
    s.disk = string("disk")?;
    s.kernel = string("kernel")?;
    s.initrd = string("initrd")?;
    s.append = string("append")?;
    s.memory_mb = int("memory_mb", s.memory_mb)?;
    s.cpus = int("cpus", s.cpus)?;
    s.mac = string("mac")?;
    s.netns = string("netns")?;
    s.bridge = string("bridge")?;
    s.tap = string("tap")?;
    s.accel = string("accel")?;
    s.check().map_err(fail)?;
    Ok(s)
}

fn status_map(dir: &str, s: VmStatus) -> Map {
    let mut m = Map::new();
    m.insert("dir".into(), dir.into());
    m.insert("state".into(), s.state.into());
    m.insert(
        "pid".into(),
        s.pid.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
    );
    m.insert("name".into(), s.name.into());
    m.insert("reason".into(), s.reason.into());
    m
}

/// `52:54:00:` and the last three bytes of an IPv4 address: one MAC per computer IP.
pub fn mac_for_ip(ip: &str) -> Result<String, String> {
    let a: std::net::Ipv4Addr = ip
        .trim()
        .parse()
        .map_err(|_| format!("vm::mac_for_ip: {ip:?} is not an IPv4 address"))?;
    let o = a.octets();
    Ok(format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3]))
}

impl Primitives for VmPrims {
    fn register(&self, engine: &mut Engine) {
        let mut m = Module::new();
        let cfg = self.vms.config().clone();
        let library = self.library.clone();
        FuncRegistration::new("defaults")
            .with_comments([
                "/// The `[vm]` settings modules fall back on when the vmprofile does not say:",
                "/// `#{ library, vm_root, accel, image_sources, boot_timeout }` (`library` is `[images]",
                "/// library`; `image_sources` an array of `\"host:/path\"`; `boot_timeout` in seconds).",
            ])
            .with_params_info(["Map"])
            .set_into_module(&mut m, move || -> Map {
                let mut d = Map::new();
                d.insert("library".into(), library.clone().into());
                d.insert("vm_root".into(), cfg.vm_root.clone().into());
                let accel = match cfg.accel {
                    super::AccelChoice::Auto => "auto",
                    super::AccelChoice::Kvm => "kvm",
                    super::AccelChoice::Tcg => "tcg",
                };
                d.insert("accel".into(), accel.into());
                d.insert(
                    "image_sources".into(),
                    Dynamic::from_array(
                        cfg.image_sources.iter().map(|s| s.clone().into()).collect(),
                    ),
                );
                d.insert(
                    "boot_timeout".into(),
                    Dynamic::from(cfg.boot_timeout_secs as i64),
                );
                d
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("start")
            .with_comments([
                "/// Start QEMU on `host` from a spec map and return `#{ pid, accel, accel_reason }`.",
                "/// Keys: `name`, `dir` (the run directory: `qemu.pid`, `qmp.sock`, `console.log`,",
                "/// `vm.conf`; required), `disk` (qcow2, the guest's /dev/vda), `kernel`, `initrd`, `append`",
                "/// (direct kernel boot), `memory_mb` (512), `cpus` (1), network: `bridge` + `tap` + `mac`",
                "/// and optionally `netns` (QEMU runs in `ip netns exec NETNS`; the tap is made there,",
                "/// attached to the bridge and deleted when the VM ends), `accel` (`\"auto\"`, `\"kvm\"`,",
                "/// `\"tcg\"`; default `[vm] accel`). No bridge: no NIC. Errors name the VM and the fix: a",
                "/// missing file, a VM already running in `dir`, a bridge that does not exist, QEMU's own",
                "/// message. A failed start leaves nothing running.",
                "///",
                "/// ```rhai",
                "/// vm::start(h, #{ name: \"vm1\", dir: \"/var/lib/provhost/vms/vm1\", disk: disk,",
                "///     kernel: k, initrd: i, append: \"console=ttyS0 root=/dev/vda rw\",",
                "///     netns: \"vmh\", bridge: \"br0\", tap: \"pv-vm1\", mac: vm::mac_for_ip(ip) });",
                "/// ```",
            ])
            .with_params_info(["host: Host", "spec: Map", "Map"])
            .set_into_module(&mut m, move |h: Host, spec: Map| -> Res<Map> {
                let s = spec_from_map(&spec)?;
                let r = vms.start(&h, &s).map_err(fail)?;
                let mut out = Map::new();
                out.insert("pid".into(), Dynamic::from(r.pid));
                out.insert("accel".into(), r.accel.into());
                out.insert("accel_reason".into(), r.accel_reason.into());
                Ok(out)
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("status")
            .with_comments([
                "/// The VM's state: QMP's run state (`\"running\"`, `\"paused\"`, `\"shutdown\"`,",
                "/// `\"prelaunch\"`, `\"guest-panicked\"`, …), `\"absent\"` (no QEMU for `dir`: never started,",
                "/// exited, or killed) or `\"unreachable\"` (QEMU runs but QMP does not answer).",
                "/// `vm::info` says why.",
            ])
            .with_params_info(["host: Host", "dir: &str", "String"])
            .set_into_module(&mut m, move |h: Host, dir: &str| -> Res<String> {
                vms.status(&h, dir).map(|s| s.state).map_err(fail)
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("info")
            .with_comments([
                "/// `#{ dir, state, pid, name, reason }`: the state as `vm::status`, the QEMU pid (or `()`),",
                "/// the VM's name from `vm.conf`, and for `absent`/`unreachable` the reason (e.g. \"QEMU pid",
                "/// 4242 from DIR/qemu.pid is gone: it was killed or crashed\").",
            ])
            .with_params_info(["host: Host", "dir: &str", "Map"])
            .set_into_module(&mut m, move |h: Host, dir: &str| -> Res<Map> {
                vms.status(&h, dir)
                    .map(|s| status_map(dir, s))
                    .map_err(fail)
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("qmp")
            .with_comments([
                "/// Run one QMP command: `#{ execute: \"query-status\" }` or with `arguments: #{..}`;",
                "/// returns the command's `return` value. QEMU's error, a gone socket (\"QMP socket",
                "/// DIR/qmp.sock gone: QEMU is not running\") or no reply within `[vm] qmp_timeout_secs`",
                "/// is an error.",
            ])
            .with_params_info(["host: Host", "dir: &str", "cmd: Map", "Dynamic"])
            .set_into_module(&mut m, move |h: Host, dir: &str, cmd: Map| -> Res<Dynamic> {
                check_keys(&cmd, &["execute", "arguments"], "vm::qmp")?;
                let exec = cmd
                    .get("execute")
                    .and_then(|v| v.clone().into_immutable_string().ok())
                    .ok_or("vm::qmp: #{ execute: \"command\" } is required")?;
                let args = match cmd.get("arguments") {
                    Some(a) => Some(
                        rhai::serde::from_dynamic::<serde_json::Value>(a)
                            .map_err(|e| format!("vm::qmp: arguments: {e}"))?,
                    ),
                    None => None,
                };
                let v = vms.qmp(&h, dir, &exec, args).map_err(fail)?;
                rhai::serde::to_dynamic(v)
            });
        let vms = Arc::clone(&self.vms);
        let stop = move |h: Host, dir: &str, grace: Duration| -> Res<String> {
            vms.stop(&h, dir, grace).map(String::from).map_err(fail)
        };
        let stop2 = stop.clone();
        FuncRegistration::new("stop")
            .with_comments(["/// Stop the VM with a 30 s grace period; see the 3-argument form."])
            .with_params_info(["host: Host", "dir: &str", "String"])
            .set_into_module(&mut m, move |h: Host, dir: &str| {
                stop(h, dir, Duration::from_secs(30))
            });
        FuncRegistration::new("stop")
            .with_comments([
                "/// Stop the VM: ACPI power button (QMP `system_powerdown`), wait up to `grace` seconds",
                "/// for the guest to power off (`#{ grace: 0 }` skips this), then QMP `quit` (5 s), then",
                "/// SIGKILL (after checking /proc/PID/cmdline is this VM's QEMU). Removes the pid file,",
                "/// socket and tap. Returns how it ended: `\"powerdown\"`, `\"quit\"`, `\"kill\"`, or",
                "/// `\"absent\"` when nothing ran.",
            ])
            .with_params_info(["host: Host", "dir: &str", "opts: Map", "String"])
            .set_into_module(&mut m, move |h: Host, dir: &str, opts: Map| -> Res<String> {
                check_keys(&opts, &["grace"], "vm::stop")?;
                let grace = match opts.get("grace") {
                    Some(v) => seconds(v, "grace", true, Duration::from_secs(3600))?,
                    None => Duration::from_secs(30),
                };
                stop2(h, dir, grace)
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("kill")
            .with_comments([
                "/// SIGKILL the VM's QEMU at once (after checking its command line) and clean up;",
                "/// `true` if one ran, `false` if nothing did.",
            ])
            .with_params_info(["host: Host", "dir: &str", "bool"])
            .set_into_module(&mut m, move |h: Host, dir: &str| -> Res<bool> {
                vms.kill(&h, dir).map_err(fail)
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("list")
            .with_comments([
                "/// The VM run directories directly under `root` (those with a `vm.conf` or pid file),",
                "/// each as `vm::info` gives it. After a restart this finds the VMs started before.",
            ])
            .with_params_info(["host: Host", "root: &str", "Array"])
            .set_into_module(&mut m, move |h: Host, root: &str| -> Res<Array> {
                let l = vms.list(&h, root).map_err(fail)?;
                Ok(l.into_iter()
                    .map(|(d, s)| Dynamic::from(status_map(&d, s)))
                    .collect())
            });
        let vms = Arc::clone(&self.vms);
        FuncRegistration::new("wait_console")
            .with_comments([
                "/// Wait until `text` appears in the VM's serial console log, for at most `timeout`",
                "/// seconds (required); `true` when it did, `false` on time-out or when QEMU is gone.",
            ])
            .with_params_info(["host: Host", "dir: &str", "text: &str", "opts: Map", "bool"])
            .set_into_module(
                &mut m,
                move |h: Host, dir: &str, text: &str, opts: Map| -> Res<bool> {
                    check_keys(&opts, &["timeout"], "vm::wait_console")?;
                    let t = match opts.get("timeout") {
                        Some(v) => seconds(v, "timeout", false, Duration::from_secs(86_400))?,
                        None => {
                            return Err("vm::wait_console needs #{ timeout: SECONDS } (waits are always bounded)".into())
                        }
                    };
                    vms.wait_console(&h, dir, text, t).map_err(fail)
                },
            );
        FuncRegistration::new("mac_for_ip")
            .with_comments([
                "/// A MAC for a VM from its IPv4 address: `52:54:00:` and the address's last three bytes",
                "/// (10.77.0.10 → 52:54:00:4d:00:0a), so VMs on one bridge never share one.",
            ])
            .with_params_info(["ip: &str", "String"])
            .set_into_module(&mut m, |ip: &str| -> Res<String> {
                mac_for_ip(ip).map_err(|e| e.into())
            });
        engine.register_static_module("vm", m.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_and_spec_maps() {
        assert_eq!(mac_for_ip("10.77.0.10").unwrap(), "52:54:00:4d:00:0a");
        assert!(mac_for_ip("fe80::1").unwrap_err().contains("IPv4"));
        let mut m = Map::new();
        m.insert("name".into(), "a".into());
        m.insert("dir".into(), "/tmp/a".into());
        m.insert("memory_mb".into(), Dynamic::from(256_i64));
        m.insert("kernal".into(), "/k".into());
        let e = spec_from_map(&m).unwrap_err().to_string();
        assert!(e.contains("unknown option \"kernal\""), "{e}");
        m.remove("kernal");
        let s = spec_from_map(&m).expect("spec");
        assert_eq!(s.memory_mb, 256);
    }
}
