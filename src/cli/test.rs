//! `provhost test [MODULE] [--scripts DIR]`: run the modules' unit tests (`*.test.rhai`
//! beside each module) against the recording fake host and print one line per test, then
//! a summary; exit 0 when every test passed, 1 when one failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use provhost::Config;

use super::exit::FAILED;

#[derive(Args)]
pub struct TestArgs {
    /// `kind/name` (e.g. `os/linux`) or a name: run only this module's tests.
    module: Option<String>,
    /// The scripts folder (holding `provisioning/`, `os/`, `site/`); default: `[paths] scripts`.
    #[arg(long)]
    scripts: Option<PathBuf>,
}

pub fn run(config: &Config, a: TestArgs) -> anyhow::Result<ExitCode> {
    let mut opts = config.host_options();
    if let Some(dir) = a.scripts {
        if !dir.is_dir() {
            return Err(super::exit::Refused(format!(
                "--scripts {}: no such folder (give the folder holding provisioning/ and os/)",
                dir.display()
            ))
            .into());
        }
        opts.scripts_dir = dir;
    }
    let scripts = opts.scripts_dir.clone();
    // `config::` stays real: scripts read the same values as under `serve`.
    let settings: Vec<std::sync::Arc<dyn provhost::host::Primitives>> = vec![std::sync::Arc::new(
        provhost::prim::settings::SettingsPrims::new(provhost::script_settings(config)),
    )];
    let run = provhost::host::scripttest::run(opts, a.module.as_deref(), settings)?;
    if run.files == 0 {
        return Err(super::exit::Refused(format!(
            "no test files (*.test.rhai) under {}/{{provisioning,os,site}} (docs/script-tests.md)",
            scripts.display()
        ))
        .into());
    }
    for c in &run.cases {
        let at = format!("{}:{}", c.file.display(), c.line);
        match &c.result {
            Ok(()) => println!(
                "ok      {}  {}  ({at}, {:.1} ms)",
                c.module,
                c.name,
                c.elapsed.as_secs_f64() * 1000.0
            ),
            Err(why) => println!(
                "FAILED  {}  {}  {at}: {}",
                c.module,
                c.name,
                provhost::prim::secret::redact(why)
            ),
        }
    }
    let failed = run.failed();
    println!(
        "{} passed, {failed} failed, in {} file(s), {:.0} ms",
        run.cases.len() - failed,
        run.files,
        run.elapsed.as_secs_f64() * 1000.0
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}
