//! `provhost check [PATH…]`: compile every module script and check it against the routine
//! contract, listing every error (and what a daemon started now would serve instead);
//! then, when the database is reachable, cross-check scripts and the `provisioning` /
//! `OS` rows that name modules (warnings: a script no row names, a row no script serves).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use provhost::db::OpenMode;
use provhost::host::modmap::ModuleRow;
use provhost::host::{HostOptions, Kind, ScriptHost};
use provhost::Config;

use super::UrlArg;

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

pub async fn run(config: &Config, paths: Vec<PathBuf>, url: UrlArg) -> ExitCode {
    let whole_folder = paths.is_empty();
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
    if whole_folder {
        cross_check(config, &host, &url).await;
    } else {
        println!("note   the cross-check with the database's provisioning and OS rows runs when the whole scripts folder is checked (`provhost check` without paths)");
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

/// What a database row names: `provisioning NAME` or `OS NAME`, with its module row.
struct Row {
    kind: Kind,
    name: String,
    module: ModuleRow,
    used: bool,
}

/// Compare the loaded provisioning and OS scripts with the database's rows, printing
/// warnings; a database that cannot be opened skips it, saying why.
async fn cross_check(config: &Config, host: &ScriptHost, url: &UrlArg) {
    let url = url.resolve(config);
    let shown = provhost::db::pool::redact_url(&url);
    let (rows, modules) = match read_rows(&url).await {
        Ok(r) => r,
        Err(e) => {
            println!(
                "note   skipped the cross-check with the database's provisioning and OS rows: {} (--url or [database] url names the database)",
                super::exit::message(&e)
            );
            return;
        }
    };
    let mut served = std::collections::BTreeSet::new();
    let mut unused_missing: Vec<String> = Vec::new();
    let mut warnings = 0;
    for r in &rows {
        // VCL's `none` provisioning (base_module) is for VM hosts, never reserved.
        if r.kind == Kind::Provisioning && r.module.name == "base_module" {
            continue;
        }
        let what = if r.kind == Kind::Os {
            "OS"
        } else {
            "provisioning"
        };
        let mapping = host.map_module_row(r.kind, &r.module);
        match &mapping {
            Some(m) if host.module(&m.key).is_some() => {
                served.insert(m.key.clone());
            }
            _ if r.module.id == 0 => {
                warnings += 1;
                println!(
                    "warning {what} {} names no module row ({}moduleid); point it at one, e.g. `provhost add {} NAME --module-name …` registers a new {what} with one",
                    r.name,
                    if r.kind == Kind::Os { "OS." } else { "provisioning." },
                    r.kind
                );
            }
            _ if !r.used => unused_missing.push(format!("{what} {}", r.name)),
            Some(m) => {
                warnings += 1;
                println!(
                    "warning {what} {} ({}) is used but no script serves it: {} does not exist or did not load{}",
                    r.name,
                    r.module,
                    config.paths.scripts.join(m.key.0.as_str()).join(format!("{}.rhai", m.key.1)).display(),
                    if r.kind == Kind::Os { "; its images fail to load until it does" } else { "; its computers fail to load until it does" }
                );
            }
            None => {
                warnings += 1;
                println!(
                    "warning {what} {} ({}) is used but names no {} script; list it in a script's MODULE.serves (docs/modules.md)",
                    r.name, r.module, r.kind
                );
            }
        }
    }
    for key in host.modules() {
        if key.0 == Kind::Site || served.contains(&key) {
            continue;
        }
        let file = host
            .module(&key)
            .map(|m| m.path.display().to_string())
            .unwrap_or_default();
        // A module row that maps to this script already (VCL's `os_linux_ubuntu` for
        // os/ubuntu) is the one to point the new row at.
        let existing = modules
            .iter()
            .find(|m| host.map_module_row(key.0, m).is_some_and(|x| x.key == key))
            .map(|m| format!(" --module-name {}", m.name))
            .unwrap_or_default();
        let register = match key.0 {
            Kind::Os => format!(
                "provhost add os {} --type {}{existing}",
                key.1,
                if key.1.contains("win") {
                    "windows"
                } else {
                    "linux"
                }
            ),
            _ => format!("provhost add provisioning {}{existing}", key.1),
        };
        warnings += 1;
        println!(
            "warning {file} ({}/{}) is named by no {} row in the database; register it with `{register}`",
            key.0,
            key.1,
            if key.0 == Kind::Os { "OS" } else { "provisioning" }
        );
    }
    if !unused_missing.is_empty() {
        println!(
            "note   {} row(s) no computer or image uses have no script here: {}",
            unused_missing.len(),
            unused_missing.join(", ")
        );
    }
    println!(
        "cross-check with {shown}: {} row(s), {warnings} warning(s)",
        rows.len()
    );
}

/// Every provisioning and OS row with its module row and whether it is used, and every
/// module row.
async fn read_rows(url: &str) -> anyhow::Result<(Vec<Row>, Vec<ModuleRow>)> {
    let db = super::open_db(url, OpenMode::Existing).await?;
    let result = async {
        let (prov_used, os_used) = provhost::db::modules::rows_in_use(&db).await?;
        let mut rows = Vec::new();
        for (name, module) in provhost::db::inventory::provisioning_modules(&db).await? {
            let used = prov_used.contains(&name);
            rows.push(Row {
                kind: Kind::Provisioning,
                name,
                module,
                used,
            });
        }
        for (name, module) in provhost::db::inventory::os_modules(&db).await? {
            let used = os_used.contains(&name);
            rows.push(Row {
                kind: Kind::Os,
                name,
                module,
                used,
            });
        }
        let modules = provhost::db::modules::module_rows(&db).await?;
        Ok::<_, anyhow::Error>((rows, modules))
    }
    .await;
    db.close().await;
    result
}
