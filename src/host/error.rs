//! Errors of the scripting host. Each names the file (and line where there is one), the
//! module and routine involved, and what was expected, so the message alone tells a script
//! author what to fix.

use std::path::PathBuf;

/// Where in a script something went wrong: `file:line` (line 0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    pub path: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for SourcePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}", self.path.display(), self.line)
        } else {
            write!(f, "{}", self.path.display())
        }
    }
}

/// Which routine of which module, and where in its file, a call went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// `kind/name`
    pub module: String,
    pub routine: String,
    pub at: SourcePos,
}

impl std::fmt::Display for CallSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}::{}", self.at, self.module, self.routine)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid UTF-8 (byte {offset}); scripts must be UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}: writable by {who} (mode {mode:o}); anyone who can write scripts runs commands as root on this management node and every computer, so provhost refuses it. Fix: chmod go-w {}", path.display(), path.display())]
    Insecure {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    #[error("{}: empty file; a module needs at least `const MODULE = #{{kind, name, version}};` and its routines", path.display())]
    Empty { path: PathBuf },
    #[error("{at}: syntax error: {message}")]
    Compile { at: SourcePos, message: String },
    #[error("{at}: {message}")]
    Contract { at: SourcePos, message: String },
    #[error("{}: bad reservation fixture: {message}", path.display())]
    Fixture { path: PathBuf, message: String },
    #[error("no module {wanted:?} is loaded (loaded: {known})")]
    UnknownModule { wanted: String, known: String },
    /// A bare module name that more than one kind uses.
    #[error("module name {wanted:?} is used by more than one kind ({candidates}); say which, e.g. {example}")]
    AmbiguousModule {
        wanted: String,
        candidates: String,
        example: String,
    },
    #[error("module {module:?} ({}) has no routine {routine}() taking {arity} argument(s){hint}", path.display())]
    UnknownRoutine {
        module: String,
        routine: String,
        arity: usize,
        path: PathBuf,
        hint: String,
    },
    #[error("{site}: {message}")]
    Script {
        site: Box<CallSite>,
        message: String,
    },
    #[error("{site}: did not finish within its deadline of {secs} s")]
    Timeout { site: Box<CallSite>, secs: u64 },
    /// The routine failed after its deadline had passed: a wait in it was cut short by
    /// the deadline and the routine then threw (its message may name its own, longer wait).
    #[error("{site}: reached its deadline of {secs} s, and then failed: {message}")]
    AfterDeadline {
        site: Box<CallSite>,
        secs: u64,
        message: String,
    },
    #[error("{site}: cancelled")]
    Cancelled { site: Box<CallSite> },
    #[error("{site} returned {got}, expected {expected}")]
    BadReturn {
        site: Box<CallSite>,
        expected: String,
        got: String,
    },
    /// `provhost test MODULE` for a module without a test file.
    #[error("module {module} has no tests: write them in {} (docs/script-tests.md)", path.display())]
    NoTests { module: String, path: PathBuf },
    #[error("{0}")]
    SavedCopy(#[from] crate::host::good::GoodError),
    #[error("file watcher: {0}")]
    Watch(#[from] notify::Error),
}
