//! Adding the things reservations are made of — users, images (with a production
//! revision), computers, VM hosts, management nodes — the way VCL's web front end adds
//! them (images and computers with their `resource` row, which the web's lists join).
//! Used by `db init` (this machine's management node), by tests and by the demo.

use crate::db::claim::state_id;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, InsertedId, RowExt};
use crate::host::modmap::ModuleRow;

/// VCL's `resourcetype` ids: the web lists an image or computer only with its `resource`
/// row (`resource.resourcetypeid`, `resource.subid` = the image's or computer's id).
pub const RESOURCE_COMPUTER: i64 = 12;
pub const RESOURCE_IMAGE: i64 = 13;
const RESOURCE: &str = "INSERT INTO `resource` (`resourcetypeid`, `subid`) VALUES (?, ?)";

/// Add a user of affiliation 1 (`Local`); returns `user.id`. A login (or uid) that is
/// taken is [`DbError::Duplicate`] naming it.
pub async fn add_user(db: &Db, login: &str, uid: Option<i64>) -> Result<i64, DbError> {
    let what = format!("adding user {login}");
    let taken = "SELECT `unityid`, `uid` FROM `user` WHERE (`unityid` = ? AND `affiliationid` = 1) OR `uid` = ? ORDER BY `id` LIMIT 1";
    let found = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query(taken).bind(login).bind(uid).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| Ok((r.text("unityid")?, r.opt_int("uid")?))).transpose()
            })
        })
        .await?;
    let duplicate = |found: Option<(String, Option<i64>)>| match found {
        Some((other, Some(u))) if other != login && Some(u) == uid => DbError::Duplicate {
            what: "uid",
            key: u.to_string(),
            hint: format!(" (user {other} has it); choose another --uid or leave it out"),
        },
        _ => DbError::Duplicate {
            what: "user",
            key: login.to_string(),
            hint: "; `provhost user list` shows the users".into(),
        },
    };
    if found.is_some() {
        return Err(duplicate(found));
    }
    let r = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query("INSERT INTO `user` (`uid`, `unityid`, `affiliationid`, `email`) VALUES (?, ?, 1, '')")
                .bind(uid).bind(login).execute(p).await.during(what.as_str()).map(|r| r.inserted_id()))
        })
        .await;
    // Added by someone else between the look and the insert.
    r.map_err(|e| {
        if e.is_unique_violation() {
            duplicate(None)
        } else {
            e
        }
    })
}

/// Give user `login` SSH public keys (VCL's `user.sshpublickeys`, one per line) and turn
/// `usepublickeys` on, as the web front end's user preferences do.
pub async fn set_user_ssh_keys(db: &Db, login: &str, keys: &str) -> Result<(), DbError> {
    let what = format!("setting the SSH keys of user {login}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query("UPDATE `user` SET `usepublickeys` = 1, `sshpublickeys` = ? WHERE `unityid` = ?")
                .bind(keys).bind(login).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 0 {
        return Err(DbError::NotFound {
            what: "user",
            key: login.to_string(),
        });
    }
    Ok(())
}

/// Add an image for OS `os` (`OS.name`) with revision 0 as its production revision, named
/// `name` on disk. Returns (image id, imagerevision id).
pub async fn add_image(
    db: &Db,
    name: &str,
    prettyname: &str,
    os: &str,
) -> Result<(i64, i64), DbError> {
    add_image_as(db, name, prettyname, os, name).await
}

/// [`add_image`] with the revision's on-disk name (`imagerevision.imagename`) given.
pub async fn add_image_as(
    db: &Db,
    name: &str,
    prettyname: &str,
    os: &str,
    imagename: &str,
) -> Result<(i64, i64), DbError> {
    let now = db.now_sql();
    // The OS by `OS.name`, else by `OS.prettyname` (VCL's web shows the pretty names).
    let image = "INSERT INTO `image` (`name`, `prettyname`, `ownerid`, `OSid`, `deleted`, `size`) SELECT ?, ?, 1, `id`, 0, 0 FROM `OS` \
                 WHERE `name` = ? OR `prettyname` = ? ORDER BY CASE WHEN `name` = ? THEN 0 ELSE 1 END, `id` LIMIT 1";
    let revision = format!(
        "INSERT INTO `imagerevision` (`imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `imagename`) VALUES (?, 0, 1, {now}, 0, 1, ?)"
    );
    let what = format!("adding image {name}");
    let r = db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let r = sqlx::query(image).bind(name).bind(prettyname).bind(os).bind(os).bind(os).execute(&mut *tx).await.during(what.as_str())?;
            if r.rows_affected() != 1 {
                // Roll back now: a dropped transaction on MySQL keeps its locks until the
                // connection is used again.
                tx.rollback().await.during(what.as_str())?;
                return Err(DbError::NotFound { what: "OS", key: os.to_string() });
            }
            let image_id = r.inserted_id();
            let rev = sqlx::query(&revision).bind(image_id).bind(imagename).execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            sqlx::query(RESOURCE).bind(RESOURCE_IMAGE).bind(image_id).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())?;
            Ok((image_id, rev))
        })
    })
    .await;
    r.map_err(|e| {
        if e.is_unique_violation() {
            DbError::Duplicate {
                what: "image",
                key: if name == prettyname {
                    name.to_string()
                } else {
                    format!("{name} (or its pretty name {prettyname:?})")
                },
                hint: "; `provhost image list` shows the images; choose another name".into(),
            }
        } else {
            e
        }
    })
}

/// A computer to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewComputer {
    pub hostname: String,
    pub ip: String,
    pub private_ip: String,
    /// `provisioning.name` (`qemu`, `lab`, `libvirt`, …).
    pub provisioning: String,
    /// `blade`, `lab` or `virtualmachine`.
    pub computer_type: String,
    /// State name; VCL adds computers in `maintenance`, provhost's demo in `available`.
    pub state: String,
    pub vmhost_id: Option<i64>,
    /// Recorded in `provhost_computer` when not 22.
    pub ssh_port: u16,
    /// Pin the computer to one management node (`provhost_computer.managementnodeid`).
    pub management_node_id: Option<i64>,
}

impl NewComputer {
    /// An available `lab` computer reached on `ip`, port 22.
    pub fn lab(hostname: &str, ip: &str) -> Self {
        NewComputer {
            hostname: hostname.into(),
            ip: ip.into(),
            private_ip: ip.into(),
            provisioning: "lab".into(),
            computer_type: "lab".into(),
            state: "available".into(),
            vmhost_id: None,
            ssh_port: 22,
            management_node_id: None,
        }
    }
}

/// Add a computer (and its `provhost_computer` row when it needs one); returns its id.
pub async fn add_computer(db: &Db, c: &NewComputer) -> Result<i64, DbError> {
    let state = state_id(&c.state)?;
    let insert = "INSERT INTO `computer` (`stateid`, `hostname`, `IPaddress`, `privateIPaddress`, `type`, `provisioningid`, `vmhostid`, \
                  `currentimageid`, `nextimageid`, `imagerevisionid`, `deleted`) SELECT ?, ?, ?, ?, ?, `id`, ?, 1, 1, 1, 0 \
                  FROM `provisioning` WHERE `name` = ?";
    let what = format!("adding computer {}", c.hostname);
    if let Some((id, ip)) = computer_named(db, &c.hostname).await? {
        return Err(DbError::Duplicate {
            what: "computer",
            key: c.hostname.clone(),
            hint: format!(" (computer {id}, {ip}); `provhost computer list` shows the computers"),
        });
    }
    let r = db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let r = sqlx::query(insert)
                .bind(state).bind(&c.hostname).bind(&c.ip).bind(&c.private_ip).bind(&c.computer_type).bind(c.vmhost_id).bind(&c.provisioning)
                .execute(&mut *tx).await.during(what.as_str())?;
            if r.rows_affected() != 1 {
                tx.rollback().await.during(what.as_str())?;
                return Err(DbError::NotFound { what: "provisioning", key: c.provisioning.clone() });
            }
            let id = r.inserted_id();
            sqlx::query(RESOURCE).bind(RESOURCE_COMPUTER).bind(id).execute(&mut *tx).await.during(what.as_str())?;
            if c.ssh_port != 22 || c.management_node_id.is_some() {
                sqlx::query("INSERT INTO `provhost_computer` (`computerid`, `sshport`, `managementnodeid`) VALUES (?, ?, ?)")
                    .bind(id).bind(i64::from(c.ssh_port)).bind(c.management_node_id).execute(&mut *tx).await.during(what.as_str())?;
            }
            tx.commit().await.during(what.as_str())?;
            Ok(id)
        })
    })
    .await;
    r.map_err(|e| {
        if e.is_unique_violation() {
            DbError::Duplicate {
                what: "computer",
                key: c.hostname.clone(),
                hint: "; `provhost computer list` shows the computers".into(),
            }
        } else {
            e
        }
    })
}

/// The computer (not deleted) named `hostname`: (id, IPaddress).
pub async fn computer_named(db: &Db, hostname: &str) -> Result<Option<(i64, String)>, DbError> {
    let sql = "SELECT `id`, `IPaddress` FROM `computer` WHERE `deleted` = 0 AND `hostname` = ? ORDER BY `id` LIMIT 1";
    let what = format!("looking for computer {hostname}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(sql).bind(hostname).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok((r.int("id")?, r.text("IPaddress")?))).transpose()
        })
    })
    .await
}

/// The computers (not deleted) at address `ip`: (id, hostname), at most 20.
pub async fn computers_at(db: &Db, ip: &str) -> Result<Vec<(i64, String)>, DbError> {
    let sql = "SELECT `id`, `hostname` FROM `computer` WHERE `deleted` = 0 AND `IPaddress` = ? ORDER BY `id` LIMIT 20";
    let what = format!("looking for computers at {ip}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(sql).bind(ip).fetch_all(p).await.during(what.as_str())?;
            rows.iter().map(|r| Ok((r.int("id")?, r.text("hostname")?))).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// Every provisioning (`provisioning.name`) with its module row (`provisioning.moduleid`;
/// id 0 and empty names when the row is missing), sorted by name.
pub async fn provisioning_modules(db: &Db) -> Result<Vec<(String, ModuleRow)>, DbError> {
    let what = "reading the provisioning table";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT p.`name`, m.`id` AS `m_id`, m.`name` AS `module`, m.`perlpackage` AS `m_perlpackage` FROM `provisioning` p LEFT JOIN `module` m ON m.`id` = p.`moduleid` ORDER BY p.`name`")
                .fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok((r.text("name")?, module_row(r)?))).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// An `OS` row with the module it maps to (`OS.moduleid` → `module`).
#[derive(Debug, Clone, PartialEq)]
pub struct OsRow {
    pub id: i64,
    pub name: String,
    pub prettyname: String,
    /// `OS.moduleid` (0 when the OS has no module row).
    pub module_id: i64,
    /// `module.name` (empty when the OS has no module).
    pub module: String,
    /// `module.perlpackage` (VCL's Perl module; empty for provhost's own rows).
    pub perlpackage: String,
}

/// Every `OS` row with its module, by name.
pub async fn os_rows(db: &Db) -> Result<Vec<OsRow>, DbError> {
    let what = "reading the OS table";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT o.`id`, o.`name`, o.`prettyname`, m.`id` AS `module_id`, m.`name` AS `module`, m.`perlpackage` FROM `OS` o \
                                    LEFT JOIN `module` m ON m.`id` = o.`moduleid` ORDER BY o.`name`")
                .fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(OsRow {
                id: r.int("id")?,
                name: r.text("name")?,
                prettyname: r.opt_text("prettyname")?.unwrap_or_default(),
                module_id: r.opt_int("module_id")?.unwrap_or(0),
                module: r.opt_text("module")?.unwrap_or_default(),
                perlpackage: r.opt_text("perlpackage")?.unwrap_or_default(),
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

impl OsRow {
    /// Its module row, as the module mapping (docs/modules.md) takes it.
    pub fn module_row(&self) -> ModuleRow {
        ModuleRow {
            id: self.module_id,
            name: self.module.clone(),
            perl_package: self.perlpackage.clone(),
        }
    }
}

/// The OS row `os` names: by `OS.name`, else by `OS.prettyname` (as [`add_image`] picks it).
pub fn find_os<'a>(rows: &'a [OsRow], os: &str) -> Option<&'a OsRow> {
    rows.iter()
        .find(|r| r.name == os)
        .or_else(|| rows.iter().find(|r| r.prettyname == os))
}

/// Every OS (`OS.name`) with its module row (`OS.moduleid`; id 0 and empty names when it
/// has none), sorted by OS name.
pub async fn os_modules(db: &Db) -> Result<Vec<(String, ModuleRow)>, DbError> {
    let what = "reading the OS table";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT o.`name`, m.`id` AS `m_id`, m.`name` AS `module`, m.`perlpackage` AS `m_perlpackage` FROM `OS` o LEFT JOIN `module` m ON m.`id` = o.`moduleid` ORDER BY o.`name`")
                .fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok((r.text("name")?, module_row(r)?))).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// The `module` columns of a listing row (`m_id`, `module`, `m_perlpackage`).
fn module_row<R: RowExt>(r: &R) -> Result<ModuleRow, DbError> {
    Ok(ModuleRow {
        id: r.opt_int("m_id")?.unwrap_or(0),
        name: r.text("module")?,
        perl_package: r.text("m_perlpackage")?,
    })
}

/// Make computer `computer` a VM host with a VM profile named `profile` (created when
/// missing, with the given paths); returns `vmhost.id`.
pub async fn add_vmhost(
    db: &Db,
    computer: i64,
    profile: &str,
    datastore: &str,
    repository: &str,
    vmpath: &str,
) -> Result<i64, DbError> {
    let what = format!("making computer {computer} a VM host ({profile})");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let existing = sqlx::query("SELECT `id` FROM `vmprofile` WHERE `profilename` = ?").bind(profile).fetch_optional(&mut *tx).await.during(what.as_str())?;
            let profile_id = match existing {
                Some(r) => r.int("id")?,
                None => sqlx::query("INSERT INTO `vmprofile` (`profilename`, `imageid`, `datastorepath`, `repositorypath`, `vmpath`) VALUES (?, 1, ?, ?, ?)")
                    .bind(profile).bind(datastore).bind(repository).bind(vmpath).execute(&mut *tx).await.during(what.as_str())?.inserted_id(),
            };
            let id = sqlx::query("INSERT INTO `vmhost` (`computerid`, `vmprofileid`) VALUES (?, ?)")
                .bind(computer).bind(profile_id).execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            sqlx::query("UPDATE `computer` SET `stateid` = ? WHERE `id` = ?").bind(state_id("vmhostinuse")?).bind(computer).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())?;
            Ok(id)
        })
    })
    .await
}

/// Set `vmprofile.vmdisk` of profile `profile`: `shared` (VMs are linked clones of the
/// library's image) or `dedicated` (each VM gets a full copy; VCL's default).
pub async fn set_vmprofile_vmdisk(db: &Db, profile: &str, vmdisk: &str) -> Result<(), DbError> {
    if !matches!(vmdisk, "shared" | "dedicated") {
        return Err(DbError::Invalid(format!(
            "vmprofile.vmdisk {vmdisk:?}: use \"shared\" (linked clones) or \"dedicated\" (full copies)"
        )));
    }
    let what = format!("setting vmdisk of VM profile {profile}");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query("UPDATE `vmprofile` SET `vmdisk` = ? WHERE `profilename` = ?")
                .bind(vmdisk).bind(profile).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 0 {
        return Err(DbError::NotFound {
            what: "vmprofile",
            key: profile.to_string(),
        });
    }
    Ok(())
}

/// Add an available management node; returns its id.
pub async fn add_management_node(db: &Db, hostname: &str, ip: &str) -> Result<i64, DbError> {
    let what = format!("adding management node {hostname}");
    db.retry(&what, || async {
        with_pool!(db, p => sqlx::query("INSERT INTO `managementnode` (`IPaddress`, `hostname`, `stateid`, `installpath`) VALUES (?, ?, 2, '/install')")
            .bind(ip).bind(hostname).execute(p).await.during(what.as_str()).map(|r| r.inserted_id()))
    })
    .await
}

/// The id of the management node named `hostname` (VCL matches vcld.conf's FQDN to
/// `managementnode.hostname`).
pub async fn management_node_id(db: &Db, hostname: &str) -> Result<i64, DbError> {
    let what = format!("looking up management node {hostname}");
    let id = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query("SELECT `id` FROM `managementnode` WHERE `hostname` = ?").bind(hostname).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| r.int("id")).transpose()
            })
        })
        .await?;
    id.ok_or_else(|| DbError::NotFound {
        what: "management node",
        key: hostname.to_string(),
    })
}
