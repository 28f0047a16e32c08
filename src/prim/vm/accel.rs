//! The accelerator choice: `[vm] accel = "auto" | "kvm" | "tcg"`. `auto` proves KVM on a
//! VM host by a real short boot — the VM's own kernel under `-accel kvm`, no disk, until
//! the kernel has run its init code (it then panics for want of a root device, by
//! design) — because an openable `/dev/kvm` proves nothing (on a nested host without
//! vmx/svm, guests hang). Failing that, TCG, with one log line saying why. The verdict is
//! kept per VM host for the life of the process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{first_lines, quote, VmError, VmSpec, Vms};
use crate::prim::host::Host;
use crate::prim::ssh::io::Deadline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s {
            "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            _ => None,
        }
    }
}

/// The accelerator to use on one VM host, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub accel: String,
    pub reason: String,
}

/// Console lines that show the kernel got through its init code under KVM.
const BOOTED: &[&str] = &[
    "Freeing unused kernel",
    "Unable to mount root",
    "Cannot open root device",
];

impl Vms {
    /// The kept `auto` verdict for `host`, if it was proved already.
    pub fn accel_verdict(&self, host: &Host) -> Option<Verdict> {
        self.verdicts
            .lock()
            .ok()
            .and_then(|m| m.get(&host.label()).cloned())
    }

    pub(super) fn resolve_accel(
        &self,
        host: &Host,
        spec: &VmSpec,
    ) -> Result<(String, String), VmError> {
        let choice = match &spec.accel {
            Some(a) => AccelChoice::parse(a).unwrap_or(AccelChoice::Auto),
            None => self.cfg.accel,
        };
        match choice {
            AccelChoice::Kvm => return Ok(("kvm".into(), "configured".into())),
            AccelChoice::Tcg => return Ok(("tcg".into(), "configured".into())),
            AccelChoice::Auto => {}
        }
        if let Some(v) = self.accel_verdict(host) {
            return Ok((v.accel, v.reason));
        }
        let Some(kernel) = &spec.kernel else {
            // Not kept: the next VM may bring a kernel to prove KVM with.
            return Ok((
                "tcg".into(),
                "auto: no kernel in the spec to prove KVM with".into(),
            ));
        };
        let v = self.prove_kvm(host, &spec.dir, kernel)?;
        if v.accel == "kvm" {
            tracing::info!(host = %host.label(), "KVM works on this VM host: {}", v.reason);
        } else {
            tracing::warn!(host = %host.label(), "KVM unusable on this VM host ({}); using TCG", v.reason);
        }
        if let Ok(mut m) = self.verdicts.lock() {
            m.insert(host.label(), v.clone());
        }
        Ok((v.accel, v.reason))
    }

    /// Boot `kernel` under KVM for at most `[vm] kvm_probe_secs`.
    fn prove_kvm(&self, host: &Host, dir: &str, kernel: &str) -> Result<Verdict, VmError> {
        let tcg = |reason: String| Verdict {
            accel: "tcg".into(),
            reason,
        };
        let t = "/tmp/provhost-kvmprobe.$$";
        let start = format!(
            "[ -r /dev/kvm ] && [ -w /dev/kvm ] || {{ echo 'no usable /dev/kvm' >&2; exit 2; }}; \
             t={t}; rm -rf \"$t\"; mkdir \"$t\" || exit 1; echo \"$t\"; \
             {qemu} -name provhost-kvmprobe -accel kvm -m 256 -display none -monitor none -nodefaults \
             -no-reboot -kernel {k} -append 'console=ttyS0 loglevel=7 root=/dev/provhost-kvm-probe panic=-1' \
             -serial \"file:$t/console.log\" -pidfile \"$t/qemu.pid\" -daemonize || exit 3",
            qemu = quote(&self.cfg.qemu),
            k = quote(kernel),
        );
        let o = self.sh(host, dir, "proving KVM", &start, Duration::from_secs(30))?;
        let tmp = o.stdout.lines().next().unwrap_or("").trim().to_string();
        let verdict = if o.code != 0 {
            Some(tcg(match o.code {
                2 => "no usable /dev/kvm".into(),
                _ => format!("QEMU with -accel kvm did not start: {}", first_lines(&o)),
            }))
        } else {
            None
        };
        let verdict = match verdict {
            Some(v) => v,
            None => {
                let limit = Duration::from_secs(self.cfg.kvm_probe_secs.max(1));
                let dl = Deadline::new(limit);
                let pattern = BOOTED.join("|");
                let check = format!(
                    "grep -qE {} {}/console.log && echo booted; exit 0",
                    quote(&pattern),
                    quote(&tmp)
                );
                let mut booted = false;
                for _ in 0..10_000u32 {
                    let o = self.sh(host, dir, "proving KVM", &check, Duration::from_secs(10))?;
                    if o.stdout.contains("booted") {
                        booted = true;
                        break;
                    }
                    if dl.expired() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250).min(dl.left()));
                }
                if booted {
                    Verdict {
                        accel: "kvm".into(),
                        reason: "a test kernel booted under KVM".into(),
                    }
                } else {
                    tcg(format!(
                        "a test kernel did not boot under KVM within {} s (/dev/kvm opens, but guests hang)",
                        limit.as_secs()
                    ))
                }
            }
        };
        if tmp.starts_with("/tmp/provhost-kvmprobe.") {
            let t = quote(&tmp);
            let cleanup = format!(
                "pid=$(cat {t}/qemu.pid 2>/dev/null); \
                 if [ -n \"$pid\" ] && tr '\\0' '\\n' < /proc/$pid/cmdline 2>/dev/null | grep -qx provhost-kvmprobe; then \
                 kill -9 \"$pid\"; for i in 1 2 3 4 5 6 7 8 9 10; do [ -d /proc/$pid ] || break; sleep 0.2; done; fi; rm -rf {t}"
            );
            self.sh(
                host,
                dir,
                "ending the KVM probe",
                &cleanup,
                Duration::from_secs(15),
            )?;
        }
        Ok(verdict)
    }
}
