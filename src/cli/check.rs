//! `provhost check [PATH…]`: compile every module script and check it against the routine
//! contract, listing every error (and what a daemon started now would serve instead).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use provhost::host::{HostOptions, ScriptHost};
use provhost::Config;

/// Every `.rhai` file under `path` (or `path` itself), sorted; at most 4 folders deep.
fn rhai_files(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        if depth > 4 {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            // Test files (`*.test.rhai`) are checked by `provhost test`, not as modules.
            if p.is_dir()
                || (p.extension().is_some_and(|e| e == "rhai")
                    && !provhost::host::scripttest::is_test_file(&p))
            {
                rhai_files(&p, depth + 1, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

pub fn run(config: &Config, paths: Vec<PathBuf>) -> ExitCode {
    let opts: HostOptions = config.host_options();
    // The same primitive families as `serve`: module paths (`vm::`, `vmnet::`) resolve at compile time.
    let host = ScriptHost::new(opts.clone(), &provhost::primitive_families(config));
    // Read only: says what a daemon started now would serve for a broken file.
    host.use_good_store(provhost::host::good::GoodStore::read_only(
        provhost::host::good::dir_in(&config.paths.data_dir),
    ));
    let mut notes: Vec<String> = Vec::new();
    let roots = if paths.is_empty() {
        vec![opts.scripts_dir.clone()]
    } else {
        paths
    };
    let mut files = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for root in &roots {
        if !root.exists() {
            errors.push(format!("{}: no such file or folder", root.display()));
            continue;
        }
        if let Err(e) = rhai_files(root, 0, &mut files) {
            errors.push(format!("{}: {e}", root.display()));
        }
    }
    let stdlib = opts.stdlib_dir.canonicalize().ok();
    let mut ok = 0;
    for file in &files {
        let in_stdlib = match (&stdlib, file.canonicalize()) {
            (Some(s), Ok(f)) => f.starts_with(s),
            _ => false,
        };
        if in_stdlib {
            // Library code has no MODULE; it only has to compile.
            match std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|src| host.engine().compile(src).map_err(|e| e.to_string()))
            {
                Ok(_) => {
                    ok += 1;
                    println!("ok     {} (stdlib)", file.display());
                }
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
            continue;
        }
        match host.load_file(file) {
            Ok((kind, name)) => {
                ok += 1;
                let version = host
                    .module(&(kind, name.clone()))
                    .map(|m| m.info.version.clone())
                    .unwrap_or_default();
                println!("ok     {}  {kind}/{name} v{version}", file.display());
            }
            Err(errs) => {
                errors.extend(errs.iter().map(|e| e.to_string()));
                match host.module_of_file(file) {
                    Some(m) => notes.push(format!(
                        "{}: a daemon started now would serve its last good version, {}/{} v{}, from {}",
                        file.display(),
                        m.info.kind,
                        m.info.name,
                        m.info.version,
                        m.restored_from.as_deref().unwrap_or("memory")
                    )),
                    None => notes.push(format!(
                        "{}: no usable saved good copy; a daemon started now would not serve this module",
                        file.display()
                    )),
                }
            }
        }
    }
    for e in &errors {
        println!("error  {e}");
    }
    for n in &notes {
        println!("note   {n}");
    }
    println!("{ok} file(s) ok, {} error(s)", errors.len());
    if errors.is_empty() && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        if files.is_empty() && errors.is_empty() {
            println!(
                "error  no .rhai files found under {}",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ExitCode::from(super::exit::CHECK_ERRORS)
    }
}
