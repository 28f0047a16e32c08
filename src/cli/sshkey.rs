//! `provhost add user --ssh-key FILE`: reading OpenSSH public keys for `user.sshpublickeys`
//! — each line `TYPE BASE64 [COMMENT]`, the base64 really a key blob of that type — and
//! refusing private keys (and anything else) with the file and line.

use std::path::Path;

use super::exit::Refused;

/// The key types OpenSSH's `authorized_keys` takes.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The largest key file read (an RSA-16384 public key is about 2.8 KB).
const MAX_FILE: u64 = 64 * 1024;
/// The most keys one user gets (`user.sshpublickeys` is a MySQL `text`: 64 KB).
const MAX_KEYS: usize = 100;

/// Read every key of every file, in order, one per line, without comments and blank
/// lines; duplicates are kept once.
pub fn read_keys(files: &[impl AsRef<Path>]) -> Result<String, Refused> {
    let mut keys: Vec<String> = Vec::new();
    for file in files {
        let file = file.as_ref();
        let shown = file.display();
        let meta = std::fs::metadata(file)
            .map_err(|e| Refused(format!("--ssh-key {shown}: cannot read it: {e}")))?;
        if meta.len() > MAX_FILE {
            return Err(Refused(format!(
                "--ssh-key {shown}: {} bytes; a public key file is a few KB (is it the right file?)",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| Refused(format!("--ssh-key {shown}: cannot read it as text: {e}")))?;
        let mut found = false;
        for (n, line) in text.lines().enumerate() {
            if let Some(key) = parse_line(line)
                .map_err(|why| Refused(format!("--ssh-key {shown} line {}: {why}", n + 1)))?
            {
                found = true;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        if !found {
            return Err(Refused(format!(
                "--ssh-key {shown}: no public key in it (expected lines like `ssh-ed25519 AAAA… you@host`, as in ~/.ssh/id_ed25519.pub)"
            )));
        }
    }
    if keys.len() > MAX_KEYS {
        return Err(Refused(format!(
            "{} SSH keys: at most {MAX_KEYS} per user",
            keys.len()
        )));
    }
    Ok(keys.join("\n"))
}

/// One line: `None` for a blank line or a `#` comment, else the key as `TYPE BASE64
/// [COMMENT]` with spaces normalised, or why it is not a public key.
fn parse_line(line: &str) -> Result<Option<String>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    if t.contains("PRIVATE KEY") || t.starts_with("PuTTY-User-Key-File") {
        return Err("this is a PRIVATE key; give the public key (the .pub file beside it, or `ssh-keygen -y -f KEY`), and keep the private key to yourself".into());
    }
    let mut parts = t.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{:?} is not a public key line (TYPE BASE64 [COMMENT], e.g. `ssh-ed25519 AAAA… you@host`)",
            shorten(t)
        ));
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "{:?} is not an SSH key type ({}); authorized_keys options in front of the key are not taken",
            shorten(kind),
            KEY_TYPES.join(", ")
        ));
    }
    let blob = decode_base64(b64)
        .ok_or_else(|| format!("the {kind} key's base64 text does not decode"))?;
    // The blob starts with the key type as an SSH string (4-byte length, then the name).
    let named = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| blob.get(4..4 + len));
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data is not a {kind} key (cut or pasted wrongly?)"
        ));
    }
    let comment: Vec<&str> = parts.collect();
    let mut key = format!("{kind} {b64}");
    if !comment.is_empty() {
        key.push(' ');
        key.push_str(&comment.join(" "));
    }
    if key.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(Some(key))
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Standard base64 with padding (what OpenSSH writes); `None` when it is not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn8m6NqyZ1mWbS7o8h9LPT8bHqN1hJ8pQ1m2d5S1X9a ann@host";

    #[test]
    fn public_keys_pass_and_everything_else_is_named() {
        assert_eq!(parse_line(ED).expect("ok").as_deref(), Some(ED));
        assert_eq!(parse_line("  # a comment").expect("ok"), None);
        let e = parse_line("-----BEGIN OPENSSH PRIVATE KEY-----").expect_err("private");
        assert!(e.contains("PRIVATE key"), "{e}");
        let e = parse_line("ssh-ed25519 AAAA!!!!").expect_err("bad b64");
        assert!(e.contains("does not decode"), "{e}");
        // Valid base64, but the blob says another type.
        let e = parse_line(&ED.replacen("ssh-ed25519", "ssh-rsa", 1)).expect_err("type");
        assert!(e.contains("not a ssh-rsa key"), "{e}");
        let e = parse_line("ssh-foo AAAA").expect_err("type");
        assert!(e.contains("not an SSH key type"), "{e}");
        assert!(parse_line("justoneword").is_err());
    }

    #[test]
    fn a_key_given_twice_is_kept_once_and_a_file_without_keys_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let twice = dir.path().join("twice.pub");
        std::fs::write(&twice, format!("{ED}\n# again:\n{ED}\n")).expect("write");
        let again = dir.path().join("again.pub");
        std::fs::write(&again, format!("{ED}\n")).expect("write");
        assert_eq!(read_keys(&[&twice, &again]).expect("keys"), ED);
        let empty = dir.path().join("empty.pub");
        std::fs::write(&empty, "# nothing here\n\n").expect("write");
        let e = read_keys(&[&twice, &empty]).expect_err("no key").0;
        assert!(e.contains("empty.pub: no public key in it"), "{e}");
    }

    #[test]
    fn base64_decodes_as_openssh_writes_it() {
        assert_eq!(decode_base64("aGVsbG8=").expect("ok"), b"hello");
        assert_eq!(decode_base64("aGk=").expect("ok"), b"hi");
        assert_eq!(decode_base64("YWJj").expect("ok"), b"abc");
        assert!(decode_base64("aGk").is_none());
        assert!(decode_base64("a=Gk").is_none());
    }
}
