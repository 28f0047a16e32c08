//! `provhost.toml`: where scripts live, sandbox limits, and (as later parts arrive) the
//! database and SSH settings. Every setting has a default that makes the embedded setup
//! work, so no file is needed to start. The file is `--config` / `PROVHOST_CONFIG`, else
//! `./provhost.toml`, else the packaged `/etc/provhost/provhost.toml` ([`Config::locate`]).
//! Relative paths are taken from the config file's folder (or the current folder when
//! there is no file).
//!
//! Every duration and count is checked at load against its allowed range ([`Bound`];
//! durations at most [`MAX_SECS`], a year): a value that would overflow a deadline or
//! exceed what the daemon can run is refused with the key, the value and the range.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{HostOptions, Limits};
use crate::prim::ssh::SshConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by --config / PROVHOST_CONFIG (or ./provhost.toml,
    /// /etc/provhost/provhost.toml) cannot be read.
    /// The OS error is part of the message, not a separate cause, so it shows once.
    #[error("cannot read the configuration file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The configuration file in the current folder, read when no file is named.
pub const LOCAL_CONFIG: &str = "provhost.toml";
/// The packaged location of the configuration file (the Debian package's conffile), read
/// when no file is named and the current folder has none.
pub const SYSTEM_CONFIG: &str = "/etc/provhost/provhost.toml";
/// The packaged data folder (`[paths] data_dir` in the packaged configuration).
pub const SYSTEM_DATA_DIR: &str = "/var/lib/provhost";

/// The longest duration any setting may have: one year, in seconds.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// One numeric setting and the values it may take.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub key: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
    pub unit: &'static str,
}

impl Bound {
    pub fn secs(key: &'static str, value: u64, min: u64, max: u64) -> Self {
        Bound {
            key,
            value,
            min,
            max,
            unit: "seconds",
        }
    }
    pub fn millis(key: &'static str, value: u64, min: u64, max: u64) -> Self {
        Bound {
            key,
            value,
            min,
            max,
            unit: "milliseconds",
        }
    }
    pub fn count(key: &'static str, value: u64, min: u64, max: u64) -> Self {
        Bound {
            key,
            value,
            min,
            max,
            unit: "",
        }
    }

    /// `Err("KEY = VALUE is out of range: allowed MIN to MAX UNIT")` when outside.
    pub fn check(&self) -> Result<(), String> {
        if (self.min..=self.max).contains(&self.value) {
            return Ok(());
        }
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        let year = if self.unit == "seconds" && self.max == MAX_SECS {
            " (one year)"
        } else {
            ""
        };
        Err(format!(
            "{} = {} is out of range: allowed {} to {}{unit}{year}",
            self.key, self.value, self.min, self.max
        ))
    }
}

/// Check `bounds`, the first failure prefixed with its `[section]`.
fn check_section(section: &str, bounds: &[Bound]) -> Result<(), String> {
    bounds
        .iter()
        .try_for_each(Bound::check)
        .map_err(|e| format!("[{section}] {e}"))
}

/// Folders provhost uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// Module scripts: `provisioning/`, `os/`, `site/` inside.
    pub scripts: PathBuf,
    /// Rhai library code scripts `import`.
    pub stdlib: PathBuf,
    /// Where provhost keeps its own data (the SQLite database, keys, known_hosts).
    pub data_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            scripts: "scripts".into(),
            stdlib: "stdlib".into(),
            data_dir: "data".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: Paths,
    /// Sandbox limits for script calls (`[scripts]`).
    pub scripts: Limits,
    /// The database (`[database] url = "sqlite://…" | "mysql://…"`).
    pub database: crate::db::DatabaseConfig,
    /// The daemon (`[daemon]`: node name, poll interval, VCL timings).
    pub daemon: crate::daemon::DaemonConfig,
    /// How computers, VM hosts and peers are reached (`[ssh]`).
    pub ssh: SshConfig,
    /// QEMU on VM hosts (`[vm]`: accelerator, binary, QMP and start time-outs).
    pub vm: crate::prim::vm::VmConfig,
    /// The image library (`[images]`: library folder, test-image build cache).
    pub images: crate::image::ImagesConfig,
    /// VM-host networking defaults (`[vmnet]`: namespace, bridge, subnets).
    pub vmnet: crate::prim::vmnet::VmnetConfig,
    /// The status page (`[http]`: listen address, bearer token, refresh).
    pub http: crate::web::HttpConfig,
    /// The waterfall's spans (`[trace]`: on/off, retention by age and count).
    pub trace: crate::db::span::TraceConfig,
}

impl Config {
    /// The file [`Config::load`] reads: `path` (`--config`, `PROVHOST_CONFIG`) when given,
    /// else `./provhost.toml` when it exists, else [`SYSTEM_CONFIG`] when it exists, else
    /// none (the built-in defaults).
    pub fn locate(path: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = path {
            return Some(p.to_path_buf());
        }
        [PathBuf::from(LOCAL_CONFIG), PathBuf::from(SYSTEM_CONFIG)]
            .into_iter()
            .find(|f| f.is_file())
    }

    /// Load the file [`Config::locate`] finds, or the defaults. Relative paths in the
    /// result are resolved against the file's folder.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = Config::locate(path);
        let (mut config, base) = match &file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|cause| ConfigError::Read {
                    path: f.clone(),
                    cause,
                })?;
                let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: f.clone(),
                    message: parse_error(&text, &e),
                })?;
                let base = f.parent().map(Path::to_path_buf).unwrap_or_default();
                (config, base)
            }
            None => (Config::default(), PathBuf::new()),
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            path: file.clone().unwrap_or_else(|| "(built-in defaults)".into()),
            message,
        })?;
        let images = &mut config.images;
        for p in [images.library.as_mut(), images.build_cache.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() && !p.as_os_str().is_empty() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        for p in [
            &mut config.paths.scripts,
            &mut config.paths.stdlib,
            &mut config.paths.data_dir,
            &mut config.ssh.identity,
            &mut config.ssh.known_hosts,
        ] {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Every duration and count in its allowed range; the message names the section, key,
    /// value and range of the first one that is not.
    pub fn validate(&self) -> Result<(), String> {
        let (ssh, vm) = (&self.ssh, &self.vm);
        check_section(
            "scripts",
            &[Bound::secs(
                "call_timeout_secs",
                self.scripts.call_timeout_secs,
                1,
                MAX_SECS,
            )],
        )?;
        self.daemon.check().map_err(|e| format!("[daemon] {e}"))?;
        check_section(
            "ssh",
            &[
                Bound::secs("connect_timeout_secs", ssh.connect_timeout_secs, 1, 3600),
                Bound::secs(
                    "command_timeout_secs",
                    ssh.command_timeout_secs,
                    1,
                    MAX_SECS,
                ),
                Bound::secs("copy_timeout_secs", ssh.copy_timeout_secs, 1, MAX_SECS),
                Bound::secs("idle_secs", ssh.idle_secs, 0, MAX_SECS),
                Bound::count(
                    "max_sessions_per_host",
                    ssh.max_sessions_per_host as u64,
                    1,
                    1024,
                ),
                Bound::count("max_idle_sessions", ssh.max_idle_sessions as u64, 0, 65_536),
            ],
        )?;
        check_section(
            "vm",
            &[
                Bound::secs("qmp_timeout_secs", vm.qmp_timeout_secs, 1, 3600),
                Bound::secs("start_timeout_secs", vm.start_timeout_secs, 1, MAX_SECS),
                Bound::secs("kvm_probe_secs", vm.kvm_probe_secs, 1, MAX_SECS),
                Bound::secs("boot_timeout_secs", vm.boot_timeout_secs, 1, MAX_SECS),
            ],
        )?;
        check_section(
            "vmnet",
            &[Bound::secs(
                "timeout_secs",
                self.vmnet.timeout_secs,
                1,
                MAX_SECS,
            )],
        )?;
        self.http.check().map_err(|e| format!("[http] {e}"))?;
        self.trace.check().map_err(|e| format!("[trace] {e}"))
    }

    /// Options for the scripting host.
    pub fn host_options(&self) -> HostOptions {
        HostOptions {
            scripts_dir: self.paths.scripts.clone(),
            stdlib_dir: self.paths.stdlib.clone(),
            limits: self.scripts.clone(),
        }
    }
}

/// Keys whose values are secrets (`[database] url` carries the password, `[http] token`).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["url", "token", "password", "secret"]
        .iter()
        .any(|s| k.contains(s))
}

/// Where and why `text` is not a configuration. toml's own message quotes the offending
/// line, and a value there may be a secret that must not reach a terminal or the journal:
/// the line is shown only when it is `KEY = VALUE` with a key that holds no secret
/// (`url = …` otherwise; nothing for any other line).
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return format!("TOML parse error: {}", e.message().trim_end());
    };
    let at = (0..=span.start.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let source = text[line_start..].lines().next().unwrap_or("").trim();
    let shown = source
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        .map(|k| {
            if secret_key(k) {
                format!(" ({k} = …)")
            } else {
                format!(" ({source})")
            }
        })
        .unwrap_or_default();
    format!(
        "TOML parse error at line {line}, column {column}{shown}: {}",
        e.message().trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_file_and_typos_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("provhost.toml");
        std::fs::write(
            &f,
            "[paths]\nscripts = \"s\"\n[scripts]\ncall_timeout_secs = 5\n",
        )
        .expect("write");
        let c = Config::load(Some(&f)).expect("load");
        assert_eq!(c.paths.scripts, dir.path().join("s"));
        assert_eq!(c.scripts.call_timeout_secs, 5);
        std::fs::write(&f, "[scripts]\ncall_timeout = 5\n").expect("write");
        let err = Config::load(Some(&f)).expect_err("typo");
        assert!(err.to_string().contains("call_timeout"), "{err}");
    }

    #[test]
    fn a_parse_error_names_the_line_and_key_but_never_shows_a_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("provhost.toml");
        for (text, want) in [
            (
                "[database]\nurl = \"mysql://root:s3cret-pw@127.0.0.1/vcl\" oops\n",
                "line 2, column 46 (url = …): expected newline",
            ),
            (
                "[http]\ntoken = [\"s3cret-token\"]\n",
                "line 2, column 9 (token = …): invalid type: sequence, expected a string",
            ),
            (
                "[http]\ntoken = \"s3cret-token\nlisten = \"x\"\n",
                "line 2, column ",
            ),
        ] {
            std::fs::write(&f, text).expect("write");
            let err = Config::load(Some(&f)).expect_err("bad toml").to_string();
            assert!(err.contains(want), "{want:?} missing in: {err}");
            assert!(!err.contains("s3cret"), "a secret in the error: {err}");
        }
    }

    #[test]
    fn the_defaults_are_in_range() {
        Config::default().validate().expect("defaults");
    }

    #[test]
    fn a_huge_duration_is_refused_naming_the_key_value_and_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("provhost.toml");
        for (text, want) in [
            (
                "[scripts]\ncall_timeout_secs = 9223372036854775807\n",
                "[scripts] call_timeout_secs = 9223372036854775807 is out of range: allowed 1 to 31536000 seconds (one year)",
            ),
            (
                "[daemon.timings]\nreconnecttimeout = 99999999999\n",
                "[daemon] timings.reconnecttimeout = 99999999999 is out of range",
            ),
            (
                "[daemon]\nmax_flows = 500000\n",
                "[daemon] max_flows = 500000 is out of range: allowed 1 to 100000",
            ),
            (
                "[daemon]\nroutine_threads = 5000\n",
                "[daemon] routine_threads = 5000 is out of range: allowed 1 to 4096",
            ),
            (
                "[daemon]\nmax_flows = 20000\nroutine_threads = 4000\nreclaim_flows = 200\n",
                "routine_threads (4000) + reclaim_flows (200) is more than the 4096 routine threads",
            ),
            (
                "[ssh]\ncommand_timeout_secs = 0\n",
                "[ssh] command_timeout_secs = 0 is out of range: allowed 1 to",
            ),
            (
                "[vm]\nboot_timeout_secs = 18446744073709551615\n",
                "boot_timeout_secs = 18446744073709551615",
            ),
            (
                "[http]\nrefresh_secs = 99999\n",
                "[http] refresh_secs = 99999 is out of range: allowed 0 to 3600 seconds",
            ),
            (
                "[trace]\nmax_rows = 5\n",
                "[trace] max_rows = 5 is out of range: allowed 100 to 100000000",
            ),
        ] {
            std::fs::write(&f, text).expect("write");
            let err = Config::load(Some(&f)).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with(&f.display().to_string()), "{err}");
        }
    }
}
