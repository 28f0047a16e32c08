//! `provhost test`: module unit tests. A module's tests live beside it
//! (`scripts/os/linux.test.rhai` for `scripts/os/linux.rhai`); each `fn test_NAME()` is
//! one test. The test file is composed with the module (its functions call the module's
//! routines directly) and runs in an engine whose primitives are the recording fake host
//! ([`fake`]): no machine is touched, a test takes milliseconds. [`run`] loads the
//! modules, runs the tests and returns one [`TestCase`] per test; the command line prints
//! them. See docs/script-tests.md.

pub mod fake;
pub mod recorder;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, EvalAltResult, Scope, AST};

use crate::host::{HostError, HostOptions, Kind, LoadedModule, ScriptHost};

/// The suffix of a test file (`linux.test.rhai`).
pub const TEST_SUFFIX: &str = ".test.rhai";
/// The longest one test may run (its waits are virtual: this is for runaway loops).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Most tests one file may hold.
pub const MAX_TESTS_PER_FILE: usize = 1_000;

/// Is `path` a test file (`*.test.rhai`), not a module?
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(TEST_SUFFIX))
}

/// One test's outcome.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// `os/linux`.
    pub module: String,
    /// `test_load_sets_hostname` (or `(file)` when the file itself failed).
    pub name: String,
    /// The test file and the line the failure points at (the test's `fn` when it passed).
    pub file: PathBuf,
    pub line: usize,
    /// `Err(reason)` when it failed.
    pub result: Result<(), String>,
    pub elapsed: Duration,
}

/// Every test run by [`run`].
#[derive(Debug, Default)]
pub struct TestRun {
    pub cases: Vec<TestCase>,
    pub files: usize,
    pub elapsed: Duration,
}

impl TestRun {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| c.result.is_err()).count()
    }
}

/// The test files under `scripts_dir/{provisioning,os,site}/`, sorted.
pub fn test_files(scripts_dir: &Path) -> Result<Vec<PathBuf>, HostError> {
    crate::host::script_files(scripts_dir, is_test_file)
}

/// The module file a test file tests (`linux.test.rhai` → `linux.rhai`).
pub fn module_file_of(test: &Path) -> PathBuf {
    let name = test
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(TEST_SUFFIX))
        .unwrap_or("");
    test.with_file_name(format!("{name}.rhai"))
}

/// Load the modules under `opts.scripts_dir` with the fake host's primitives and run the
/// tests of `only` (`os/linux` or `linux`), or of every module that has a test file.
/// `extra` are families that touch nothing outside the engine and so stay real under test
/// (the read-only `config::` values).
pub fn run(
    opts: HostOptions,
    only: Option<&str>,
    extra: Vec<Arc<dyn crate::host::Primitives>>,
) -> Result<TestRun, HostError> {
    let started = Instant::now();
    let rec = Arc::new(recorder::Recorder::default());
    let mut families: Vec<Arc<dyn crate::host::Primitives>> =
        vec![Arc::new(fake::FakePrims::new(Arc::clone(&rec)))];
    families.extend(extra);
    let scripts_dir = opts.scripts_dir.clone();
    let host = ScriptHost::new(opts, &families);
    let load_errors = host.load_all();
    let mut files = test_files(&scripts_dir)?;
    if let Some(spec) = only {
        let found = host.find_module(spec).map(|key| {
            let want = host
                .module(&key)
                .map(|m| {
                    m.path.with_file_name(format!(
                        "{}{TEST_SUFFIX}",
                        m.path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
                    ))
                })
                .unwrap_or_default();
            (key, want)
        });
        match found {
            Ok((key, want)) => {
                files.retain(|f| *f == want);
                if files.is_empty() {
                    return Err(HostError::NoTests {
                        module: format!("{}/{}", key.0, key.1),
                        path: want,
                    });
                }
            }
            Err(e) => {
                // A module that does not load: its test file (if any) reports why.
                let (kind, name) = match spec.split_once('/') {
                    Some((k, n)) => (Some(k), n),
                    None => (None, spec),
                };
                files.retain(|f| {
                    f.file_name().and_then(|n| n.to_str()) == Some(&format!("{name}{TEST_SUFFIX}"))
                        && kind
                            .is_none_or(|k| Kind::from_path(f).is_some_and(|fk| fk.as_str() == k))
                });
                if files.is_empty() {
                    return Err(e);
                }
            }
        }
    }
    let mut out = TestRun {
        files: files.len(),
        ..TestRun::default()
    };
    for file in &files {
        run_file(&host, &rec, file, &load_errors, &mut out.cases);
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// A test function: its name, whether it takes the fake as its parameter, its line.
struct TestFn {
    name: String,
    arity: usize,
    line: usize,
}

/// `fn test_…` in source order (the AST does not keep it), checked against the AST.
fn test_fns(source: &str, ast: &AST) -> Vec<TestFn> {
    let mut out = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("private ").unwrap_or(t).trim_start();
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with("test_") {
            continue;
        }
        if let Some(f) = ast
            .iter_functions()
            .find(|f| f.name == name && f.params.len() <= 1)
        {
            out.push(TestFn {
                name,
                arity: f.params.len(),
                line: i + 1,
            });
        }
        if out.len() >= MAX_TESTS_PER_FILE {
            break;
        }
    }
    out
}

fn file_failure(module: &str, file: &Path, line: usize, why: String) -> TestCase {
    TestCase {
        module: module.to_string(),
        name: "(file)".into(),
        file: file.to_path_buf(),
        line,
        result: Err(why),
        elapsed: Duration::ZERO,
    }
}

fn run_file(
    host: &ScriptHost,
    rec: &Arc<recorder::Recorder>,
    file: &Path,
    load_errors: &[HostError],
    cases: &mut Vec<TestCase>,
) {
    let module_path = module_file_of(file);
    let label = Kind::from_path(file)
        .map(|k| {
            format!(
                "{k}/{}",
                module_path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("?")
            )
        })
        .unwrap_or_else(|| module_path.display().to_string());
    let Some(module) = host.module_of_file(&module_path) else {
        let why = load_errors
            .iter()
            .map(|e| e.to_string())
            .filter(|e| e.contains(&module_path.display().to_string()))
            .collect::<Vec<_>>();
        let why = if why.is_empty() {
            format!(
                "no module {} beside this test file (a test file is NAME.test.rhai next to NAME.rhai)",
                module_path.display()
            )
        } else {
            format!("the module does not load: {}", why.join("; "))
        };
        cases.push(file_failure(&label, file, 0, why));
        return;
    };
    let label = format!("{}/{}", module.info.kind, module.info.name);
    if let Err(e) = crate::host::check_not_writable_by_others(file) {
        cases.push(file_failure(&label, file, 0, e.to_string()));
        return;
    }
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            cases.push(file_failure(
                &label,
                file,
                0,
                format!("cannot read it: {e}"),
            ));
            return;
        }
    };
    let mut test_ast = match host
        .engine()
        .compile_into_self_contained(&Scope::new(), &source)
    {
        Ok(a) => a,
        Err(e) => {
            let line = e.position().line().unwrap_or(0);
            let mut e = e;
            e.clear_position();
            cases.push(file_failure(
                &label,
                file,
                line,
                format!("does not compile: {e}"),
            ));
            return;
        }
    };
    test_ast.set_source(file.display().to_string());
    // A test file adds functions; it does not replace the module's.
    let clash: Vec<String> = test_ast
        .iter_functions()
        .filter(|t| {
            module
                .ast
                .iter_functions()
                .any(|m| m.name == t.name && m.params.len() == t.params.len())
        })
        .map(|t| format!("{}({})", t.name, t.params.join(", ")))
        .collect();
    if !clash.is_empty() {
        cases.push(file_failure(
            &label,
            file,
            0,
            format!(
                "defines {} which the module defines too; rename the test's function",
                clash.join(", ")
            ),
        ));
        return;
    }
    let tests = test_fns(&source, &test_ast);
    if tests.is_empty() {
        cases.push(file_failure(
            &label,
            file,
            0,
            "no tests: write `fn test_NAME() { … }` functions".into(),
        ));
        return;
    }
    let own: BTreeSet<String> = test_ast
        .iter_functions()
        .map(|f| f.name.to_string())
        .collect();
    let merged = module.ast.merge(&test_ast);
    for t in tests {
        rec.reset();
        let started = Instant::now();
        let outcome = {
            let _guard = crate::budget::CallGuard::new(TEST_TIMEOUT, None);
            let mut scope = Scope::new();
            let args: Vec<Dynamic> = if t.arity == 1 {
                vec![Dynamic::from(fake::Fake::handle(rec))]
            } else {
                Vec::new()
            };
            host.engine().call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(true).rewind_scope(true),
                &mut scope,
                &merged,
                &t.name,
                args,
            )
        };
        let (line, result) = match outcome {
            Ok(_) => match rec.unexpected().first() {
                // The module caught the error an unexpected command raised: still a failure.
                Some(c) => (
                    t.line,
                    Err(format!(
                        "unexpected command on {}: `{}` (the module caught the error; declare it with fake().expect)",
                        c.host, c.text
                    )),
                ),
                None => (t.line, Ok(())),
            },
            Err(e) => {
                let (line, why) = explain(*e, &t.name, t.line, &own, &module);
                (line, Err(why))
            }
        };
        cases.push(TestCase {
            module: label.clone(),
            name: t.name,
            file: file.to_path_buf(),
            line,
            result,
            elapsed: started.elapsed(),
        });
    }
}

/// The line in the test file a failure points at and its reason: the deepest line of the
/// test's own code on the way to the error, and where in the module the error was raised.
fn explain(
    err: EvalAltResult,
    test: &str,
    test_line: usize,
    own: &BTreeSet<String>,
    module: &LoadedModule,
) -> (usize, String) {
    let mut err = err;
    let mut current = test.to_string();
    let mut line = test_line;
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) => {
                if !(name == current && pos.is_none()) {
                    if own.contains(&current) {
                        if let Some(l) = pos.line() {
                            line = l;
                        }
                    }
                    current = name;
                }
                err = *inner;
            }
            EvalAltResult::ErrorInModule(_, inner, _) => err = *inner,
            other => {
                err = other;
                break;
            }
        }
    }
    let at = err.position();
    err.clear_position();
    if own.contains(&current) {
        if let Some(l) = at.line() {
            line = l;
        }
    }
    let mut why = match &err {
        EvalAltResult::ErrorRuntime(v, _) => {
            let text = if v.is_string() {
                v.to_string()
            } else {
                crate::host::contract::describe(v)
            };
            if text.starts_with(fake::ASSERT) || text.starts_with(fake::UNEXPECTED) {
                text
            } else {
                format!("threw {text}")
            }
        }
        EvalAltResult::ErrorTerminated(..) => format!(
            "ran past {} s (a loop that never ends?)",
            TEST_TIMEOUT.as_secs()
        ),
        EvalAltResult::ErrorTooManyOperations(_) => {
            "exceeded its operation budget (runaway loop?)".into()
        }
        other => other.to_string(),
    };
    if !own.contains(&current) {
        let defined = module.defined_at(&current);
        let name = crate::host::inherit::split_hidden(&current)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| current.clone());
        let l = at.line().unwrap_or(defined.line);
        why.push_str(&format!(" (in {name}, {}:{l})", defined.path.display()));
    }
    (line, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["scripts/os", "stdlib"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        for (rel, text) in files {
            std::fs::write(dir.path().join("scripts").join(rel), text).expect("write");
        }
        dir
    }

    fn opts(dir: &tempfile::TempDir) -> HostOptions {
        HostOptions {
            scripts_dir: dir.path().join("scripts"),
            stdlib_dir: dir.path().join("stdlib"),
            limits: crate::host::Limits::default(),
        }
    }

    const MODULE: &str = r#"const MODULE = #{ kind: "os", name: "t", version: "1" };
fn post_load(ctx) { ctx.computer().run("touch /ready").code == 0 }
fn add_user(ctx, user) { true }
fn delete_user(ctx, user) { true }
fn grant_access(ctx) { true }
fn revoke_access(ctx) { true }
fn set_password(ctx, user, password) { true }
fn sanitize(ctx) { true }
fn pre_capture(ctx) { true }
fn is_ready(ctx) { true }
"#;

    #[test]
    fn test_files_are_not_modules_and_their_tests_run_in_order() {
        let dir = dir_with(&[
            ("os/t.rhai", MODULE),
            (
                "os/t.test.rhai",
                "fn test_b(host) { host.expect(\"touch /ready\"); assert(post_load(fixture())); }\nfn test_a() { assert_eq(1, 2); }\n",
            ),
        ]);
        let host = ScriptHost::new(opts(&dir), &[]);
        let files = host.module_files().expect("files");
        assert_eq!(files, vec![dir.path().join("scripts/os/t.rhai")]);
        assert!(is_test_file(&dir.path().join("scripts/os/t.test.rhai")));
        assert_eq!(
            module_file_of(Path::new("/s/os/t.test.rhai")),
            PathBuf::from("/s/os/t.rhai")
        );

        let run = run(opts(&dir), None, vec![]).expect("run");
        let names: Vec<(&str, bool, usize)> = run
            .cases
            .iter()
            .map(|c| (c.name.as_str(), c.result.is_ok(), c.line))
            .collect();
        assert_eq!(names, vec![("test_b", true, 1), ("test_a", false, 2)]);
        assert_eq!(run.failed(), 1);
        assert!(run.cases[1]
            .result
            .as_ref()
            .expect_err("failed")
            .contains("left 1 != right 2"));
    }

    #[test]
    fn a_named_module_that_does_not_load_is_reported_by_its_test_file() {
        let dir = dir_with(&[
            ("os/t.rhai", "const MODULE = #{ kind: \"os\", name: \"t\", version: \"1\" };\nfn post_load(ctx) { (\n"),
            ("os/t.test.rhai", "fn test_a() { assert(true); }\n"),
        ]);
        let run = run(opts(&dir), Some("os/t"), vec![]).expect("run");
        assert_eq!(run.cases.len(), 1);
        assert_eq!(run.cases[0].name, "(file)");
        let why = run.cases[0].result.as_ref().expect_err("fails");
        assert!(
            why.starts_with("the module does not load: ") && why.contains("t.rhai:"),
            "{why}"
        );
    }

    #[test]
    fn a_named_module_without_tests_names_the_file_to_write() {
        let dir = dir_with(&[("os/t.rhai", MODULE)]);
        let err = run(opts(&dir), Some("os/t"), vec![]).expect_err("no tests");
        assert!(
            matches!(&err, HostError::NoTests { path, .. } if path.ends_with("os/t.test.rhai")),
            "{err}"
        );
    }
}
