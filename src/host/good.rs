//! The last good version of each module file, kept on disk so that a restart while a file
//! is broken still serves what ran before (`<data_dir>/modules-good/`).
//!
//! After every successful load the daemon saves the file's source with the source of every
//! `stdlib/` file at that moment (imports are compiled in, so they must compile the same
//! way again), each with its SHA-256, as one JSON file per module file:
//! `modules-good/<kind>/<file>.rhai.json`, written to a temporary name and renamed. At
//! start, a file that does not compile or check is replaced by its saved copy; a saved
//! copy whose hashes do not match or that cannot be read is ignored with a message saying
//! so. The host side (saving after a load, restoring at start) is in `restore.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared, AST};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the file layout changes; other values are refused as unreadable.
const FORMAT: u32 = 1;
/// Bounds on the `stdlib/` snapshot (files, folder depth).
const MAX_STDLIB_FILES: usize = 256;
const MAX_DEPTH: usize = 4;

/// Why a saved copy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GoodError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: saved good copy is unreadable ({message}); ignored (the next successful load rewrites it)", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: saved good copy of {what} does not match its recorded sha256 (recorded {recorded}, content has {actual}); ignored (the next successful load rewrites it)", path.display())]
    HashMismatch {
        path: PathBuf,
        what: String,
        recorded: String,
        actual: String,
    },
}

/// One saved source text with its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedText {
    pub sha256: String,
    pub source: String,
}

/// What is stored for one module file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Saved {
    pub format: u32,
    /// The module file, relative to the scripts folder (`provisioning/sim.rhai`).
    pub file: String,
    /// `kind/name` and version of the module it defined.
    pub module: String,
    pub version: String,
    /// Seconds since the Unix epoch.
    pub saved_at: u64,
    pub module_source: SavedText,
    /// Every `stdlib/` file by import path (`shell`, `net/ip`).
    pub stdlib: BTreeMap<String, SavedText>,
}

impl Saved {
    /// `saved_at` as `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn saved_at_text(&self) -> String {
        i64::try_from(self.saved_at)
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| format!("{} s after the epoch", self.saved_at))
    }
}

/// The folder of saved copies.
#[derive(Debug, Clone)]
pub struct GoodStore {
    dir: PathBuf,
    writable: bool,
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text(source: String) -> SavedText {
    SavedText {
        sha256: sha256_hex(&source),
        source,
    }
}

impl GoodStore {
    /// A store the daemon saves into and restores from.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        GoodStore {
            dir: dir.into(),
            writable: true,
        }
    }

    /// A store that is only read (`provhost check` reports what a restart would serve).
    pub fn read_only(dir: impl Into<PathBuf>) -> Self {
        GoodStore {
            dir: dir.into(),
            writable: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the copy of `rel` (a path relative to the scripts folder) is kept.
    pub fn entry_path(&self, rel: &Path) -> PathBuf {
        let mut name = rel.as_os_str().to_os_string();
        name.push(".json");
        self.dir.join(name)
    }

    /// Save `source` (module `module` v`version`, file `rel`) with the current content of
    /// `stdlib_dir`. Does nothing when the store is read-only or already holds exactly
    /// this. Returns whether it wrote.
    pub fn save(
        &self,
        rel: &Path,
        module: &str,
        version: &str,
        source: &str,
        stdlib_dir: &Path,
    ) -> Result<bool, GoodError> {
        if !self.writable {
            return Ok(false);
        }
        let stdlib = read_stdlib(stdlib_dir)?;
        let path = self.entry_path(rel);
        if let Ok(Some(old)) = self.load(rel) {
            if old.module_source.source == source
                && old.stdlib.len() == stdlib.len()
                && old
                    .stdlib
                    .iter()
                    .all(|(k, v)| stdlib.get(k).is_some_and(|s| *s == v.source))
                && old.module == module
                && old.version == version
            {
                return Ok(false);
            }
        }
        let saved = Saved {
            format: FORMAT,
            file: rel.display().to_string(),
            module: module.to_string(),
            version: version.to_string(),
            saved_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            module_source: text(source.to_string()),
            stdlib: stdlib.into_iter().map(|(k, v)| (k, text(v))).collect(),
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GoodError::Io { path, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let json = serde_json::to_vec_pretty(&saved).map_err(|e| GoodError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(true)
    }

    /// The saved copy of `rel`, checked against its hashes; `None` when there is none.
    pub fn load(&self, rel: &Path) -> Result<Option<Saved>, GoodError> {
        let path = self.entry_path(rel);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(GoodError::Io { path, source }),
        };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| GoodError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if saved.format != FORMAT {
            return Err(GoodError::Corrupt {
                path,
                message: format!("format {} (this provhost writes {FORMAT})", saved.format),
            });
        }
        let check = |what: String, t: &SavedText| {
            let actual = sha256_hex(&t.source);
            if actual == t.sha256 {
                Ok(())
            } else {
                Err(GoodError::HashMismatch {
                    path: path.clone(),
                    what,
                    recorded: t.sha256.clone(),
                    actual,
                })
            }
        };
        check(saved.file.clone(), &saved.module_source)?;
        for (name, t) in &saved.stdlib {
            check(format!("stdlib {name:?}"), t)?;
        }
        Ok(Some(saved))
    }
}

/// Every `.rhai` file under `dir` by import path (relative, without `.rhai`, `/`-separated).
fn read_stdlib(dir: &Path) -> Result<BTreeMap<String, String>, GoodError> {
    let mut out = BTreeMap::new();
    if dir.is_dir() {
        walk(dir, dir, 0, &mut out)?;
    }
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut BTreeMap<String, String>,
) -> Result<(), GoodError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GoodError::Io { path, source }
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if depth < MAX_DEPTH {
                walk(root, &p, depth + 1, out)?;
            }
        } else if p.extension().is_some_and(|e| e == "rhai") && out.len() < MAX_STDLIB_FILES {
            let Ok(rel) = p
                .with_extension("")
                .strip_prefix(root)
                .map(Path::to_path_buf)
            else {
                continue;
            };
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let source = std::fs::read_to_string(&p).map_err(io(&p))?;
            out.insert(key, source);
        }
    }
    Ok(())
}

/// Resolves `import "name"` from a saved `stdlib/` snapshot instead of the disk.
pub struct SavedResolver {
    files: BTreeMap<String, String>,
}

impl SavedResolver {
    pub fn new(saved: &Saved) -> Self {
        SavedResolver {
            files: saved
                .stdlib
                .iter()
                .map(|(k, v)| (k.clone(), v.source.clone()))
                .collect(),
        }
    }

    fn ast(&self, engine: &Engine, path: &str, pos: Position) -> Result<AST, Box<EvalAltResult>> {
        let source = self
            .files
            .get(path)
            .ok_or_else(|| Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos)))?;
        let mut ast = engine.compile(source).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                e.into(),
                pos,
            ))
        })?;
        ast.set_source(path);
        Ok(ast)
    }
}

impl rhai::ModuleResolver for SavedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let ast = self.ast(engine, path, pos)?;
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        Ok(module.into())
    }

    fn resolve_ast(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Option<Result<AST, Box<EvalAltResult>>> {
        Some(self.ast(engine, path, pos))
    }
}

/// `<data_dir>/modules-good`: where the daemon keeps the saved copies.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("modules-good")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, GoodStore, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let stdlib = dir.path().join("stdlib");
        std::fs::create_dir_all(stdlib.join("net")).expect("mkdir");
        std::fs::write(stdlib.join("shell.rhai"), "fn q(s) { s }").expect("write");
        std::fs::write(stdlib.join("net/ip.rhai"), "fn ok(s) { true }").expect("write");
        let store = GoodStore::new(dir.path().join("good"));
        (dir, store, stdlib)
    }

    #[test]
    fn saves_once_and_loads_back_with_the_stdlib() {
        let (_d, store, stdlib) = setup();
        let rel = Path::new("provisioning/sim.rhai");
        assert!(store.load(rel).expect("load").is_none());
        assert!(store
            .save(rel, "provisioning/sim", "1", "const MODULE = 1;", &stdlib)
            .expect("save"));
        assert!(
            !store
                .save(rel, "provisioning/sim", "1", "const MODULE = 1;", &stdlib)
                .expect("save again"),
            "unchanged: not rewritten"
        );
        let saved = store.load(rel).expect("load").expect("saved");
        assert_eq!(saved.module_source.source, "const MODULE = 1;");
        assert_eq!(
            saved.stdlib.keys().cloned().collect::<Vec<_>>(),
            ["net/ip", "shell"]
        );
        assert!(store
            .entry_path(rel)
            .ends_with("good/provisioning/sim.rhai.json"));
        let ro = GoodStore::read_only(store.dir());
        assert!(!ro
            .save(rel, "provisioning/sim", "2", "changed", &stdlib)
            .expect("read-only save"));
    }

    #[test]
    fn a_hash_mismatch_is_named_and_refused() {
        let (_d, store, stdlib) = setup();
        let rel = Path::new("os/linux.rhai");
        store
            .save(rel, "os/linux", "1", "fn a() { 1 }", &stdlib)
            .expect("save");
        let path = store.entry_path(rel);
        let edited = std::fs::read_to_string(&path)
            .expect("read")
            .replace("fn a() { 1 }", "fn a() { 2 }");
        std::fs::write(&path, edited).expect("tamper");
        let err = store.load(rel).expect_err("tampered");
        assert!(matches!(err, GoodError::HashMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("os/linux.rhai.json")
                && text.contains("does not match its recorded sha256")
                && text.contains("ignored"),
            "{text}"
        );
    }

    #[test]
    fn a_corrupt_store_file_is_named_and_refused() {
        let (_d, store, _stdlib) = setup();
        let rel = Path::new("os/linux.rhai");
        let path = store.entry_path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "{\"format\": 1, \"file\": trunc").expect("write");
        let err = store.load(rel).expect_err("corrupt");
        assert!(matches!(err, GoodError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("saved good copy is unreadable"),
            "{err}"
        );
    }
}
