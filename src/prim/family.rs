//! What a primitive family gives the scripting host: [`Primitives::register`] puts its
//! functions and types into the engine, and [`Primitives::ctx_methods`] names the methods
//! it adds to the reservation object (`ctx.computer()`, …). Those methods see the
//! reservation only as a [`Placement`] — where its computer is — which the host fills from
//! its `Ctx`; so primitives never depend on the host (the arrow is host → prim).

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult};

/// A family of primitives (ssh, vm, vmnet, …) that registers itself into the engine.
/// Each family is a Rust API first; this is its Rhai binding.
pub trait Primitives: Send + Sync {
    /// Register functions, types and static modules.
    fn register(&self, engine: &mut Engine);

    /// Methods this family adds to the reservation object; the host registers each as
    /// `NAME(ctx: Ctx)`. None by default.
    fn ctx_methods(&self) -> Vec<CtxMethod> {
        Vec::new()
    }
}

/// Where a reservation's computer is and how it is reached: the part of the reservation
/// that primitives need, filled by the host from its reservation object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// `computer.privateIPaddress`.
    pub private_ip: String,
    /// `computer.IPaddress`.
    pub ip: String,
    /// `computer.hostname`.
    pub hostname: String,
    /// The computer's SSH port (0: the configured default).
    pub ssh_port: i64,
    /// The host name of the VM host it runs on (`"local"`: this machine; empty: none).
    pub vmhost: String,
}

/// The function behind a [`CtxMethod`].
pub type CtxFn = Arc<dyn Fn(&Placement) -> Result<Dynamic, Box<EvalAltResult>> + Send + Sync>;

/// One method on the reservation object, implemented by a primitive family.
#[derive(Clone)]
pub struct CtxMethod {
    /// The script name (`computer` for `ctx.computer()`).
    pub name: &'static str,
    /// Its doc comments (`/// …` lines) for the generated API reference.
    pub comments: &'static [&'static str],
    /// The Rhai type it returns, for the reference.
    pub returns: &'static str,
    pub call: CtxFn,
}
