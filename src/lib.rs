//! provhost: a management-node daemon and embeddable library that provisions computers
//! (VMs on hypervisor hosts, standalone lab machines) for reservations, in the line of
//! Apache VCL's `vcld`.
//!
//! The Rust core is small and fixed; what differs per hypervisor or operating system lives
//! in Rhai module scripts that implement a standard set of routines and are reloaded the
//! moment their file changes. Where to start reading:
//!
//! - [`host`]: the scripting host. [`host::ScriptHost`] compiles `scripts/**.rhai`, checks
//!   each module against the routine contract ([`host::contract`]), keeps the last good
//!   version, hot-reloads ([`host::reload`]) and calls routines under a deadline.
//! - [`host::ctx`]: [`Ctx`], the reservation object every routine receives.
//! - [`prim`]: primitives scripts use to touch the world: commands and copies on hosts over
//!   pooled SSH or locally, bounded waits, secrets, logging.
//! - [`budget`]: the deadline and cancel flag of one routine call, set by the host and
//!   read by primitives (below both, so `prim` never imports `host`); [`trace`] the spans
//!   of one routine call and [`metrics`] the Prometheus counters, below everything too.
//! - [`web`]: the read-only status page, its JSON and `/metrics` (`serve --http`).
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
pub mod metrics;
pub mod prim;
pub mod state;
pub mod trace;
pub mod vcl;
pub mod web;

pub use config::Config;
pub use host::{CallOptions, Ctx, HostError, Kind, ReservationData, ScriptHost};

/// The primitive families every host of this build registers (beyond the built-in ones:
/// `ctx`, `wait`, `log`, `secret`), configured from `config`.
pub fn primitive_families(config: &Config) -> Vec<std::sync::Arc<dyn host::Primitives>> {
    vec![
        std::sync::Arc::new(prim::remote::RemotePrims::new(config.ssh.clone())),
        std::sync::Arc::new(prim::vm::bind::VmPrims::new(
            config.vm.clone(),
            &config.images.library(&config.paths.data_dir),
        )),
        std::sync::Arc::new(prim::vmnet::VmnetPrims::new(config.vmnet.clone())),
    ]
}
