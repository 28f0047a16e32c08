//! `Ctx`: the reservation as scripts see it.
//!
//! A `Ctx` is a cheap handle (`Arc`s inside) over three things: the reservation's data
//! ([`ReservationData`], read-only for scripts), the per-reservation notes scripts keep with
//! `ctx.note(key, value)`, and the [`CtxBackend`] that carries the few writes a routine may
//! make (load-log entries, the image size). The daemon fills the data from the database and
//! gives a database backend; `provhost call --ctx FILE` fills it from a TOML/JSON fixture and
//! gives [`MemoryBackend`]. Both go through [`Ctx::new`], the one way a `Ctx` is made.
//!
//! Every field of [`ReservationData`] is a read-only property in Rhai, registered from the
//! same table ([`CTX_PROPERTIES`]) that feeds the generated script API reference.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString};
use serde::{Deserialize, Serialize};

use crate::host::error::HostError;

/// What a routine may change outside its own variables. Implemented by the database layer
/// (writes `computerloadlog`, `image.size`) and by [`MemoryBackend`] for fixtures and tests.
pub trait CtxBackend: Send + Sync {
    /// VCL's `insertloadlog`: `name` is a `computerloadstate.loadstatename` (already checked
    /// against VCL's list by the caller), `text` the additional info.
    fn loadlog(&self, data: &ReservationData, name: &str, text: &str) -> Result<(), String>;
    /// Record the image's size in MB (VCL: `image.size`).
    fn set_image_size(&self, data: &ReservationData, mb: i64) -> Result<(), String>;
    /// A variable a module keeps for this computer across reservations (`None` = unset).
    fn computer_var(&self, data: &ReservationData, name: &str) -> Result<Option<String>, String>;
    /// Set a per-computer variable.
    fn set_computer_var(
        &self,
        data: &ReservationData,
        name: &str,
        value: &str,
    ) -> Result<(), String>;
}

/// A backend that keeps load-log entries in memory and mirrors them to `tracing`.
/// Used by `provhost call --ctx` and by tests; nothing is written anywhere else.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    entries: Mutex<Vec<(String, String)>>,
    image_size: Mutex<Option<i64>>,
    vars: Mutex<std::collections::BTreeMap<(i64, String), String>>,
}

impl MemoryBackend {
    /// The load-log entries written so far, as (loadstatename, additionalinfo).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
    /// The last size given to `ctx.set_image_size`.
    pub fn image_size(&self) -> Option<i64> {
        self.image_size.lock().ok().and_then(|s| *s)
    }
    /// The variables computer `computer_id` holds now.
    pub fn computer_vars(&self, computer_id: i64) -> std::collections::BTreeMap<String, String> {
        self.vars
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|((c, _), _)| *c == computer_id)
                    .map(|((_, n), value)| (n.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Give computer `computer_id` these variables (as if set by earlier routines).
    pub fn set_computer_vars(
        &self,
        computer_id: i64,
        vars: &std::collections::BTreeMap<String, String>,
    ) {
        if let Ok(mut v) = self.vars.lock() {
            for (n, value) in vars {
                v.insert((computer_id, n.clone()), value.clone());
            }
        }
    }
}

impl CtxBackend for MemoryBackend {
    fn loadlog(&self, data: &ReservationData, name: &str, text: &str) -> Result<(), String> {
        tracing::info!(
            reservation = data.reservation_id,
            loadstate = name,
            "{text}"
        );
        self.entries
            .lock()
            .map_err(|_| "load-log buffer poisoned".to_string())?
            .push((name.to_string(), text.to_string()));
        Ok(())
    }
    fn set_image_size(&self, data: &ReservationData, mb: i64) -> Result<(), String> {
        tracing::info!(reservation = data.reservation_id, image = %data.image_name, mb, "image size");
        *self
            .image_size
            .lock()
            .map_err(|_| "image size poisoned".to_string())? = Some(mb);
        Ok(())
    }
    fn computer_var(&self, data: &ReservationData, name: &str) -> Result<Option<String>, String> {
        let vars = self
            .vars
            .lock()
            .map_err(|_| "variables poisoned".to_string())?;
        Ok(vars.get(&(data.computer_id, name.to_string())).cloned())
    }
    fn set_computer_var(
        &self,
        data: &ReservationData,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        let mut vars = self
            .vars
            .lock()
            .map_err(|_| "variables poisoned".to_string())?;
        vars.insert((data.computer_id, name.to_string()), value.to_string());
        Ok(())
    }
}

macro_rules! reservation_data {
    ($( $(#[doc = $doc:literal])+ $field:ident : $ty:ident ),+ $(,)?) => {
        /// The reservation's data, named after VCL's DataStructure accessors (snake case,
        /// no `get_`). Missing values are `0` / `""` / `false`, never absent, so scripts do
        /// not need to guard every read.
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct ReservationData {
            $( $(#[doc = $doc])+ pub $field: reservation_data!(@ty $ty), )+
        }

        /// (property name, Rhai type, doc) for every `ctx` property, in declaration order.
        pub const CTX_PROPERTIES: &[(&str, &str, &str)] = &[
            $( (stringify!($field), reservation_data!(@rhai $ty), concat!($($doc),+)) ),+
        ];

        fn register_properties(engine: &mut Engine) {
            $(
                engine.register_get(stringify!($field), |c: &mut Ctx| -> reservation_data!(@get $ty) {
                    reservation_data!(@read $ty, c.data.$field)
                });
            )+
        }
    };
    (@ty int) => { i64 };
    (@ty str) => { String };
    (@ty bool) => { bool };
    (@rhai int) => { "int" };
    (@rhai str) => { "string" };
    (@rhai bool) => { "bool" };
    (@get int) => { i64 };
    (@get str) => { ImmutableString };
    (@get bool) => { bool };
    (@read int, $e:expr) => { $e };
    (@read str, $e:expr) => { ImmutableString::from($e.as_str()) };
    (@read bool, $e:expr) => { $e };
}

reservation_data! {
    /// `reservation.id`
    reservation_id: int,
    /// `request.id`
    request_id: int,
    /// Name of the request's state (`new`, `reload`, `reserved`, …).
    request_state: str,
    /// Name of the request's last state.
    request_laststate: str,
    /// `request.start`, as stored (`YYYY-MM-DD HH:MM:SS`).
    request_start: str,
    /// `request.end`, as stored.
    request_end: str,
    /// `request.forimaging`: the reservation is for capturing an image.
    request_forimaging: bool,
    /// `request.checkuser`: whether user connections are checked.
    request_checkuser: bool,
    /// `computer.id`
    computer_id: int,
    /// The computer's short host name (`computer.hostname` without the domain).
    computer_node_name: str,
    /// `computer.hostname` as stored (may be fully qualified).
    computer_hostname: str,
    /// `computer.IPaddress`: the public address users connect to.
    computer_ip: str,
    /// `computer.privateIPaddress`: the address the management node reaches it on.
    computer_private_ip: str,
    /// `computer.eth0macaddress`
    computer_eth0_mac: str,
    /// `computer.eth1macaddress`
    computer_eth1_mac: str,
    /// The SSH port provhost uses to reach the computer (22 unless configured otherwise).
    computer_ssh_port: int,
    /// `computer.type`: `blade`, `lab` or `virtualmachine`.
    computer_type: str,
    /// Name of the computer's state.
    computer_state: str,
    /// The script serving the computer's provisioning module (`provisioning/NAME.rhai`, e.g.
    /// `qemu`, `lab`, `libvirt`), mapped from its VCL module row (docs/modules.md).
    computer_provisioning_module: str,
    /// `module.id` of the computer's provisioning (`provisioning.moduleid`).
    computer_provisioning_module_id: int,
    /// `module.name` of the computer's provisioning (e.g. `provisioning_libvirt`).
    computer_provisioning_module_name: str,
    /// `module.perlpackage` of the computer's provisioning (e.g.
    /// `VCL::Module::Provisioning::libvirt`; empty for provhost's own rows).
    computer_provisioning_module_perl_package: str,
    /// `computer.vmhostid` (0 for a computer that is not a VM).
    vmhost_id: int,
    /// Host name of the VM host the computer runs on.
    vmhost_hostname: str,
    /// `vmprofile.profilename` of the VM host.
    vmprofile: str,
    /// `vmprofile.datastorepath`: where VM disks live on the VM host.
    vmprofile_datastore_path: str,
    /// `vmprofile.repositorypath`: where master images live.
    vmprofile_repository_path: str,
    /// `vmprofile.vmpath`: where VM configuration lives on the VM host.
    vmprofile_vmpath: str,
    /// `vmprofile.vmdisk`: `dedicated` (each VM gets a full copy of the image) or `shared`
    /// (VMs share the image as a linked clone's base).
    vmprofile_vmdisk: str,
    /// `image.id`
    image_id: int,
    /// The image's on-disk name (`imagerevision.imagename`, VCL's `get_image_name`).
    image_name: str,
    /// `image.prettyname`
    image_pretty_name: str,
    /// `imagerevision.id`
    imagerevision_id: int,
    /// `imagerevision.revision`
    imagerevision_revision: int,
    /// `OS.name` of the image.
    image_os_name: str,
    /// `OS.type`: `linux`, `windows`, `unix` or `osx`.
    image_os_type: str,
    /// The script serving the image's OS module (`os/NAME.rhai`, e.g. `linux`, `ubuntu`),
    /// mapped from its VCL module row (docs/modules.md).
    image_os_module: str,
    /// `OS.moduleid` of the image's OS.
    image_os_moduleid: int,
    /// `module.name` of the image's OS module (e.g. `os_linux_ubuntu`).
    image_os_module_name: str,
    /// `module.perlpackage` of the image's OS module (e.g. `VCL::Module::OS::Linux::Ubuntu`).
    image_os_module_perl_package: str,
    /// `image.size` in MB.
    image_size: int,
    /// `image.reloadtime` in minutes.
    image_reload_time: int,
    /// `imagemeta.rootaccess`: the reservation's user gets administrator rights (sudo) on
    /// the computer. True when the image has no imagemeta, as in VCL. (Fixtures default to
    /// false: give it explicitly.)
    image_root_access: bool,
    /// `user.id` of the reservation's owner.
    user_id: int,
    /// `user.unityid`: the login name.
    user_login_id: str,
    /// `user.uid`: the numeric uid to create the account with (0 = let the OS pick).
    user_uid: int,
    /// `user.email`
    user_email: str,
    /// `user.sshpublickeys` when `user.usepublickeys` is set, else empty.
    user_ssh_public_keys: str,
    /// `reservation.remoteIP`: the user's address, set when they acknowledge (Connect).
    remote_ip: str,
    /// `managementnode.id` of the node processing this reservation.
    management_node_id: int,
    /// `managementnode.hostname`
    management_node_hostname: str,
    /// Directory of this management node's image library.
    image_library_path: str,
}

/// The reservation handle given to every routine as `ctx`.
#[derive(Clone)]
pub struct Ctx {
    data: Arc<ReservationData>,
    notes: Arc<Mutex<rhai::Map>>,
    backend: Arc<dyn CtxBackend>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("reservation_id", &self.data.reservation_id)
            .field("computer", &self.data.computer_node_name)
            .field("image", &self.data.image_name)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The one way a `Ctx` is made: data plus the backend that receives its writes.
    pub fn new(data: ReservationData, backend: Arc<dyn CtxBackend>) -> Self {
        Ctx {
            data: Arc::new(data),
            notes: Arc::new(Mutex::new(rhai::Map::new())),
            backend,
        }
    }

    /// Read a fixture file (`.toml`, or `.json`; other extensions are tried as TOML then
    /// JSON) into [`ReservationData`]. Unknown keys are an error, so a typo does not pass
    /// silently as a default value.
    pub fn data_from_file(path: &Path) -> Result<ReservationData, HostError> {
        crate::host::fixture::read_as(path)
    }

    /// The same reservation (notes, backend) with fresh data, e.g. after the user's
    /// address arrived.
    pub fn with_data(&self, data: ReservationData) -> Self {
        Ctx {
            data: Arc::new(data),
            notes: Arc::clone(&self.notes),
            backend: Arc::clone(&self.backend),
        }
    }

    /// Read a note (as scripts do with `ctx.note(key)`).
    pub fn note(&self, key: &str) -> Option<Dynamic> {
        self.notes.lock().ok().and_then(|n| n.get(key).cloned())
    }

    /// Keep a note (as scripts do with `ctx.note(key, value)`).
    pub fn set_note(&self, key: &str, value: Dynamic) {
        if let Ok(mut n) = self.notes.lock() {
            n.insert(key.into(), value);
        }
    }

    /// The reservation data.
    pub fn data(&self) -> &ReservationData {
        &self.data
    }

    /// Where the reservation's computer is, for primitive families' `ctx` methods.
    pub fn placement(&self) -> crate::prim::Placement {
        let d = &self.data;
        crate::prim::Placement {
            private_ip: d.computer_private_ip.clone(),
            ip: d.computer_ip.clone(),
            hostname: d.computer_hostname.clone(),
            ssh_port: d.computer_ssh_port,
            vmhost: d.vmhost_hostname.clone(),
        }
    }

    /// The notes scripts have kept with `ctx.note(key, value)`.
    pub fn notes(&self) -> rhai::Map {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Write a load-log entry; unknown load-state names are refused before the backend sees them.
    pub fn loadlog(&self, name: &str, text: &str) -> Result<(), String> {
        if !crate::vcl::is_load_state(name) {
            return Err(format!(
                "unknown load-state name {name:?} (names are VCL's computerloadstate.loadstatename, e.g. \"startload\", \"machinebooted\", \"info\"; `provhost loadstates` lists them all, as does docs/script-api.md)"
            ));
        }
        self.backend
            .loadlog(&self.data, name, &crate::prim::secret::redact(text))
    }

    /// Record the image size in MB.
    pub fn set_image_size(&self, mb: i64) -> Result<(), String> {
        if mb < 0 {
            return Err(format!("image size must be >= 0 MB, got {mb}"));
        }
        self.backend.set_image_size(&self.data, mb)
    }
}

fn script_err(msg: String) -> Box<EvalAltResult> {
    msg.into()
}

/// Register the methods primitive families add to `Ctx` (`ctx.computer()`, …): each sees
/// the reservation's [`Ctx::placement`].
pub fn register_family_methods(engine: &mut Engine, methods: Vec<crate::prim::CtxMethod>) {
    for m in methods {
        let call = m.call;
        FuncRegistration::new(m.name)
            .with_comments(m.comments)
            .with_params_info(["ctx: Ctx", m.returns])
            .register_into_engine(engine, move |c: &mut Ctx| call(&c.placement()));
    }
}

/// Register the `Ctx` type, its properties and methods.
/// Bytes a note holds, roughly: strings and blobs by length, containers summed, anything
/// else 16. Nesting deeper than 64 counts as over any limit.
fn note_size(v: &Dynamic, depth: usize) -> usize {
    if depth > 64 {
        return usize::MAX / 2;
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return s.len();
    }
    if let Some(b) = v.read_lock::<rhai::Blob>() {
        return b.len();
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a
            .iter()
            .map(|x| note_size(x, depth + 1))
            .fold(0usize, usize::saturating_add);
    }
    if let Some(m) = v.read_lock::<rhai::Map>() {
        return m
            .iter()
            .map(|(k, x)| k.len().saturating_add(note_size(x, depth + 1)))
            .fold(0usize, usize::saturating_add);
    }
    16
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Ctx>("Ctx");
    register_properties(engine);

    FuncRegistration::new("loadlog")
        .with_comments([
            "/// Write a VCL load-log entry (`computerloadlog`) for this reservation.",
            "/// `name` must be a `computerloadstate.loadstatename`; an unknown name is an error.",
        ])
        .with_params_info(["ctx: Ctx", "name: &str", "text: &str", "()"])
        .register_into_engine(engine, |c: &mut Ctx, name: &str, text: &str| {
            c.loadlog(name, text).map_err(script_err)
        });
    FuncRegistration::new("set_image_size")
        .with_comments(["/// Record the image's size in MB (`image.size`)."])
        .with_params_info(["ctx: Ctx", "mb: i64", "()"])
        .register_into_engine(engine, |c: &mut Ctx, mb: i64| {
            c.set_image_size(mb).map_err(script_err)
        });
    FuncRegistration::new("note")
        .with_comments(["/// Keep a per-reservation note; later routines of the same reservation read it with `ctx.note(key)`.", "/// All notes of a reservation together hold at most `[scripts] max_string_size` bytes."])
        .with_params_info(["ctx: Ctx", "key: &str", "value: Dynamic", "()"])
        .register_into_engine(
            engine,
            |nc: rhai::NativeCallContext, c: &mut Ctx, key: &str, value: Dynamic| {
                let mut notes = c.notes.lock().map_err(|_| script_err("notes poisoned".into()))?;
                let limit = nc.engine().max_string_size();
                if limit > 0 {
                    let others: usize = notes
                        .iter()
                        .filter(|(k, _)| k.as_str() != key)
                        .map(|(k, v)| k.len() + note_size(v, 0))
                        .sum();
                    let total = others + key.len() + note_size(&value, 0);
                    if total > limit {
                        return Err(script_err(format!(
                            "ctx.note({key:?}, …): the reservation's notes would hold {total} bytes, over the limit of {limit} ([scripts] max_string_size); keep large data on the computer, not in notes"
                        )));
                    }
                }
                notes.insert(key.into(), value);
                Ok::<(), Box<EvalAltResult>>(())
            },
        );
    FuncRegistration::new("note")
        .with_comments([
            "/// Read a note kept with `ctx.note(key, value)`; `()` when there is none.",
        ])
        .with_params_info(["ctx: Ctx", "key: &str", "Dynamic"])
        .register_into_engine(engine, |c: &mut Ctx, key: &str| {
            let notes = c
                .notes
                .lock()
                .map_err(|_| script_err("notes poisoned".into()))?;
            Ok::<Dynamic, Box<EvalAltResult>>(notes.get(key).cloned().unwrap_or(Dynamic::UNIT))
        });
    FuncRegistration::new("computer_var")
        .with_comments([
            "/// A variable this computer keeps across reservations (kept by modules, e.g. a VM's",
            "/// port or the simulator's power state); `()` when unset.",
        ])
        .with_params_info(["ctx: Ctx", "name: &str", "Dynamic"])
        .register_into_engine(engine, |c: &mut Ctx, name: &str| {
            c.backend
                .computer_var(&c.data, name)
                .map(|v| v.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
                .map_err(script_err)
        });
    FuncRegistration::new("set_computer_var")
        .with_comments(["/// Set a variable this computer keeps across reservations (the value is stored as a string)."])
        .with_params_info(["ctx: Ctx", "name: &str", "value: Dynamic", "()"])
        .register_into_engine(engine, |c: &mut Ctx, name: &str, value: Dynamic| {
            c.backend.set_computer_var(&c.data, name, &value.to_string()).map_err(script_err)
        });
    FuncRegistration::new("to_map")
        .with_comments(["/// All reservation data as an object map (for printing or passing on)."])
        .with_params_info(["ctx: Ctx", "Map"])
        .register_into_engine(engine, |c: &mut Ctx| {
            rhai::serde::to_dynamic(&*c.data).map_err(|e| script_err(e.to_string()))
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_field_is_documented_and_registered() {
        let names: BTreeMap<&str, &str> = CTX_PROPERTIES.iter().map(|(n, t, _)| (*n, *t)).collect();
        assert_eq!(names.len(), CTX_PROPERTIES.len());
        assert_eq!(names.get("reservation_id"), Some(&"int"));
        assert_eq!(names.get("remote_ip"), Some(&"string"));
        let mut engine = Engine::new();
        register(&mut engine);
        let backend = Arc::new(MemoryBackend::default());
        let ctx = Ctx::new(
            ReservationData {
                reservation_id: 7,
                image_name: "deb12".into(),
                ..Default::default()
            },
            backend.clone(),
        );
        let mut scope = rhai::Scope::new();
        scope.push("ctx", ctx);
        let got: String = engine
            .eval_with_scope(
                &mut scope,
                r#"ctx.loadlog("startload", "go"); `${ctx.reservation_id}:${ctx.image_name}`"#,
            )
            .expect("eval");
        assert_eq!(got, "7:deb12");
        assert_eq!(
            backend.entries(),
            vec![("startload".to_string(), "go".to_string())]
        );
        let err = engine
            .eval_with_scope::<()>(&mut scope, r#"ctx.loadlog("startLoad", "x")"#)
            .expect_err("unknown name");
        assert!(err.to_string().contains("unknown load-state name"), "{err}");
    }

    #[test]
    fn fixture_typos_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ctx.toml");
        std::fs::write(&p, "reservation_id = 3\nimage_nmae = \"x\"\n").expect("write");
        let err = Ctx::data_from_file(&p).expect_err("typo");
        assert!(err.to_string().contains("image_nmae"), "{err}");
        std::fs::write(&p, "reservation_id = 3\nimage_name = \"x\"\n").expect("write");
        assert_eq!(Ctx::data_from_file(&p).expect("ok").reservation_id, 3);
    }
}
