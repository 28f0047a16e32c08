//! The known_hosts file provhost manages: check a session's host key under a
//! [`HostKeyPolicy`], record new keys (accept-new), add keys by hand ([`add_line`]), pin the
//! key a module knows ([`pin`], `h.trust_host_key(pubkey)`) and forget a host's keys when it
//! is reinstalled ([`forget`]).
//!
//! A pinned host (its lines carry the comment [`PINNED`]) is checked strictly whatever the
//! policy: a key that is not the pinned one — another key of the same type, or a key of a
//! type the pin does not name — is refused. A check that fails (libssh2 `Failure`) refuses
//! too: it is never taken for "not found".
//!
//! Every read-modify-write of the file holds an exclusive `flock` on `FILE.lock`, so the
//! daemon and `provhost call` (or two daemons' connects) never lose each other's entries;
//! the new content goes to a temporary file renamed over the old one, so a crash never
//! leaves a half-written file.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh2::{CheckResult, HostKeyType, KnownHostFileKind, Session};

use super::{HostKeyPolicy, SshError};

/// The comment on the lines of a pinned host.
pub const PINNED: &str = "provhost-pinned";
/// How long a writer waits for another process's lock on the file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// An exclusive `flock` on `FILE.lock`, released on drop (closing the descriptor).
struct FileLock(#[allow(dead_code)] std::fs::File);

fn lock(path: &Path) -> Result<FileLock, SshError> {
    ensure_dir(path)?;
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| kh_err(&lock_path, e))?;
    let started = Instant::now();
    // Bounded: a holder keeps the lock for one read-modify-write (milliseconds).
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(FileLock(file));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(kh_err(&lock_path, format!("lock: {err}")));
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(kh_err(
                &lock_path,
                format!(
                    "another process has held the lock for {} s; is one stuck?",
                    LOCK_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How a host appears in known_hosts: `host` for port 22, `[host]:port` otherwise.
pub fn entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn kh_err(path: &Path, detail: impl std::fmt::Display) -> SshError {
    SshError::KnownHosts {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The OpenSSH name of a host key type.
fn type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// Standard base64 with padding (the key blob of a known_hosts line).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The key types pinned for `entry` in `lines` (empty: not pinned).
fn pinned_types(lines: &[String], entry: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| names(l, entry) && l.split_whitespace().nth(3) == Some(PINNED))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// The key types pinned for `host:port` in `path` (empty when it is not pinned): the
/// connect offers only those host key algorithms.
pub fn pinned(path: &Path, host: &str, port: u16) -> Vec<String> {
    read_lines(path)
        .map(|l| pinned_types(&l, &entry_name(host, port)))
        .unwrap_or_default()
}

/// Check the session's host key against `path`; record it when unknown and the policy is
/// accept-new and the host is not pinned.
pub fn verify(
    sess: &Session,
    path: &Path,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
    target: &str,
) -> Result<(), SshError> {
    let (key, key_type) = sess.host_key().ok_or_else(|| SshError::Handshake {
        target: target.to_string(),
        detail: "server sent no host key".into(),
    })?;
    let _lock = lock(path)?;
    let mut kh = sess.known_hosts().map_err(|e| kh_err(path, e))?;
    if path.exists() {
        kh.read_file(path, KnownHostFileKind::OpenSSH)
            .map_err(|e| kh_err(path, format!("unreadable: {e}")))?;
    }
    let entry = entry_name(host, port);
    let lines = read_lines(path)?;
    let pins = pinned_types(&lines, &entry);
    let offered = type_name(key_type);
    let result = kh.check_port(host, port, key);
    if !pins.is_empty() && !matches!(result, CheckResult::Match) {
        return Err(SshError::PinnedKeyMismatch {
            target: target.to_string(),
            detail: format!(
                "in {} (it offered {offered}, pinned: {})",
                path.display(),
                pins.join(", ")
            ),
        });
    }
    match result {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::HostKeyChanged {
            target: target.to_string(),
            known_hosts: path.to_path_buf(),
        }),
        CheckResult::Failure => Err(kh_err(
            path,
            format!("checking the host key of {target} failed; refusing to connect (fix or remove the file)"),
        )),
        CheckResult::NotFound => match policy {
            HostKeyPolicy::Strict => Err(SshError::UnknownHostKey {
                target: target.to_string(),
                known_hosts: path.to_path_buf(),
            }),
            HostKeyPolicy::AcceptNew => {
                let mut lines = lines;
                lines.push(format!(
                    "{entry} {offered} {} added-by-provhost-accept-new",
                    base64(key)
                ));
                rewrite(path, &lines)?;
                tracing::info!(host, port, file = %path.display(), "recorded new host key");
                Ok(())
            }
        },
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".provhost-tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn ensure_dir(path: &Path) -> Result<(), SshError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| kh_err(dir, e)),
        None => Ok(()),
    }
}

/// Replace the file with `lines` (atomically).
fn rewrite(path: &Path, lines: &[String]) -> Result<(), SshError> {
    ensure_dir(path)?;
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| kh_err(&tmp, e))?;
    for l in lines {
        writeln!(f, "{l}").map_err(|e| kh_err(&tmp, e))?;
    }
    f.sync_all().map_err(|e| kh_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| kh_err(path, e))
}

fn read_lines(path: &Path) -> Result<Vec<String>, SshError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(kh_err(path, e)),
    }
}

/// Does this known_hosts line name `entry` (plain, comma-separated host list)?
fn names(line: &str, entry: &str) -> bool {
    let line = line.trim_start();
    if line.starts_with('#') {
        return false;
    }
    let hosts = line.split_whitespace().next().unwrap_or("");
    hosts.split(',').any(|h| h == entry)
}

/// Remove every key recorded for `host:port` (e.g. before reinstalling a computer).
/// Returns how many lines were removed.
pub fn forget(path: &Path, host: &str, port: u16) -> Result<usize, SshError> {
    let _lock = lock(path)?;
    let entry = entry_name(host, port);
    let lines = read_lines(path)?;
    let kept: Vec<String> = lines
        .iter()
        .filter(|l| !names(l, &entry))
        .cloned()
        .collect();
    let removed = lines.len() - kept.len();
    if removed > 0 {
        rewrite(path, &kept)?;
        tracing::info!(host, port, removed, file = %path.display(), "forgot host key");
    }
    Ok(removed)
}

/// Trust `public_key` (`"ssh-ed25519 AAAA… [comment]"`, as in a `.pub` file or
/// `ssh-keyscan` output without the host) for `host:port`, replacing older keys of that host
/// with the same key type.
pub fn add_line(path: &Path, host: &str, port: u16, public_key: &str) -> Result<(), SshError> {
    let mut parts = public_key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(kh_err(
            path,
            "public key must look like \"ssh-ed25519 AAAA…\"",
        ));
    };
    let _lock = lock(path)?;
    let entry = entry_name(host, port);
    let mut lines: Vec<String> = read_lines(path)?
        .into_iter()
        .filter(|l| !(names(l, &entry) && l.split_whitespace().nth(1) == Some(kind)))
        .collect();
    lines.push(format!("{entry} {kind} {blob}"));
    rewrite(path, &lines)
}

/// Pin `public_key` (`"ssh-ed25519 AAAA… [comment]"`, e.g. the one an image build made)
/// for `host:port`: every other key recorded for it is removed, and from now on only this
/// key is accepted, whatever the policy (see the module docs). Pinning again replaces it.
pub fn pin(path: &Path, host: &str, port: u16, public_key: &str) -> Result<(), SshError> {
    let mut parts = public_key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(kh_err(
            path,
            "public key to pin must look like \"ssh-ed25519 AAAA…\" (a .pub file's line)",
        ));
    };
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ];
    if !known.contains(&kind)
        || blob.len() < 16
        || !blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err(kh_err(
            path,
            format!(
                "public key to pin: {kind:?} with a base64 key expected (one of {})",
                known.join(", ")
            ),
        ));
    }
    let _lock = lock(path)?;
    let entry = entry_name(host, port);
    let mut lines: Vec<String> = read_lines(path)?
        .into_iter()
        .filter(|l| !names(l, &entry))
        .collect();
    lines.push(format!("{entry} {kind} {blob} {PINNED}"));
    rewrite(path, &lines)?;
    tracing::info!(host, port, key_type = kind, file = %path.display(), "pinned host key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_line_replaces_same_type_and_forget_removes_only_that_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/known_hosts");
        add_line(&p, "10.0.0.5", 22, "ssh-ed25519 AAAAold comment").expect("add");
        add_line(&p, "10.0.0.5", 22, "ssh-ed25519 AAAAnew").expect("replace");
        add_line(&p, "10.0.0.5", 2222, "ssh-ed25519 AAAAport").expect("other port");
        add_line(&p, "10.0.0.6", 22, "ssh-rsa AAAArsa").expect("other host");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(
            text,
            "10.0.0.5 ssh-ed25519 AAAAnew\n[10.0.0.5]:2222 ssh-ed25519 AAAAport\n10.0.0.6 ssh-rsa AAAArsa\n"
        );
        assert_eq!(forget(&p, "10.0.0.5", 22).expect("forget"), 1);
        assert_eq!(forget(&p, "10.0.0.5", 22).expect("again"), 0);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            !text.contains("AAAAnew") && text.contains("AAAAport") && text.contains("AAAArsa"),
            "{text}"
        );
        assert!(add_line(&p, "h", 22, "garbage").is_err());
    }

    #[test]
    fn pin_replaces_every_key_of_the_host_and_marks_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("known_hosts");
        add_line(&p, "10.0.0.5", 22, "ssh-ed25519 AAAAold").expect("add");
        add_line(&p, "10.0.0.5", 22, "ssh-rsa AAAArsaold").expect("add rsa");
        add_line(&p, "10.0.0.6", 22, "ssh-rsa AAAAother").expect("other host");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedPinnedPinned image-build";
        pin(&p, "10.0.0.5", 22, key).expect("pin");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(
            text,
            format!("10.0.0.6 ssh-rsa AAAAother\n10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedPinnedPinned {PINNED}\n")
        );
        assert_eq!(pinned(&p, "10.0.0.5", 22), vec!["ssh-ed25519".to_string()]);
        assert!(pinned(&p, "10.0.0.6", 22).is_empty());
        let err = pin(&p, "h", 22, "ssh-ed25519 not;base64!").expect_err("bad key");
        assert!(err.to_string().contains("public key to pin"), "{err}");
        assert!(pin(&p, "h", 22, "just-one-word").is_err());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\xff"), "Zm9vYmFy/w==");
    }

    /// The child half of the test below (does nothing unless started by it).
    #[test]
    fn known_hosts_writer_child() {
        let Ok(spec) = std::env::var("PROVHOST_KH_CHILD") else {
            return;
        };
        let (path, prefix) = spec.split_once('|').expect("path|prefix");
        for i in 0..40 {
            add_line(
                Path::new(path),
                &format!("{prefix}-{i}"),
                22,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConcurrent",
            )
            .expect("add_line in child");
        }
    }

    #[test]
    fn processes_writing_concurrently_lose_no_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("known_hosts");
        let exe = std::env::current_exe().expect("test binary");
        let children: Vec<std::process::Child> = (0..4)
            .map(|n| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "prim::ssh::known_hosts::tests::known_hosts_writer_child",
                        "--test-threads=1",
                    ])
                    .env("PROVHOST_KH_CHILD", format!("{}|p{n}", p.display()))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("wait").success(), "a child failed");
        }
        let lines = read_lines(&p).expect("read");
        assert_eq!(lines.len(), 160, "every process's every entry is there");
        for n in 0..4 {
            for i in 0..40 {
                let entry = format!("p{n}-{i}");
                assert!(lines.iter().any(|l| names(l, &entry)), "{entry} lost");
            }
        }
    }
}
