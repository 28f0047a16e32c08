//! The image library on a management node: one directory per image revision, named by
//! `imagerevision.imagename`, holding `disk.qcow2`, `vmlinuz`, `initrd.img`, `cmdline`,
//! `ssh_host_ed25519_key.pub` and `SHA256SUMS` (see docs/test-image.md). [`build`] makes
//! provhost's own test image there, cached by its recipe; [`mirror`] finds the Debian
//! mirror this machine uses; [`key`] the management node's SSH key that the image gives
//! root. `provhost image …` (the binary's `cli/image.rs`) also records the image in the
//! database (`image` + `imagerevision`, through `db::image`).

pub mod build;
pub mod key;
pub mod mirror;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[images]` in provhost.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// The image library (default, also when empty: `<data_dir>/images`).
    pub library: Option<PathBuf>,
    /// debootstrap's package cache for `image build-test`, kept between builds (default:
    /// `/var/cache/provhost/debootstrap`; also when empty).
    pub build_cache: Option<PathBuf>,
}

/// Where debootstrap keeps its packages unless `[images] build_cache` says otherwise.
pub const DEFAULT_BUILD_CACHE: &str = "/var/cache/provhost/debootstrap";

impl ImagesConfig {
    /// The library folder, given the data folder.
    pub fn library(&self, data_dir: &Path) -> PathBuf {
        self.library
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| data_dir.join("images"))
    }

    /// debootstrap's package cache.
    pub fn build_cache(&self) -> PathBuf {
        self.build_cache
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BUILD_CACHE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_mean_the_defaults() {
        let c: ImagesConfig = toml::from_str("library = \"\"\nbuild_cache = \"\"\n").expect("toml");
        assert_eq!(c.library(Path::new("/d")), PathBuf::from("/d/images"));
        assert_eq!(c.build_cache(), PathBuf::from(DEFAULT_BUILD_CACHE));
        let c: ImagesConfig = toml::from_str("library = \"/srv/img\"\n").expect("toml");
        assert_eq!(c.library(Path::new("/d")), PathBuf::from("/srv/img"));
    }
}
