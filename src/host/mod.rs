//! The scripting host: compiles module scripts, checks them against the routine contract,
//! keeps the last good version of each, reloads them when their files change, and calls
//! their routines under a deadline with checked return values.
//!
//! Start with [`ScriptHost::new`] and [`ScriptHost::load_all`]; call routines with
//! [`ScriptHost::call`] (blocking: run it on a blocking thread); start hot reload with
//! [`ScriptHost::watch`]. The pieces: [`engine`] (limits, primitives), [`contract`] (what a
//! module must define and return), [`registry`] (loaded versions), [`reload`] (the
//! watcher), [`ctx`] (the reservation object), [`docs`] (the generated API reference).

pub mod contract;
pub mod ctx;
pub mod docs;
pub mod engine;
pub mod error;
pub mod fixture;
pub mod good;
pub mod inherit;
pub mod modmap;
pub mod registry;
pub mod reload;
mod restore;
pub mod scripttest;
pub mod secrets;
pub mod syntax_hint;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope, AST};
use tokio::sync::broadcast;

pub use contract::{AddUserAt, Kind, ModuleInfo, OnFailure};
pub use ctx::{Ctx, CtxBackend, MemoryBackend, ReservationData};
pub use engine::{Limits, Primitives};
pub use error::{CallSite, HostError, SourcePos};
pub use registry::{FileState, LoadedModule, ModuleKey, NewModule};
pub use reload::Watcher;

/// Where scripts live and how they are sandboxed.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Holds `provisioning/`, `os/` and `site/`.
    pub scripts_dir: PathBuf,
    /// Where `import "name"` finds `name.rhai`.
    pub stdlib_dir: PathBuf,
    pub limits: Limits,
}

/// Per-call options: a deadline shorter than the configured one, a cancel flag.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub timeout: Option<Duration>,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What a load or reload did, broadcast to subscribers (the daemon's status, tests).
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadEvent {
    Loaded {
        path: PathBuf,
        key: ModuleKey,
        version: String,
        generation: u64,
    },
    Failed {
        path: PathBuf,
        errors: Vec<String>,
        keeping: Option<ModuleKey>,
    },
    Deleted {
        path: PathBuf,
        keeping: Option<ModuleKey>,
    },
}

/// One load pass: the files being loaded (to find inheritance cycles), those already
/// loaded in this pass, and errors of parents loaded on demand.
#[derive(Default)]
pub(crate) struct Pass {
    stack: Vec<PathBuf>,
    done: std::collections::BTreeSet<PathBuf>,
    parent_errors: Vec<HostError>,
}

pub struct ScriptHost {
    engine: Engine,
    /// Files that did not load for want of their parent, by parent: tried again when it loads.
    orphans: Mutex<std::collections::BTreeMap<ModuleKey, std::collections::BTreeSet<PathBuf>>>,
    opts: HostOptions,
    registry: registry::Registry,
    events: broadcast::Sender<ReloadEvent>,
    /// Loads are serialized so the watcher and a manual load never interleave on one file.
    load_lock: Mutex<()>,
    /// The primitive families the engine was built with (a restore compiles with them).
    families: Vec<Arc<dyn Primitives>>,
    /// Where the last good version of each file is saved (see [`good`]); none by default.
    good: std::sync::OnceLock<good::GoodStore>,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Every file under `scripts_dir/{provisioning,os,site}/` that `keep` takes, sorted (a
/// kind's folder that is not there is skipped; one that cannot be read is an error).
pub(crate) fn script_files(
    scripts_dir: &Path,
    keep: impl Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, HostError> {
    let mut files = Vec::new();
    for kind in Kind::ALL {
        let dir = scripts_dir.join(kind.as_str());
        if !dir.is_dir() {
            continue;
        }
        let io = |e| HostError::Io {
            path: dir.clone(),
            source: e,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if keep(&path) && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

impl ScriptHost {
    /// A host with no modules loaded yet; `families` are the primitive families to register.
    pub fn new(opts: HostOptions, families: &[Arc<dyn Primitives>]) -> Arc<Self> {
        let engine = engine::build(&opts.limits, opts.stdlib_dir.clone(), families);
        let (events, _) = broadcast::channel(256);
        Arc::new(ScriptHost {
            engine,
            opts,
            registry: registry::Registry::default(),
            orphans: Mutex::new(std::collections::BTreeMap::new()),
            events,
            load_lock: Mutex::new(()),
            families: families.to_vec(),
            good: std::sync::OnceLock::new(),
        })
    }

    /// Save each successfully loaded file's source into `store`, and serve the saved copy
    /// of a file that does not load when nothing from that file is loaded yet (a start
    /// with a broken file). Set once, before the first load; later calls are ignored.
    pub fn use_good_store(&self, store: good::GoodStore) {
        let _ = self.good.set(store);
    }

    /// The store set by [`ScriptHost::use_good_store`].
    pub fn good_store(&self) -> Option<&good::GoodStore> {
        self.good.get()
    }

    pub fn options(&self) -> &HostOptions {
        &self.opts
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Receive load/reload events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// Every `*.rhai` under `scripts_dir/{provisioning,os,site}/`, sorted; test files
    /// (`*.test.rhai`, see [`scripttest`]) are not modules.
    pub fn module_files(&self) -> Result<Vec<PathBuf>, HostError> {
        script_files(&self.opts.scripts_dir, |path| {
            path.extension().is_some_and(|e| e == "rhai") && !scripttest::is_test_file(path)
        })
    }

    /// Load every module under `scripts_dir`. Returns every error; good modules are loaded
    /// whatever the others do. A parent is loaded before its children (on demand).
    pub fn load_all(&self) -> Vec<HostError> {
        if !self.opts.scripts_dir.is_dir() {
            return vec![HostError::Io {
                path: self.opts.scripts_dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "scripts folder not found",
                ),
            }];
        }
        let files = match self.module_files() {
            Ok(f) => f,
            Err(e) => return vec![e],
        };
        let _serial = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut pass = Pass::default();
        let mut errors = Vec::new();
        for p in &files {
            if pass.done.contains(p) {
                // Loaded on demand as a parent; its errors were collected then.
                continue;
            }
            if let Err(e) = self.load_locked(p, &mut pass) {
                errors.extend(e);
            }
        }
        errors.extend(pass.parent_errors);
        errors
    }

    /// Compile, check and install one file (and, when it extends a module not loaded yet,
    /// that module's file first); then compose its loaded children again. On failure the
    /// previous version (if any) stays.
    pub fn load_file(&self, path: &Path) -> Result<ModuleKey, Vec<HostError>> {
        let _serial = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.load_locked(path, &mut Pass::default())
    }

    fn load_locked(&self, path: &Path, pass: &mut Pass) -> Result<ModuleKey, Vec<HostError>> {
        pass.stack.push(path.to_path_buf());
        pass.done.insert(path.to_path_buf());
        let mut wanted_parent: Option<ModuleKey> = None;
        let result = self.compile_own(path).and_then(|(source, compiled)| {
            let info = contract::read_module(path, &source, &compiled.ast, Kind::from_path(path))?;
            wanted_parent = info.extends.as_ref().map(|p| (info.kind, p.clone()));
            let (key, new) = self.compose_module(
                path,
                info,
                source,
                Arc::new(compiled.ast),
                compiled.super_calls,
                None,
                pass,
            )?;
            let version = new.info.version.clone();
            let saved_source = Arc::clone(&new.source);
            let was_restored = self
                .module_of_file(path)
                .is_some_and(|m| m.restored_from.is_some());
            if was_restored {
                tracing::warn!(
                    "{} loads again: v{version} replaces the saved last good copy",
                    path.display()
                );
            }
            self.registry
                .install(path, new)
                .map(|generation| {
                    self.save_good(path, &key, &version, &saved_source);
                    (key, version, generation)
                })
                .map_err(|message| {
                    vec![HostError::Contract {
                        at: SourcePos {
                            path: path.to_path_buf(),
                            line: 0,
                        },
                        message,
                    }]
                })
        });
        pass.stack.pop();
        match result {
            Ok((key, version, generation)) => {
                if generation > 1 {
                    // An edit went live: the operator who saved the file wants to see it.
                    tracing::info!(path = %path.display(), module = %format!("{}/{}", key.0, key.1), version, generation, "module reloaded");
                } else {
                    tracing::debug!(path = %path.display(), module = %format!("{}/{}", key.0, key.1), version, generation, "module loaded");
                }
                crate::metrics::get().module_loaded(generation);
                let _ = self.events.send(ReloadEvent::Loaded {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    version,
                    generation,
                });
                self.after_install(&key, pass);
                Ok(key)
            }
            Err(mut errors) => {
                if let Some(parent) = wanted_parent {
                    // Tried again when the parent loads.
                    if let Ok(mut o) = self.orphans.lock() {
                        o.entry(parent).or_default().insert(path.to_path_buf());
                    }
                }
                let mut texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                let mut keeping = self.registry.record_failure(path, texts.clone());
                if keeping.is_none() {
                    match self.restore_good(path, pass) {
                        Ok(Some(key)) => {
                            keeping = self.registry.record_failure(path, texts.clone());
                            debug_assert_eq!(keeping.as_ref(), Some(&key));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            texts.push(e.to_string());
                            errors.push(e);
                            self.registry.record_failure(path, texts.clone());
                        }
                    }
                }
                for t in &texts {
                    match &keeping {
                        Some(k) => {
                            tracing::error!(module = %format!("{}/{}", k.0, k.1), "{t} (keeping the last good version)")
                        }
                        None => tracing::error!("{t}"),
                    }
                }
                crate::metrics::get().module_failed();
                let _ = self.events.send(ReloadEvent::Failed {
                    path: path.to_path_buf(),
                    errors: texts,
                    keeping,
                });
                Err(errors)
            }
        }
    }

    /// After `key` got a new version: compose its loaded children again (and theirs), and
    /// try again the files that did not load for want of it.
    fn after_install(&self, key: &ModuleKey, pass: &mut Pass) {
        for child in self.registry.children_of(key) {
            let ckey = (child.info.kind, child.info.name.clone());
            let composed = self.compose_module(
                &child.path,
                child.info.clone(),
                Arc::clone(&child.source),
                Arc::clone(&child.own),
                child.super_calls.clone(),
                child.restored_from.clone(),
                pass,
            );
            let installed = composed.and_then(|(_, new)| {
                let version = new.info.version.clone();
                self.registry
                    .install(&child.path, new)
                    .map(|g| (version, g))
                    .map_err(|message| {
                        vec![HostError::Contract {
                            at: SourcePos {
                                path: child.path.clone(),
                                line: 0,
                            },
                            message,
                        }]
                    })
            });
            match installed {
                Ok((version, generation)) => {
                    tracing::info!(module = %format!("{}/{}", ckey.0, ckey.1), generation, "composed again with its new parent {}/{}", key.0, key.1);
                    let _ = self.events.send(ReloadEvent::Loaded {
                        path: child.path.clone(),
                        key: ckey.clone(),
                        version,
                        generation,
                    });
                    self.after_install(&ckey, pass);
                }
                Err(errors) => {
                    let texts: Vec<String> = errors
                        .iter()
                        .map(|e| format!("{e} (after its parent {}/{} changed)", key.0, key.1))
                        .collect();
                    let keeping = self.registry.record_failure(&child.path, texts.clone());
                    for t in &texts {
                        tracing::error!(module = %format!("{}/{}", ckey.0, ckey.1), "{t} (keeping the version composed with the earlier parent)");
                    }
                    let _ = self.events.send(ReloadEvent::Failed {
                        path: child.path.clone(),
                        errors: texts,
                        keeping,
                    });
                }
            }
        }
        let waiting = self
            .orphans
            .lock()
            .ok()
            .and_then(|mut o| o.remove(key))
            .unwrap_or_default();
        for path in waiting {
            if path.is_file() && !pass.stack.contains(&path) {
                let _ = self.load_locked(&path, pass);
            }
        }
    }

    /// Note that a module file disappeared: its module stays loaded.
    pub fn forget_file(&self, path: &Path) {
        let keeping = self.registry.record_deleted(path);
        if let Some(k) = &keeping {
            tracing::warn!(path = %path.display(), "module file deleted; keeping {}/{} loaded until restart or replacement", k.0, k.1);
        }
        let _ = self.events.send(ReloadEvent::Deleted {
            path: path.to_path_buf(),
            keeping,
        });
    }

    /// Read and compile one file on its own (imports resolved from `stdlib/`). Every file
    /// goes through here, a parent loaded from beside its child too, so the trust check
    /// below covers the whole inheritance chain.
    fn compile_own(&self, path: &Path) -> Result<(Arc<str>, inherit::Compiled), Vec<HostError>> {
        // Scripts are root-equivalent (docs/trust-model.md): a file, or a folder it is loaded
        // from, that others may write is refused.
        let mut guarded: Vec<PathBuf> = vec![path.to_path_buf()];
        guarded.extend(path.parent().map(Path::to_path_buf));
        guarded.push(self.opts.scripts_dir.clone());
        guarded.push(self.opts.stdlib_dir.clone());
        if let Ok(entries) = std::fs::read_dir(&self.opts.stdlib_dir) {
            guarded.extend(entries.flatten().map(|e| e.path()));
        }
        for p in &guarded {
            check_not_writable_by_others(p).map_err(|e| vec![e])?;
        }
        let bytes = std::fs::read(path).map_err(|e| {
            vec![HostError::Io {
                path: path.to_path_buf(),
                source: e,
            }]
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            vec![HostError::NotUtf8 {
                path: path.to_path_buf(),
                offset: e.utf8_error().valid_up_to(),
            }]
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        if text.trim().is_empty() {
            return Err(vec![HostError::Empty {
                path: path.to_path_buf(),
            }]);
        }
        let mut compiled = inherit::compile(&self.engine, text)
            .map_err(|e| vec![compile_error(path, text, *e)])?;
        compiled.ast.set_source(path.display().to_string());
        Ok((Arc::from(text), compiled))
    }

    /// Read, compile (resolving `import`s from `stdlib/`), compose with the parent when it
    /// `extends` one (loading the parent's file if needed) and contract-check a file without
    /// installing it. The AST returned is the effective one.
    pub fn compile_file(
        &self,
        path: &Path,
        folder_kind: Option<Kind>,
    ) -> Result<(ModuleInfo, Arc<str>, AST), Vec<HostError>> {
        let (source, compiled) = self.compile_own(path)?;
        let info = contract::read_module(path, &source, &compiled.ast, folder_kind)?;
        let _serial = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_, new) = self.compose_module(
            path,
            info,
            source,
            Arc::new(compiled.ast),
            compiled.super_calls,
            None,
            &mut Pass::default(),
        )?;
        Ok((new.info, new.source, new.ast))
    }

    /// Compose a compiled file with its parent (if it extends one) and check the result
    /// against the contract: what [`registry::Registry::install`] takes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn compose_module(
        &self,
        path: &Path,
        mut info: ModuleInfo,
        source: Arc<str>,
        own: Arc<AST>,
        super_calls: Vec<inherit::SuperCall>,
        restored_from: Option<String>,
        pass: &mut Pass,
    ) -> Result<(ModuleKey, registry::NewModule), Vec<HostError>> {
        let key: ModuleKey = (info.kind, info.name.clone());
        let at = |line: usize| SourcePos {
            path: path.to_path_buf(),
            line,
        };
        let origin = Arc::new(inherit::Origin {
            key: key.clone(),
            path: path.to_path_buf(),
            source: Arc::clone(&source),
        });
        let (ast, origins, ancestors, chain) = match info.extends.clone() {
            None => {
                let origins = inherit::own_origins(&own, origin);
                ((*own).clone(), origins, Vec::new(), None)
            }
            Some(parent_name) => {
                let parent = self.parent_for(path, &source, &key, &parent_name, pass)?;
                let pkey: ModuleKey = (parent.info.kind, parent.info.name.clone());
                if pkey == key || parent.ancestors.contains(&key) {
                    let mut names = vec![format!("{}/{}", key.0, key.1)];
                    names.push(format!("{}/{}", pkey.0, pkey.1));
                    for a in parent.ancestors.iter().take_while(|a| **a != key) {
                        names.push(format!("{}/{}", a.0, a.1));
                    }
                    names.push(format!("{}/{}", key.0, key.1));
                    return Err(vec![HostError::Contract {
                        at: at(contract::module_line_of(&source)),
                        message: format!(
                            "MODULE.extends {parent_name:?}: inheritance cycle: {}",
                            names.join(" extends ")
                        ),
                    }]);
                }
                let parent_fns = inherit::visible_functions(&parent.ast);
                let mut errors = Vec::new();
                for call in &super_calls {
                    if !parent_fns
                        .iter()
                        .any(|(n, a)| *n == call.name && *a == call.arity)
                    {
                        errors.push(HostError::Contract {
                            at: at(inherit::super_line(&source, &call.name)),
                            message: format!(
                                "super::{}() with {} argument(s): the parent {}/{} ({}) has no such function",
                                call.name,
                                call.arity,
                                pkey.0,
                                pkey.1,
                                parent.path.display()
                            ),
                        });
                    }
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                if !info.add_user_at_declared {
                    info.add_user_at = parent.info.add_user_at;
                }
                if !info.on_failure_declared {
                    info.on_failure = parent.info.on_failure;
                }
                let parent_origin = Arc::new(inherit::Origin {
                    key: pkey.clone(),
                    path: parent.path.clone(),
                    source: Arc::clone(&parent.source),
                });
                let (ast, origins) = inherit::compose(
                    &pkey.1,
                    &parent.ast,
                    &parent.origins,
                    &parent_origin,
                    &own,
                    origin,
                );
                let mut ancestors = vec![pkey];
                ancestors.extend(parent.ancestors.iter().cloned());
                let chain = ancestors
                    .iter()
                    .map(|(k, n)| format!("{k}/{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (ast, origins, ancestors, Some(chain))
            }
        };
        let errors = contract::check_routines(
            path,
            &source,
            info.kind,
            &inherit::visible_functions(&ast),
            chain.as_deref(),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok((
            key,
            registry::NewModule {
                info,
                source,
                ast,
                own,
                super_calls,
                ancestors,
                origins: Arc::new(origins),
                restored_from,
            },
        ))
    }

    /// The loaded parent a module extends, loading its file (`<name>.rhai` beside the
    /// child's) first
    /// when it is not loaded yet; a clear error when it is missing, does not load, is of
    /// another kind or leads back to the child.
    fn parent_for(
        &self,
        path: &Path,
        source: &str,
        key: &ModuleKey,
        parent_name: &str,
        pass: &mut Pass,
    ) -> Result<Arc<LoadedModule>, Vec<HostError>> {
        let err = |message: String| {
            vec![HostError::Contract {
                at: SourcePos {
                    path: path.to_path_buf(),
                    line: contract::module_line_of(source),
                },
                message: format!("MODULE.extends {parent_name:?}: {message}"),
            }]
        };
        let pkey: ModuleKey = (key.0, parent_name.to_string());
        // The parent's file sits beside the child's: the folder is the kind.
        let file = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(format!("{parent_name}.rhai"));
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        if self.module(&pkey).is_none() {
            if let Some(i) = pass
                .stack
                .iter()
                .position(|p| canonical(p) == canonical(&file))
            {
                let mut files: Vec<String> = pass.stack[i..]
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                files.push(file.display().to_string());
                return Err(err(format!(
                    "inheritance cycle: {} (each file extends the next)",
                    files.join(" → ")
                )));
            }
            if file.is_file() {
                if let Err(errors) = self.load_locked(&file, pass) {
                    if self.module(&pkey).is_none() {
                        let first = errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ");
                        pass.parent_errors.extend(errors);
                        return Err(err(format!(
                            "the parent {}/{parent_name} does not load: {first}",
                            key.0
                        )));
                    }
                }
            }
        }
        match self.module(&pkey) {
            Some(m) => Ok(m),
            None => {
                // Loaded, or a file in another kind's folder beside this one.
                let root = path.parent().and_then(Path::parent);
                let elsewhere: Vec<String> = Kind::ALL
                    .into_iter()
                    .filter(|k| *k != key.0)
                    .filter(|k| {
                        self.module(&(*k, parent_name.to_string())).is_some()
                            || root.is_some_and(|r| {
                                r.join(k.as_str())
                                    .join(format!("{parent_name}.rhai"))
                                    .is_file()
                            })
                    })
                    .map(|k| format!("{k}/{parent_name}"))
                    .collect();
                if elsewhere.is_empty() {
                    Err(err(format!(
                        "missing parent: no {} module {parent_name:?} is loaded and {} {}",
                        key.0,
                        file.display(),
                        if file.is_file() {
                            "defines another module"
                        } else {
                            "does not exist"
                        }
                    )))
                } else {
                    Err(err(format!(
                        "kind mismatch: {} is of another kind than {}/{}; a module extends one of its own kind",
                        elsewhere.join(", "),
                        key.0,
                        key.1
                    )))
                }
            }
        }
    }

    /// The current version of a module.
    pub fn module(&self, key: &ModuleKey) -> Option<Arc<LoadedModule>> {
        self.registry.get(key)
    }

    /// The version a file currently serves, if any.
    pub fn module_of_file(&self, path: &Path) -> Option<Arc<LoadedModule>> {
        self.registry
            .key_of_file(path)
            .and_then(|k| self.registry.get(&k))
    }

    /// Loaded module keys.
    pub fn modules(&self) -> Vec<ModuleKey> {
        self.registry.keys()
    }

    /// Every known file and what its last load did.
    pub fn file_states(&self) -> Vec<(PathBuf, FileState)> {
        self.registry.files()
    }

    /// Resolve `"os/linux"` or `"linux"` (if only one kind has it) to a module key.
    pub fn find_module(&self, spec: &str) -> Result<ModuleKey, HostError> {
        let keys = self.modules();
        let unknown = || HostError::UnknownModule {
            wanted: spec.to_string(),
            known: if keys.is_empty() {
                "none".into()
            } else {
                keys.iter()
                    .map(|(k, n)| format!("{k}/{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        };
        if let Some((kind, name)) = spec.split_once('/') {
            let kind = Kind::parse(kind).ok_or_else(unknown)?;
            let key = (kind, name.to_string());
            return if keys.contains(&key) {
                Ok(key)
            } else {
                Err(unknown())
            };
        }
        let matches: Vec<&ModuleKey> = keys.iter().filter(|(_, n)| n == spec).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(unknown()),
            many => {
                let names: Vec<String> = many.iter().map(|(k, n)| format!("{k}/{n}")).collect();
                Err(HostError::AmbiguousModule {
                    wanted: spec.to_string(),
                    example: names.first().cloned().unwrap_or_default(),
                    candidates: names.join(", "),
                })
            }
        }
    }

    /// Does the current version of `key` define `routine` with `arity` parameters?
    pub fn has_routine(&self, key: &ModuleKey, routine: &str, arity: usize) -> bool {
        self.module(key).is_some_and(|m| {
            m.ast
                .iter_functions()
                .any(|f| f.name == routine && f.params.len() == arity)
        })
    }

    /// Call `routine` of module `key` with `ctx` (if given) as first argument, then `args`.
    /// Blocking: runs the script on this thread under the call's deadline. The module's
    /// current version is taken once, at the start. Contract routines have their return
    /// value checked and normalized.
    pub fn call(
        &self,
        key: &ModuleKey,
        routine: &str,
        ctx: Option<&Ctx>,
        args: Vec<Dynamic>,
        opts: &CallOptions,
    ) -> Result<Dynamic, HostError> {
        let module = self.module(key).ok_or_else(|| HostError::UnknownModule {
            wanted: format!("{}/{}", key.0, key.1),
            known: self
                .modules()
                .iter()
                .map(|(k, n)| format!("{k}/{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let mut argv: Vec<Dynamic> = Vec::with_capacity(args.len() + 1);
        if let Some(c) = ctx {
            argv.push(Dynamic::from(c.clone()));
        }
        argv.extend(args.iter().cloned());
        let arity = argv.len();
        if !module
            .ast
            .iter_functions()
            .any(|f| f.name == routine && f.params.len() == arity)
        {
            let others: Vec<String> = module
                .ast
                .iter_functions()
                .filter(|f| f.name == routine)
                .map(|f| format!("{}({})", f.name, f.params.join(", ")))
                .collect();
            let hint = if others.is_empty() {
                String::new()
            } else {
                format!("; it defines {}", others.join(", "))
            };
            return Err(HostError::UnknownRoutine {
                module: format!("{}/{}", key.0, key.1),
                routine: routine.to_string(),
                arity,
                path: module.path.clone(),
                hint,
            });
        }
        let timeout = opts
            .timeout
            .unwrap_or(Duration::from_secs(self.opts.limits.call_timeout_secs));
        let started = std::time::Instant::now();
        let module_name = format!("{}/{}", key.0, key.1);
        let trace = crate::trace::CallTrace::begin(
            ctx.map(|c| c.data().reservation_id).unwrap_or(0),
            &module_name,
            routine,
        );
        let result = {
            let _guard = engine::CallGuard::new(timeout, opts.cancel.clone());
            // Secrets the routine makes or remembers belong to its reservation.
            let _secrets = ctx.map(|c| {
                crate::prim::secret::ScopeGuard::enter(crate::prim::secret::Scope::Reservation(
                    c.data().reservation_id,
                ))
            });
            let mut scope = Scope::new();
            let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
            self.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut scope,
                &module.ast,
                routine,
                argv,
            )
        };
        let value = result.map_err(|e| {
            match runtime_error(&module, &module_name, routine, timeout, *e) {
                // A wait the deadline cut short makes a routine throw its own time-out text
                // ("within 600 s"): say that the call's deadline is what ended it.
                HostError::Script { site, message } if started.elapsed() >= timeout => {
                    HostError::AfterDeadline {
                        site,
                        secs: timeout.as_secs(),
                        message,
                    }
                }
                other => other,
            }
        });
        let checked =
            match (value, contract::spec(key.0, routine, arity)) {
                (Ok(value), Some(spec)) => contract::check_return(spec, &args, value.clone())
                    .map_err(|expected| HostError::BadReturn {
                        site: Box::new(CallSite {
                            module: module_name,
                            routine: routine.to_string(),
                            at: module.defined_at(routine),
                        }),
                        expected,
                        got: contract::describe(&value),
                    }),
                (value, _) => value,
            };
        let failure = checked
            .as_ref()
            .err()
            .map(|e| secrets::redact(&e.to_string()).into_owned());
        crate::trace::stash(trace.finish(failure));
        checked
    }
}

/// Refuse `path` (a script file or a folder scripts are loaded from) when group or others
/// may write it. A path that does not exist is not refused here (reading it says so).
pub fn check_not_writable_by_others(path: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (_, true) => "everyone",
        (true, false) => "its group",
        (false, false) => return Ok(()),
    };
    Err(HostError::Insecure {
        path: path.to_path_buf(),
        mode,
        who,
    })
}

/// A compile error with file:line; when the brackets of `source` do not match, the likely
/// cause is added (the parser's own message often points past it).
fn compile_error(path: &Path, source: &str, err: EvalAltResult) -> HostError {
    let line = err.position().line().unwrap_or(0);
    let at = SourcePos {
        path: path.to_path_buf(),
        line,
    };
    match err {
        EvalAltResult::ErrorInModule(module, mut inner, _) => {
            let inner_line = inner.position().line().unwrap_or(0);
            inner.clear_position();
            HostError::Compile {
                at,
                message: format!("in imported module {module:?} (line {inner_line}): {inner}"),
            }
        }
        mut other => {
            other.clear_position();
            let text = other.to_string();
            let mut message = text
                .strip_prefix("Syntax error: ")
                .unwrap_or(&text)
                .to_string();
            if let Some(hint) = syntax_hint::bracket_hint(source) {
                message.push_str(&format!(" — likely cause: {hint}"));
            }
            HostError::Compile { at, message }
        }
    }
}

fn runtime_error(
    module: &LoadedModule,
    module_name: &str,
    routine: &str,
    timeout: Duration,
    err: EvalAltResult,
) -> HostError {
    let mut err = err;
    let mut path = module.path.clone();
    let mut outer_pos = Position::NONE;
    let mut chain: Vec<String> = Vec::new();
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
                chain.push(name);
                if !source.is_empty() {
                    path = PathBuf::from(source);
                }
                outer_pos = pos;
                err = *inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                path = PathBuf::from(name);
                outer_pos = pos;
                err = *inner;
            }
            other => {
                err = other;
                break;
            }
        }
    }
    let innermost = chain.last().map(String::as_str).unwrap_or(routine);
    let mut line = err.position().line().or(outer_pos.line()).unwrap_or(0);
    if path == module.path {
        // The effective AST carries the child's file name: code inherited from a parent
        // was written in the parent's file.
        let defined = module.defined_at(innermost);
        if line == 0 {
            // Limit errors carry no position: point at the function that was running.
            line = defined.line;
        }
        path = defined.path;
    }
    // Hidden parent copies read as the call that reached them.
    let chain: Vec<String> = chain
        .into_iter()
        .map(|f| match inherit::split_hidden(&f) {
            Some((parent, name)) => format!("super::{name} ({parent})"),
            None => f,
        })
        .collect();
    let at = SourcePos { path, line };
    let site = Box::new(CallSite {
        module: module_name.to_string(),
        routine: routine.to_string(),
        at,
    });
    if let EvalAltResult::ErrorTerminated(token, _) = &err {
        if token.to_string() == engine::CANCEL_TOKEN {
            return HostError::Cancelled { site };
        }
        return HostError::Timeout {
            site,
            secs: timeout.as_secs(),
        };
    }
    let mut message = match &err {
        EvalAltResult::ErrorRuntime(value, _) => format!(
            "threw {}",
            if value.is_string() {
                value.to_string()
            } else {
                contract::describe(value)
            }
        ),
        EvalAltResult::ErrorTooManyOperations(_) => {
            "exceeded its operation budget (runaway loop?)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "exceeded the function call depth limit (endless recursion?)".to_string()
        }
        _ => {
            err.clear_position();
            err.to_string()
        }
    };
    if !chain.is_empty() {
        message.push_str(&format!(" (via {})", chain.join(" → ")));
    }
    HostError::Script { site, message }
}
