//! The known_hosts file provhost manages: check a session's host key under a
//! [`HostKeyPolicy`], record new keys (accept-new), add keys by hand ([`add_line`]) and
//! forget a host's keys when it is reinstalled ([`forget`]).
//!
//! Updates go to a temporary file that is renamed over the old one, under a process-wide
//! lock, so concurrent connects never lose each other's entries and a crash never leaves a
//! half-written file. One provhost daemon owns the file; other processes should not write it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ssh2::{CheckResult, KnownHostFileKind, Session};

use super::{HostKeyPolicy, SshError};

static LOCK: Mutex<()> = Mutex::new(());

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

/// Check the session's host key against `path`; record it when unknown and the policy is
/// accept-new.
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
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut kh = sess.known_hosts().map_err(|e| kh_err(path, e))?;
    if path.exists() {
        kh.read_file(path, KnownHostFileKind::OpenSSH)
            .map_err(|e| kh_err(path, format!("unreadable: {e}")))?;
    }
    match kh.check_port(host, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::HostKeyChanged {
            target: target.to_string(),
            known_hosts: path.to_path_buf(),
        }),
        CheckResult::NotFound | CheckResult::Failure => match policy {
            HostKeyPolicy::Strict => Err(SshError::UnknownHostKey {
                target: target.to_string(),
                known_hosts: path.to_path_buf(),
            }),
            HostKeyPolicy::AcceptNew => {
                kh.add(
                    &entry_name(host, port),
                    key,
                    "added by provhost (accept-new)",
                    key_type.into(),
                )
                .map_err(|e| kh_err(path, e))?;
                let tmp = temp_path(path);
                ensure_dir(path)?;
                kh.write_file(&tmp, KnownHostFileKind::OpenSSH)
                    .map_err(|e| kh_err(&tmp, e))?;
                std::fs::rename(&tmp, path).map_err(|e| kh_err(path, e))?;
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
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
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
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let entry = entry_name(host, port);
    let mut lines: Vec<String> = read_lines(path)?
        .into_iter()
        .filter(|l| !(names(l, &entry) && l.split_whitespace().nth(1) == Some(kind)))
        .collect();
    lines.push(format!("{entry} {kind} {blob}"));
    rewrite(path, &lines)
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
}
