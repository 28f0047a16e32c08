//! Registering module scripts the way VCL's database knows modules: a `provisioning` or
//! `OS` row pointing (`moduleid`) at a `module` row, created together in one transaction
//! (`provhost add provisioning|os`). The `module` row is reused when one of that name
//! exists. Data access only; `src/cli/add.rs` checks the input and the script.

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, InsertedId, RowExt};
use crate::host::modmap::ModuleRow;

/// Inside a transaction (`$tx`, on either backend): the module row named `$want.name`,
/// created when missing, as `(ModuleRow, created)`. A row of that name with another perl
/// package than a given one is refused.
macro_rules! module_in {
    ($tx:expr, $want:expr, $what:expr) => {{
        let want: &NewModuleRow = $want;
        let found = sqlx::query("SELECT `id`, `name`, `perlpackage` FROM `module` WHERE `name` = ?")
            .bind(want.name.as_str())
            .fetch_optional(&mut *$tx)
            .await
            .during($what)?;
        match found {
            Some(r) => {
                let row = ModuleRow {
                    id: r.int("id")?,
                    name: r.text("name")?,
                    perl_package: r.text("perlpackage")?,
                };
                if let Some(e) = package_conflict(&row, want) {
                    return Err(e);
                }
                (row, false)
            }
            None => {
                let id = sqlx::query("INSERT INTO `module` (`name`, `prettyname`, `description`, `perlpackage`) VALUES (?, ?, ?, ?)")
                    .bind(want.name.as_str())
                    .bind(want.prettyname.as_str())
                    .bind(want.description.as_str())
                    .bind(want.perlpackage.as_str())
                    .execute(&mut *$tx)
                    .await
                    .during($what)?
                    .inserted_id();
                let row = ModuleRow {
                    id,
                    name: want.name.clone(),
                    perl_package: want.perlpackage.clone(),
                };
                (row, true)
            }
        }
    }};
}

/// The `module` row a new provisioning or OS row points at: found by `name`, or created
/// with these columns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModuleRow {
    /// `module.name` (`provisioning_NAME`, `os_NAME` by VCL's convention).
    pub name: String,
    /// `module.prettyname`.
    pub prettyname: String,
    /// `module.description` (provhost writes the script's path there).
    pub description: String,
    /// `module.perlpackage`; empty for modules only provhost serves.
    pub perlpackage: String,
}

/// What an add created: the new row's id and the module row it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// `provisioning.id` or `OS.id`.
    pub id: i64,
    pub module: ModuleRow,
    /// Whether the module row was created (false: an existing one of that name is used).
    pub module_created: bool,
}

/// A new `OS` row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOs {
    /// `OS.name`.
    pub name: String,
    /// `OS.prettyname` (unique too).
    pub prettyname: String,
    /// `OS.type`: an `OStype.name` (`linux`, `windows`, `unix`, `osx`).
    pub os_type: String,
    /// `OS.installtype` (`image` for provhost's modules; VCL's `none`, `partimage`,
    /// `kickstart`, `vmware`, …).
    pub installtype: String,
    /// `OS.minram` in MB.
    pub minram: i64,
}

/// The `OStype` names, sorted.
pub async fn os_types(db: &Db) -> Result<Vec<String>, DbError> {
    let what = "reading the OStype table";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT `name` FROM `OStype` ORDER BY `name`").fetch_all(p).await.during(what)?;
            rows.iter().map(|r| r.text("name")).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// The `module` row named `name`, if any.
pub async fn module_named(db: &Db, name: &str) -> Result<Option<ModuleRow>, DbError> {
    let what = format!("looking for module {name}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT `id`, `name`, `perlpackage` FROM `module` WHERE `name` = ?")
                .bind(name).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok(ModuleRow { id: r.int("id")?, name: r.text("name")?, perl_package: r.text("perlpackage")? })).transpose()
        })
    })
    .await
}

/// A module row of that name exists with another perl package than the one asked for.
fn package_conflict(found: &ModuleRow, want: &NewModuleRow) -> Option<DbError> {
    (!want.perlpackage.is_empty() && found.perl_package != want.perlpackage).then(|| {
        DbError::Invalid(format!(
            "{found} exists with perl package {:?}, not {:?}; leave --perl-package out to use it as it is, or give another --module-name",
            found.perl_package, want.perlpackage
        ))
    })
}

/// Add provisioning `name` (`provisioning.name`, shown as `prettyname`) pointing at
/// module row `module` (created unless one of that name exists). A provisioning of that
/// name is [`DbError::Duplicate`].
pub async fn add_provisioning(
    db: &Db,
    name: &str,
    prettyname: &str,
    module: &NewModuleRow,
) -> Result<Registered, DbError> {
    let what = format!("adding provisioning {name}");
    let dup = || DbError::Duplicate {
        what: "provisioning",
        key: name.to_string(),
        hint: "; `provhost computer list` shows which computers use which; choose another name"
            .into(),
    };
    let exists = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query("SELECT `id` FROM `provisioning` WHERE `name` = ?")
                .bind(name).fetch_optional(p).await.during(what.as_str()).map(|r| r.is_some()))
        })
        .await?;
    if exists {
        return Err(dup());
    }
    let r = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let mut tx = p.begin().await.during(what.as_str())?;
                let (row, created) = module_in!(tx, module, what.as_str());
                let id = sqlx::query("INSERT INTO `provisioning` (`name`, `prettyname`, `moduleid`) VALUES (?, ?, ?)")
                    .bind(name).bind(prettyname).bind(row.id).execute(&mut *tx).await.during(what.as_str())?.inserted_id();
                tx.commit().await.during(what.as_str())?;
                Ok(Registered { id, module: row, module_created: created })
            })
        })
        .await;
    r.map_err(|e| if e.is_unique_violation() { dup() } else { e })
}

/// Add OS `os` pointing at module row `module` (created unless one of that name exists).
/// An OS of that name or pretty name is [`DbError::Duplicate`]; a type that is no
/// `OStype` row is [`DbError::Invalid`].
pub async fn add_os(db: &Db, os: &NewOs, module: &NewModuleRow) -> Result<Registered, DbError> {
    let what = format!("adding OS {}", os.name);
    let types = os_types(db).await?;
    if !types.contains(&os.os_type) {
        return Err(DbError::Invalid(format!(
            "OS type {:?} is not a row of the OStype table (it has: {}); pass one of them with --type",
            os.os_type,
            types.join(", ")
        )));
    }
    let dup = |key: String| DbError::Duplicate {
        what: "OS",
        key,
        hint: "; `provhost image list` shows the OS of each image; choose another name or --pretty"
            .into(),
    };
    let found = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query("SELECT `name`, `prettyname` FROM `OS` WHERE `name` = ? OR `prettyname` = ? ORDER BY `id` LIMIT 1")
                    .bind(&os.name).bind(&os.prettyname).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| Ok((r.text("name")?, r.text("prettyname")?))).transpose()
            })
        })
        .await?;
    if let Some((name, pretty)) = found {
        return Err(dup(if name == os.name {
            os.name.clone()
        } else {
            format!("{name} with the pretty name {pretty:?}")
        }));
    }
    let r = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let mut tx = p.begin().await.during(what.as_str())?;
                let (row, created) = module_in!(tx, module, what.as_str());
                let id = sqlx::query("INSERT INTO `OS` (`name`, `prettyname`, `type`, `installtype`, `minram`, `moduleid`) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(&os.name).bind(&os.prettyname).bind(&os.os_type).bind(&os.installtype).bind(os.minram).bind(row.id)
                    .execute(&mut *tx).await.during(what.as_str())?.inserted_id();
                tx.commit().await.during(what.as_str())?;
                Ok(Registered { id, module: row, module_created: created })
            })
        })
        .await;
    r.map_err(|e| {
        if e.is_unique_violation() {
            dup(os.name.clone())
        } else {
            e
        }
    })
}

/// The `provisioning.name`s computers (not deleted) use, and the `OS.name`s images (not
/// deleted) use: which registered rows matter to reservations (`provhost check`).
pub async fn rows_in_use(
    db: &Db,
) -> Result<
    (
        std::collections::BTreeSet<String>,
        std::collections::BTreeSet<String>,
    ),
    DbError,
> {
    let what = "reading which provisioning and OS rows are used";
    let names = |sql: &'static str| async move {
        db.retry(what, || async {
            with_pool!(db, p => {
                let rows = sqlx::query(sql).fetch_all(p).await.during(what)?;
                rows.iter().map(|r| r.text("name")).collect::<Result<std::collections::BTreeSet<_>, DbError>>()
            })
        })
        .await
    };
    let prov = names("SELECT DISTINCT p.`name` FROM `provisioning` p JOIN `computer` c ON c.`provisioningid` = p.`id` WHERE c.`deleted` = 0").await?;
    // `noimage` is VCL's placeholder (a computer's image before its first load), not an
    // image anyone reserves.
    let os = names("SELECT DISTINCT o.`name` FROM `OS` o JOIN `image` i ON i.`OSid` = o.`id` WHERE i.`deleted` = 0 AND i.`name` <> 'noimage'").await?;
    Ok((prov, os))
}

/// Every `module` row, by id.
pub async fn module_rows(db: &Db) -> Result<Vec<ModuleRow>, DbError> {
    let what = "reading the module table";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT `id`, `name`, `perlpackage` FROM `module` ORDER BY `id`").fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(ModuleRow { id: r.int("id")?, name: r.text("name")?, perl_package: r.text("perlpackage")? })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}
