//! How a command's outcome becomes an exit code and one error message: the codes (0 done,
//! 1 failed while doing it, 2 usage or refused input, 3 `check` found errors), which
//! error is which, and the message printed once, without the causes a message already
//! contains.

use provhost::db::DbError;
use provhost::host::HostError;
use provhost::image::build::BuildError;

/// It failed while doing it: the database unreachable or failing, a routine that threw
/// or ran out of time, a file that could not be written. Trying again later may work.
pub const FAILED: u8 = 1;
/// The command line is wrong (clap's own code), or it names something that does not
/// exist or asks for something refused (a finished request, a duplicate, a bad address,
/// a missing config or database file, an image build lacking root, a tool, a mirror
/// or a public key). The same command will fail again.
pub const USAGE: u8 = 2;
/// `provhost check` found errors in the scripts.
pub const CHECK_ERRORS: u8 = 3;

/// The exit codes as `--help` shows them.
pub const HELP: &str = "Exit codes:
  0  done
  1  failed while doing it (database unreachable or failing, routine error or time-out, I/O,
     a failed `provhost test`)
  2  usage: wrong command line, or input refused (no such id or name, finished request,
     duplicate, invalid address or name, missing config or database file, an image
     build without root, its tools, a Debian mirror or a public key)
  3  `provhost check` found errors in the scripts
  130  `provhost log --follow` stopped by Ctrl-C

The config file is --config, else PROVHOST_CONFIG, else ./provhost.toml, else
/etc/provhost/provhost.toml (each when it exists). Relative paths in a config file are
taken from the file's folder; without a file, from the current folder.";

/// Input the command refuses before (or instead of) touching anything.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The exit code for an error (see the constants).
pub fn code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<Refused>().is_some()
            || cause
                .downcast_ref::<provhost::config::ConfigError>()
                .is_some()
        {
            return USAGE;
        }
        if let Some(k) = cause.downcast_ref::<provhost::image::key::KeyError>() {
            return if k.refused { USAGE } else { FAILED };
        }
        if let Some(d) = cause.downcast_ref::<DbError>() {
            return db_code(d);
        }
        if let Some(b) = cause.downcast_ref::<BuildError>() {
            return match b {
                BuildError::NotRoot
                | BuildError::MissingTool { .. }
                | BuildError::Key { .. }
                | BuildError::BadKey { .. }
                | BuildError::NoMirror { .. } => USAGE,
                _ => FAILED,
            };
        }
        if let Some(h) = cause.downcast_ref::<HostError>() {
            return match h {
                HostError::UnknownModule { .. }
                | HostError::AmbiguousModule { .. }
                | HostError::UnknownRoutine { .. }
                | HostError::Fixture { .. }
                | HostError::NoTests { .. } => USAGE,
                _ => FAILED,
            };
        }
    }
    FAILED
}

fn db_code(e: &DbError) -> u8 {
    match e {
        DbError::BadUrl { .. }
        | DbError::NotFound { .. }
        | DbError::Invalid(_)
        | DbError::StateConflict { .. }
        | DbError::UnknownLoadState(_)
        | DbError::UnknownState(_)
        | DbError::NoDatabaseFile { .. }
        | DbError::NoSuchDatabase { .. }
        | DbError::Duplicate { .. } => USAGE,
        _ => FAILED,
    }
}

/// The message for an error: each cause once (a cause whose text the message already
/// holds is left out), and what to do when the database has no provhost schema; secrets
/// redacted.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    let no_schema = e.chain().any(|c| {
        c.downcast_ref::<DbError>().is_some_and(|d| {
            d.mysql_number() == Some(1146) || d.to_string().contains("no such table")
        })
    });
    if no_schema {
        out.push_str(
            " (the database has no provhost schema: run `provhost db init` with the same --url first)",
        );
    }
    // A routine's error may quote a secret it was handed (`provhost call` prints it).
    provhost::prim::secret::redact(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("reading x.toml: No such file");
        assert_eq!(message(&e), "reading x.toml: No such file");
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing y");
        assert_eq!(message(&e), "writing y: disk full");
    }

    #[test]
    fn refusals_are_usage_errors_and_failures_are_not() {
        let refused = anyhow::Error::new(Refused("no".into()));
        assert_eq!(code(&refused), USAGE);
        let missing = anyhow::Error::new(DbError::NotFound {
            what: "request",
            key: "9".into(),
        });
        assert_eq!(code(&missing.context("ending it")), USAGE);
        let down = anyhow::Error::new(DbError::Sql {
            what: "x".into(),
            cause: sqlx::Error::PoolTimedOut,
        });
        assert_eq!(code(&down), FAILED);
        assert_eq!(code(&anyhow::anyhow!("something else")), FAILED);
    }
}
