//! VCL's timing variables from the `variable` table (`name`, `serialization`, `value`), as
//! vcld's `get_timings` reads them: for a user of affiliation A, the row named
//! `NAME|A` wins over the row named `NAME`; a value of 0, an empty one or no row at all
//! means "not set" (vcld then uses its default; provhost uses `provhost.toml`).
//!
//! Values are seconds, except `ignore_connections_gte` (minutes), as in VCL. A value is
//! read whatever its `serialization`: `none` (plain text), `yaml` (`--- 900`) or
//! `phpserialize` (`i:900;`, `s:3:"900";`).

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};

/// The timing variables provhost reads (VCL's `get_timings` list, less the server and
/// cluster checks provhost has no flow for).
pub const TIMING_NAMES: &[&str] = &[
    "acknowledgetimeout",
    "initialconnecttimeout",
    "reconnecttimeout",
    "general_inuse_check",
    "general_end_notice_first",
    "general_end_notice_second",
    "ignore_connections_gte",
];

/// One timing found in the `variable` table.
#[derive(Debug, Clone, PartialEq)]
pub struct VarTiming {
    /// One of [`TIMING_NAMES`].
    pub name: &'static str,
    pub value: u64,
    /// The row it came from (`acknowledgetimeout|Local` or `acknowledgetimeout`).
    pub row: String,
}

/// A `variable.value` as a whole number, whatever its serialization; `None` when it is
/// not one.
pub fn parse_number(serialization: &str, value: &str) -> Option<u64> {
    let v = value.trim();
    let text = match serialization {
        "yaml" => v
            .strip_prefix("---")
            .unwrap_or(v)
            .trim()
            .trim_end_matches("...")
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string(),
        "phpserialize" => {
            if let Some(n) = v.strip_prefix("i:").and_then(|r| r.strip_suffix(';')) {
                n.to_string()
            } else if let Some(rest) = v.strip_prefix("s:") {
                let (_, quoted) = rest.split_once(':')?;
                quoted
                    .strip_suffix(';')?
                    .trim_matches('"')
                    .trim()
                    .to_string()
            } else {
                return None;
            }
        }
        _ => v.to_string(),
    };
    text.parse::<u64>().ok()
}

/// The timings the `variable` table sets, for a user of affiliation `affiliation` (none:
/// only the plain names). A row that does not hold a whole number is logged and skipped.
pub async fn timings(db: &Db, affiliation: Option<&str>) -> Result<Vec<VarTiming>, DbError> {
    let mut names: Vec<String> = TIMING_NAMES.iter().map(|n| n.to_string()).collect();
    if let Some(a) = affiliation {
        names.extend(TIMING_NAMES.iter().map(|n| format!("{n}|{a}")));
    }
    let marks = vec!["?"; names.len()].join(", ");
    let sql = format!(
        "SELECT `name`, `serialization`, CAST(`value` AS CHAR) AS `value` FROM `variable` WHERE `name` IN ({marks})"
    );
    let what = "reading VCL's timing variables (table variable)";
    let rows: Vec<(String, String, String)> = db
        .retry(what, || async {
            with_pool!(db, p => {
                let mut q = sqlx::query(&sql);
                for n in &names {
                    q = q.bind(n);
                }
                let rows = q.fetch_all(p).await.during(what)?;
                rows.iter().map(|r| Ok((r.text("name")?, r.text("serialization")?, r.text("value")?))).collect::<Result<Vec<_>, DbError>>()
            })
        })
        .await?;
    let value_of = |row_name: &str| -> Option<u64> {
        let (_, ser, value) = rows.iter().find(|(n, _, _)| n == row_name)?;
        match parse_number(ser, value) {
            Some(0) => None,
            Some(v) => Some(v),
            None => {
                tracing::warn!(
                    variable = row_name,
                    serialization = %ser,
                    "variable.value {value:?} is not a whole number; ignored"
                );
                None
            }
        }
    };
    let mut out = Vec::new();
    for name in TIMING_NAMES {
        let candidates = affiliation
            .map(|a| format!("{name}|{a}"))
            .into_iter()
            .chain(std::iter::once(name.to_string()));
        for row in candidates {
            if let Some(value) = value_of(&row) {
                out.push(VarTiming { name, value, row });
                break;
            }
        }
    }
    Ok(out)
}

/// The affiliation name (`affiliation.name`) of user `user`, if the user exists.
pub async fn user_affiliation(db: &Db, user: i64) -> Result<Option<String>, DbError> {
    let what = format!("reading the affiliation of user {user}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT a.`name` FROM `user` u JOIN `affiliation` a ON a.`id` = u.`affiliationid` WHERE u.`id` = ?")
                .bind(user).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| r.text("name")).transpose()
        })
    })
    .await
}

/// Set a variable as VCL's web front end stores a plain one (`serialization = 'none'`),
/// replacing a row of that name. For operators' tools and tests.
pub async fn set_plain(db: &Db, name: &str, value: &str) -> Result<(), DbError> {
    let now = db.now_sql();
    let insert = format!(
        "INSERT INTO `variable` (`name`, `serialization`, `value`, `setby`, `timestamp`) VALUES (?, 'none', ?, 'provhost', {now})"
    );
    let what = format!("setting variable {name}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            sqlx::query("DELETE FROM `variable` WHERE `name` = ?").bind(name).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query(&insert).bind(name).bind(value).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_every_serialization() {
        assert_eq!(parse_number("none", "900"), Some(900));
        assert_eq!(parse_number("none", " 60\n"), Some(60));
        assert_eq!(parse_number("yaml", "--- 600\n"), Some(600));
        assert_eq!(parse_number("yaml", "---\n'300'\n"), Some(300));
        assert_eq!(parse_number("phpserialize", "i:120;"), Some(120));
        assert_eq!(parse_number("phpserialize", "s:3:\"900\";"), Some(900));
        assert_eq!(parse_number("none", "15 minutes"), None);
        assert_eq!(parse_number("none", "-5"), None);
        assert_eq!(parse_number("phpserialize", "b:1;"), None);
    }
}
