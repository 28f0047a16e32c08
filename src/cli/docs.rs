//! `provhost docs [--out FILE]`: the script API reference, generated from the registered
//! functions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use provhost::host::ScriptHost;
use provhost::Config;

/// Write the reference to `out` (`-`: standard output).
pub fn run(config: &Config, out: PathBuf) -> anyhow::Result<ExitCode> {
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    let text = provhost::host::docs::generate(&host).map_err(anyhow::Error::msg)?;
    if out.as_os_str() == "-" {
        print!("{text}");
    } else {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
