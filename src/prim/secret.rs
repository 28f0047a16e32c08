//! Secrets: password generation (`secret::password(len)`) and redaction.
//!
//! Every secret provhost generates or is told about (`remember`) is replaced by `********`
//! in every log line (the log writer goes through [`RedactingWriter`]) and in load-log text
//! (`Ctx::loadlog` calls [`redact`]). Secrets shorter than [`MIN_LEN`] are not tracked: they
//! would blank out ordinary words.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::RwLock;

use rhai::{Engine, EvalAltResult, FuncRegistration, Module};

/// Shortest secret that is tracked for redaction.
pub const MIN_LEN: usize = 6;
/// How many secrets are remembered (oldest forgotten first): bounds memory and scan time.
pub const MAX_TRACKED: usize = 10_000;
const MASK: &str = "********";
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

static SECRETS: RwLock<VecDeque<String>> = RwLock::new(VecDeque::new());

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("password length must be 8 to 128, got {0}")]
    BadLength(i64),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// Track `secret` so it never appears in logs or load-log text.
pub fn remember(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    if let Ok(mut s) = SECRETS.write() {
        if s.iter().any(|x| x == secret) {
            return;
        }
        if s.len() >= MAX_TRACKED {
            s.pop_front();
        }
        s.push_back(secret.to_string());
    }
}

/// `text` with every tracked secret replaced by `********`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(secrets) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

/// A random password of `len` characters from an alphabet without look-alikes
/// (no 0/O, 1/l/I), drawn from the OS random source without modulo bias. It is
/// remembered for redaction before it is returned.
pub fn password(len: i64) -> Result<String, SecretError> {
    if !(8..=128).contains(&len) {
        return Err(SecretError::BadLength(len));
    }
    let mut out = String::with_capacity(len as usize);
    let limit = 256 - (256 % ALPHABET.len());
    let mut buf = [0u8; 64];
    // Each byte is accepted with probability > 0.8, so this ends after a few rounds; the
    // bound only guards a broken random source.
    for _ in 0..1000 {
        getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
        for b in buf {
            if (b as usize) < limit {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
                if out.len() == len as usize {
                    remember(&out);
                    return Ok(out);
                }
            }
        }
    }
    Err(SecretError::Random(
        "no unbiased bytes after 1000 rounds".into(),
    ))
}

/// A `tracing_subscriber` writer that redacts secrets from each formatted log line before
/// it reaches standard error.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter {
    type Writer = RedactingLine;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine(Vec::new())
    }
}

/// One log event's bytes, redacted and written to stderr when dropped.
pub struct RedactingLine(Vec<u8>);

impl Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(redact(&text).as_bytes());
    }
}

pub fn register(engine: &mut Engine) {
    let mut m = Module::new();
    FuncRegistration::new("password")
        .with_comments([
            "/// A random password of `len` (8-128) characters. It is redacted (`********`) from",
            "/// every log line and load-log entry from now on.",
        ])
        .with_params_info(["len: i64", "String"])
        .set_into_module(&mut m, |len: i64| {
            password(len).map_err(|e| Box::<EvalAltResult>::from(e.to_string()))
        });
    FuncRegistration::new("remember")
        .with_comments([
            "/// Treat `value` as a secret: redact it from logs and load-log text from now on.",
        ])
        .with_params_info(["value: &str", "()"])
        .set_into_module(&mut m, |value: &str| remember(value));
    FuncRegistration::new("redact")
        .with_comments(["/// `text` with every known secret replaced by `********`."])
        .with_params_info(["text: &str", "String"])
        .set_into_module(&mut m, |text: &str| redact(text).into_owned());
    engine.register_static_module("secret", m.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_sized_and_redacted() {
        let a = password(16).expect("pw");
        let b = password(16).expect("pw");
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_eq!(
            redact(&format!("echo root:{a} | chpasswd")),
            "echo root:******** | chpasswd"
        );
        assert!(password(4).is_err());
        remember("abc"); // too short to track
        assert_eq!(redact("abc"), "abc");
    }
}
