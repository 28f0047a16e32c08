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
    /// The effective AST: with a parent (`MODULE.extends`), the parent's composed with this
    /// file's own (see [`crate::host::inherit`]); else this file's own.
    pub ast: Arc<AST>,
    /// This file's own AST, kept to compose again when the parent changes.
    pub own: Arc<AST>,
    /// The `super::` calls this file makes (checked against each new parent).
    pub super_calls: Vec<crate::host::inherit::SuperCall>,
    /// The parent chain, nearest first (empty without `extends`).
    pub ancestors: Vec<ModuleKey>,
    /// Where each function of `ast` was written.
    pub origins: Arc<crate::host::inherit::Origins>,
    /// Counts successful loads of this module since start (1 = first).
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// Set when this version is the saved last good copy restored at start because the
    /// file itself did not load: where it came from and when it was saved.
    pub restored_from: Option<String>,
}

impl LoadedModule {
    /// Where `function` (a routine, helper or hidden parent copy of the effective AST) was
    /// written: its file and the line of its `fn`.
    pub fn defined_at(&self, function: &str) -> crate::host::SourcePos {
        let (path, source) = match self.origins.get(function) {
            Some(o) => (o.path.clone(), &o.source),
            None => (self.path.clone(), &self.source),
        };
        let name = crate::host::inherit::split_hidden(function)
            .map(|(_, n)| n)
            .unwrap_or(function);
        crate::host::SourcePos {
            path,
            line: crate::host::contract::fn_line(source, name),
        }
    }

    /// Does `function` come from another file than this module's own (inherited)?
    pub fn inherited(&self, function: &str) -> Option<&crate::host::inherit::Origin> {
        self.origins
            .get(function)
            .map(|o| o.as_ref())
            .filter(|o| o.path != self.path)
    }
}

/// What [`Registry::install`] takes: a checked module, composed with its parent.
pub struct NewModule {
    pub info: ModuleInfo,
    pub source: Arc<str>,
    pub ast: AST,
    pub own: Arc<AST>,
    pub super_calls: Vec<crate::host::inherit::SuperCall>,
    pub ancestors: Vec<ModuleKey>,
    pub origins: Arc<crate::host::inherit::Origins>,
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

    /// The modules whose parent is `key`, with their files.
    pub fn children_of(&self, key: &ModuleKey) -> Vec<Arc<LoadedModule>> {
        self.inner
            .read()
            .map(|i| {
                i.modules
                    .values()
                    .map(|s| s.load_full())
                    .filter(|m| m.ancestors.first() == Some(key))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The loaded module that declares it serves `what` (a VCL `module.name` or perl
    /// package) among its `MODULE.serves`, of `kind`.
    pub fn serving(&self, kind: crate::host::Kind, what: &str) -> Option<Arc<LoadedModule>> {
        let inner = self.inner.read().ok()?;
        inner
            .modules
            .iter()
            .filter(|(k, _)| k.0 == kind)
            .map(|(_, s)| s.load_full())
            .find(|m| m.info.serves.iter().any(|s| s == what))
    }

    /// Install a freshly checked module from `path`. Fails (without changing anything) if
    /// another file already provides the same (kind, name) or serves one of the same rows.
    pub fn install(&self, path: &Path, new: NewModule) -> Result<u64, String> {
        let NewModule {
            info,
            source,
            ast,
            own,
            super_calls,
            ancestors,
            origins,
            restored_from,
        } = new;
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
                    "module {}/{} is already defined by {}; module names must be unique per kind{}",
                    key.0,
                    key.1,
                    other.display(),
                    copy_hint(other, path, &key.1)
                ));
            }
        }
        for what in &info.serves {
            let clash = inner.modules.iter().find(|(k, slot)| {
                k.0 == key.0 && **k != key && slot.load().info.serves.contains(what)
            });
            if let Some((k, slot)) = clash {
                return Err(format!(
                    "MODULE.serves {what:?}: {}/{} ({}) already serves it; one module per VCL module row",
                    k.0,
                    k.1,
                    slot.load().path.display()
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
            own,
            super_calls,
            ancestors,
            origins,
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

/// When one of two files claiming a module name is named after it and the other is not,
/// the other is most likely a copy that kept its original's `MODULE.name`: say so, with
/// the fix (`cp sim.rhai localdir.rhai` loads the copy first, alphabetically, and the
/// original is the one refused).
fn copy_hint(other: &Path, this: &Path, name: &str) -> String {
    let stem = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rhai"))
            .map(str::to_string)
    };
    match (stem(other), stem(this)) {
        (Some(o), Some(t)) if o != name && t == name => format!(
            " ({} is a copy that still says name: {name:?} in its const MODULE: give it its own, name: {o:?})",
            other.display()
        ),
        (Some(o), Some(t)) if t != name && o == name => format!(
            " ({} is a copy that still says name: {name:?} in its const MODULE: give it its own, name: {t:?})",
            this.display()
        ),
        _ => String::new(),
    }
}
