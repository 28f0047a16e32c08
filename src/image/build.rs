//! Building the test image into an image library, cached by its recipe.
//!
//! The recipe is the build script's text (`tools/build-test-image.sh`, compiled into the
//! binary), the package list and the root public key; its SHA-256 names the image
//! revision (`provhost-test-<12 hex>`), so a directory of that name in the library *is* the
//! cache hit. A build runs under a file lock (two builders never build twice), in a
//! `.build-*` folder inside the library, and is renamed into place only when complete: an
//! interrupted build never leaves a directory that looks finished, and the next build
//! removes its leftovers (after undoing any mount left under them).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::mirror;

/// The build script, compiled in so the binary builds the image without the source tree.
pub const SCRIPT: &str = include_str!("../../tools/build-test-image.sh");

/// Packages debootstrap adds to minbase.
pub const PACKAGES: &[&str] = &[
    "openssh-server",
    "nftables",
    "sudo",
    "passwd",
    "login",
    "iproute2",
    "kmod",
    "linux-image-cloud-amd64",
    "initramfs-tools",
];

/// The Debian suite the image is built from.
pub const SUITE: &str = "bookworm";

/// Files of a finished image directory (the library layout), besides `SHA256SUMS`.
pub const FILES: &[&str] = &[
    "disk.qcow2",
    "vmlinuz",
    "initrd.img",
    "cmdline",
    "ssh_host_ed25519_key.pub",
    "RECIPE",
];

/// `image.name` of the test image; its revisions' `imagename`s carry the recipe hash.
pub const IMAGE_NAME: &str = "provhost-test";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the test image needs root (debootstrap and chroot); run `provhost image build-test` as root")]
    NotRoot,
    #[error("building the test image needs `{tool}`, which is not installed: apt-get install {package} (or run tools/install-deps.sh)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("public key {}: {source} (give the management node's key with --key FILE.pub)", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("public key {}: not an OpenSSH public key (one line `ssh-ed25519 AAAA…`); give the .pub file, not the private key", path.display())]
    BadKey { path: PathBuf },
    #[error("no Debian mirror for {suite} in this machine's apt sources (read: {read}); give one with --mirror URL")]
    NoMirror { suite: &'static str, read: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another test-image build holds {} and did not finish within {secs} s", path.display())]
    Locked { path: PathBuf, secs: u64 },
    #[error("the test-image build failed ({status}); full log: {}\n--- last lines ---\n{tail}", log.display())]
    Failed {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the test-image build took longer than {secs} s and was stopped; full log: {}", log.display())]
    Timeout { secs: u64, log: PathBuf },
    #[error("{} still has mounts under it ({mounts}); unmount them, then delete the folder", path.display())]
    StillMounted { path: PathBuf, mounts: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The image library; the image becomes `<library>/<imagename>/`.
    pub library: PathBuf,
    /// Public key baked in for root.
    pub pubkey: PathBuf,
    /// debootstrap's package cache, kept between builds.
    pub cache_dir: PathBuf,
    /// Debian mirror; `None` = the one in this machine's apt sources.
    pub mirror: Option<String>,
    /// Longest a build may take (debootstrap from an empty cache is ~80 s here).
    pub timeout: Duration,
}

/// A finished image in the library.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// `<library>/<imagename>`
    pub dir: PathBuf,
    /// The directory name, also `imagerevision.imagename`.
    pub imagename: String,
    /// True when this call built it; false when the library already had it.
    pub built: bool,
    /// Size of `disk.qcow2` in MB (rounded up), for `image.size`.
    pub size_mb: i64,
    /// Seconds this call took.
    pub secs: f64,
}

/// The recipe hash: script text, package list and key (whitespace-trimmed).
pub fn recipe_hash(script: &str, packages: &[&str], pubkey: &str) -> String {
    let mut h = Sha256::new();
    for part in [script, &packages.join(","), pubkey.trim()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `provhost-test-<first 12 hex digits of the recipe hash>`.
pub fn imagename(recipe: &str) -> String {
    format!("{IMAGE_NAME}-{}", &recipe[..12.min(recipe.len())])
}

/// Read and check a public key file.
pub fn read_pubkey(path: &Path) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.trim();
    let ok = line.lines().count() == 1
        && line
            .split_whitespace()
            .next()
            .is_some_and(|t| t.starts_with("ssh-") || t.starts_with("ecdsa-"))
        && line.split_whitespace().count() >= 2;
    if ok {
        Ok(line.to_string())
    } else {
        Err(BuildError::BadKey {
            path: path.to_path_buf(),
        })
    }
}

/// True when `dir` holds every file of a finished image and its RECIPE says `recipe`.
pub fn is_complete(dir: &Path, recipe: &str) -> bool {
    FILES
        .iter()
        .chain(["SHA256SUMS"].iter())
        .all(|f| dir.join(f).is_file())
        && std::fs::read_to_string(dir.join("RECIPE")).is_ok_and(|r| r.trim() == recipe)
}

fn size_mb(dir: &Path) -> Result<i64, BuildError> {
    let p = dir.join("disk.qcow2");
    let bytes = std::fs::metadata(&p).map_err(io("reading", &p))?.len();
    Ok(bytes.div_ceil(1024 * 1024) as i64)
}

fn on_path(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        )
        .any(|d| d.join(tool).is_file())
}

fn check_tools() -> Result<(), BuildError> {
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("mke2fs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("ssh-keygen", "openssh-client"),
        ("chroot", "coreutils"),
        ("bash", "bash"),
    ] {
        if !on_path(tool) {
            return Err(BuildError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut out: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts escapes spaces as \040; our paths have none, so compare as is.
        .filter(|m| m.starts_with(&prefix) || *m == prefix.trim_end_matches('/'))
        .map(str::to_string)
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// Undo every mount under `dir`, then delete it without crossing into any file system
/// that is still mounted there (then it is an error and the folder stays).
pub fn remove_build_dir(dir: &Path) -> Result<(), BuildError> {
    for m in mounts_under(dir) {
        let ok = Command::new("umount")
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        return Err(BuildError::StillMounted {
            path: dir.to_path_buf(),
            mounts: left.join(", "),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", dir)(e)),
    }
}

/// An exclusive `flock` on a file, released on drop.
struct Lock(std::fs::File);

impl Lock {
    fn take(path: &Path, wait: Duration) -> Result<Lock, BuildError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io("opening the lock file", path))?;
        let end = Instant::now() + wait;
        // Bounded by `wait`; a builder holding the lock is itself bounded by its timeout.
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(f));
            }
            if Instant::now() >= end {
                return Err(BuildError::Locked {
                    path: path.to_path_buf(),
                    secs: wait.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking our own descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The test image in `opts.library`: found (recipe unchanged) or built now. `progress` gets
/// each build step's name as it begins.
pub fn build_test_image(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, BuildError> {
    let start = Instant::now();
    let key = read_pubkey(&opts.pubkey)?;
    let recipe = recipe_hash(SCRIPT, PACKAGES, &key);
    let name = imagename(&recipe);
    let dir = opts.library.join(&name);
    let done = |built: bool| -> Result<Built, BuildError> {
        Ok(Built {
            dir: dir.clone(),
            imagename: name.clone(),
            built,
            size_mb: size_mb(&dir)?,
            secs: start.elapsed().as_secs_f64(),
        })
    };
    // The common case, and no root needed for it.
    if is_complete(&dir, &recipe) {
        return done(false);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BuildError::NotRoot);
    }
    check_tools()?;
    std::fs::create_dir_all(&opts.library)
        .map_err(io("creating the image library", &opts.library))?;
    let _lock = Lock::take(
        &opts.library.join(format!(".{IMAGE_NAME}.lock")),
        opts.timeout + Duration::from_secs(60),
    )?;
    // Another builder may have finished while we waited.
    if is_complete(&dir, &recipe) {
        return done(false);
    }
    let mirror = match &opts.mirror {
        Some(m) => m.clone(),
        None => {
            mirror::find(Path::new("/etc/apt"), SUITE).map_err(|read| BuildError::NoMirror {
                suite: SUITE,
                read: if read.is_empty() {
                    "no files".into()
                } else {
                    read.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?
        }
    };
    // Leftovers of builds that were killed (we hold the lock, so none is running).
    if let Ok(entries) = std::fs::read_dir(&opts.library) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".build-") {
                remove_build_dir(&e.path())?;
            }
        }
    }
    // An incomplete directory under the final name (a file deleted by hand): rebuild it.
    if dir.exists() {
        remove_build_dir(&dir)?;
    }
    std::fs::create_dir_all(&opts.cache_dir)
        .map_err(io("creating the package cache", &opts.cache_dir))?;
    let cache = opts
        .cache_dir
        .canonicalize()
        .map_err(io("resolving the package cache", &opts.cache_dir))?;
    let work = opts
        .library
        .canonicalize()
        .map_err(io("resolving the image library", &opts.library))?
        .join(format!(".build-{name}-{}", std::process::id()));
    std::fs::create_dir(&work).map_err(io("creating the build folder", &work))?;
    let result = run_script(
        &work,
        &mirror,
        &opts.pubkey,
        &cache,
        &recipe,
        opts.timeout,
        progress,
    )
    .and_then(|()| {
        let out = work.join("image");
        std::fs::rename(&out, &dir).map_err(io("moving the finished image to", &dir))
    });
    if let Err(e) = result {
        // Keep the log beside the library for the operator, then drop the half-made build.
        let kept = opts.library.join(format!(".{name}.failed.log"));
        let _ = std::fs::copy(work.join("build.log"), &kept);
        let _ = remove_build_dir(&work);
        return Err(match e {
            BuildError::Failed { status, tail, .. } => BuildError::Failed {
                status,
                log: kept,
                tail,
            },
            BuildError::Timeout { secs, .. } => BuildError::Timeout { secs, log: kept },
            other => other,
        });
    }
    remove_build_dir(&work)?;
    done(true)
}

/// Run the build script in `work`, its output into `work/build.log`, its `==> ` lines to
/// `progress`; killed (process group, TERM then KILL) when `timeout` passes.
fn run_script(
    work: &Path,
    mirror: &str,
    pubkey: &Path,
    cache: &Path,
    recipe: &str,
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let script = work.join("build-test-image.sh");
    std::fs::write(&script, SCRIPT).map_err(io("writing", &script))?;
    let log_path = work.join("build.log");
    let mut log = std::fs::File::create(&log_path).map_err(io("creating", &log_path))?;
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(work)
        .arg(mirror)
        .arg(pubkey)
        .arg(cache)
        .arg(PACKAGES.join(","))
        .arg(recipe)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(io("starting", &script))?;
    let pgid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let end = Instant::now() + timeout;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let mut record = |line: String, log: &mut std::fs::File| {
        let _ = writeln!(log, "{line}");
        if let Some(step) = line.strip_prefix("==> ") {
            progress(step);
        }
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                record(line, &mut log);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(st) = child.try_wait().map_err(io("waiting for", &script))? {
            break st;
        }
        if Instant::now() >= end {
            // SAFETY: signalling the process group we created; the script's trap unmounts.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let grace = Instant::now() + Duration::from_secs(10);
            while Instant::now() < grace {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // SAFETY: as above; ESRCH when the group is gone is fine.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            return Err(BuildError::Timeout {
                secs: timeout.as_secs(),
                log: log_path,
            });
        }
    };
    // Whatever is still buffered (the readers end at EOF; a stray background job holding
    // the pipe open only delays this by the bound below).
    let drain_end = Instant::now() + Duration::from_secs(2);
    while let Ok(line) = rx.recv_timeout(drain_end.saturating_duration_since(Instant::now())) {
        record(line, &mut log);
    }
    drop(readers);
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            status: status.to_string(),
            log: log_path,
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_changes_with_script_packages_and_key_only() {
        let a = recipe_hash("s", &["a", "b"], "ssh-ed25519 AAAA k");
        assert_eq!(a, recipe_hash("s", &["a", "b"], "ssh-ed25519 AAAA k\n"));
        assert_ne!(a, recipe_hash("s2", &["a", "b"], "ssh-ed25519 AAAA k"));
        assert_ne!(a, recipe_hash("s", &["a", "c"], "ssh-ed25519 AAAA k"));
        assert_ne!(a, recipe_hash("s", &["a", "b"], "ssh-ed25519 BBBB k"));
        // Parts are length-prefixed: moving text between parts changes the hash.
        assert_ne!(
            recipe_hash("ab", &["c"], "k"),
            recipe_hash("a", &["bc"], "k")
        );
        assert_eq!(imagename(&a), format!("provhost-test-{}", &a[..12]));
    }

    #[test]
    fn keys_are_checked_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("id.pub");
        std::fs::write(&good, "ssh-ed25519 AAAAC3Nza test\n").expect("write");
        assert_eq!(
            read_pubkey(&good).expect("good key"),
            "ssh-ed25519 AAAAC3Nza test"
        );
        let private = dir.path().join("id");
        std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n").expect("write");
        let e = read_pubkey(&private).expect_err("private key").to_string();
        assert!(e.contains("id") && e.contains(".pub"), "{e}");
        let e = read_pubkey(&dir.path().join("none.pub"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("none.pub") && e.contains("--key"), "{e}");
    }

    #[test]
    fn an_incomplete_directory_is_not_a_cache_hit() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in FILES.iter().chain(["SHA256SUMS"].iter()) {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        assert!(!is_complete(dir.path(), "abc"), "RECIPE says x");
        std::fs::write(dir.path().join("RECIPE"), "abc\n").expect("write");
        assert!(is_complete(dir.path(), "abc"));
        std::fs::remove_file(dir.path().join("initrd.img")).expect("rm");
        assert!(!is_complete(dir.path(), "abc"));
    }

    #[test]
    fn removing_a_build_dir_without_mounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = dir.path().join(".build-x");
        std::fs::create_dir_all(b.join("root/etc")).expect("mkdir");
        std::fs::write(b.join("root/etc/hostname"), "x").expect("write");
        remove_build_dir(&b).expect("removed");
        assert!(!b.exists());
        remove_build_dir(&b).expect("a missing folder is fine");
    }
}
