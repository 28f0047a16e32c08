//! The test image for tests that boot VMs: built once per machine (not per test run) into
//! `PROVHOST_TESTIMAGE_DIR` (default `/var/cache/provhost/testimage`) with provhost's own
//! builder, with a root key pair `id_ed25519`/`id_ed25519.pub` of that folder baked in.
//! The builder's file lock makes parallel test binaries wait for one build instead of
//! building twice; a later run finds the image by its recipe hash in milliseconds.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use provhost::image::build::{build_test_image, BuildOptions};

pub const DEFAULT_DIR: &str = "/var/cache/provhost/testimage";

#[derive(Debug, Clone)]
pub struct TestImage {
    /// The library folder (`PROVHOST_TESTIMAGE_DIR`).
    pub library: PathBuf,
    /// `<library>/<imagename>`: disk.qcow2, vmlinuz, initrd.img, cmdline, host key .pub.
    pub dir: PathBuf,
    /// `imagerevision.imagename` of the image.
    pub imagename: String,
    /// Private key whose .pub is root's authorized key in the image.
    pub key: PathBuf,
}

impl TestImage {
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    /// The kernel command line without network arguments.
    pub fn cmdline(&self) -> String {
        std::fs::read_to_string(self.dir.join("cmdline"))
            .expect("image cmdline")
            .trim()
            .to_string()
    }
    /// `ssh-ed25519 AAAA…` of the guest's fixed host key.
    pub fn host_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("ssh_host_ed25519_key.pub"))
            .expect("image host key");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn library() -> PathBuf {
    std::env::var_os("PROVHOST_TESTIMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The root key pair, made once under a lock (parallel binaries make it once).
fn ensure_key(lib: &std::path::Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(lib).expect("create the test image folder");
    let key = lib.join("id_ed25519");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lib.join(".key.lock"))
        .expect("key lock file");
    // SAFETY: flock on our own descriptor; released when `lock` is closed.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    if !key.is_file() || !lib.join("id_ed25519.pub").is_file() {
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(lib.join("id_ed25519.pub"));
        let st = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "provhost-testimage",
                "-f",
            ])
            .arg(&key)
            .status()
            .expect("ssh-keygen (apt-get install openssh-client)");
        assert!(st.success(), "ssh-keygen for the test image key failed");
    }
    drop(lock);
    key
}

/// The test image, built on first use on this machine. Needs root the first time.
pub fn ensure() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let lib = library();
            let key = ensure_key(&lib);
            let opts = BuildOptions {
                library: lib.clone(),
                pubkey: lib.join("id_ed25519.pub"),
                cache_dir: PathBuf::from(provhost::image::DEFAULT_BUILD_CACHE),
                mirror: None,
                timeout: Duration::from_secs(1200),
            };
            let built = build_test_image(&opts, &mut |step| eprintln!("test image: {step}"))
                .unwrap_or_else(|e| panic!("building the test image failed: {e}"));
            if built.built {
                eprintln!(
                    "test image {} built in {:.1} s ({} MB)",
                    built.imagename, built.secs, built.size_mb
                );
            }
            TestImage {
                library: lib,
                dir: built.dir,
                imagename: built.imagename,
                key,
            }
        })
        .clone()
}
