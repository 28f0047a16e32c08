//! Secrets: password generation (`secret::password(len)`) and redaction.
//!
//! Every secret provhost generates or is told about (`remember`) is replaced by `********`
//! in every log line, in load-log text (`Ctx::loadlog` calls [`redact`]) and in what
//! `provhost call` prints. A secret is matched in every form it takes on its way out: as it
//! is, JSON-escaped (`"` → `\"`, `\` → `\\`), Rust-debug-escaped, and shell-quoted (`'` →
//! `'\''` or `'"'"'`), and those forms escaped again. Secrets shorter than [`MIN_LEN`] are
//! tracked too but only replaced where they stand as a whole word (not inside another word:
//! a 3-letter secret must not blank out every word containing it).
//!
//! Secrets belong to a scope: a reservation (its id) or the process. A reservation's
//! secrets are kept until [`forget_scope`] (its reclaim) and are never evicted; process-wide
//! ones are bounded by [`MAX_TRACKED`], oldest forgotten first. The secrets a routine
//! generates or remembers go to the scope its call installed ([`ScopeGuard`], set by the
//! script host from the call's `ctx`).
//!
//! Matching uses one Aho-Corasick automaton over every form of every secret. It is rebuilt
//! (once, by whichever reader first sees the change) when the set changed and is read
//! through an `ArcSwap`: a log line takes no lock.
//!
//! Log lines are redacted twice: each field value before it is formatted
//! ([`crate::prim::redact_log::RedactingFields`], [`crate::prim::redact_log::RedactingJson`]), then the whole formatted line
//! ([`RedactingWriter`]) as a safety net for text the fields did not carry.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwapOption;
use rhai::{Engine, EvalAltResult, FuncRegistration, Module};

/// Secrets shorter than this are replaced only where they stand as a whole word.
pub const MIN_LEN: usize = 6;
/// How many process-wide secrets are remembered (oldest forgotten first). A reservation's
/// secrets do not count: they are kept until the reservation is reclaimed.
pub const MAX_TRACKED: usize = 10_000;
/// Shortest password [`password`] makes.
pub const MIN_PASSWORD: i64 = 16;
const MASK: &str = "********";
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// Whose secret it is: a reservation's (by `reservation.id`) or the process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Process,
    Reservation(i64),
}

#[derive(Default)]
struct Store {
    global: VecDeque<String>,
    global_set: HashSet<String>,
    scoped: HashMap<i64, HashSet<String>>,
}

struct Matcher {
    generation: u64,
    /// `None` when no secret is tracked.
    ac: Option<AhoCorasick>,
    /// Per pattern: does it only match as a whole word?
    word_only: Vec<bool>,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);
/// Bumped on every change of the set; a matcher of an older generation is rebuilt.
static GENERATION: AtomicU64 = AtomicU64::new(1);
static MATCHER: ArcSwapOption<Matcher> = ArcSwapOption::const_empty();

thread_local! {
    static CURRENT: Cell<Scope> = const { Cell::new(Scope::Process) };
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("password length must be {MIN_PASSWORD} to 128, got {0}")]
    BadLength(i64),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// Installs the scope of the secrets this thread remembers (a routine call's reservation);
/// restores the previous one on drop.
pub struct ScopeGuard {
    previous: Scope,
}

impl ScopeGuard {
    pub fn enter(scope: Scope) -> Self {
        ScopeGuard {
            previous: CURRENT.with(|c| c.replace(scope)),
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// The scope [`remember`] uses on this thread.
pub fn current_scope() -> Scope {
    CURRENT.with(|c| c.get())
}

fn with_store<R>(f: impl FnOnce(&mut Store) -> R) -> R {
    let mut guard = STORE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Store::default))
}

/// Track `secret` in this thread's current scope (see [`ScopeGuard`]).
pub fn remember(secret: &str) {
    remember_in(current_scope(), secret);
}

/// Track `secret` so it never appears in logs, load-log text or `provhost call` output.
pub fn remember_in(scope: Scope, secret: &str) {
    if secret.is_empty() {
        return;
    }
    let changed = with_store(|s| match scope {
        Scope::Reservation(id) => s.scoped.entry(id).or_default().insert(secret.to_string()),
        Scope::Process => {
            if s.global_set.contains(secret) {
                return false;
            }
            if s.global.len() >= MAX_TRACKED {
                if let Some(old) = s.global.pop_front() {
                    s.global_set.remove(&old);
                }
            }
            s.global.push_back(secret.to_string());
            s.global_set.insert(secret.to_string());
            true
        }
    });
    if changed {
        GENERATION.fetch_add(1, Ordering::Release);
    }
}

/// Forget a reservation's secrets (its reclaim: the passwords are gone from the computer).
/// Returns how many were forgotten.
pub fn forget_scope(reservation_id: i64) -> usize {
    let n = with_store(|s| s.scoped.remove(&reservation_id).map_or(0, |set| set.len()));
    if n > 0 {
        GENERATION.fetch_add(1, Ordering::Release);
    }
    n
}

/// How many secrets are tracked: (process-wide, in reservation scopes).
pub fn tracked() -> (usize, usize) {
    with_store(|s| (s.global.len(), s.scoped.values().map(HashSet::len).sum()))
}

/// The forms `secret` takes in output: as is, shell-quoted, and each of those JSON- and
/// debug-escaped.
fn forms(secret: &str) -> Vec<String> {
    let mut base = vec![secret.to_string()];
    if secret.contains('\'') {
        base.push(secret.replace('\'', "'\\''"));
        base.push(secret.replace('\'', "'\"'\"'"));
    }
    let mut out: Vec<String> = Vec::with_capacity(base.len() * 3);
    for b in base {
        let json = serde_json::to_string(&b).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or("")
            .to_string();
        let debug = b.escape_debug().to_string();
        for f in [b, json, debug] {
            if !f.is_empty() && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn build_matcher(generation: u64) -> Matcher {
    let mut patterns: Vec<String> = Vec::new();
    let mut word_only: Vec<bool> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    with_store(|s| {
        let all = s.global.iter().chain(s.scoped.values().flatten());
        for secret in all {
            for f in forms(secret) {
                if seen.insert(f.clone()) {
                    word_only.push(secret.chars().count() < MIN_LEN);
                    patterns.push(f);
                }
            }
        }
    });
    let ac = if patterns.is_empty() {
        None
    } else {
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
        {
            Ok(ac) => Some(ac),
            Err(e) => {
                // Only an automaton too large for memory fails; say so rather than log
                // secrets in clear silently (every line is masked whole instead).
                eprintln!("provhost: secret redaction automaton failed to build: {e}");
                None
            }
        }
    };
    Matcher {
        generation,
        ac,
        word_only,
    }
}

fn matcher() -> Arc<Matcher> {
    let generation = GENERATION.load(Ordering::Acquire);
    if let Some(m) = MATCHER.load_full() {
        if m.generation == generation {
            return m;
        }
    }
    let m = Arc::new(build_matcher(generation));
    MATCHER.store(Some(Arc::clone(&m)));
    m
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `text` with every tracked secret (in any of its forms) replaced by `********`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let m = matcher();
    let Some(ac) = m.ac.as_ref() else {
        return Cow::Borrowed(text);
    };
    let mut out = String::new();
    let mut last = 0;
    for hit in ac.find_iter(text) {
        if m.word_only[hit.pattern().as_usize()] {
            let before = text[..hit.start()].chars().next_back();
            let after = text[hit.end()..].chars().next();
            if is_word_char(before) || is_word_char(after) {
                continue;
            }
        }
        out.push_str(&text[last..hit.start()]);
        out.push_str(MASK);
        last = hit.end();
    }
    if last == 0 && out.is_empty() {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// A random password of `len` characters from an alphabet without look-alikes
/// (no 0/O, 1/l/I), drawn from the OS random source without modulo bias. It is
/// remembered for redaction (in this thread's current scope) before it is returned.
pub fn password(len: i64) -> Result<String, SecretError> {
    password_in(current_scope(), len)
}

/// [`password`], remembered in `scope`. It holds an upper-case letter, a lower-case letter
/// and a digit (Windows' default complexity rule wants three character classes).
pub fn password_in(scope: Scope, len: i64) -> Result<String, SecretError> {
    if !(MIN_PASSWORD..=128).contains(&len) {
        return Err(SecretError::BadLength(len));
    }
    // A draw lacks a class with probability < 0.1; 64 draws all lacking one: < 1e-64.
    for _ in 0..64 {
        let pw = draw(len as usize)?;
        let has = |f: fn(&u8) -> bool| pw.as_bytes().iter().any(f);
        if has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit) {
            remember_in(scope, &pw);
            return Ok(pw);
        }
    }
    Err(SecretError::Random(
        "64 draws without upper case, lower case and digit".into(),
    ))
}

fn draw(len: usize) -> Result<String, SecretError> {
    let mut out = String::with_capacity(len);
    let limit = 256 - (256 % ALPHABET.len());
    let mut buf = [0u8; 64];
    // Each byte is accepted with probability > 0.8, so this ends after a few rounds; the
    // bound only guards a broken random source.
    for _ in 0..1000 {
        getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
        for b in buf {
            if (b as usize) < limit {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
                if out.len() == len {
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
/// it reaches standard error (after the fields were redacted one by one).
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
            "/// A random password of `len` (16-128) characters. It is redacted (`********`) from",
            "/// every log line and load-log entry until the reservation is reclaimed.",
        ])
        .with_params_info(["len: i64", "String"])
        .set_into_module(&mut m, |len: i64| {
            password(len).map_err(|e| Box::<EvalAltResult>::from(e.to_string()))
        });
    FuncRegistration::new("remember")
        .with_comments([
            "/// Treat `value` as a secret of this reservation: redact it from logs and load-log",
            "/// text (also JSON-escaped or shell-quoted) until the reservation is reclaimed.",
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
        // A reservation scope: the 10,001-secret test beside this one evicts process ones.
        let _g = ScopeGuard::enter(Scope::Reservation(-79));
        let a = password(16).expect("pw");
        let b = password(16).expect("pw");
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        for _ in 0..200 {
            let p = password(16).expect("pw");
            assert!(
                p.bytes().any(|c| c.is_ascii_uppercase())
                    && p.bytes().any(|c| c.is_ascii_lowercase())
                    && p.bytes().any(|c| c.is_ascii_digit()),
                "three classes: {p}"
            );
        }
        assert_eq!(
            redact(&format!("echo root:{a} | chpasswd")),
            "echo root:******** | chpasswd"
        );
        assert!(password(12).is_err(), "shorter than {MIN_PASSWORD}");
        assert!(password(129).is_err());
    }

    #[test]
    fn escaped_and_quoted_forms_are_redacted() {
        let s = r#"q"b\s'x-Zy91"#;
        remember_in(Scope::Reservation(-80), s);
        let json = serde_json::to_string(&format!("pw={s}")).expect("json");
        assert_eq!(redact(&json), "\"pw=********\"");
        assert_eq!(redact(&format!("{:?}", s)), "\"********\"");
        let quoted = format!("'{}'", s.replace('\'', "'\\''"));
        assert_eq!(
            redact(&format!("printf %s {quoted}")),
            "printf %s '********'"
        );
        let quoted2 = format!("'{}'", s.replace('\'', "'\"'\"'"));
        assert_eq!(redact(&quoted2), "'********'");
        // The quoted form escaped once more (a command line inside a JSON log field).
        let both = serde_json::to_string(&quoted).expect("json");
        assert_eq!(redact(&both), "\"'********'\"");
    }

    #[test]
    fn short_secrets_are_redacted_as_whole_words_only() {
        remember_in(Scope::Reservation(-81), "k7Q");
        assert_eq!(redact("pin k7Q ok"), "pin ******** ok");
        assert_eq!(redact("pin=k7Q"), "pin=********");
        assert_eq!(redact("xk7Qx"), "xk7Qx", "inside another word it stays");
    }

    #[test]
    fn a_live_reservation_secret_outlives_10001_others_and_goes_at_reclaim() {
        let live = "live-reservation-Pw-4fT9";
        remember_in(Scope::Reservation(-77), live);
        for i in 0..=MAX_TRACKED {
            remember_in(Scope::Process, &format!("filler-secret-{i:05}"));
        }
        let (global, _) = tracked();
        assert!(global <= MAX_TRACKED, "{global}");
        assert_eq!(redact(&format!("pw {live}")), "pw ********");
        assert_eq!(
            redact("filler-secret-00000"),
            "filler-secret-00000",
            "oldest evicted"
        );
        assert_eq!(redact("filler-secret-10000"), "********");
        assert_eq!(forget_scope(-77), 1);
        assert_eq!(redact(&format!("pw {live}")), format!("pw {live}"));
    }

    #[test]
    fn a_routine_scope_routes_its_secrets() {
        let pw = {
            let _g = ScopeGuard::enter(Scope::Reservation(-78));
            assert_eq!(current_scope(), Scope::Reservation(-78));
            password(16).expect("pw")
        };
        assert_eq!(current_scope(), Scope::Process);
        assert_eq!(redact(&pw), "********");
        assert_eq!(forget_scope(-78), 1);
        assert_eq!(redact(&pw), pw);
    }
}
