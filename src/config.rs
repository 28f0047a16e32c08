//! `provhost.toml`: where scripts live, sandbox limits, and (as later parts arrive) the
//! database and SSH settings. Every setting has a default that makes the embedded setup
//! work, so no file is needed to start. Relative paths are taken from the config file's
//! folder (or the current folder when there is no file).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{HostOptions, Limits};
use crate::prim::ssh::SshConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by --config / PROVHOST_CONFIG (or ./provhost.toml) cannot be read.
    /// The OS error is part of the message, not a separate cause, so it shows once.
    #[error("cannot read the configuration file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
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
}

impl Config {
    /// Load `path`, or `./provhost.toml` when it exists, or the defaults. Relative paths in
    /// the result are resolved against the file's folder.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let implicit = PathBuf::from("provhost.toml");
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if implicit.is_file() => Some(implicit),
            None => None,
        };
        let (mut config, base) = match file {
            Some(f) => {
                let text = std::fs::read_to_string(&f).map_err(|cause| ConfigError::Read {
                    path: f.clone(),
                    cause,
                })?;
                let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: f.clone(),
                    message: e.to_string(),
                })?;
                let base = f.parent().map(Path::to_path_buf).unwrap_or_default();
                (config, base)
            }
            None => (Config::default(), PathBuf::new()),
        };
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

    /// Options for the scripting host.
    pub fn host_options(&self) -> HostOptions {
        HostOptions {
            scripts_dir: self.paths.scripts.clone(),
            stdlib_dir: self.paths.stdlib.clone(),
            limits: self.scripts.clone(),
        }
    }
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
}
