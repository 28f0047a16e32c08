//! What the operators' view reads beside the listings (`db::listing`,
//! `db::requests::list_requests`): one reservation's request row, and the last load-log
//! step of each reservation on the page, in one query.

use std::collections::HashMap;

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, RowExt};
use crate::db::requests::RequestRow;

/// The request row of reservation `id` (as `provhost request list` shows it), if any.
pub async fn reservation_row(db: &Db, id: i64) -> Result<Option<RequestRow>, DbError> {
    let sql = "SELECT rq.`id` AS `requestid`, r.`id` AS `reservationid`, rq.`stateid`, rq.`laststateid`, u.`unityid`, i.`name` AS `image`, \
         c.`hostname`, mn.`hostname` AS `mn`, CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end` \
         FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` LEFT JOIN `user` u ON u.`id` = rq.`userid` \
         LEFT JOIN `image` i ON i.`id` = r.`imageid` LEFT JOIN `computer` c ON c.`id` = r.`computerid` \
         LEFT JOIN `managementnode` mn ON mn.`id` = r.`managementnodeid` WHERE r.`id` = ?";
    let what = format!("reading reservation {id}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let row = sqlx::query(sql).bind(id).fetch_optional(p).await.during(what.as_str())?;
            row.map(|r| Ok(RequestRow {
                request_id: r.int("requestid")?, reservation_id: r.int("reservationid")?,
                state: state_label(r.int("stateid")?), laststate: state_label(r.int("laststateid")?),
                user: r.text("unityid")?, image: r.text("image")?, computer: r.text("hostname")?, management_node: r.text("mn")?,
                start: r.text("start")?, end: r.text("end")?,
            })).transpose()
        })
    })
    .await
}

/// The newest load-log step (`loadstatename`, `additionalinfo`) of each of `reservations`.
pub async fn last_steps(
    db: &Db,
    reservations: &[i64],
) -> Result<HashMap<i64, (String, String)>, DbError> {
    if reservations.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; reservations.len()].join(", ");
    let sql = format!(
        "SELECT l.`reservationid`, s.`loadstatename`, l.`additionalinfo` FROM `computerloadlog` l \
         LEFT JOIN `computerloadstate` s ON s.`id` = l.`loadstateid` \
         WHERE l.`id` IN (SELECT MAX(l2.`id`) FROM `computerloadlog` l2 WHERE l2.`reservationid` IN ({marks}) GROUP BY l2.`reservationid`)"
    );
    let what = "reading the last load-log steps";
    db.retry(what, || async {
        with_pool!(db, p => {
            let mut q = sqlx::query(&sql);
            for r in reservations {
                q = q.bind(*r);
            }
            let rows = q.fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok((r.int("reservationid")?, (r.text("loadstatename")?, r.text("additionalinfo")?))))
                .collect::<Result<HashMap<_, _>, DbError>>()
        })
    })
    .await
}
