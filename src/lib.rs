//! provhost: a management-node daemon and embeddable library that provisions computers
//! (VMs on hypervisor hosts, standalone lab machines) for reservations, in the line of
//! Apache VCL's `vcld`.
//!
//! The Rust core is small and fixed; what differs per hypervisor or operating system lives
//! in Rhai module scripts that implement a standard set of routines and are reloaded the
//! moment their file changes.
//!
//! # Embedding provhost
//!
//! Another program uses the scripting host without the daemon or a database; the whole
//! walk is `examples/embed.rs` (`cargo run --example embed`):
//!
//! 1. **Configuration**: a [`Config`] — [`Config::load`] reads a `provhost.toml`, or build
//!    one in code from [`Config::default`] and check it with [`Config::validate`].
//! 2. **Primitives**: [`primitive_families`] gives provhost's own (hosts and commands,
//!    `vm::`, `vmnet::`, the read-only `config::` from [`script_settings`]); push your
//!    own [`Primitives`] implementation beside them — its `register` adds functions,
//!    types and namespaces to the engine, `ctx_methods` methods to `ctx`.
//! 3. **The host**: [`ScriptHost::new`] with [`Config::host_options`] and the families;
//!    [`ScriptHost::load_all`] compiles and checks every module under the scripts folder
//!    (the errors come back, the good modules load).
//! 4. **Calls**: make a reservation object with [`Ctx::new`] from a [`ReservationData`]
//!    and a [`CtxBackend`] ([`MemoryBackend`] keeps load-log entries and computer
//!    variables in memory; the daemon's writes to the database), then
//!    [`ScriptHost::call`] with a [`ModuleKey`] (`(Kind::Provisioning, "name")`), the
//!    routine and [`CallOptions`]. `call` blocks: run it on a thread of its own (or
//!    `spawn_blocking`) in async code. Errors are [`HostError`]s naming file and line.
//! 5. **Reloads**: [`ScriptHost::watch`] starts the file watcher (keep the returned
//!    guard; dropping it stops watching); [`ScriptHost::subscribe`] gives every
//!    [`ReloadEvent`] from then on — a module loaded (with its version), an edit that
//!    failed (and which version keeps serving), a file deleted.
//!
//! Those names, re-exported here, are the embedding API; the modules below are
//! public for the daemon's own binary and for tests, and change more freely.
//!
//! # The modules
//!
//! - [`host`]: the scripting host. [`host::ScriptHost`] compiles `scripts/**.rhai`, checks
//!   each module against the routine contract ([`host::contract`]), keeps the last good
//!   version, hot-reloads ([`host::reload`]) and calls routines under a deadline.
//! - [`host::ctx`]: [`Ctx`], the reservation object every routine receives.
//! - [`prim`]: primitives scripts use to touch the world: commands and copies on hosts over
//!   pooled SSH or locally, bounded waits, secrets, logging, `config::`.
//! - [`budget`]: the deadline and cancel flag of one routine call, set by the host and
//!   read by primitives (below both, so `prim` never imports `host`).
//! - [`db`]: VCL's tables on SQLite or MySQL/MariaDB: claiming requests, loading a
//!   reservation into `Ctx`, load-log, state changes.
//! - [`state`]: VCL's state flows (new, reserved, inuse, reclaim, image) for one claimed
//!   request; [`daemon`]: the poll loop that claims work and runs flows as tasks;
//!   [`demo`]: the whole life cycle on a simulated computer.
//! - [`image`]: the image library and provhost's own test image (`provhost image build-test`).
//! - [`config`]: `provhost.toml`, with defaults that make the embedded setup work.
//! - [`vcl`]: VCL's fixed vocabulary (state ids, load-state names).
//!
//! The arrows go one way: state flows call routines, routines call primitives; primitives
//! never call scripts.

pub mod budget;
pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod host;
pub mod image;
pub mod prim;
pub mod state;
pub mod vcl;

pub use config::Config;
pub use host::{
    CallOptions, Ctx, CtxBackend, HostError, Kind, MemoryBackend, ModuleKey, Primitives,
    ReloadEvent, ReservationData, ScriptHost,
};

/// The primitive families every host of this build registers (beyond the built-in ones:
/// `ctx`, `wait`, `log`, `secret`), configured from `config`: `config::` (what scripts may
/// read of `config`), hosts and commands, `vm::`, `vmnet::`.
pub fn primitive_families(config: &Config) -> Vec<std::sync::Arc<dyn host::Primitives>> {
    vec![
        std::sync::Arc::new(prim::settings::SettingsPrims::new(script_settings(config))),
        std::sync::Arc::new(prim::remote::RemotePrims::new(config.ssh.clone())),
        std::sync::Arc::new(prim::vm::bind::VmPrims::new(
            config.vm.clone(),
            &config.images.library(&config.paths.data_dir),
        )),
        std::sync::Arc::new(prim::vmnet::VmnetPrims::new(config.vmnet.clone())),
    ]
}

/// What scripts read as `config::…`: paths made absolute (against the working directory,
/// as provhost itself resolves them), no secret.
pub fn script_settings(config: &Config) -> prim::settings::Settings {
    let abs = |p: &std::path::Path| -> String {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        p.display().to_string()
    };
    let url = config.database.url_or_default(&config.paths.data_dir);
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    prim::settings::Settings {
        data_dir: abs(&config.paths.data_dir),
        scripts_dir: abs(&config.paths.scripts),
        stdlib_dir: abs(&config.paths.stdlib),
        image_library: abs(&config.images.library(&config.paths.data_dir)),
        node_name: if config.daemon.node.is_empty() {
            db::schema::local_hostname()
        } else {
            config.daemon.node.clone()
        },
        db_kind: if url.starts_with("sqlite:") {
            "sqlite".into()
        } else {
            "mysql".into()
        },
        ssh_user: config.ssh.user.clone(),
        ssh_identity: abs(&config.ssh.identity),
        ssh_known_hosts: abs(&config.ssh.known_hosts),
        ssh_port: i64::from(config.ssh.port),
        ssh_command_timeout_secs: secs(config.ssh.command_timeout_secs),
        ssh_copy_timeout_secs: secs(config.ssh.copy_timeout_secs),
        local_vmhost: config.ssh.local_vmhost.clone(),
        call_timeout_secs: secs(config.scripts.call_timeout_secs),
    }
}
