//! The inventory as an operator reads it (`provhost computer|image|user|node list`):
//! computers with state, provisioning and holder; images with their production revision;
//! users; management nodes with their lease. At most [`MAX_ROWS`] rows each.

use serde::Serialize;

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};

/// The most rows one listing returns.
pub const MAX_ROWS: usize = 10_000;

/// One computer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputerRow {
    pub id: i64,
    pub hostname: String,
    pub ip: String,
    pub state: String,
    pub provisioning: String,
    #[serde(rename = "type")]
    pub computer_type: String,
    /// `image.name` of `computer.currentimageid`.
    pub current_image: String,
    /// The VM host it runs on (its host name), if a VM.
    pub vmhost: Option<String>,
    pub ssh_port: i64,
    /// The management node it is pinned to (`provhost_computer.managementnodeid`).
    pub management_node: Option<String>,
    /// The request holding it (`provhost_computerlock`), while unfinished.
    pub held_by_request: Option<i64>,
}

/// Computers not deleted, by id.
pub async fn computers(db: &Db) -> Result<Vec<ComputerRow>, DbError> {
    let sql = format!(
        "SELECT c.`id`, c.`hostname`, c.`IPaddress`, c.`stateid`, c.`type`, p.`name` AS `provisioning`, i.`name` AS `image`, \
         hc.`hostname` AS `vmhost`, pc.`sshport`, mn.`hostname` AS `node`, \
         (SELECT l.`requestid` FROM `provhost_computerlock` l JOIN `request` rq ON rq.`id` = l.`requestid` \
          WHERE l.`computerid` = c.`id` AND rq.`stateid` NOT IN (5, 12)) AS `held` \
         FROM `computer` c LEFT JOIN `provisioning` p ON p.`id` = c.`provisioningid` LEFT JOIN `image` i ON i.`id` = c.`currentimageid` \
         LEFT JOIN `vmhost` vh ON vh.`id` = c.`vmhostid` LEFT JOIN `computer` hc ON hc.`id` = vh.`computerid` \
         LEFT JOIN `provhost_computer` pc ON pc.`computerid` = c.`id` LEFT JOIN `managementnode` mn ON mn.`id` = pc.`managementnodeid` \
         WHERE c.`deleted` = 0 ORDER BY c.`id` LIMIT {MAX_ROWS}"
    );
    let what = "listing computers";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(ComputerRow {
                id: r.int("id")?,
                hostname: r.text("hostname")?,
                ip: r.text("IPaddress")?,
                state: state_label(r.int("stateid")?),
                provisioning: r.text("provisioning")?,
                computer_type: r.text("type")?,
                current_image: r.text("image")?,
                vmhost: r.opt_text("vmhost")?,
                ssh_port: r.opt_int("sshport")?.unwrap_or(22),
                management_node: r.opt_text("node")?,
                held_by_request: r.opt_int("held")?,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// One image with its production revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageRow {
    pub id: i64,
    pub name: String,
    pub prettyname: String,
    /// `OS.name`.
    pub os: String,
    /// The production revision's number, id and on-disk name; `None` without one.
    pub revision: Option<i64>,
    pub imagerevision_id: Option<i64>,
    pub imagename: Option<String>,
    pub size_mb: i64,
    pub reload_minutes: i64,
}

/// Images not deleted, by id.
pub async fn images(db: &Db) -> Result<Vec<ImageRow>, DbError> {
    let sql = format!(
        "SELECT i.`id`, i.`name`, i.`prettyname`, o.`name` AS `os`, i.`size`, i.`reloadtime`, \
         ir.`id` AS `irid`, ir.`revision`, ir.`imagename` FROM `image` i LEFT JOIN `OS` o ON o.`id` = i.`OSid` \
         LEFT JOIN `imagerevision` ir ON ir.`id` = (SELECT MAX(x.`id`) FROM `imagerevision` x WHERE x.`imageid` = i.`id` \
         AND x.`production` = 1 AND x.`deleted` = 0) WHERE i.`deleted` = 0 ORDER BY i.`id` LIMIT {MAX_ROWS}"
    );
    let what = "listing images";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(ImageRow {
                id: r.int("id")?,
                name: r.text("name")?,
                prettyname: r.text("prettyname")?,
                os: r.text("os")?,
                revision: r.opt_int("revision")?,
                imagerevision_id: r.opt_int("irid")?,
                imagename: r.opt_text("imagename")?,
                size_mb: r.int("size")?,
                reload_minutes: r.int("reloadtime")?,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// One user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserRow {
    pub id: i64,
    /// `user.unityid`.
    pub login: String,
    pub uid: Option<i64>,
    /// `affiliation.name`.
    pub affiliation: String,
    /// Whether the user logs in with SSH keys (`usepublickeys`).
    pub ssh_keys: bool,
}

/// Users, by id.
pub async fn users(db: &Db) -> Result<Vec<UserRow>, DbError> {
    let sql = format!(
        "SELECT u.`id`, u.`unityid`, u.`uid`, a.`name` AS `affiliation`, u.`usepublickeys` FROM `user` u \
         LEFT JOIN `affiliation` a ON a.`id` = u.`affiliationid` ORDER BY u.`id` LIMIT {MAX_ROWS}"
    );
    let what = "listing users";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(UserRow {
                id: r.int("id")?,
                login: r.text("unityid")?,
                uid: r.opt_int("uid")?,
                affiliation: r.text("affiliation")?,
                ssh_keys: r.int("usepublickeys")? != 0,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// One management node with the daemon that holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    pub id: i64,
    pub hostname: String,
    pub ip: String,
    pub state: String,
    pub lastcheckin: Option<String>,
    /// `provhost_nodelease`: holder id, host, since, expiry (`None` when never held).
    pub lease_holder: Option<String>,
    pub lease_host: Option<String>,
    pub lease_since: Option<String>,
    pub lease_expires: Option<String>,
    /// Whether the lease is still running (database clock).
    pub lease_live: bool,
}

/// Management nodes, by id.
pub async fn nodes(db: &Db) -> Result<Vec<NodeRow>, DbError> {
    let now = db.now_sql();
    let sql = format!(
        "SELECT mn.`id`, mn.`hostname`, mn.`IPaddress`, mn.`stateid`, CAST(mn.`lastcheckin` AS CHAR) AS `checkin`, \
         l.`holder`, l.`host`, CAST(l.`acquired` AS CHAR) AS `since`, CAST(l.`expires` AS CHAR) AS `expires`, \
         CASE WHEN l.`expires` > {now} AND l.`holder` <> '' THEN 1 ELSE 0 END AS `live` \
         FROM `managementnode` mn LEFT JOIN `provhost_nodelease` l ON l.`managementnodeid` = mn.`id` ORDER BY mn.`id` LIMIT {MAX_ROWS}"
    );
    let what = "listing management nodes";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| {
                let holder = r.opt_text("holder")?.filter(|h| !h.is_empty());
                let held = holder.is_some();
                Ok(NodeRow {
                    id: r.int("id")?,
                    hostname: r.text("hostname")?,
                    ip: r.text("IPaddress")?,
                    state: state_label(r.int("stateid")?),
                    lastcheckin: r.opt_text("checkin")?,
                    lease_holder: holder,
                    lease_host: r.opt_text("host")?.filter(|_| held),
                    lease_since: r.opt_text("since")?.filter(|_| held),
                    lease_expires: r.opt_text("expires")?.filter(|_| held),
                    lease_live: r.int("live")? == 1,
                })
            }).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}
