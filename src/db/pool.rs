//! `Db`: a connection pool to SQLite or MySQL/MariaDB, and the one place where the two
//! backends differ at run time (URL handling, the "now" expression, reading typed columns).
//! Also the bounded retry with backoff that carries operations over a lost connection.
//!
//! Queries are written once, in SQL both backends accept: identifiers in backticks (SQLite
//! accepts them too), `?` placeholders, datetimes read as `CAST(col AS CHAR)`. The
//! `with_pool!` macro runs the same code against whichever pool is open.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlQueryResult, MySqlRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow,
};
use sqlx::{Connection, Row};
use tokio::sync::watch;

use crate::db::error::{DbError, During};

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

/// The open pool.
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

/// How hard to try again after a lost connection or a busy database. Every operation
/// gives up after `attempts` tries; the waits double from `first_delay` up to `max_delay`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 tries; waits 0.1, 0.2, 0.4 … capped at 5 s between them (21.3 s of waiting).
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The waits between tries, in order (one fewer than the attempts).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut delay = self.first_delay;
        (1..self.attempts.max(1)).map(move |_| {
            let d = delay;
            delay = (delay * 2).min(self.max_delay);
            d
        })
    }

    /// The longest one operation can take before it gives up while the database is
    /// unreachable: every wait between tries plus, for every try, the pool's wait for a
    /// connection (`acquire_timeout`; a refused or unanswered connect is retried inside it).
    pub fn worst_case(&self, acquire_timeout: Duration) -> Duration {
        self.delays().sum::<Duration>() + acquire_timeout * self.attempts.max(1)
    }
}

/// How long one try waits for a pooled connection (or for a new one to open) before it
/// counts as failed. Kept short so that [`RetryPolicy::worst_case`] stays near half a
/// minute: during an outage every try waits this long.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Options for [`Db::connect_with`].
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    pub max_connections: u32,
    /// How long to wait for a free (or new) connection before the attempt counts as failed.
    pub acquire_timeout: Duration,
    /// SQLite only: how long one statement waits for another connection's write lock
    /// before failing with "database is locked" (which [`Db::retry`] then retries).
    pub sqlite_busy_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 5,
            acquire_timeout: ACQUIRE_TIMEOUT,
            sqlite_busy_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// Whether opening a database may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// A missing SQLite file (and its folder) is created: `db init`, the daemon, the demo.
    Create,
    /// Only an existing database is opened (SQLite `mode=rw`): a missing SQLite file is
    /// [`DbError::NoDatabaseFile`], and nothing is created. For commands that read or
    /// change records.
    Existing,
}

/// A handle to the database; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    url: String,
    retry: RetryPolicy,
    /// Set when the owner stops: retries end at once (see [`Db::stop_retrying`]). Shared
    /// by clones; [`Db::with_own_stop`] makes a handle with its own.
    stop: Arc<watch::Sender<bool>>,
    /// The node lease this handle writes under (`db::lease`): when set, a daemon's
    /// claim, exit, fail and release statements change rows only while this holder still
    /// holds the lease ([`Db::lease_guard_sql`]).
    lease: Option<Arc<str>>,
}

/// Run `$body` with `$p` bound to the open pool, whichever backend it is. The body is
/// compiled once per backend, so it may use backend-specific row types through
/// [`RowExt`].
macro_rules! with_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db.pool() {
            $crate::db::pool::Pool::Sqlite($p) => $body,
            $crate::db::pool::Pool::MySql($p) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Db {
    /// Open `url` (`sqlite://PATH`, `mysql://USER[:PASSWORD]@HOST[:PORT]/DB`; `mariadb://`
    /// is taken as `mysql://`) with default options. A SQLite file and its folder are
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::connect_with(url, DbOptions::default()).await
    }

    /// Open `url` with explicit pool and retry options, creating a missing SQLite file.
    pub async fn connect_with(url: &str, opts: DbOptions) -> Result<Db, DbError> {
        Db::open(url, opts, OpenMode::Create).await
    }

    /// Open `url` with explicit options; whether a missing SQLite file is created is
    /// `mode`'s choice. A MySQL/MariaDB database that does not exist is
    /// [`DbError::NoSuchDatabase`] (which says how to create it) in either mode.
    pub async fn open(url: &str, opts: DbOptions, mode: OpenMode) -> Result<Db, DbError> {
        let stop = Arc::new(watch::channel(false).0);
        let shown = redact_url(url);
        let bad = |message: String| DbError::BadUrl {
            url: shown.clone(),
            message,
        };
        let connect_err = |cause| DbError::Connect {
            url: shown.clone(),
            cause,
        };
        let pool = if let Some(path) = sqlite_path(url) {
            if path.is_empty() {
                return Err(bad("no file name (expected sqlite://PATH)".into()));
            }
            let create = mode == OpenMode::Create;
            if path != ":memory:" {
                let file = std::path::Path::new(path);
                if !create && !file.is_file() {
                    return Err(DbError::NoDatabaseFile {
                        path: path.to_string(),
                        url: shown.clone(),
                    });
                }
                if let Some(dir) = file
                    .parent()
                    .filter(|d| create && !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|cause| DbError::Io {
                        path: dir.display().to_string(),
                        cause,
                    })?;
                }
            }
            let o = SqliteConnectOptions::from_str(url)
                .map_err(|e| bad(e.to_string()))?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(opts.sqlite_busy_timeout);
            // One direct connection first: it fails at once with the real reason (refused,
            // access denied), where a pool would keep trying until its acquire timeout.
            retry_with(&opts.retry, &stop, &shown, "connecting", || {
                let o = o.clone();
                async move {
                    let c = sqlx::SqliteConnection::connect_with(&o)
                        .await
                        .map_err(connect_err)?;
                    let _ = c.close().await;
                    Ok(())
                }
            })
            .await?;
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(o);
            Pool::Sqlite(pool)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let normalized = url.replacen("mariadb://", "mysql://", 1);
            let o = MySqlConnectOptions::from_str(&normalized).map_err(|e| bad(e.to_string()))?;
            // One direct connection first: it fails at once with the real reason (refused,
            // access denied), where a pool would keep trying until its acquire timeout.
            retry_with(&opts.retry, &stop, &shown, "connecting", || {
                let o = o.clone();
                let no_such_database = |e: sqlx::Error| match &e {
                    sqlx::Error::Database(d)
                        if d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                            .is_some_and(|m| m.number() == MYSQL_UNKNOWN_DATABASE) =>
                    {
                        DbError::NoSuchDatabase {
                            url: shown.clone(),
                            database: mysql_database_name(url),
                        }
                    }
                    _ => connect_err(e),
                };
                async move {
                    let c = sqlx::MySqlConnection::connect_with(&o)
                        .await
                        .map_err(no_such_database)?;
                    let _ = c.close().await;
                    Ok(())
                }
            })
            .await?;
            let pool = MySqlPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(o);
            Pool::MySql(pool)
        } else {
            return Err(bad(
                "expected sqlite://PATH or mysql://USER@HOST/DATABASE".into()
            ));
        };
        Ok(Db {
            pool,
            url: shown,
            retry: opts.retry,
            stop,
            lease: None,
        })
    }

    /// A handle on the same pool whose [`Db::stop_retrying`] affects only itself and its
    /// clones (a daemon takes one, so its stop does not end another user's retries).
    pub fn with_own_stop(&self) -> Db {
        Db {
            stop: Arc::new(watch::channel(false).0),
            ..self.clone()
        }
    }

    /// A handle on the same pool whose operations are retried by `retry` (a one-shot
    /// command connects with one try and retries briefly; a daemon keeps the default).
    pub fn with_retry(&self, retry: RetryPolicy) -> Db {
        Db {
            retry,
            ..self.clone()
        }
    }

    /// A handle on the same pool whose guarded writes happen only while `holder` holds
    /// its node's lease (`provhost_nodelease.holder`).
    pub fn with_lease(&self, holder: &str) -> Db {
        Db {
            lease: Some(Arc::from(holder)),
            ..self.clone()
        }
    }

    /// The lease holder this handle writes under, if any.
    pub fn lease_holder(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// `" AND EXISTS (…)"` that keeps a statement from changing anything once this
    /// handle's holder no longer holds its lease (empty without a lease). Bind
    /// [`Db::lease_holder`] for its one placeholder, after the statement's own.
    pub(crate) fn lease_guard_sql(&self) -> &'static str {
        match self.lease {
            Some(_) => " AND EXISTS (SELECT 1 FROM `provhost_nodelease` lg WHERE lg.`holder` = ?)",
            None => "",
        }
    }

    /// The SQL expression for "now plus `secs` seconds".
    pub(crate) fn now_plus_secs_sql(&self, secs: u64) -> String {
        match self.backend() {
            Backend::Sqlite => format!("datetime('now', 'localtime', '+{secs} seconds')"),
            Backend::MySql => format!("TIMESTAMPADD(SECOND, {secs}, NOW())"),
        }
    }

    /// From now on, operations through this handle (and its clones) are not retried: a
    /// retry wait in progress ends at once with [`DbError::Stopped`], and a failed try is
    /// final. A try already running finishes (bounded by the acquire timeout). Used by a
    /// daemon's stop, so that a database outage cannot hold the stop up.
    pub fn stop_retrying(&self) {
        self.stop.send_replace(true);
    }

    /// Has [`Db::stop_retrying`] been called on this handle?
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The open pool, for `with_pool!`.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// SQLite or MySQL.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::MySql(_) => Backend::MySql,
        }
    }

    /// The URL this handle was opened with, password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Close every connection (waits for connections in use to come back).
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// The SQL expression for "now" as a local-time datetime, the way VCL stores times.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "datetime('now', 'localtime')",
            Backend::MySql => "NOW()",
        }
    }

    /// The SQL expression for "now plus `minutes`" (VCL's `TIMESTAMPADD(MINUTE, n, NOW())`).
    pub(crate) fn now_plus_minutes_sql(&self, minutes: i64) -> String {
        match self.backend() {
            Backend::Sqlite => format!("datetime('now', 'localtime', '{minutes:+} minutes')"),
            Backend::MySql => format!("TIMESTAMPADD(MINUTE, {minutes}, NOW())"),
        }
    }

    /// The database's current time, `YYYY-MM-DD HH:MM:SS` (the clock request times are
    /// compared with).
    pub async fn now(&self) -> Result<String, DbError> {
        let sql = format!("SELECT CAST({} AS CHAR) AS `now`", self.now_sql());
        self.retry("reading the database clock", || async {
            with_pool!(self, p => {
                let row = sqlx::query(&sql).fetch_one(p).await.during("reading the database clock")?;
                row.text("now")
            })
        })
        .await
    }

    /// Run `op` (one whole transaction or one statement) until it succeeds, fails for a
    /// reason that is not a lost connection / busy database, or the retry policy is used up.
    /// Operations given to this must be safe to run again after a failure: each is one
    /// transaction (rolled back when its connection died) or one conditional statement.
    pub async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, DbError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        retry_with(&self.retry, &self.stop, &self.url, what, op).await
    }
}

/// The retry loop behind [`Db::retry`] (also used while connecting). Ends early with
/// [`DbError::Stopped`] once `stop` is set.
async fn retry_with<T, F, Fut>(
    policy: &RetryPolicy,
    stop: &watch::Sender<bool>,
    url: &str,
    what: &str,
    mut op: F,
) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    let started = Instant::now();
    let mut delays = policy.delays();
    let attempts = policy.attempts.max(1);
    let mut stopped = stop.subscribe();
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() => {
                let stopped_err = |e: DbError| DbError::Stopped {
                    what: what.to_string(),
                    attempts: attempt,
                    last: Box::new(e),
                };
                if *stopped.borrow() {
                    return Err(stopped_err(e));
                }
                let Some(delay) = delays.next() else {
                    return Err(DbError::Unavailable {
                        what: what.to_string(),
                        attempts,
                        waited: started.elapsed(),
                        last: Box::new(e),
                    });
                };
                tracing::warn!(
                    db = %url,
                    "{what}: {}; retrying in {delay:.1?} (attempt {attempt} of {attempts})",
                    e.transient_reason()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped.wait_for(|s| *s) => return Err(stopped_err(e)),
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// MySQL/MariaDB: "Unknown database".
const MYSQL_UNKNOWN_DATABASE: u16 = 1049;

/// The database part of a `mysql://…/DATABASE[?…]` URL.
fn mysql_database_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    path.split('?').next().unwrap_or("").to_string()
}

/// The file a `sqlite:` URL names (`sqlite://PATH?OPTIONS` → `PATH`, possibly empty or
/// `:memory:`); `None` for any other URL.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    Some(rest.split('?').next().unwrap_or(rest))
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// Typed column reads that behave the same on both backends: NULL reads as 0 / "", and
/// MySQL's unsigned integer columns (VCL uses them everywhere) read as `i64`.
pub(crate) trait RowExt {
    fn opt_int(&self, col: &str) -> Result<Option<i64>, DbError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, DbError>;
    fn int(&self, col: &str) -> Result<i64, DbError> {
        Ok(self.opt_int(col)?.unwrap_or(0))
    }
    fn text(&self, col: &str) -> Result<String, DbError> {
        Ok(self.opt_text(col)?.unwrap_or_default())
    }
}

fn col_err(col: &str, cause: sqlx::Error) -> DbError {
    DbError::Sql {
        what: format!("reading column {col}"),
        cause,
    }
}

impl RowExt for SqliteRow {
    fn opt_int(&self, col: &str) -> Result<Option<i64>, DbError> {
        self.try_get::<Option<i64>, _>(col)
            .map_err(|e| col_err(col, e))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, DbError> {
        self.try_get_unchecked::<Option<String>, _>(col)
            .map_err(|e| col_err(col, e))
    }
}

impl RowExt for MySqlRow {
    fn opt_int(&self, col: &str) -> Result<Option<i64>, DbError> {
        match self.try_get::<Option<i64>, _>(col) {
            Ok(v) => Ok(v),
            Err(sqlx::Error::ColumnDecode { .. }) => {
                let v = self
                    .try_get::<Option<u64>, _>(col)
                    .map_err(|e| col_err(col, e))?;
                v.map(|u| {
                    i64::try_from(u).map_err(|_| {
                        DbError::Invalid(format!("column {col}: {u} does not fit in i64"))
                    })
                })
                .transpose()
            }
            Err(e) => Err(col_err(col, e)),
        }
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, DbError> {
        self.try_get_unchecked::<Option<String>, _>(col)
            .map_err(|e| col_err(col, e))
    }
}

/// The id an `INSERT` gave its row, on either backend.
pub(crate) trait InsertedId {
    fn inserted_id(&self) -> i64;
}

impl InsertedId for SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

impl InsertedId for MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        i64::try_from(self.last_insert_id()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/p.db?mode=rwc"),
            Some("/var/lib/p.db")
        );
        assert_eq!(sqlite_path("sqlite://data/p.db"), Some("data/p.db"));
        assert_eq!(sqlite_path("sqlite:p.db"), Some("p.db"));
        assert_eq!(sqlite_path("sqlite://?mode=rwc"), Some(""));
        assert_eq!(sqlite_path("mysql://root@127.0.0.1/vcl"), None);
    }

    #[test]
    fn the_documented_retry_budget_is_the_real_one() {
        let p = RetryPolicy::default();
        let waits: Duration = p.delays().sum();
        assert_eq!(p.delays().count(), 9);
        assert_eq!(waits, Duration::from_millis(21_300));
        let worst = p.worst_case(ACQUIRE_TIMEOUT);
        assert_eq!(worst, Duration::from_millis(51_300));
        let doc = include_str!("../../docs/database.md");
        for figure in [
            format!("{:.1} s", waits.as_secs_f64()),
            format!("{:.1} s", worst.as_secs_f64()),
            format!("{} s acquire timeout", ACQUIRE_TIMEOUT.as_secs()),
        ] {
            assert!(
                doc.contains(&figure),
                "docs/database.md must state {figure:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_stop_ends_retry_waits_at_once() {
        let db = Db::connect("sqlite://:memory:").await.expect("memory db");
        let own = db.with_own_stop();
        own.stop_retrying();
        assert!(own.is_stopping() && !db.is_stopping());
        let started = Instant::now();
        let err = own
            .retry("doing a thing", || async {
                Err::<(), _>(DbError::Sql {
                    what: "doing a thing".into(),
                    cause: sqlx::Error::PoolTimedOut,
                })
            })
            .await
            .expect_err("never succeeds");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, DbError::Stopped { attempts: 1, .. }), "{err}");
        let text = err.to_string();
        assert_eq!(
            text.matches("doing a thing").count(),
            1,
            "context once: {text}"
        );
        assert!(text.contains("not retried: stopping"), "{text}");
    }

    #[test]
    fn the_database_name_of_a_mysql_url() {
        assert_eq!(
            mysql_database_name("mysql://root@127.0.0.1:3306/vcl"),
            "vcl"
        );
        assert_eq!(
            mysql_database_name("mysql://u:p@h/x_1?ssl-mode=disabled"),
            "x_1"
        );
        assert_eq!(mysql_database_name("mysql://root@h"), "");
    }

    #[tokio::test]
    async fn opening_an_existing_database_never_creates_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("no/such/dir/x.db");
        let url = format!("sqlite://{}", file.display());
        let err = Db::open(&url, DbOptions::default(), OpenMode::Existing)
            .await
            .expect_err("no file");
        assert!(matches!(err, DbError::NoDatabaseFile { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains("provhost db init --url"),
            "{text}"
        );
        assert!(!dir.path().join("no").exists(), "nothing created");
        let db = Db::open(&url, DbOptions::default(), OpenMode::Create)
            .await
            .expect("create");
        db.close().await;
        assert!(file.is_file());
        let db = Db::open(&url, DbOptions::default(), OpenMode::Existing)
            .await
            .expect("exists now");
        db.close().await;
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("mysql://root:s3cret@db.example/vcl"),
            "mysql://root:***@db.example/vcl"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/vcl"),
            "mysql://root@127.0.0.1/vcl"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/provhost/provhost.db"),
            "sqlite:///var/lib/provhost/provhost.db"
        );
        assert_eq!(
            redact_url("mysql://u:p@ss:w@h:3306/x"),
            "mysql://u:***@h:3306/x"
        );
    }
}
