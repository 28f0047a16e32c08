//! The read-only `config::` namespace scripts read provhost's configuration through
//! (`config::data_dir`, `config::ssh_identity`, `config::node_name`, …): values only,
//! fixed when the engine is built, never a secret (no database URL or password, no key
//! contents — only the identity file's path). [`Settings`] is filled by the caller
//! (`provhost::primitive_families` from `provhost.toml`), so this family does not import
//! the configuration types; the same table ([`SETTINGS`]) registers the variables and
//! feeds the generated script API reference.

use rhai::{Dynamic, Engine, Module};

use crate::prim::family::Primitives;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $field:ident : $ty:ident ),+ $(,)?) => {
        /// What scripts may read of the configuration.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: settings!(@ty $ty), )+
        }

        /// (name, Rhai type, doc) of every `config::` value, in declaration order.
        pub const SETTINGS: &[(&str, &str, &str)] = &[
            $( (stringify!($field), settings!(@rhai $ty), concat!($($doc),+)) ),+
        ];

        impl Settings {
            /// Every value as (name, Rhai value).
            fn values(&self) -> Vec<(&'static str, Dynamic)> {
                vec![ $( (stringify!($field), Dynamic::from(self.$field.clone())) ),+ ]
            }
        }
    };
    (@ty int) => { i64 };
    (@ty str) => { String };
    (@rhai int) => { "int" };
    (@rhai str) => { "string" };
}

settings! {
    /// `[paths] data_dir`, absolute: provhost's own data (database file, keys, the image
    /// library by default). Build paths for `local_host().run` from it.
    data_dir: str,
    /// `[paths] scripts`, absolute: the module scripts folder.
    scripts_dir: str,
    /// `[paths] stdlib`, absolute: where `import "NAME"` finds `NAME.rhai`.
    stdlib_dir: str,
    /// The image library folder (`[images] library`, default `<data_dir>/images`).
    image_library: str,
    /// This management node's name (`[daemon] node`, default the machine's host name;
    /// VCL's `managementnode.hostname`).
    node_name: str,
    /// The database kind: `"sqlite"` or `"mysql"` (never its URL or password).
    db_kind: str,
    /// `[ssh] user`: the login on computers and VM hosts.
    ssh_user: str,
    /// `[ssh] identity`, absolute: the private key file's path (the key itself is not
    /// readable through `config::`).
    ssh_identity: str,
    /// `[ssh] known_hosts`, absolute.
    ssh_known_hosts: str,
    /// `[ssh] port`: the SSH port used when a computer has none of its own.
    ssh_port: int,
    /// `[ssh] command_timeout_secs`: the default time-out of `run`.
    ssh_command_timeout_secs: int,
    /// `[ssh] copy_timeout_secs`: the default time-out of a copy.
    ssh_copy_timeout_secs: int,
    /// `[ssh] local_vmhost`: the VM host (database host name) that is this machine; empty:
    /// none.
    local_vmhost: str,
    /// `[scripts] call_timeout_secs`: the deadline of one routine call.
    call_timeout_secs: int,
}

/// The `config::` family: registers [`Settings`] as the read-only static module `config`.
#[derive(Debug, Clone)]
pub struct SettingsPrims {
    settings: Settings,
}

impl SettingsPrims {
    pub fn new(settings: Settings) -> Self {
        SettingsPrims { settings }
    }
}

impl Primitives for SettingsPrims {
    fn register(&self, engine: &mut Engine) {
        let mut m = Module::new();
        for (name, value) in self.settings.values() {
            m.set_var(name, value);
        }
        m.build_index();
        engine.register_static_module("config", m.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_read_config_values_and_cannot_change_them() {
        let mut engine = Engine::new();
        engine.set_strict_variables(true);
        SettingsPrims::new(Settings {
            data_dir: "/var/lib/provhost".into(),
            ssh_port: 2222,
            ..Default::default()
        })
        .register(&mut engine);
        let ast = engine
            .compile(r#"fn where_(x) { `${config::data_dir}/${x}:${config::ssh_port}` }"#)
            .expect("compile");
        let got: String = engine
            .call_fn(&mut rhai::Scope::new(), &ast, "where_", ("vm1",))
            .expect("call");
        assert_eq!(got, "/var/lib/provhost/vm1:2222");
        assert!(
            engine.compile(r#"config::data_dir = "/tmp";"#).is_err()
                || engine.run(r#"config::data_dir = "/tmp";"#).is_err(),
            "config values are read-only"
        );
        assert!(
            engine.compile("config::nosuch").is_err()
                || engine.eval::<Dynamic>("config::nosuch").is_err()
        );
        assert_eq!(SETTINGS.len(), Settings::default().values().len());
    }
}
