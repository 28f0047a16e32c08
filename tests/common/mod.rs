//! Shared helpers for integration tests, each cleaned up on drop: the binary run as a
//! person runs it ([`cli`]), script folders ([`scripts`]), databases ([`db`]), files for copies ([`files`]), the
//! state-flow rig ([`flows`]), a real OpenSSH `sshd` on a free loopback port ([`sshd`]),
//! "lab hosts" in network namespaces each with its own sshd ([`netns`]), the test image
//! ([`testimage`]), bridged test VMs ([`testvm`]), drop guards for VMs started through
//! `prim::vm` ([`vmguard`]), a named fake machine behind a real sshd ([`namedfake`]), and
//! the skip rule for tests that need root.
#![allow(dead_code)]

pub mod cli;
pub mod db;
pub mod files;
pub mod flows;
pub mod galera;
pub mod libvirtd;
pub mod namedfake;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod scale;
pub mod scripts;
pub mod sshd;
pub mod testimage;
pub mod testvm;
pub mod vmguard;

/// True when running as root; otherwise prints a loud SKIP line for `test`.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        eprintln!("SKIP {test}: needs root ({why}); run the tests as root (CI does)");
        false
    }
}

/// True when `tool` is on PATH (or an absolute path that exists); otherwise a loud SKIP.
pub fn tool_or_skip(test: &str, tool: &str) -> bool {
    let found = if tool.starts_with('/') {
        std::path::Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    };
    if !found {
        eprintln!("SKIP {test}: {tool} not installed (apt-get install openssh-server iproute2 util-linux)");
    }
    found
}
