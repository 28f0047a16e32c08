//! The host's side of the last good versions (see [`crate::host::good`]): saving a file's
//! source after each successful load, and serving the saved copy, compiled against the
//! `stdlib/` saved with it, when a file does not load and nothing from it is loaded yet.

use std::path::{Path, PathBuf};

use crate::host::good::SavedResolver;

impl crate::host::ScriptHost {
    /// `path` relative to the scripts folder (`None`: not a module file of this host).
    fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.options().scripts_dir)
            .ok()
            .map(Path::to_path_buf)
    }

    /// After a successful load: keep this version as the file's last good copy.
    pub(crate) fn save_good(
        &self,
        path: &Path,
        key: &crate::host::ModuleKey,
        version: &str,
        source: &str,
    ) {
        let (Some(store), Some(rel)) = (self.good_store(), self.relative(path)) else {
            return;
        };
        let module = format!("{}/{}", key.0, key.1);
        match store.save(&rel, &module, version, source, &self.options().stdlib_dir) {
            Ok(true) => tracing::debug!(path = %path.display(), "saved as the last good version"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "could not save {} as the last good version of {module} (a restart while the file is broken would have nothing to serve): {e}",
                path.display()
            ),
        }
    }

    /// When `path` does not load and nothing from it is loaded: install its saved last good
    /// copy, compiled against the `stdlib/` saved with it. `Ok(None)` when there is no
    /// store or no copy.
    pub(crate) fn restore_good(
        &self,
        path: &Path,
        pass: &mut crate::host::Pass,
    ) -> Result<Option<crate::host::ModuleKey>, crate::host::HostError> {
        use crate::host::{contract, HostError, SourcePos};
        let (Some(store), Some(rel)) = (self.good_store(), self.relative(path)) else {
            return Ok(None);
        };
        let Some(saved) = store.load(&rel)? else {
            return Ok(None);
        };
        let entry = store.entry_path(&rel);
        let mut engine = crate::host::engine::build(
            &self.options().limits,
            self.options().stdlib_dir.clone(),
            &self.families,
        );
        engine.set_module_resolver(SavedResolver::new(&saved));
        let text = saved.module_source.source.as_str();
        let unusable = |message: String| HostError::Contract {
            at: SourcePos {
                path: entry.clone(),
                line: 0,
            },
            message: format!(
                "saved good copy of {} cannot be used: {message}",
                path.display()
            ),
        };
        let joined = |errs: Vec<HostError>| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut compiled =
            crate::host::inherit::compile(&engine, text).map_err(|e| unusable(e.to_string()))?;
        compiled.ast.set_source(path.display().to_string());
        let info = contract::read_module(
            path,
            text,
            &compiled.ast,
            crate::host::Kind::from_path(path),
        )
        .map_err(|errs| unusable(joined(errs)))?;
        let key = (info.kind, info.name.clone());
        let version = info.version.clone();
        let from = format!(
            "{} (saved {}, sha256 {})",
            entry.display(),
            saved.saved_at_text(),
            saved.module_source.sha256.get(..12).unwrap_or_default()
        );
        let (_, module) = self
            .compose_module(
                path,
                info,
                std::sync::Arc::from(text),
                std::sync::Arc::new(compiled.ast),
                compiled.super_calls,
                Some(from.clone()),
                pass,
            )
            .map_err(|errs| unusable(joined(errs)))?;
        self.registry.install(path, module).map_err(unusable)?;
        tracing::error!(
            module = %format!("{}/{}", key.0, key.1),
            "{} does not load; SERVING ITS LAST GOOD VERSION v{version} from {from} until the file is fixed (it reloads when saved)",
            path.display()
        );
        Ok(Some(key))
    }
}
