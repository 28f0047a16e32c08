//! The management node's SSH key pair (`[ssh] identity`): the public half a test image
//! gives root, derived from the private key or made with `ssh-keygen` on the first run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Making or reading the management node's key failed.
#[derive(Debug, thiserror::Error)]
#[error("the management node's key {}: {why}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub why: String,
    /// The key or its folder is there but unusable as it is (open permissions, not a
    /// file): the operator's fix, not something a retry changes.
    pub refused: bool,
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
        why: format!("{why} (or give --key FILE.pub)"),
        refused: false,
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
    keygen(identity).map_err(err)?;
    eprintln!("made the management node's SSH key {}", identity.display());
    Ok(public)
}

/// A new ed25519 pair at `identity` (no passphrase, comment `provhost-management-node`);
/// why not, in ssh-keygen's words.
fn keygen(identity: &Path) -> Result<(), String> {
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
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("ssh-keygen: {e} (apt-get install openssh-client)"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}

/// What [`ensure_private_key`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// A new ed25519 pair was made (private key 0600, its folder 0700).
    Created,
    /// The private key was there with safe permissions; nothing changed.
    Kept,
}

/// Permission bits a private key file or its folder must not have: anything for group or others.
const GROUP_OTHER: u32 = 0o077;

/// The management node's private key at `identity`, made with `ssh-keygen` (ed25519, no
/// passphrase) in a folder created 0700 when it is missing; an existing key is never
/// replaced. Refused (naming the `chmod` that fixes it) when the key or its folder can be
/// read by group or others, since ssh refuses such a key too.
pub fn ensure_private_key(identity: &Path) -> Result<KeyOutcome, KeyError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |why: String| KeyError {
        path: identity.to_path_buf(),
        why,
        refused: false,
    };
    let refuse = |why: String| KeyError {
        path: identity.to_path_buf(),
        why,
        refused: true,
    };
    let dir = identity
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(refuse(format!("{} is not a folder", dir.display()))),
        Ok(m) if m.permissions().mode() & GROUP_OTHER != 0 && identity.is_file() => {
            return Err(refuse(format!(
                "its folder {} is open to group or others (mode {:o}); fix with: chmod 700 {}",
                dir.display(),
                m.permissions().mode() & 0o777,
                dir.display()
            )))
        }
        Ok(_) => {}
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?,
    }
    match std::fs::symlink_metadata(identity) {
        Ok(m) if !m.is_file() => {
            return Err(refuse(
                "exists and is not a regular file; it is left as it is".into(),
            ))
        }
        Ok(m) if m.permissions().mode() & GROUP_OTHER != 0 => {
            return Err(refuse(format!(
                "is open to group or others (mode {:o}); fix with: chmod 600 {}",
                m.permissions().mode() & 0o777,
                identity.display()
            )))
        }
        Ok(_) => return Ok(KeyOutcome::Kept),
        Err(_) => {}
    }
    keygen(identity).map_err(err)?;
    // ssh-keygen writes 0600 already; say so explicitly, whatever its version does.
    std::fs::set_permissions(identity, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    Ok(KeyOutcome::Created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn the_public_key_is_made_with_its_pair_or_derived_from_the_private_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = tmp.path().join("keys").join("id_ed25519");
        let public = node_public_key(&id).expect("a new pair");
        assert!(id.is_file(), "the private key was made");
        let first = std::fs::read_to_string(&public).expect("read .pub");
        assert!(first.starts_with("ssh-ed25519 "), "{first}");
        std::fs::remove_file(&public).expect("rm .pub");
        assert_eq!(node_public_key(&id).expect("derived"), public);
        let derived = std::fs::read_to_string(&public).expect("read .pub");
        assert_eq!(
            derived.split_whitespace().nth(1),
            first.split_whitespace().nth(1),
            "the same key"
        );
    }

    #[test]
    fn a_new_key_is_0600_in_a_0700_folder_and_is_kept_the_second_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = tmp.path().join("ssh").join("id_ed25519");
        assert_eq!(ensure_private_key(&id).expect("make"), KeyOutcome::Created);
        assert_eq!(mode(&id), 0o600);
        assert_eq!(mode(id.parent().expect("dir")), 0o700);
        let before = std::fs::read(&id).expect("read");
        assert_eq!(ensure_private_key(&id).expect("again"), KeyOutcome::Kept);
        assert_eq!(std::fs::read(&id).expect("read"), before, "never replaced");
    }

    #[test]
    fn a_key_readable_by_others_is_refused_naming_the_fix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = tmp.path().join("ssh").join("id_ed25519");
        ensure_private_key(&id).expect("make");
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ensure_private_key(&id).expect_err("open key").to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(
            id.parent().expect("dir"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let e = ensure_private_key(&id)
            .expect_err("open folder")
            .to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }
}
