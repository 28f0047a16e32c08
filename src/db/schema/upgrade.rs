//! Bringing an existing database's `provhost_*` tables up to what the code needs, for the
//! parts `CREATE TABLE IF NOT EXISTS` cannot change: today the unique key on
//! `provhost_computervar (computerid, name)` that `flow::set_computer_var`'s upsert relies on;
//! and VCL's `imagemeta` table with `image.imagemetaid`, which databases made by provhost
//! before the Linux module read `imagemeta.rootaccess` lack (every VCL database has them);
//! and the tables VCL's web front end reads that provhost writes since issue 13
//! (`resourcetype`, `resource`, `log`, `sublog`, `changelog`, `variable`), which databases
//! made by earlier provhost versions lack (every VCL database has them).

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Backend, Db, RowExt};

const TABLE: &str = "provhost_computervar";
const KEY: [&str; 2] = ["computerid", "name"];

/// Does `provhost_computervar` have a primary or unique key on exactly (computerid, name)?
pub async fn computervar_has_key(db: &Db) -> Result<bool, DbError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT il.`name` AS `idx`, ii.`name` AS `col` FROM pragma_index_list('provhost_computervar') il \
             JOIN pragma_index_info(il.`name`) ii WHERE il.`unique` = 1"
        }
        Backend::MySql => {
            "SELECT `INDEX_NAME` AS `idx`, `COLUMN_NAME` AS `col` FROM `information_schema`.`STATISTICS` \
             WHERE `TABLE_SCHEMA` = DATABASE() AND `TABLE_NAME` = 'provhost_computervar' AND `NON_UNIQUE` = 0"
        }
    };
    let pairs: Vec<(String, String)> = with_pool!(db, p => {
        let rows = sqlx::query(sql).fetch_all(p).await.during("reading the keys of provhost_computervar")?;
        rows.iter().map(|r| Ok((r.text("idx")?, r.text("col")?))).collect::<Result<Vec<_>, DbError>>()
    })?;
    let mut indexes: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (idx, col) in pairs {
        indexes
            .entry(idx)
            .or_default()
            .push(col.to_ascii_lowercase());
    }
    Ok(indexes.values_mut().any(|cols| {
        cols.sort();
        cols.as_slice() == KEY
    }))
}

/// Add `imagemeta` (as `create_sql` says) and `image.imagemetaid` (NULL: VCL's defaults) when
/// the database lacks them. `columns` are the database's (table, column) pairs.
pub async fn ensure_imagemeta(
    db: &Db,
    create_sql: &str,
    columns: &[(String, String)],
) -> Result<(), DbError> {
    let has = |t: &str, c: &str| {
        columns
            .iter()
            .any(|(tt, cc)| tt == t && cc.eq_ignore_ascii_case(c))
    };
    if !has("image", "id") {
        return Ok(());
    }
    let mut steps = Vec::new();
    if !has("imagemeta", "id") {
        steps.push(create_sql.to_string());
    }
    if !has("image", "imagemetaid") {
        steps.push(match db.backend() {
            Backend::Sqlite => {
                "ALTER TABLE `image` ADD COLUMN `imagemetaid` INTEGER DEFAULT NULL".to_string()
            }
            Backend::MySql => {
                "ALTER TABLE `image` ADD COLUMN `imagemetaid` smallint(5) unsigned DEFAULT NULL"
                    .to_string()
            }
        });
    }
    for step in &steps {
        let what = format!(
            "adding VCL's imagemeta: {}",
            step.lines().next().unwrap_or("")
        );
        with_pool!(db, p => sqlx::query(step).execute(p).await.during(what).map(|_| ()))?;
    }
    if !steps.is_empty() {
        tracing::warn!("the database lacked VCL's imagemeta table or image.imagemetaid; added them (images without imagemeta get VCL's defaults: root access granted)");
    }
    Ok(())
}

/// When `provhost_computervar` exists without its key (made by hand, or by a tool that
/// left it out), rebuild it: rename it aside, create it as `create_sql` says, copy one
/// value per (computer, name) over, drop the old one. Returns whether it rebuilt.
pub async fn ensure_computervar_key(db: &Db, create_sql: &str) -> Result<bool, DbError> {
    if computervar_has_key(db).await? {
        return Ok(false);
    }
    let old = format!("{TABLE}_without_key");
    let steps = [
        format!("DROP TABLE IF EXISTS `{old}`"),
        format!("ALTER TABLE `{TABLE}` RENAME TO `{old}`"),
        create_sql.to_string(),
        format!(
            "INSERT INTO `{TABLE}` (`computerid`, `name`, `value`) \
             SELECT `computerid`, `name`, MAX(`value`) FROM `{old}` GROUP BY `computerid`, `name`"
        ),
        format!("DROP TABLE `{old}`"),
    ];
    for step in &steps {
        let what = format!(
            "adding the (computerid, name) key to {TABLE}: {}",
            step.lines().next().unwrap_or("")
        );
        with_pool!(db, p => sqlx::query(step).execute(p).await.during(what).map(|_| ()))?;
    }
    tracing::warn!("{TABLE} had no (computerid, name) key; rebuilt it with one (one value kept per computer and name)");
    Ok(true)
}

/// The tables [`ensure_web_tables`] adds when missing, with VCL's `resourcetype` rows.
pub const WEB_TABLES: &[&str] = &[
    "resourcetype",
    "resource",
    "log",
    "sublog",
    "changelog",
    "variable",
];

/// Add each of [`WEB_TABLES`] the database lacks, as `vcl_statements` (the backend's
/// schema file, split) creates it; a new `resourcetype` gets VCL's ids for computer (12),
/// image (13), schedule (15) and managementnode (16), and a new `resource` gets a row for
/// every image and computer already there, so VCL's web front end lists them.
pub async fn ensure_web_tables(
    db: &Db,
    vcl_statements: &[String],
    columns: &[(String, String)],
) -> Result<(), DbError> {
    let mut added = Vec::new();
    for table in WEB_TABLES {
        if columns.iter().any(|(t, _)| t == table) {
            continue;
        }
        let head = format!("CREATE TABLE `{table}` (");
        let mut steps: Vec<String> = vcl_statements
            .iter()
            .filter(|s| s.starts_with(&head) || s.contains(&format!(" ON `{table}` (")))
            .cloned()
            .collect();
        match *table {
            "resourcetype" => steps.push(
                "INSERT INTO `resourcetype` (`id`, `name`) VALUES (12, 'computer'), (13, 'image'), (15, 'schedule'), (16, 'managementnode')"
                    .to_string(),
            ),
            "resource" => {
                steps.push("INSERT INTO `resource` (`resourcetypeid`, `subid`) SELECT 13, `id` FROM `image` ORDER BY `id`".to_string());
                steps.push("INSERT INTO `resource` (`resourcetypeid`, `subid`) SELECT 12, `id` FROM `computer` ORDER BY `id`".to_string());
            }
            _ => {}
        }
        for step in &steps {
            let what = format!(
                "adding VCL's table {table}: {}",
                step.lines().next().unwrap_or("")
            );
            with_pool!(db, p => sqlx::query(step).execute(p).await.during(what).map(|_| ()))?;
        }
        added.push(*table);
    }
    if !added.is_empty() {
        tracing::warn!(
            "the database lacked VCL's table(s) {}; added them as VCL declares them (images and computers got their resource rows)",
            added.join(", ")
        );
    }
    Ok(())
}
