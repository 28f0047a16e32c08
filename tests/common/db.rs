//! Test databases: a fresh SQLite file or a fresh MariaDB database per test, dropped when
//! the test ends (also when it panics), and [`on_both_backends!`] to run one scenario on
//! both.
//!
//! MariaDB is the machine's real server (`PROVHOST_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306`). When it cannot be reached the test fails and says so;
//! only with `PROVHOST_SKIP_MARIADB=1` is a MariaDB run skipped, with a loud SKIP line.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use provhost::db::inventory::{self, NewComputer};
use provhost::db::{schema, Backend, Db, DbOptions, RetryPolicy};
use sqlx::Connection;

/// The MariaDB server the tests use (no database part).
pub fn mariadb_server() -> String {
    std::env::var("PROVHOST_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

/// Quick retries, so a test about failures does not wait half a minute.
pub fn test_options() -> DbOptions {
    DbOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(10),
        sqlite_busy_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        },
    }
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    MariaDb { server: String, name: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::MariaDb { server, name } = self {
            let (server, name, shown) = (server.clone(), name.clone(), name.clone());
            // Drop runs outside async (maybe while panicking): use a thread with its own runtime.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let mut c = sqlx::MySqlConnection::connect(&server)
                        .await
                        .map_err(|e| e.to_string())?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<(), String>(())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("warning: could not drop test database {shown}: {dropped:?}");
            }
        }
    }
}

/// A database for one test. Dropping it removes the SQLite folder / MariaDB database.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub backend: Backend,
    /// The MariaDB database name (empty for SQLite).
    pub name: String,
    _guard: Guard,
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "provhost_test_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDb {
    /// An empty database (no tables). `None` only for MariaDB with `PROVHOST_SKIP_MARIADB=1`.
    pub async fn empty(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir for the SQLite test database");
                let url = format!("sqlite://{}", dir.path().join("provhost.db").display());
                let db = Db::connect_with(&url, test_options())
                    .await
                    .expect("open the SQLite test database");
                Some(TestDb {
                    db,
                    url,
                    backend,
                    name: String::new(),
                    _guard: Guard::Sqlite(dir),
                })
            }
            Backend::MySql => {
                let server = mariadb_server();
                let mut admin = match tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::MySqlConnection::connect(&server),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        if std::env::var("PROVHOST_SKIP_MARIADB").as_deref() == Ok("1") {
                            // Straight to the process's stderr, past the test harness's capture.
                            let line = format!(
                                "\n!!!!!!!! SKIP: MariaDB at {server} unreachable ({why}); PROVHOST_SKIP_MARIADB=1 is set, \
                                 so this MariaDB test did NOT run !!!!!!!!\n"
                            );
                            let _ =
                                std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                            return None;
                        }
                        panic!(
                            "MariaDB at {server} is unreachable: {why}. Start it (start-stop-daemon --start --oknodo --background \
                             --exec /usr/sbin/mariadbd) or set PROVHOST_SKIP_MARIADB=1 to skip the MariaDB runs"
                        );
                    }
                };
                let name = unique_name();
                sqlx::query(&format!("CREATE DATABASE `{name}`"))
                    .execute(&mut admin)
                    .await
                    .expect("create the MariaDB test database");
                let guard = Guard::MariaDb {
                    server: server.clone(),
                    name: name.clone(),
                };
                let url = format!("{}/{name}", server.trim_end_matches('/'));
                let db = Db::connect_with(&url, test_options())
                    .await
                    .expect("open the MariaDB test database");
                Some(TestDb {
                    db,
                    url,
                    backend,
                    name,
                    _guard: guard,
                })
            }
        }
    }

    /// A database made by `provhost db init`.
    pub async fn initialized(backend: Backend) -> Option<TestDb> {
        let t = TestDb::empty(backend).await?;
        schema::init(&t.db, "mn1.test")
            .await
            .expect("db init on an empty database");
        Some(t)
    }

    /// Another, independent pool on the same database (a second daemon).
    pub async fn connect_again(&self) -> Db {
        self.connect_with(test_options()).await
    }

    /// Another pool on the same database with other options.
    pub async fn connect_with(&self, opts: DbOptions) -> Db {
        Db::connect_with(&self.url, opts)
            .await
            .expect("another connection pool")
    }

    /// Run one statement as test setup.
    pub async fn exec(&self, sql: &str) {
        match self.db.pool() {
            provhost::db::pool::Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            provhost::db::pool::Pool::MySql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("setup statement failed: {sql}: {e}"));
    }

    /// One integer from a query (tests' view of the tables).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.db.pool() {
            provhost::db::pool::Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await
            }
            provhost::db::pool::Pool::MySql(p) => {
                sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS SIGNED)"))
                    .fetch_one(p)
                    .await
            }
        }
        .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"))
    }
}

/// What most tests need: a user, an image with a production revision, and computers.
#[derive(Debug, Clone)]
pub struct World {
    pub user: i64,
    pub image: i64,
    pub imagerevision: i64,
    pub computers: Vec<i64>,
}

/// Add user `ann`, image `debian12` (OS `linux`) and `n` available lab computers
/// `lab1.test` … on `t`.
pub async fn world(db: &Db, n: usize) -> World {
    let user = inventory::add_user(db, "ann", Some(1500))
        .await
        .expect("add user");
    let (image, imagerevision) = inventory::add_image(db, "debian12", "Debian 12", "linux")
        .await
        .expect("add image");
    let mut computers = Vec::new();
    for i in 1..=n {
        let c = inventory::add_computer(
            db,
            &NewComputer::lab(&format!("lab{i}.test"), &format!("10.0.0.{i}")),
        )
        .await
        .expect("add computer");
        computers.push(c);
    }
    World {
        user,
        image,
        imagerevision,
        computers,
    }
}

/// Run `async fn NAME(backend: Backend)` as two tests, `NAME::sqlite` and `NAME::mariadb`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(provhost::db::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mariadb() {
                    super::$name(provhost::db::Backend::MySql).await
                }
            }
        )+
    };
}

/// Statements of a SQL file written with one statement per `;`-ended line group and `--`
/// comments (tests/fixtures/*.sql).
pub fn sql_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") || line.trim().is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(cur.trim().trim_end_matches(';').to_string());
            cur.clear();
        }
    }
    out
}

impl TestDb {
    /// A MariaDB database loaded from tests/fixtures/vcl-subset.mysql.sql (VCL's own
    /// definitions and seed rows) and then `provhost db init`, as a VCL site runs it.
    /// `None` only when MariaDB runs are skipped explicitly.
    pub async fn vcl_site() -> Option<TestDb> {
        let t = TestDb::empty(Backend::MySql).await?;
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vcl-subset.mysql.sql"
        ))
        .expect("fixture");
        for stmt in sql_statements(&fixture) {
            t.exec(&stmt).await;
        }
        schema::init(&t.db, "ignored.test")
            .await
            .expect("db init on the VCL fixture");
        Some(t)
    }

    /// One text value from a query (tests' view of the tables); `None` for SQL NULL.
    pub async fn text(&self, sql: &str) -> Option<String> {
        let sql = format!("SELECT CAST(({sql}) AS CHAR) AS v");
        match self.db.pool() {
            provhost::db::pool::Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, Option<String>>(&sql)
                    .fetch_one(p)
                    .await
            }
            provhost::db::pool::Pool::MySql(p) => {
                sqlx::query_scalar::<_, Option<String>>(&sql)
                    .fetch_one(p)
                    .await
            }
        }
        .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"))
    }
}
