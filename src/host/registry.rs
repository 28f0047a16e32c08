//! Loaded modules by (kind, name), each an `ArcSwap` of its current compiled version, plus
//! what the last load of each file said (for `provhost status` and reload events).
//!
//! Invariant: a call takes `slot.load_full()` once and uses that `Arc<LoadedModule>` to
//! the end, so swapping in new code never changes code under a running call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rhai::AST;

use crate::host::contract::{Kind, ModuleInfo};

/// (kind, name): how modules are addressed.
pub type ModuleKey = (Kind, String);

/// One compiled, contract-checked version of a module.
#[derive(Debug)]
pub struct LoadedModule {
    pub info: ModuleInfo,
    pub path: PathBuf,
    pub source: Arc<str>,
    pub ast: Arc<AST>,
    /// Counts successful loads of this module since start (1 = first).
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// Set when this version is the saved last good copy restored at start because the
    /// file itself did not load: where it came from and when it was saved.
    pub restored_from: Option<String>,
}

/// What the last attempt to load a file left.
#[derive(Debug, Clone)]
pub enum FileState {
    /// Compiled and checked; serving this module.
    Loaded { key: ModuleKey, generation: u64 },
    /// The last edit failed; `keeping` is the module still served from an earlier version.
    Failed {
        errors: Vec<String>,
        keeping: Option<ModuleKey>,
    },
    /// The file is gone; its module stays loaded until restart or replacement.
    Deleted { keeping: Option<ModuleKey> },
}

#[derive(Default)]
struct Inner {
    modules: BTreeMap<ModuleKey, Arc<ArcSwap<LoadedModule>>>,
    /// Which file each module came from.
    origin: BTreeMap<ModuleKey, PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// The current version of a module.
    pub fn get(&self, key: &ModuleKey) -> Option<Arc<LoadedModule>> {
        let inner = self.inner.read().ok()?;
        inner.modules.get(key).map(|s| s.load_full())
    }

    /// All module keys, sorted.
    pub fn keys(&self) -> Vec<ModuleKey> {
        self.inner
            .read()
            .map(|i| i.modules.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every file's last load state, sorted by path.
    pub fn files(&self) -> Vec<(PathBuf, FileState)> {
        self.inner
            .read()
            .map(|i| {
                i.files
                    .iter()
                    .map(|(p, s)| (p.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The module a file currently serves, if any.
    pub fn key_of_file(&self, path: &Path) -> Option<ModuleKey> {
        let inner = self.inner.read().ok()?;
        inner
            .origin
            .iter()
            .find(|(_, p)| p.as_path() == path)
            .map(|(k, _)| k.clone())
    }

    /// Install a freshly checked module from `path`. Fails (without changing anything) if
    /// another file already provides the same (kind, name).
    pub fn install(
        &self,
        path: &Path,
        info: ModuleInfo,
        source: Arc<str>,
        ast: AST,
        restored_from: Option<String>,
    ) -> Result<u64, String> {
        let mut inner = self
            .inner
            .write()
            .map_err(|_| "module registry lock poisoned".to_string())?;
        let key: ModuleKey = (info.kind, info.name.clone());
        if let Some(other) = inner.origin.get(&key) {
            let other_alive = other.as_path() != path
                && !matches!(inner.files.get(other), Some(FileState::Deleted { .. }));
            if other_alive {
                return Err(format!(
                    "module {}/{} is already defined by {}; module names must be unique per kind",
                    key.0,
                    key.1,
                    other.display()
                ));
            }
        }
        // The file may have been renamed inside (MODULE.name changed): drop its old module.
        let previous: Vec<ModuleKey> = inner
            .origin
            .iter()
            .filter(|(k, p)| p.as_path() == path && **k != key)
            .map(|(k, _)| k.clone())
            .collect();
        for old in previous {
            inner.origin.remove(&old);
            inner.modules.remove(&old);
        }
        let generation = inner
            .modules
            .get(&key)
            .map(|s| s.load().generation + 1)
            .unwrap_or(1);
        let module = Arc::new(LoadedModule {
            info,
            path: path.to_path_buf(),
            source,
            ast: Arc::new(ast),
            generation,
            loaded_at: SystemTime::now(),
            restored_from,
        });
        match inner.modules.get(&key) {
            Some(slot) => slot.store(module),
            None => {
                inner
                    .modules
                    .insert(key.clone(), Arc::new(ArcSwap::from(module)));
            }
        }
        inner.origin.insert(key.clone(), path.to_path_buf());
        inner
            .files
            .insert(path.to_path_buf(), FileState::Loaded { key, generation });
        Ok(generation)
    }

    /// Record a failed load; whatever the file served before stays served.
    pub fn record_failure(&self, path: &Path, errors: Vec<String>) -> Option<ModuleKey> {
        let keeping = self.key_of_file(path);
        if let Ok(mut inner) = self.inner.write() {
            inner.files.insert(
                path.to_path_buf(),
                FileState::Failed {
                    errors,
                    keeping: keeping.clone(),
                },
            );
        }
        keeping
    }

    /// Record that a file disappeared; its module stays loaded.
    pub fn record_deleted(&self, path: &Path) -> Option<ModuleKey> {
        let keeping = self.key_of_file(path);
        if let Ok(mut inner) = self.inner.write() {
            if inner.files.contains_key(path) {
                inner.files.insert(
                    path.to_path_buf(),
                    FileState::Deleted {
                        keeping: keeping.clone(),
                    },
                );
            }
        }
        keeping
    }
}
