//! The recording fake host's memory for one test: the commands a test expects (a pattern →
//! a canned answer), every command and copy the module made, the load-log entries and
//! per-computer variables it wrote (it is the fixtures' [`CtxBackend`]), and a virtual
//! clock that `wait::sleep` advances instead of sleeping. Reset before each test.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use rhai::{Array, Dynamic, Map};

use crate::host::ctx::{CtxBackend, ReservationData};

/// Most commands one test may make (a module looping on a canned answer stops here).
pub const MAX_CALLS: usize = 10_000;
/// Most expectations one test may declare.
pub const MAX_EXPECTATIONS: usize = 1_000;

/// A command pattern: a glob over the whole command (`*` any text, `?` one character), or
/// a regular expression between slashes (`/^qemu-img create .* 20G$/`) that may match
/// anywhere in it.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    re: regex::Regex,
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let re = if p.len() >= 2 && p.starts_with('/') && p.ends_with('/') {
            regex::Regex::new(&p[1..p.len() - 1])
                .map_err(|e| format!("pattern {p:?} is not a valid regular expression: {e}"))?
        } else {
            let mut r = String::from("(?s)^");
            for c in p.chars() {
                match c {
                    '*' => r.push_str(".*"),
                    '?' => r.push('.'),
                    c => r.push_str(&regex::escape(&c.to_string())),
                }
            }
            r.push('$');
            regex::Regex::new(&r).map_err(|e| format!("pattern {p:?}: {e}"))?
        };
        Ok(Pattern {
            text: p.to_string(),
            re,
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What a matched command answers.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
    /// The value a primitive other than `run` returns (`vm::status` → `"running"`).
    pub returns: Option<Dynamic>,
    /// The primitive fails with this text instead (the host unreachable, a copy failing).
    pub error: Option<String>,
}

/// One declared command.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub pattern: Pattern,
    /// Only on this host (`computer`, `vmhost`, `local` or a `remote_host` name).
    pub on: Option<String>,
    /// Answers at most this many times (then the next matching expectation answers).
    pub times: Option<u64>,
    pub used: u64,
    pub reply: Reply,
}

/// One command or primitive call the module made.
#[derive(Debug, Clone)]
pub struct Call {
    /// `computer`, `vmhost`, `local`, a `remote_host` name.
    pub host: String,
    /// The command (`run`), or the primitive and its main arguments (`vm::status /dir`,
    /// `upload /local /remote`).
    pub text: String,
    /// What `run` wrote to the command's stdin, if anything.
    pub stdin: Option<String>,
    /// The primitive's arguments after the host, as given.
    pub args: Array,
    /// Whether an expectation answered it, or it needed none.
    pub expected: bool,
}

#[derive(Debug, Default)]
struct State {
    expectations: Vec<Expectation>,
    calls: Vec<Call>,
    loadlog: Vec<(String, String)>,
    vars: BTreeMap<String, String>,
    image_size: Option<i64>,
    clock: f64,
}

/// The recorder one test run shares between its fake primitives and its fixtures.
#[derive(Debug, Default)]
pub struct Recorder {
    state: Mutex<State>,
}

/// How a call was answered.
pub enum Answer {
    Reply(Reply),
    /// No expectation matched.
    Unexpected,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget everything (before each test).
    pub fn reset(&self) {
        *self.lock() = State::default();
    }

    pub fn expect(&self, e: Expectation) -> Result<(), String> {
        let mut s = self.lock();
        if s.expectations.len() >= MAX_EXPECTATIONS {
            return Err(format!("over {MAX_EXPECTATIONS} expectations in one test"));
        }
        s.expectations.push(e);
        Ok(())
    }

    /// Record a call and find its answer: the first expectation, in the order declared,
    /// that matches its text (and host, when it names one) and has answers left.
    /// `optional`: the primitive has a default answer, so no expectation is needed.
    pub fn call(
        &self,
        host: &str,
        text: &str,
        stdin: Option<String>,
        args: Array,
        optional: bool,
    ) -> Result<Answer, String> {
        let mut s = self.lock();
        if s.calls.len() >= MAX_CALLS {
            return Err(format!(
                "over {MAX_CALLS} commands in one test (a loop on a canned answer?); last: {text}"
            ));
        }
        let found = s.expectations.iter_mut().find(|e| {
            e.on.as_deref().is_none_or(|h| h == host)
                && e.times.is_none_or(|t| e.used < t)
                && e.pattern.matches(text)
        });
        let answer = match found {
            Some(e) => {
                e.used += 1;
                Answer::Reply(e.reply.clone())
            }
            None => Answer::Unexpected,
        };
        s.calls.push(Call {
            host: host.to_string(),
            text: text.to_string(),
            stdin,
            args,
            expected: optional || matches!(answer, Answer::Reply(_)),
        });
        Ok(answer)
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls no expectation answered (each also ended the primitive with an error, which
    /// the module may have caught).
    pub fn unexpected(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| !c.expected)
            .cloned()
            .collect()
    }

    /// Expectations that were never used, with their pattern.
    pub fn unused(&self) -> Vec<String> {
        self.lock()
            .expectations
            .iter()
            .filter(|e| e.used == 0)
            .map(|e| e.pattern.as_str().to_string())
            .collect()
    }

    pub fn loadlog(&self) -> Vec<(String, String)> {
        self.lock().loadlog.clone()
    }

    pub fn var(&self, name: &str) -> Option<String> {
        self.lock().vars.get(name).cloned()
    }

    pub fn set_var(&self, name: &str, value: &str) {
        self.lock().vars.insert(name.to_string(), value.to_string());
    }

    pub fn vars(&self) -> Map {
        self.lock()
            .vars
            .iter()
            .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
            .collect()
    }

    pub fn image_size(&self) -> Option<i64> {
        self.lock().image_size
    }

    /// Seconds the test's waits have (virtually) slept.
    pub fn clock(&self) -> f64 {
        self.lock().clock
    }

    pub fn advance(&self, secs: f64) {
        self.lock().clock += secs;
    }
}

impl CtxBackend for Recorder {
    fn loadlog(&self, _data: &ReservationData, name: &str, text: &str) -> Result<(), String> {
        let mut s = self.lock();
        if s.loadlog.len() >= MAX_CALLS {
            return Err(format!("over {MAX_CALLS} load-log entries in one test"));
        }
        s.loadlog.push((name.to_string(), text.to_string()));
        Ok(())
    }
    fn set_image_size(&self, _data: &ReservationData, mb: i64) -> Result<(), String> {
        self.lock().image_size = Some(mb);
        Ok(())
    }
    fn computer_var(&self, _data: &ReservationData, name: &str) -> Result<Option<String>, String> {
        Ok(self.var(name))
    }
    fn set_computer_var(
        &self,
        _data: &ReservationData,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        self.set_var(name, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_commands_and_regexes_anywhere() {
        let g = Pattern::parse("qemu-img create * 20G").expect("glob");
        assert!(g.matches("qemu-img create -f qcow2 /d/x.qcow2 20G"));
        assert!(!g.matches("sudo qemu-img create /x 20G"));
        let r = Pattern::parse("/vim-cmd vmsvc/power\\.on \\d+/").expect("regex");
        assert!(r.matches("vim-cmd vmsvc/power.on 12 2>&1"));
        assert!(Pattern::parse("/(/").is_err());
    }

    #[test]
    fn expectations_answer_in_order_and_run_out() {
        let rec = Recorder::default();
        for (code, times) in [(1, Some(2)), (0, None)] {
            rec.expect(Expectation {
                pattern: Pattern::parse("test -e /ready").expect("p"),
                on: Some("computer".into()),
                times,
                used: 0,
                reply: Reply {
                    code,
                    ..Reply::default()
                },
            })
            .expect("expect");
        }
        let codes: Vec<i64> = (0..4)
            .map(
                |_| match rec.call("computer", "test -e /ready", None, Array::new(), false) {
                    Ok(Answer::Reply(r)) => r.code,
                    _ => -1,
                },
            )
            .collect();
        assert_eq!(codes, vec![1, 1, 0, 0]);
        assert!(matches!(
            rec.call("vmhost", "test -e /ready", None, Array::new(), false),
            Ok(Answer::Unexpected)
        ));
        assert_eq!(rec.unexpected().len(), 1);
        assert_eq!(rec.calls().len(), 5);
    }
}
