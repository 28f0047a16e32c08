//! What a VM is made of ([`VmSpec`]), its checks, the files of its run directory, and the
//! QEMU command line built from it (every value shell-quoted, so a spec can never add a
//! command).

use super::VmError;

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One VM, as a script or caller describes it. Only `name` and `dir` are required.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// Shown in messages and given to QEMU (`-name`); letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The run directory on the VM host (absolute): pid file, QMP socket, serial log.
    pub dir: String,
    /// Root disk (qcow2), the guest's `/dev/vda`.
    pub disk: Option<String>,
    /// Direct kernel boot: kernel, initrd and command line.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    pub memory_mb: u32,
    pub cpus: u32,
    /// The NIC's MAC (`52:54:00:…`); required with a network, so two VMs never share one.
    pub mac: Option<String>,
    /// Network namespace QEMU runs in (`ip netns exec`); the bridge and tap live there.
    pub netns: Option<String>,
    /// Bridge the VM's tap is attached to; no bridge = no network.
    pub bridge: Option<String>,
    /// The VM's tap device (made if missing, attached to `bridge`, removed when the VM ends).
    pub tap: Option<String>,
    /// `"auto"`, `"kvm"` or `"tcg"`; `None` = `[vm] accel`.
    pub accel: Option<String>,
}

impl VmSpec {
    pub fn new(name: &str, dir: &str) -> VmSpec {
        VmSpec {
            name: name.into(),
            dir: dir.into(),
            disk: None,
            kernel: None,
            initrd: None,
            append: None,
            memory_mb: 512,
            cpus: 1,
            mac: None,
            netns: None,
            bridge: None,
            tap: None,
            accel: None,
        }
    }

    /// Every problem a spec can have before anything runs, named with its fix.
    pub fn check(&self) -> Result<(), VmError> {
        let bad = |what: String| {
            Err(VmError::Spec {
                vm: self.name.clone(),
                detail: what,
            })
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad(format!(
                "name {:?} must be 1-64 letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        run_dir_ok(&self.dir).or_else(&bad)?;
        for (what, v) in [
            ("disk", &self.disk),
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
        ] {
            if let Some(p) = v {
                if !p.starts_with('/') || p.contains('\0') || p.contains(',') {
                    return bad(format!(
                        "{what} {p:?} must be an absolute path without ',' (QEMU splits options at commas)"
                    ));
                }
            }
        }
        if self.initrd.is_some() && self.kernel.is_none() {
            return bad("initrd given without a kernel".into());
        }
        if self.append.is_some() && self.kernel.is_none() {
            return bad("append (kernel command line) given without a kernel".into());
        }
        if let Some(a) = &self.append {
            if a.contains('\0') || a.contains('\n') {
                return bad("append must be one line".into());
            }
        }
        if !(16..=1024 * 1024).contains(&self.memory_mb) {
            return bad(format!(
                "memory_mb {} must be between 16 and 1048576",
                self.memory_mb
            ));
        }
        if !(1..=256).contains(&self.cpus) {
            return bad(format!("cpus {} must be between 1 and 256", self.cpus));
        }
        if let Some(a) = &self.accel {
            if !matches!(a.as_str(), "auto" | "kvm" | "tcg") {
                return bad(format!("accel {a:?} must be \"auto\", \"kvm\" or \"tcg\""));
            }
        }
        for (what, v) in [
            ("netns", &self.netns),
            ("bridge", &self.bridge),
            ("tap", &self.tap),
        ] {
            if let Some(n) = v {
                if n.is_empty()
                    || n.len() > 15
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    return bad(format!(
                        "{what} {n:?} must be 1-15 letters, digits, '.', '_' or '-'"
                    ));
                }
            }
        }
        match (&self.bridge, &self.tap, &self.mac) {
            (None, None, _) if self.netns.is_some() => {
                return bad("netns given without a bridge and tap".into())
            }
            (None, None, _) => {}
            (Some(_), Some(_), Some(mac)) => {
                if !mac_ok(mac) {
                    return bad(format!(
                        "mac {mac:?} must look like 52:54:00:12:34:56 (unicast)"
                    ));
                }
            }
            (Some(_), Some(_), None) => {
                return bad("a networked VM needs its own mac (e.g. derived from its IP); without one every VM is 52:54:00:12:34:56 and the bridge loses all but one".into())
            }
            _ => return bad("bridge and tap go together (the tap is attached to the bridge)".into()),
        }
        Ok(())
    }

    /// The QEMU command (without `ip netns exec`), each value quoted.
    pub fn qemu_command(&self, qemu: &str, accel: &str) -> String {
        let d = &self.dir;
        let mut a: Vec<String> = vec![
            quote(qemu),
            "-name".into(),
            quote(&format!("{},process=qemu-{}", self.name, self.name)),
            "-accel".into(),
            quote(accel),
            "-m".into(),
            self.memory_mb.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-display none -monitor none -no-user-config -nodefaults".into(),
            "-device virtio-rng-pci".into(),
            "-serial".into(),
            quote(&format!("file:{}", console_log(d))),
            "-qmp".into(),
            quote(&format!("unix:{},server=on,wait=off", qmp_socket(d))),
            "-pidfile".into(),
            quote(&pid_file(d)),
            "-daemonize".into(),
        ];
        if let Some(k) = &self.kernel {
            a.push("-kernel".into());
            a.push(quote(k));
        }
        if let Some(i) = &self.initrd {
            a.push("-initrd".into());
            a.push(quote(i));
        }
        if let Some(c) = &self.append {
            a.push("-append".into());
            a.push(quote(c));
        }
        if let Some(disk) = &self.disk {
            a.push("-drive".into());
            a.push(quote(&format!(
                "file={disk},if=virtio,format=qcow2,cache=unsafe"
            )));
        }
        match (&self.tap, &self.mac) {
            (Some(tap), Some(mac)) => {
                a.push("-netdev".into());
                a.push(quote(&format!(
                    "tap,id=n0,ifname={tap},script=no,downscript=no"
                )));
                a.push("-device".into());
                a.push(quote(&format!("virtio-net-pci,netdev=n0,mac={mac}")));
            }
            _ => a.push("-nic none".into()),
        }
        a.join(" ")
    }

    /// `ip netns exec NS ` or nothing.
    pub fn netns_prefix(&self) -> String {
        match &self.netns {
            Some(ns) => format!("ip netns exec {} ", quote(ns)),
            None => String::new(),
        }
    }

    /// `ip -n NS` or `ip`.
    pub fn ip(&self) -> String {
        match &self.netns {
            Some(ns) => format!("ip -n {}", quote(ns)),
            None => "ip".into(),
        }
    }

    /// The lines of `vm.conf` (what clean-up needs to know once the spec is gone).
    pub fn conf(&self, accel: &str) -> String {
        let mut s = format!("name={}\naccel={accel}\n", self.name);
        if let (Some(tap), netns) = (&self.tap, &self.netns) {
            s.push_str(&format!("tap={tap}\n"));
            if let Some(ns) = netns {
                s.push_str(&format!("netns={ns}\n"));
            }
        }
        s
    }
}

/// A run directory must be absolute, one line, and short enough for its QMP socket path.
pub fn run_dir_ok(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/')
        || dir.contains(['\0', '\n', ','])
        || dir.trim_end_matches('/').is_empty()
    {
        return Err(format!(
            "run directory {dir:?} must be an absolute path (not /) without ',' or newlines"
        ));
    }
    let sock = qmp_socket(dir);
    if sock.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "run directory {dir:?} is too long: its QMP socket path {sock} has {} bytes, unix sockets allow {MAX_SOCKET_PATH}; use a shorter VM directory",
            sock.len()
        ));
    }
    Ok(())
}

fn mac_ok(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn trimmed(dir: &str) -> &str {
    dir.trim_end_matches('/')
}
pub fn qmp_socket(dir: &str) -> String {
    format!("{}/qmp.sock", trimmed(dir))
}
pub fn pid_file(dir: &str) -> String {
    format!("{}/qemu.pid", trimmed(dir))
}
pub fn console_log(dir: &str) -> String {
    format!("{}/console.log", trimmed(dir))
}
pub fn conf_file(dir: &str) -> String {
    format!("{}/vm.conf", trimmed(dir))
}

/// Single-quote `s` for a POSIX shell (plain words stay as they are).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> VmSpec {
        let mut s = VmSpec::new("vm1", "/run/pv/vm1");
        s.netns = Some("vmh".into());
        s.bridge = Some("br0".into());
        s.tap = Some("tap1".into());
        s.mac = Some("52:54:00:0a:4d:00".into());
        s
    }

    #[test]
    fn checks_name_the_field_and_the_fix() {
        assert!(net().check().is_ok());
        let mut s = net();
        s.mac = None;
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("needs its own mac"));
        let mut s = net();
        s.mac = Some("53:00:00:00:00:01".into());
        assert!(s.check().unwrap_err().to_string().contains("unicast"));
        let mut s = net();
        s.tap = None;
        assert!(s.check().unwrap_err().to_string().contains("go together"));
        let mut s = VmSpec::new("a b", "/x");
        assert!(s.check().unwrap_err().to_string().contains("name"));
        s.name = "ok".into();
        s.dir = "rel".into();
        assert!(s.check().unwrap_err().to_string().contains("absolute"));
        s.dir = format!("/{}", "d".repeat(120));
        assert!(s.check().unwrap_err().to_string().contains("too long"));
        s.dir = "/x".into();
        s.initrd = Some("/i".into());
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("without a kernel"));
        s.initrd = None;
        s.accel = Some("hvf".into());
        assert!(s.check().unwrap_err().to_string().contains("accel"));
    }

    #[test]
    fn command_line_quotes_every_value() {
        let mut s = net();
        s.kernel = Some("/img/vmlinuz".into());
        s.append = Some("console=ttyS0 testip=10.0.0.5/24 x='y'".into());
        let c = s.qemu_command("qemu-system-x86_64", "tcg");
        assert!(
            c.contains("-append 'console=ttyS0 testip=10.0.0.5/24 x='\\''y'\\'''"),
            "{c}"
        );
        assert!(c.contains("-pidfile /run/pv/vm1/qemu.pid"), "{c}");
        assert!(
            c.contains("unix:/run/pv/vm1/qmp.sock,server=on,wait=off"),
            "{c}"
        );
        assert!(c.contains("mac=52:54:00:0a:4d:00"), "{c}");
        assert_eq!(s.netns_prefix(), "ip netns exec vmh ");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
    }
}
