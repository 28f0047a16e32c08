//! A NAMED FAKE for a module whose machine cannot run here (ESXi, Windows): a real sshd
//! whose `ForceCommand` is a Python fixture under tests/fixtures/ playing that machine,
//! with its state in a temp folder, and a scripting host holding only the module under
//! test, whose routines run as `provhost call` runs them (`ScriptHost::call`).

use std::path::Path;
use std::sync::Arc;

use provhost::host::{
    CallOptions, Ctx, HostError, HostOptions, Kind, Limits, Primitives, ScriptHost,
};

use super::cli::root;
use super::sshd::{Sshd, SshdOptions};

pub struct NamedFake {
    pub sshd: Sshd,
    /// The fixture's state folder (its argument).
    pub state: tempfile::TempDir,
    pub host: Arc<ScriptHost>,
    kind: Kind,
    name: String,
    _scripts: tempfile::TempDir,
}

impl NamedFake {
    /// `prepare` the state folder, then start an sshd whose `ForceCommand` is
    /// `python3 tests/fixtures/FIXTURE STATE` (after the sshd_config lines `extra_config`)
    /// and trust its host key; then load the shipped `scripts/KIND/NAME.rhai`, alone, with
    /// the primitive families `families` makes for that sshd and state folder.
    pub fn start(
        fixture: &str,
        extra_config: &str,
        prepare: impl FnOnce(&Path),
        (kind, name): (Kind, &str),
        families: impl FnOnce(&Sshd, &Path) -> Vec<Arc<dyn Primitives>>,
    ) -> NamedFake {
        let state = tempfile::tempdir().expect("state dir");
        prepare(state.path());
        let fake = root().join("tests/fixtures").join(fixture);
        let sshd = Sshd::start_with(SshdOptions {
            extra_config: Some(format!(
                "{extra_config}ForceCommand /usr/bin/python3 {} {}",
                fake.display(),
                state.path().display()
            )),
            ..SshdOptions::default()
        });
        sshd.trust();
        let scripts = tempfile::tempdir().expect("scripts");
        for sub in ["provisioning", "os", "site"] {
            std::fs::create_dir_all(scripts.path().join("scripts").join(sub)).expect("mkdir");
        }
        let script = format!("scripts/{}/{name}.rhai", kind.as_str());
        std::fs::copy(root().join(&script), scripts.path().join(&script))
            .unwrap_or_else(|e| panic!("copy {script}: {e}"));
        let host = ScriptHost::new(
            HostOptions {
                scripts_dir: scripts.path().join("scripts"),
                stdlib_dir: root().join("stdlib"),
                limits: Limits::default(),
            },
            &families(&sshd, state.path()),
        );
        let errors = host.load_all();
        assert!(errors.is_empty(), "{errors:?}");
        NamedFake {
            sshd,
            state,
            host,
            kind,
            name: name.to_string(),
            _scripts: scripts,
        }
    }

    /// Call `routine` of the module under test for `ctx`.
    pub fn call(
        &self,
        ctx: &Ctx,
        routine: &str,
        args: Vec<rhai::Dynamic>,
    ) -> Result<rhai::Dynamic, HostError> {
        self.host.call(
            &(self.kind, self.name.clone()),
            routine,
            Some(ctx),
            args,
            &CallOptions::default(),
        )
    }
}
