//! `DbError`: everything the database layer can fail with, each variant saying what was
//! being done and with which input, and which failures are worth retrying (a lost
//! connection, a busy database) as opposed to answers (a missing row, a state conflict).

use std::time::Duration;

/// An error from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one provhost can use.
    #[error("database URL {url}: {message}")]
    BadUrl { url: String, message: String },
    /// Could not open the database (the URL is shown with its password redacted).
    #[error("cannot connect to {url}: {cause}")]
    Connect { url: String, cause: sqlx::Error },
    /// A statement failed.
    #[error("{what}: {cause}")]
    Sql { what: String, cause: sqlx::Error },
    /// The database stayed unreachable (or busy) through every retry.
    #[error("{what}: database unavailable after {attempts} attempts over {waited:.1?}: {}", last.transient_reason())]
    Unavailable {
        what: String,
        attempts: u32,
        waited: Duration,
        last: Box<DbError>,
    },
    /// A try failed for a reason worth retrying, but the daemon is stopping, so it was not
    /// retried; what it left is returned by recovery at the next start.
    #[error("{what}: {} (not retried: stopping; attempt {attempts})", last.transient_reason())]
    Stopped {
        what: String,
        attempts: u32,
        last: Box<DbError>,
    },
    /// A row looked up by name or id does not exist.
    #[error("no {what} {key}")]
    NotFound { what: &'static str, key: String },
    /// A reservation refers to a row that does not exist (or lacks a needed link).
    #[error("reservation {reservation}: {problem}")]
    BrokenReservation { reservation: i64, problem: String },
    /// Not a `computerloadstate.loadstatename`.
    #[error("unknown load-state name {0:?} (names are VCL's computerloadstate.loadstatename, e.g. \"startload\"; `provhost loadstates` lists them, as does docs/script-api.md)")]
    UnknownLoadState(String),
    /// Not a `state.name`.
    #[error("unknown state name {0:?} (names are VCL's state.name, e.g. \"reserved\")")]
    UnknownState(String),
    /// A conditional state change found the row in another state than expected.
    #[error("request {request}: expected state {expected}, found {found}")]
    StateConflict {
        request: i64,
        expected: String,
        found: String,
    },
    /// A daemon's exit, fail or release found its claim gone: another daemon took the
    /// node over (this one's lease expired, e.g. while it was paused). Nothing was written.
    #[error("request {request}: this daemon no longer holds its claim (another daemon took the management node over after this one's lease expired); nothing was written")]
    ClaimLost { request: i64 },
    /// A guarded write of a daemon that no longer holds its node's lease.
    #[error("this daemon no longer holds its management node's lease (another daemon took the node over); nothing was written")]
    LeaseLost,
    /// A flow tried to change a computer that its request does not hold (another
    /// reservation holds it, see `db::lock`).
    #[error("request {request} does not hold computer {computer} (provhost_computerlock); the computer was left as it is")]
    NotHolder { request: i64, computer: i64 },
    /// The database's schema lacks what provhost needs (each problem on its own line).
    #[error("database schema does not fit provhost:\n  {}", problems.join("\n  "))]
    Schema { problems: Vec<String> },
    /// Input that cannot be stored (bad date, out-of-range size, no free computer, …).
    #[error("{0}")]
    Invalid(String),
    /// A command that only opens an existing database found no SQLite file.
    #[error("database file {path} does not exist (only `provhost db init` creates one); create it with `provhost db init --url {url}`, or pass the --url of an existing database")]
    NoDatabaseFile { path: String, url: String },
    /// The MySQL/MariaDB server has no such database.
    #[error("database `{database}` does not exist on the server of {url}. Create it as a user allowed to (e.g. `mysql -u root`): CREATE DATABASE `{database}` CHARACTER SET utf8mb4; then run `provhost db init --url {url}`")]
    NoSuchDatabase { url: String, database: String },
    /// A row with this name (or address) exists already: a unique key refused the insert.
    #[error("{what} {key} already exists{hint}")]
    Duplicate {
        what: &'static str,
        key: String,
        /// What to do instead (starts with "; "), or empty.
        hint: String,
    },
    /// A file next to the database (the SQLite file's folder) could not be made.
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
}

/// MySQL/MariaDB error numbers after which the statement or transaction did not happen
/// and may be run again: server shutdown, lock wait timeout, deadlock, connection killed,
/// server gone away, lost connection, client idle timeout.
const MYSQL_TRANSIENT: &[u16] = &[1053, 1205, 1213, 1927, 2006, 2013, 4031];
/// SQLite result codes meaning "busy, try again": BUSY, LOCKED, BUSY_RECOVERY, BUSY_SNAPSHOT.
const SQLITE_TRANSIENT: &[&str] = &["5", "6", "261", "517"];

impl DbError {
    /// Is this a lost connection or a busy database, after which the whole operation
    /// (one transaction) may be run again?
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Sql { cause, .. } | DbError::Connect { cause, .. } => transient(cause),
            _ => false,
        }
    }
}

impl DbError {
    /// The underlying cause alone (without the "what was being done" prefix).
    fn cause_text(&self) -> String {
        match self {
            DbError::Sql { cause, .. } | DbError::Connect { cause, .. } => cause.to_string(),
            other => other.to_string(),
        }
    }

    /// Why a transient failure happened, in words, with the driver's text in brackets:
    /// "lost the connection to the database (…)", "deadlock with another transaction (…)".
    /// No "what was being done" prefix: the caller says that once.
    pub fn transient_reason(&self) -> String {
        let cause = self.cause_text();
        let reason = match self {
            DbError::Sql { cause: e, .. } | DbError::Connect { cause: e, .. } => match e {
                sqlx::Error::PoolTimedOut => {
                    "no database connection within the acquire timeout (database unreachable, or every connection busy)"
                }
                sqlx::Error::Database(_) => match self.mysql_number() {
                    Some(1213) => "deadlock with another transaction",
                    Some(1205) => "lock wait timeout",
                    Some(1053 | 1927 | 2006 | 2013 | 4031) => {
                        "lost the connection to the database"
                    }
                    Some(_) => "database error",
                    None if transient(e) => "the database is locked by another writer",
                    None => "database error",
                },
                _ if transient(e) && matches!(self, DbError::Connect { .. }) => {
                    "cannot reach the database"
                }
                _ if transient(e) => "lost the connection to the database",
                _ => return cause,
            },
            _ => return cause,
        };
        format!("{reason} ({cause})")
    }

    /// Did a unique key or primary key refuse the statement? (SQLite 2067 / 1555,
    /// MySQL/MariaDB 1062.)
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sql {
                cause: sqlx::Error::Database(d),
                ..
            } => {
                self.mysql_number() == Some(1062)
                    || d.code().is_some_and(|c| c == "2067" || c == "1555")
            }
            _ => false,
        }
    }

    /// The MySQL/MariaDB error number behind this error, if it is one.
    pub fn mysql_number(&self) -> Option<u16> {
        match self {
            DbError::Sql {
                cause: sqlx::Error::Database(d),
                ..
            }
            | DbError::Connect {
                cause: sqlx::Error::Database(d),
                ..
            } => d
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number()),
            _ => None,
        }
    }
}

fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => {
            if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return MYSQL_TRANSIENT.contains(&m.number());
            }
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                return d
                    .code()
                    .is_some_and(|c| SQLITE_TRANSIENT.contains(&c.as_ref()));
            }
            false
        }
        _ => false,
    }
}

/// Attach what was being done to a sqlx error: `.during("claiming request 7")?`.
pub(crate) trait During<T> {
    fn during(self, what: impl Into<String>) -> Result<T, DbError>;
}

impl<T> During<T> for Result<T, sqlx::Error> {
    fn during(self, what: impl Into<String>) -> Result<T, DbError> {
        self.map_err(|cause| DbError::Sql {
            what: what.into(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_named_once_with_its_cause() {
        let lost = DbError::Sql {
            what: "claiming request 18".into(),
            cause: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "expected to read 4 bytes, got 0 bytes at EOF",
            )),
        };
        assert!(lost.is_transient());
        assert_eq!(
            lost.transient_reason(),
            "lost the connection to the database (error communicating with database: expected to read 4 bytes, got 0 bytes at EOF)"
        );
        let gave_up = DbError::Unavailable {
            what: "claiming request 18".into(),
            attempts: 10,
            waited: Duration::from_millis(51_300),
            last: Box::new(lost),
        };
        let text = gave_up.to_string();
        assert_eq!(text.matches("claiming request 18").count(), 1, "{text}");
        assert!(
            text.contains("database unavailable after 10 attempts"),
            "{text}"
        );
        assert!(
            text.contains("lost the connection to the database"),
            "{text}"
        );
    }
}
