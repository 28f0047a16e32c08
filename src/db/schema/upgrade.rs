//! Bringing an existing database's `provhost_*` tables up to what the code needs, for the
//! parts `CREATE TABLE IF NOT EXISTS` cannot change: today the unique key on
//! `provhost_computervar (computerid, name)` that `flow::set_computer_var`'s upsert relies on.

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
