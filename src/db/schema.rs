//! `provhost db init`: create the schema on an empty database, or check an existing VCL
//! database and add only provhost's own `provhost_*` tables.
//!
//! The SQL lives in `schema/{sqlite,mysql}/` (one file for VCL's tables, one for
//! provhost's) and `schema/seed.sql`; the `state` and `computerloadstate` rows come from
//! [`crate::vcl`]. [`REQUIRED`] lists every table and column provhost's queries touch: a
//! fresh database is made with at least these, and an existing one must have them.

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Backend, Db, RowExt};
use crate::vcl;

pub mod upgrade;

const SQLITE_VCL: &str = include_str!("schema/sqlite/vcl.sql");
const SQLITE_PROVHOST: &str = include_str!("schema/sqlite/provhost.sql");
const MYSQL_VCL: &str = include_str!("schema/mysql/vcl.sql");
const MYSQL_PROVHOST: &str = include_str!("schema/mysql/provhost.sql");
const SEED: &str = include_str!("schema/seed.sql");

/// Version recorded in `provhost_schema` for the provhost tables created here.
pub const SCHEMA_VERSION: i64 = 1;

/// The VCL tables and columns provhost reads or writes.
pub const REQUIRED: &[(&str, &[&str])] = &[
    ("state", &["id", "name"]),
    ("computerloadstate", &["id", "loadstatename", "prettyname"]),
    (
        "computerloadlog",
        &[
            "id",
            "reservationid",
            "computerid",
            "loadstateid",
            "timestamp",
            "additionalinfo",
        ],
    ),
    ("affiliation", &["id", "name"]),
    (
        "user",
        &[
            "id",
            "uid",
            "unityid",
            "affiliationid",
            "email",
            "usepublickeys",
            "sshpublickeys",
        ],
    ),
    ("module", &["id", "name", "prettyname"]),
    ("provisioning", &["id", "name", "prettyname", "moduleid"]),
    ("OStype", &["id", "name"]),
    (
        "OS",
        &[
            "id",
            "name",
            "prettyname",
            "type",
            "installtype",
            "moduleid",
        ],
    ),
    (
        "image",
        &[
            "id",
            "name",
            "prettyname",
            "ownerid",
            "OSid",
            "reloadtime",
            "deleted",
            "lastupdate",
            "size",
            "imagemetaid",
        ],
    ),
    ("imagemeta", &["id", "rootaccess"]),
    (
        "imagerevision",
        &[
            "id",
            "imageid",
            "revision",
            "userid",
            "datecreated",
            "deleted",
            "production",
            "comments",
            "imagename",
        ],
    ),
    (
        "managementnode",
        &[
            "id",
            "IPaddress",
            "hostname",
            "stateid",
            "installpath",
            "keys",
            "sshport",
        ],
    ),
    (
        "vmprofile",
        &[
            "id",
            "profilename",
            "repositorypath",
            "datastorepath",
            "vmpath",
        ],
    ),
    ("vmhost", &["id", "computerid", "vmprofileid"]),
    (
        "computer",
        &[
            "id",
            "stateid",
            "vmhostid",
            "currentimageid",
            "nextimageid",
            "imagerevisionid",
            "hostname",
            "IPaddress",
            "privateIPaddress",
            "eth0macaddress",
            "eth1macaddress",
            "type",
            "provisioningid",
            "deleted",
            "predictivemoduleid",
        ],
    ),
    (
        "request",
        &[
            "id",
            "stateid",
            "userid",
            "laststateid",
            "forimaging",
            "start",
            "end",
            "daterequested",
            "datemodified",
            "checkuser",
            "logid",
        ],
    ),
    (
        "reservation",
        &[
            "id",
            "requestid",
            "computerid",
            "imageid",
            "imagerevisionid",
            "managementnodeid",
            "remoteIP",
            "lastcheck",
        ],
    ),
    ("resourcetype", &["id", "name"]),
    ("resource", &["id", "resourcetypeid", "subid"]),
    (
        "log",
        &[
            "id",
            "userid",
            "nowfuture",
            "start",
            "loaded",
            "initialend",
            "finalend",
            "wasavailable",
            "ending",
            "requestid",
            "imageid",
        ],
    ),
    (
        "sublog",
        &[
            "id",
            "logid",
            "imageid",
            "imagerevisionid",
            "computerid",
            "managementnodeid",
            "predictivemoduleid",
            "hostcomputerid",
        ],
    ),
    ("changelog", &["id", "logid", "start", "end", "timestamp"]),
    (
        "variable",
        &["id", "name", "serialization", "value", "timestamp"],
    ),
];

/// provhost's own tables: `init` creates them on every database and checks they are there.
pub const PROVHOST_TABLES: &[&str] = &[
    "provhost_schema",
    "provhost_computer",
    "provhost_claim",
    "provhost_computervar",
    "provhost_computerlock",
    "provhost_nodelease",
    "provhost_span",
];

/// What `init` did.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReport {
    /// True when the VCL tables were created (empty database); false when an existing VCL
    /// schema was verified and left as it was.
    pub created_vcl_tables: bool,
    /// The management node row added for this machine on a fresh database: (id, hostname).
    pub management_node: Option<(i64, String)>,
    /// The provhost tables present after init.
    pub provhost_tables: Vec<String>,
}

/// This machine's host name (Linux: `/proc/sys/kernel/hostname`), for the management node row.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Create (empty database) or verify (existing VCL database) the schema, then add the
/// `provhost_*` tables. `management_node` is the host name recorded as the management
/// node on a fresh database. Safe to run again.
pub async fn init(db: &Db, management_node: &str) -> Result<InitReport, DbError> {
    let tables = table_names(db).await?;
    let present: Vec<&str> = REQUIRED
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| tables.iter().any(|x| x == t))
        .collect();
    let mut report = InitReport {
        created_vcl_tables: false,
        management_node: None,
        provhost_tables: Vec::new(),
    };
    if !present.is_empty() {
        let sql = match db.backend() {
            Backend::Sqlite => SQLITE_VCL,
            Backend::MySql => MYSQL_VCL,
        };
        if let Some(create) = statements(sql)
            .into_iter()
            .find(|s| s.contains("CREATE TABLE `imagemeta`"))
        {
            upgrade::ensure_imagemeta(db, &create, &column_names(db).await?).await?;
        }
        upgrade::ensure_web_tables(db, &statements(sql), &column_names(db).await?).await?;
    }
    if present.is_empty() {
        let vcl_sql = match db.backend() {
            Backend::Sqlite => SQLITE_VCL,
            Backend::MySql => MYSQL_VCL,
        };
        run_script(db, vcl_sql, "creating VCL tables").await?;
        run_script(db, SEED, "seeding VCL tables").await?;
        seed_vocabulary(db).await?;
        report.management_node = Some((
            crate::db::inventory::add_management_node(db, management_node, "127.0.0.1").await?,
            management_node.to_string(),
        ));
        report.created_vcl_tables = true;
    }
    verify(db).await?;
    let provhost_sql = match db.backend() {
        Backend::Sqlite => SQLITE_PROVHOST,
        Backend::MySql => MYSQL_PROVHOST,
    };
    run_script(db, provhost_sql, "creating provhost tables").await?;
    if let Some(create) = statements(provhost_sql)
        .into_iter()
        .find(|s| s.contains("`provhost_computervar`"))
    {
        upgrade::ensure_computervar_key(db, &create).await?;
    }
    let record = format!(
        "INSERT INTO `provhost_schema` (`version`, `applied`) SELECT ?, {} WHERE NOT EXISTS \
         (SELECT 1 FROM `provhost_schema` WHERE `version` = ?)",
        db.now_sql()
    );
    with_pool!(db, p => sqlx::query(&record).bind(SCHEMA_VERSION).bind(SCHEMA_VERSION).execute(p).await.during("recording the schema version").map(|_| ()))?;
    report.provhost_tables = table_names(db)
        .await?
        .into_iter()
        .filter(|t| t.starts_with("provhost_"))
        .collect();
    let missing: Vec<String> = PROVHOST_TABLES
        .iter()
        .filter(|t| !report.provhost_tables.iter().any(|x| x == *t))
        .map(|t| format!("table `{t}` is missing after creating it (does the database user have CREATE privileges?)"))
        .collect();
    if !missing.is_empty() {
        return Err(DbError::Schema { problems: missing });
    }
    Ok(report)
}

/// Check that every table and column in [`REQUIRED`] exists, that `state` has VCL's ids
/// and names, and that every VCL load-state name is in `computerloadstate`. All problems
/// are reported at once.
pub async fn verify(db: &Db) -> Result<(), DbError> {
    let columns = column_names(db).await?;
    let mut problems = Vec::new();
    for (table, cols) in REQUIRED {
        let have: Vec<&str> = columns
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, c)| c.as_str())
            .collect();
        if have.is_empty() {
            problems.push(format!("table `{table}` is missing"));
            continue;
        }
        let missing: Vec<&str> = cols
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "table `{table}` lacks column(s) {}",
                missing.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        let states: Vec<(i64, String)> = with_pool!(db, p => {
            let rows = sqlx::query("SELECT `id`, `name` FROM `state`").fetch_all(p).await.during("reading table state")?;
            rows.iter().map(|r| Ok((r.int("id")?, r.text("name")?))).collect::<Result<Vec<_>, DbError>>()
        })?;
        for (id, name) in vcl::STATES {
            match states.iter().find(|(i, _)| i == id) {
                Some((_, n)) if n == name => {}
                Some((_, n)) => {
                    problems.push(format!("state {id} is named {n:?}, VCL's is {name:?}"))
                }
                None => problems.push(format!("state {id} ({name}) is missing")),
            }
        }
        let names: Vec<String> = with_pool!(db, p => {
            let rows = sqlx::query("SELECT `loadstatename` FROM `computerloadstate`").fetch_all(p).await.during("reading table computerloadstate")?;
            rows.iter().map(|r| r.text("loadstatename")).collect::<Result<Vec<_>, DbError>>()
        })?;
        let missing: Vec<&str> = vcl::LOAD_STATES
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !names.iter().any(|x| x == n))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "computerloadstate lacks load state(s) {}",
                missing.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DbError::Schema { problems })
    }
}

/// Names of the tables in the current database.
pub async fn table_names(db: &Db) -> Result<Vec<String>, DbError> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT `name` FROM `sqlite_master` WHERE `type` = 'table' ORDER BY `name`",
        Backend::MySql => {
            "SELECT `TABLE_NAME` AS `name` FROM `information_schema`.`TABLES` WHERE `TABLE_SCHEMA` = DATABASE() ORDER BY `TABLE_NAME`"
        }
    };
    with_pool!(db, p => {
        let rows = sqlx::query(sql).fetch_all(p).await.during("listing tables")?;
        rows.iter().map(|r| r.text("name")).collect()
    })
}

/// (table, column) for every column of every table in the current database.
async fn column_names(db: &Db) -> Result<Vec<(String, String)>, DbError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT m.`name` AS `tbl`, c.`name` AS `col` FROM `sqlite_master` m JOIN pragma_table_info(m.`name`) c \
             WHERE m.`type` = 'table'"
        }
        Backend::MySql => {
            "SELECT `TABLE_NAME` AS `tbl`, `COLUMN_NAME` AS `col` FROM `information_schema`.`COLUMNS` \
             WHERE `TABLE_SCHEMA` = DATABASE()"
        }
    };
    with_pool!(db, p => {
        let rows = sqlx::query(sql).fetch_all(p).await.during("listing columns")?;
        rows.iter().map(|r| Ok((r.text("tbl")?, r.text("col")?))).collect()
    })
}

/// Split one of our schema files into statements: a statement ends at a line ending in
/// `;`; lines starting with `--` are comments.
fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        let t = line.trim();
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').to_string();
            out.push(stmt);
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

async fn run_script(db: &Db, script: &str, what: &str) -> Result<(), DbError> {
    for stmt in statements(script) {
        let first = stmt.lines().next().unwrap_or("").to_string();
        with_pool!(db, p => sqlx::query(&stmt).execute(p).await.during(format!("{what}: {first}")).map(|_| ()))?;
    }
    Ok(())
}

/// Insert VCL's `state` rows (fixed ids) and `computerloadstate` rows (VCL's order).
async fn seed_vocabulary(db: &Db) -> Result<(), DbError> {
    with_pool!(db, p => {
        let mut tx = p.begin().await.during("seeding states")?;
        for (id, name) in vcl::STATES {
            sqlx::query("INSERT INTO `state` (`id`, `name`) VALUES (?, ?)")
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await
                .during(format!("seeding state {name}"))?;
        }
        for (name, pretty) in vcl::LOAD_STATES {
            sqlx::query("INSERT INTO `computerloadstate` (`loadstatename`, `prettyname`) VALUES (?, ?)")
                .bind(name)
                .bind(pretty)
                .execute(&mut *tx)
                .await
                .during(format!("seeding load state {name}"))?;
        }
        tx.commit().await.during("seeding states")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_split_into_statements() {
        for (name, file) in [("sqlite", SQLITE_VCL), ("mysql", MYSQL_VCL)] {
            let stmts = statements(file);
            for (table, _) in REQUIRED {
                let needle = format!("CREATE TABLE `{table}` (");
                assert!(
                    stmts.iter().any(|s| s.starts_with(&needle)),
                    "{name}: no {needle}"
                );
            }
            assert!(stmts.iter().all(|s| !s.ends_with(';')), "{name}");
        }
        assert_eq!(statements(SEED).len(), 10);
    }

    #[test]
    fn both_backends_create_every_provhost_table() {
        for (name, file) in [("sqlite", SQLITE_PROVHOST), ("mysql", MYSQL_PROVHOST)] {
            let stmts = statements(file);
            for table in PROVHOST_TABLES {
                let needle = format!("CREATE TABLE IF NOT EXISTS `{table}` (");
                assert!(
                    stmts.iter().any(|s| s.starts_with(&needle)),
                    "{name}: no {needle}"
                );
            }
        }
    }

    #[test]
    fn both_backends_create_every_required_column() {
        for (name, file) in [("sqlite", SQLITE_VCL), ("mysql", MYSQL_VCL)] {
            for stmt in statements(file) {
                let Some(rest) = stmt.strip_prefix("CREATE TABLE `") else {
                    continue;
                };
                let table = rest.split('`').next().unwrap_or("");
                let Some((_, cols)) = REQUIRED.iter().find(|(t, _)| *t == table) else {
                    continue;
                };
                for c in cols.iter() {
                    assert!(
                        stmt.contains(&format!("\n  `{c}` ")),
                        "{name}: {table}.{c} missing"
                    );
                }
            }
        }
    }
}
