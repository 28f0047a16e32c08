//! Reading a reservation into [`ReservationData`], the data every routine sees as `ctx`:
//! one query with joins (the same SQL on both backends), then checks that every row the
//! reservation points to exists, so a broken row is a clear error before any script runs.

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::host::modmap::ModuleRow;
use crate::host::{Kind, ReservationData};

const LOAD: &str = "SELECT r.`id` AS `reservationid`, r.`requestid`, r.`computerid` AS `r_computerid`, r.`imageid` AS `r_imageid`, \
  r.`imagerevisionid` AS `r_imagerevisionid`, r.`managementnodeid` AS `r_mnid`, r.`remoteIP`, \
  rq.`id` AS `rq_id`, rq.`stateid` AS `rq_stateid`, rq.`laststateid` AS `rq_laststateid`, rq.`userid` AS `rq_userid`, \
  CAST(rq.`start` AS CHAR) AS `rq_start`, CAST(rq.`end` AS CHAR) AS `rq_end`, rq.`forimaging`, rq.`checkuser`, \
  c.`id` AS `c_id`, c.`hostname` AS `c_hostname`, c.`IPaddress` AS `c_ip`, c.`privateIPaddress` AS `c_private_ip`, \
  c.`eth0macaddress` AS `c_eth0`, c.`eth1macaddress` AS `c_eth1`, c.`type` AS `c_type`, c.`stateid` AS `c_stateid`, \
  c.`vmhostid` AS `c_vmhostid`, c.`provisioningid` AS `c_provisioningid`, pc.`sshport` AS `c_sshport`, \
  p.`id` AS `p_id`, p.`name` AS `p_name`, p.`moduleid` AS `p_moduleid`, pm.`id` AS `pm_id`, pm.`name` AS `pm_name`, pm.`perlpackage` AS `pm_perlpackage`, \
  vh.`id` AS `vh_id`, vhc.`hostname` AS `vh_hostname`, vp.`profilename` AS `vp_name`, vp.`datastorepath` AS `vp_datastore`, \
  vp.`repositorypath` AS `vp_repository`, vp.`vmpath` AS `vp_vmpath`, vp.`vmdisk` AS `vp_vmdisk`, \
  im.`rootaccess` AS `im_rootaccess`, \
  i.`id` AS `i_id`, i.`prettyname` AS `i_prettyname`, i.`size` AS `i_size`, i.`reloadtime` AS `i_reloadtime`, i.`OSid` AS `i_osid`, \
  ir.`id` AS `ir_id`, ir.`imagename` AS `ir_imagename`, ir.`revision` AS `ir_revision`, \
  o.`id` AS `o_id`, o.`name` AS `o_name`, o.`type` AS `o_type`, o.`moduleid` AS `o_moduleid`, om.`id` AS `om_id`, om.`name` AS `om_name`, om.`perlpackage` AS `om_perlpackage`, \
  u.`id` AS `u_id`, u.`unityid` AS `u_login`, u.`uid` AS `u_uid`, u.`email` AS `u_email`, u.`usepublickeys` AS `u_usekeys`, \
  u.`sshpublickeys` AS `u_keys`, \
  mn.`id` AS `mn_id`, mn.`hostname` AS `mn_hostname`, mn.`installpath` AS `mn_installpath` \
FROM `reservation` r \
  LEFT JOIN `request` rq ON rq.`id` = r.`requestid` \
  LEFT JOIN `computer` c ON c.`id` = r.`computerid` \
  LEFT JOIN `provhost_computer` pc ON pc.`computerid` = c.`id` \
  LEFT JOIN `provisioning` p ON p.`id` = c.`provisioningid` \
  LEFT JOIN `module` pm ON pm.`id` = p.`moduleid` \
  LEFT JOIN `vmhost` vh ON vh.`id` = c.`vmhostid` \
  LEFT JOIN `computer` vhc ON vhc.`id` = vh.`computerid` \
  LEFT JOIN `vmprofile` vp ON vp.`id` = vh.`vmprofileid` \
  LEFT JOIN `image` i ON i.`id` = r.`imageid` \
  LEFT JOIN `imagemeta` im ON im.`id` = i.`imagemetaid` \
  LEFT JOIN `imagerevision` ir ON ir.`id` = r.`imagerevisionid` \
  LEFT JOIN `OS` o ON o.`id` = i.`OSid` \
  LEFT JOIN `module` om ON om.`id` = o.`moduleid` \
  LEFT JOIN `user` u ON u.`id` = rq.`userid` \
  LEFT JOIN `managementnode` mn ON mn.`id` = r.`managementnodeid` \
WHERE r.`id` = ?";

/// Load reservation `id` with its request, computer (and VM host), image, revision, OS,
/// user and management node. Missing links are [`DbError::BrokenReservation`] naming the
/// row; a missing reservation is [`DbError::NotFound`].
pub async fn load_reservation(db: &Db, id: i64) -> Result<ReservationData, DbError> {
    let what = format!("loading reservation {id}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(LOAD).bind(id).fetch_optional(p).await.during(what.as_str())?;
            let Some(r) = row else {
                return Err(DbError::NotFound { what: "reservation", key: id.to_string() });
            };
            let broken = |problem: String| DbError::BrokenReservation { reservation: id, problem };
            if r.opt_int("rq_id")?.is_none() {
                return Err(broken(format!("request {} (reservation.requestid) does not exist", r.int("requestid")?)));
            }
            if r.opt_int("c_id")?.is_none() {
                return Err(broken(format!("computer {} (reservation.computerid) does not exist", r.int("r_computerid")?)));
            }
            if r.opt_int("p_id")?.is_none() {
                return Err(broken(format!(
                    "provisioning {} of computer {} (computer.provisioningid) does not exist",
                    r.int("c_provisioningid")?,
                    r.text("c_hostname")?
                )));
            }
            if r.opt_int("pm_id")?.is_none() {
                return Err(broken(format!(
                    "provisioning {} of computer {} has no module (provisioning.moduleid): module {} does not exist",
                    r.text("p_name")?,
                    r.text("c_hostname")?,
                    r.int("p_moduleid")?
                )));
            }
            let vmhost_id = r.int("c_vmhostid")?;
            if vmhost_id != 0 && r.opt_int("vh_id")?.is_none() {
                return Err(broken(format!("vmhost {vmhost_id} of computer {} (computer.vmhostid) does not exist", r.text("c_hostname")?)));
            }
            if r.opt_int("i_id")?.is_none() {
                return Err(broken(format!("image {} (reservation.imageid) does not exist", r.int("r_imageid")?)));
            }
            if r.opt_int("ir_id")?.is_none() {
                return Err(broken(format!("imagerevision {} (reservation.imagerevisionid) does not exist", r.int("r_imagerevisionid")?)));
            }
            if r.opt_int("o_id")?.is_none() {
                return Err(broken(format!("OS {} of image {} (image.OSid) does not exist", r.int("i_osid")?, r.text("ir_imagename")?)));
            }
            if r.opt_int("om_id")?.is_none() {
                let m = r.opt_int("o_moduleid")?.map(|m| format!("module {m} does not exist")).unwrap_or_else(|| "it has no module".into());
                return Err(broken(format!("OS {} of image {} has no OS module (OS.moduleid): {m}", r.text("o_name")?, r.text("ir_imagename")?)));
            }
            if r.opt_int("u_id")?.is_none() {
                return Err(broken(format!("user {} (request.userid) does not exist", r.int("rq_userid")?)));
            }
            if r.opt_int("mn_id")?.is_none() {
                return Err(broken(format!("management node {} (reservation.managementnodeid) does not exist", r.int("r_mnid")?)));
            }
            let hostname = r.text("c_hostname")?;
            let prov_row = ModuleRow { id: r.int("pm_id")?, name: r.text("pm_name")?, perl_package: r.text("pm_perlpackage")? };
            let os_row = ModuleRow { id: r.int("om_id")?, name: r.text("om_name")?, perl_package: r.text("om_perlpackage")? };
            let keys = if r.int("u_usekeys")? != 0 { r.text("u_keys")? } else { String::new() };
            Ok(ReservationData {
                reservation_id: r.int("reservationid")?,
                request_id: r.int("rq_id")?,
                request_state: state_label(r.int("rq_stateid")?),
                request_laststate: state_label(r.int("rq_laststateid")?),
                request_start: r.text("rq_start")?,
                request_end: r.text("rq_end")?,
                request_forimaging: r.int("forimaging")? != 0,
                request_checkuser: r.int("checkuser")? != 0,
                computer_id: r.int("c_id")?,
                computer_node_name: short_name(&hostname),
                computer_hostname: hostname,
                computer_ip: r.text("c_ip")?,
                computer_private_ip: r.text("c_private_ip")?,
                computer_eth0_mac: r.text("c_eth0")?,
                computer_eth1_mac: r.text("c_eth1")?,
                computer_ssh_port: r.opt_int("c_sshport")?.unwrap_or(22),
                computer_type: r.text("c_type")?,
                computer_state: state_label(r.int("c_stateid")?),
                computer_provisioning_module: script_name(Kind::Provisioning, &prov_row),
                computer_provisioning_module_id: prov_row.id,
                computer_provisioning_module_name: prov_row.name.clone(),
                computer_provisioning_module_perl_package: prov_row.perl_package.clone(),
                vmhost_id,
                vmhost_hostname: r.text("vh_hostname")?,
                vmprofile: r.text("vp_name")?,
                vmprofile_datastore_path: r.text("vp_datastore")?,
                vmprofile_repository_path: r.text("vp_repository")?,
                vmprofile_vmpath: r.text("vp_vmpath")?,
                vmprofile_vmdisk: r.text("vp_vmdisk")?,
                image_id: r.int("i_id")?,
                image_name: r.text("ir_imagename")?,
                image_pretty_name: r.text("i_prettyname")?,
                imagerevision_id: r.int("ir_id")?,
                imagerevision_revision: r.int("ir_revision")?,
                image_os_name: r.text("o_name")?,
                image_os_type: r.text("o_type")?,
                image_os_module: script_name(Kind::Os, &os_row),
                image_os_moduleid: os_row.id,
                image_os_module_name: os_row.name.clone(),
                image_os_module_perl_package: os_row.perl_package.clone(),
                image_size: r.int("i_size")?,
                image_reload_time: r.int("i_reloadtime")?,
                // VCL: an image without imagemeta grants root access.
                image_root_access: r.opt_int("im_rootaccess")?.map(|v| v != 0).unwrap_or(true),
                user_id: r.int("u_id")?,
                user_login_id: r.text("u_login")?,
                user_uid: r.int("u_uid")?,
                user_email: r.text("u_email")?,
                user_ssh_public_keys: keys,
                remote_ip: r.text("remoteIP")?,
                management_node_id: r.int("mn_id")?,
                management_node_hostname: r.text("mn_hostname")?,
                image_library_path: r.text("mn_installpath")?,
            })
        })
    })
    .await
}

/// `computer.hostname` without the domain (VCL's `get_computer_short_name`).
pub fn short_name(hostname: &str) -> String {
    hostname.split('.').next().unwrap_or(hostname).to_string()
}

/// The script a module row maps to by default (docs/modules.md; a script's
/// `MODULE.serves` may claim the row instead when the flow resolves it), or "" when the
/// row's names cannot name a script.
pub fn script_name(kind: Kind, row: &ModuleRow) -> String {
    crate::host::modmap::default_mapping(kind, row)
        .map(|m| m.key.1)
        .unwrap_or_default()
}
