//! Primitives: the only way a script touches the world. Each is a Rust API first and a
//! Rhai binding second (`register`), and every one that waits is bounded by its own
//! timeout and by the calling routine's deadline ([`crate::budget::remaining`]). A family
//! plugs into the scripting host through [`family::Primitives`] and never imports the host.
//!
//! Remote execution: [`ssh`] (pooled sessions, commands, host keys, unix-socket forward),
//! [`local`] (the same for local processes), [`scp`] (streaming copies), [`host`] (the
//! `Host` type over both) and [`remote`] (their Rhai binding, the `RemotePrims` family).
//! VM control: [`vm`] (QEMU processes and QMP on a local or SSH-reached VM host, the
//! `VmPrims` family, Rhai module `vm`).
//! [`vmnet`]: the VM host's bridge-in-a-namespace network, through a `Host`.

pub mod args;
pub mod family;
pub mod host;
pub mod local;
pub mod log;
pub mod redact_log;
pub mod remote;
pub mod scp;
pub mod secret;
pub mod settings;
pub mod ssh;
pub mod vm;
pub mod vmnet;
pub mod wait;

pub use family::{CtxMethod, Placement, Primitives};
