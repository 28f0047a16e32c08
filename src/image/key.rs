//! The management node's SSH key pair (`[ssh] identity`): the public half a test image
//! gives root, derived from the private key or made with `ssh-keygen` on the first run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Making or reading the management node's key failed.
#[derive(Debug, thiserror::Error)]
#[error("making the management node's key {}: {why} (or give --key FILE.pub)", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub why: String,
}

/// `<identity>.pub`, derived from the private key when only that exists, or a new ed25519
/// pair when neither does (the embedded setup's first run).
pub fn node_public_key(identity: &Path) -> Result<PathBuf, KeyError> {
    let public = PathBuf::from(format!("{}.pub", identity.display()));
    if public.is_file() {
        return Ok(public);
    }
    let err = |why: String| KeyError {
        path: identity.to_path_buf(),
        why,
    };
    if identity.is_file() {
        let out = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(identity)
            .output()
            .map_err(|e| err(format!("ssh-keygen: {e}")))?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        std::fs::write(&public, &out.stdout).map_err(|e| err(e.to_string()))?;
        return Ok(public);
    }
    if let Some(dir) = identity.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    }
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "provhost-management-node",
            "-f",
        ])
        .arg(identity)
        .output()
        .map_err(|e| err(format!("ssh-keygen: {e} (apt-get install openssh-client)")))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    eprintln!("made the management node's SSH key {}", identity.display());
    Ok(public)
}
