//! Drop guards for VMs a test starts through `prim::vm`: each run directory is killed
//! (QEMU SIGKILLed after its command line is checked, tap removed) when the guard drops,
//! also when the test panics, so no QEMU outlives its test.

use std::sync::Arc;

use provhost::prim::host::Host;
use provhost::prim::vm::Vms;

pub struct VmGuard {
    pub vms: Arc<Vms>,
    pub host: Host,
    pub dirs: Vec<String>,
}

impl VmGuard {
    pub fn new(vms: Arc<Vms>, host: Host) -> VmGuard {
        VmGuard {
            vms,
            host,
            dirs: Vec::new(),
        }
    }

    /// Kill `dir`'s VM on drop.
    pub fn watch(&mut self, dir: &str) {
        self.dirs.push(dir.to_string());
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Err(e) = self.vms.kill(&self.host, d) {
                eprintln!("VmGuard: killing the VM in {d}: {e}");
            }
        }
    }
}

/// True when QEMU is installed; otherwise a loud SKIP line for `test`.
pub fn qemu_or_skip(test: &str) -> bool {
    super::tool_or_skip(test, "qemu-system-x86_64") && super::tool_or_skip(test, "qemu-img")
}
