//! Requests as users make them: `provhost request new` inserts a request and its
//! reservation the way VCL's web front end does (request in state `new`, laststate `new`,
//! one reservation naming computer, image, production revision and management node, with
//! the `log`, `sublog` and `changelog` rows the web writes beside them —
//! `db::bookkeeping`), and `provhost request list` shows them.
//!
//! Picking a computer and writing the reservation happen in one transaction that first
//! locks the computer row, so two users asking at once never get overlapping reservations
//! on one computer.
//!
//! Reload time, as VCL's scheduling leaves it: every live reservation of a computer is
//! followed by its image's `image.reloadtime` minutes (the reclaim and reload after it).
//! A new window `[start, end)` for image N is refused when an existing live reservation
//! `[s, e)` for image E satisfies `start < e + reloadtime(E)` and `s < end +
//! reloadtime(N)`. The refusal names the other request, its window and the first start
//! that fits after it.

use chrono::NaiveDateTime;

use crate::db::claim::state_label;
use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, InsertedId, RowExt};
use crate::db::time::{format_datetime, parse_datetime, parse_when};

/// Computer states in which a computer cannot take a new reservation.
const UNUSABLE_COMPUTER_STATES: &[i64] = &[1, 5, 10, 16, 20, 21, 22, 23];
/// Request states that no longer hold their computer: failed, complete.
const FINISHED_REQUEST_STATES: &str = "5, 12";
/// At most this many computers are tried for `--any`.
const MAX_CANDIDATES: usize = 500;
/// The longest `image.reloadtime` (minutes; VCL's column is a `tinyint unsigned`).
const MAX_RELOAD_MINUTES: i64 = 255;
/// At most this many reservations of one computer are read around a new window.
const MAX_NEIGHBOURS: usize = 1000;

/// Which computer a new request is for.
#[derive(Debug, Clone, PartialEq)]
pub enum ComputerChoice {
    /// `computer.hostname`, or its short name.
    Named(String),
    /// Any computer free for the whole time, preferring one that already has the image.
    Any,
}

/// `provhost request new`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    /// `image.name` or `image.prettyname`.
    pub image: String,
    pub computer: ComputerChoice,
    /// `user.unityid`.
    pub user: String,
    /// `now` (default), `+30m`, or `YYYY-MM-DD HH:MM[:SS]`.
    pub start: Option<String>,
    /// Default `+1h` after the start; relative times count from the start.
    pub end: Option<String>,
}

/// What `new_request` made.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub request_id: i64,
    pub reservation_id: i64,
    pub computer_id: i64,
    pub computer: String,
    pub image_id: i64,
    pub imagerevision_id: i64,
    pub management_node_id: i64,
    pub management_node: String,
    pub start: String,
    pub end: String,
}

struct Candidate {
    id: i64,
    hostname: String,
    management_node: Option<i64>,
}

/// Insert a request and its reservation (see the module doc).
pub async fn new_request(db: &Db, req: &NewRequest) -> Result<Created, DbError> {
    let now = parse_datetime(&db.now().await?)?;
    let given = |what: &str, e: DbError| DbError::Invalid(format!("{what}: {e}"));
    let mut start =
        parse_when(req.start.as_deref().unwrap_or("now"), now).map_err(|e| given("start", e))?;
    // A start up to a minute ago (typed for the current minute) is now; earlier is refused.
    if start < now - chrono::Duration::seconds(60) {
        return Err(DbError::Invalid(format!(
            "start {} is in the past (the database's clock says {}); give now, +30m or a later time",
            format_datetime(start),
            format_datetime(now)
        )));
    }
    if start < now {
        start = now;
    }
    let end =
        parse_when(req.end.as_deref().unwrap_or("+1h"), start).map_err(|e| given("end", e))?;
    if end <= start {
        return Err(DbError::Invalid(format!(
            "the end ({end}) must be after the start ({start})"
        )));
    }
    let (image_id, imagerevision_id, reload_minutes) = production_revision(db, &req.image).await?;
    let user_id = user_id(db, &req.user).await?;
    let candidates = candidates(db, &req.computer, image_id).await?;
    if candidates.is_empty() {
        return Err(match &req.computer {
            ComputerChoice::Named(n) => DbError::NotFound {
                what: "computer",
                key: n.clone(),
            },
            ComputerChoice::Any => DbError::Invalid(
                "no computer can take a reservation (none is available or reloadable)".into(),
            ),
        });
    }
    let mut last_busy = String::new();
    for c in candidates.iter().take(MAX_CANDIDATES) {
        let window = Window {
            start,
            end,
            reload_minutes,
            future: start > now,
        };
        match try_computer(db, c, image_id, imagerevision_id, user_id, &window).await? {
            Ok(created) => return Ok(created),
            Err(busy) => last_busy = busy,
        }
    }
    Err(DbError::Invalid(match &req.computer {
        ComputerChoice::Named(_) => last_busy,
        ComputerChoice::Any => format!(
            "no computer is free from {} to {}",
            format_datetime(start),
            format_datetime(end)
        ),
    }))
}

/// The image's id, its production revision's id and its `reloadtime` (minutes).
async fn production_revision(db: &Db, image: &str) -> Result<(i64, i64, i64), DbError> {
    let sql = "SELECT i.`id`, i.`reloadtime`, (SELECT MAX(ir.`id`) FROM `imagerevision` ir WHERE ir.`imageid` = i.`id` AND ir.`production` = 1 \
               AND ir.`deleted` = 0) AS `revisionid` FROM `image` i WHERE (i.`name` = ? OR i.`prettyname` = ?) AND i.`deleted` = 0 \
               ORDER BY i.`id` LIMIT 1";
    let what = format!("looking up image {image}");
    let found = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query(sql).bind(image).bind(image).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| Ok((r.int("id")?, r.opt_int("revisionid")?, r.opt_int("reloadtime")?.unwrap_or(0)))).transpose()
            })
        })
        .await?;
    match found {
        None => Err(DbError::NotFound {
            what: "image",
            key: image.to_string(),
        }),
        Some((_, None, _)) => Err(DbError::Invalid(format!(
            "image {image} has no production revision (imagerevision.production = 1)"
        ))),
        Some((id, Some(rev), reload)) => Ok((id, rev, reload.clamp(0, MAX_RELOAD_MINUTES))),
    }
}

async fn user_id(db: &Db, login: &str) -> Result<i64, DbError> {
    let what = format!("looking up user {login}");
    let id = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query("SELECT `id` FROM `user` WHERE `unityid` = ? ORDER BY `affiliationid`, `id` LIMIT 1")
                    .bind(login).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| r.int("id")).transpose()
            })
        })
        .await?;
    id.ok_or_else(|| DbError::NotFound {
        what: "user",
        key: login.to_string(),
    })
}

async fn candidates(
    db: &Db,
    choice: &ComputerChoice,
    image: i64,
) -> Result<Vec<Candidate>, DbError> {
    let unusable = UNUSABLE_COMPUTER_STATES
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let base = "SELECT c.`id`, c.`hostname`, pc.`managementnodeid` FROM `computer` c \
                LEFT JOIN `provhost_computer` pc ON pc.`computerid` = c.`id` WHERE c.`deleted` = 0";
    let (sql, name) = match choice {
        ComputerChoice::Named(n) => (format!("{base} AND (c.`hostname` = ? OR c.`hostname` LIKE ?) ORDER BY c.`id`"), Some(n.as_str())),
        ComputerChoice::Any => (
            format!(
                "{base} AND c.`stateid` NOT IN ({unusable}) AND c.`id` NOT IN (SELECT `computerid` FROM `vmhost`) \
                 ORDER BY CASE WHEN c.`currentimageid` = ? THEN 0 ELSE 1 END, CASE WHEN c.`stateid` = 2 THEN 0 ELSE 1 END, c.`id`"
            ),
            None,
        ),
    };
    let what = "choosing a computer";
    db.retry(what, || async {
        with_pool!(db, p => {
            let q = sqlx::query(&sql);
            let q = match name {
                Some(n) => q.bind(n).bind(format!("{n}.%")),
                None => q.bind(image),
            };
            let rows = q.fetch_all(p).await.during(what)?;
            rows.iter()
                .map(|r| Ok(Candidate { id: r.int("id")?, hostname: r.text("hostname")?, management_node: r.opt_int("managementnodeid")? }))
                .collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// The time a new reservation asks for, with its image's reload time.
struct Window {
    start: NaiveDateTime,
    end: NaiveDateTime,
    reload_minutes: i64,
    /// Starts later than now (VCL's `log.nowfuture`).
    future: bool,
}

/// A live reservation of the computer near the new window.
struct Neighbour {
    request: i64,
    state: String,
    start: NaiveDateTime,
    end: NaiveDateTime,
    reload_minutes: i64,
}

/// Does `n` leave no room for `w` (see the module doc)?
fn collides(w: &Window, n: &Neighbour) -> bool {
    let minutes = chrono::Duration::minutes;
    w.start < n.end + minutes(n.reload_minutes) && n.start < w.end + minutes(w.reload_minutes)
}

/// Why `computer` cannot take `w`: the other request, its window, and what would fit.
fn refusal(computer: &str, w: &Window, n: &Neighbour) -> String {
    let minutes = chrono::Duration::minutes;
    format!(
        "computer {computer} is reserved by request {} ({}) from {} to {}, and VCL leaves {} min after it to reload the computer; \
         the new window {} to {} (plus {} min to reload after it) overlaps that. Start at {} or later, end by {}, \
         choose another computer, or use --any",
        n.request,
        n.state,
        format_datetime(n.start),
        format_datetime(n.end),
        n.reload_minutes,
        format_datetime(w.start),
        format_datetime(w.end),
        w.reload_minutes,
        format_datetime(n.end + minutes(n.reload_minutes)),
        format_datetime(n.start - minutes(w.reload_minutes)),
    )
}

/// One transaction for one computer: lock it, check that it is usable and free for the
/// whole time (with reload time, see the module doc), pick the management node, insert
/// request and reservation. The inner `Err` says why this computer cannot take it.
async fn try_computer(
    db: &Db,
    c: &Candidate,
    image: i64,
    imagerevision: i64,
    user: i64,
    w: &Window,
) -> Result<Result<Created, String>, DbError> {
    let (start_s, end_s) = (format_datetime(w.start), format_datetime(w.end));
    let minutes = chrono::Duration::minutes;
    // Every reservation that could collide: starts before the new end plus its reload
    // time, ends after the new start minus the longest reload time. Exact test in Rust.
    let (near_end, near_start) = (
        format_datetime(w.end + minutes(w.reload_minutes)),
        format_datetime(w.start - minutes(MAX_RELOAD_MINUTES)),
    );
    let now = db.now_sql();
    let overlap = format!(
        "SELECT CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end`, rq.`id`, rq.`stateid`, i.`reloadtime` \
         FROM `reservation` r JOIN `request` rq ON rq.`id` = r.`requestid` LEFT JOIN `image` i ON i.`id` = r.`imageid` \
         WHERE r.`computerid` = ? AND rq.`stateid` NOT IN ({FINISHED_REQUEST_STATES}) \
         AND rq.`start` < ? AND rq.`end` > ? ORDER BY rq.`start`, rq.`id` LIMIT {MAX_NEIGHBOURS}"
    );
    let node = format!(
        "SELECT mn.`id`, mn.`hostname`, (SELECT COUNT(*) FROM `reservation` r JOIN `request` rq ON rq.`id` = r.`requestid` \
         WHERE r.`managementnodeid` = mn.`id` AND rq.`stateid` NOT IN ({FINISHED_REQUEST_STATES})) AS `busy` \
         FROM `managementnode` mn WHERE mn.`stateid` = 2 AND (? = 0 OR mn.`id` = ?) ORDER BY `busy`, mn.`id` LIMIT 1"
    );
    let insert_request = format!(
        "INSERT INTO `request` (`stateid`, `userid`, `laststateid`, `forimaging`, `start`, `end`, `daterequested`, `checkuser`) \
         VALUES (13, ?, 13, 0, ?, ?, {now}, 1)"
    );
    let insert_reservation =
        "INSERT INTO `reservation` (`requestid`, `computerid`, `imageid`, `imagerevisionid`, `managementnodeid`) VALUES (?, ?, ?, ?, ?)";
    let unusable = UNUSABLE_COMPUTER_STATES
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let lock = format!("UPDATE `computer` SET `stateid` = `stateid` WHERE `id` = ? AND `deleted` = 0 AND `stateid` NOT IN ({unusable})");
    let fixed_node = c.management_node.unwrap_or(0);
    let log = crate::db::bookkeeping::log_sql(now);
    let nowfuture = if w.future { "future" } else { "now" };
    let what = format!("reserving computer {}", c.hostname);
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let n = sqlx::query(&lock).bind(c.id).execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 0 {
                let state = sqlx::query("SELECT `stateid` FROM `computer` WHERE `id` = ?").bind(c.id).fetch_optional(&mut *tx).await.during(what.as_str())?;
                let state = match state { Some(r) => state_label(r.int("stateid")?), None => "gone".into() };
                return Ok(Err(format!("computer {} cannot be reserved in state {state}", c.hostname)));
            }
            let rows = sqlx::query(&overlap).bind(c.id).bind(&near_end).bind(&near_start).fetch_all(&mut *tx).await.during(what.as_str())?;
            if rows.len() >= MAX_NEIGHBOURS {
                return Ok(Err(format!("computer {} has more than {MAX_NEIGHBOURS} reservations around {start_s} to {end_s}; choose another time or computer", c.hostname)));
            }
            for r in &rows {
                let n = Neighbour {
                    request: r.int("id")?,
                    state: state_label(r.int("stateid")?),
                    start: parse_datetime(&r.text("start")?)?,
                    end: parse_datetime(&r.text("end")?)?,
                    reload_minutes: r.opt_int("reloadtime")?.unwrap_or(0).clamp(0, MAX_RELOAD_MINUTES),
                };
                if collides(w, &n) {
                    return Ok(Err(refusal(&c.hostname, w, &n)));
                }
            }
            let mn = sqlx::query(&node).bind(fixed_node).bind(fixed_node).fetch_optional(&mut *tx).await.during(what.as_str())?;
            let Some(mn) = mn else {
                return Err(DbError::Invalid(if fixed_node == 0 {
                    "no management node is available (managementnode.stateid = available); run `provhost db init` on a fresh database".into()
                } else {
                    format!("management node {fixed_node} of computer {} (provhost_computer) is not available", c.hostname)
                }));
            };
            let (mn_id, mn_host) = (mn.int("id")?, mn.text("hostname")?);
            let request_id = sqlx::query(&insert_request).bind(user).bind(&start_s).bind(&end_s).execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            let reservation_id = sqlx::query(insert_reservation).bind(request_id).bind(c.id).bind(image).bind(imagerevision).bind(mn_id)
                .execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            // What the web's addRequest writes beside them: log, sublog, changelog.
            let logid = sqlx::query(log.insert_log).bind(user).bind(nowfuture).bind(&start_s).bind(&end_s).bind(&end_s).bind(image)
                .execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            sqlx::query(log.request_logid).bind(logid).bind(request_id).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query(log.log_requestid).bind(request_id).bind(logid).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query(log.insert_sublog).bind(logid).bind(reservation_id).execute(&mut *tx).await.during(what.as_str())?;
            sqlx::query(&log.insert_changelog).bind(logid).bind(&start_s).bind(&end_s).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())?;
            Ok(Ok(Created {
                request_id, reservation_id, computer_id: c.id, computer: c.hostname.clone(), image_id: image, imagerevision_id: imagerevision,
                management_node_id: mn_id, management_node: mn_host, start: start_s.clone(), end: end_s.clone(),
            }))
        })
    })
    .await
}

/// A line of `provhost request list`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RequestRow {
    pub request_id: i64,
    pub reservation_id: i64,
    pub state: String,
    pub laststate: String,
    pub user: String,
    pub image: String,
    pub computer: String,
    pub management_node: String,
    pub start: String,
    pub end: String,
}

/// The id the next reservation row will get on SQLite (`AUTOINCREMENT`: one past the
/// highest ever used, deleted rows included), for the demo's printed next steps. On MySQL
/// the server's auto-increment counter decides; this is then a best guess (highest + 1).
pub async fn next_reservation_id(db: &Db) -> Result<i64, DbError> {
    let what = "reading the next reservation id";
    db.retry(what, || async {
        with_pool!(db, p => {
            let row = sqlx::query("SELECT COALESCE(MAX(`id`), 0) + 1 AS `next` FROM `reservation`")
                .fetch_one(p).await.during(what)?;
            row.int("next")
        })
    })
    .await
}

/// Requests with their reservations, newest first; without `all`, only those not
/// `complete` or `failed`. At most `limit` rows.
pub async fn list_requests(db: &Db, all: bool, limit: i64) -> Result<Vec<RequestRow>, DbError> {
    let filter = if all {
        String::new()
    } else {
        format!("WHERE rq.`stateid` NOT IN ({FINISHED_REQUEST_STATES})")
    };
    let sql = format!(
        "SELECT rq.`id` AS `requestid`, r.`id` AS `reservationid`, rq.`stateid`, rq.`laststateid`, u.`unityid`, i.`name` AS `image`, \
         c.`hostname`, mn.`hostname` AS `mn`, CAST(rq.`start` AS CHAR) AS `start`, CAST(rq.`end` AS CHAR) AS `end` \
         FROM `request` rq JOIN `reservation` r ON r.`requestid` = rq.`id` LEFT JOIN `user` u ON u.`id` = rq.`userid` \
         LEFT JOIN `image` i ON i.`id` = r.`imageid` LEFT JOIN `computer` c ON c.`id` = r.`computerid` \
         LEFT JOIN `managementnode` mn ON mn.`id` = r.`managementnodeid` {filter} ORDER BY rq.`id` DESC, r.`id` LIMIT ?"
    );
    let what = "listing requests";
    db.retry(what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query(&sql).bind(limit.max(0)).fetch_all(p).await.during(what)?;
            rows.iter().map(|r| Ok(RequestRow {
                request_id: r.int("requestid")?, reservation_id: r.int("reservationid")?,
                state: state_label(r.int("stateid")?), laststate: state_label(r.int("laststateid")?),
                user: r.text("unityid")?, image: r.text("image")?, computer: r.text("hostname")?, management_node: r.text("mn")?,
                start: r.text("start")?, end: r.text("end")?,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// The request list as a table.
pub fn format_requests(rows: &[RequestRow]) -> String {
    let mut s = format!(
        "{:>7} {:>7}  {:<18} {:<12} {:<24} {:<20} {:<19}  {:<19}\n",
        "REQUEST", "RESV", "STATE/LAST", "USER", "IMAGE", "COMPUTER", "START", "END"
    );
    for r in rows {
        s.push_str(&format!(
            "{:>7} {:>7}  {:<18} {:<12} {:<24} {:<20} {:<19}  {:<19}\n",
            r.request_id,
            r.reservation_id,
            format!("{}/{}", r.state, r.laststate),
            r.user,
            r.image,
            r.computer,
            r.start,
            r.end
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        parse_datetime(s).expect("time")
    }

    fn existing(start: &str, end: &str, reload: i64) -> Neighbour {
        Neighbour {
            request: 7,
            state: "inuse".into(),
            start: at(start),
            end: at(end),
            reload_minutes: reload,
        }
    }

    fn window(start: &str, end: &str, reload: i64) -> Window {
        Window {
            start: at(start),
            end: at(end),
            reload_minutes: reload,
            future: false,
        }
    }

    #[test]
    fn each_reservation_is_followed_by_its_reload_time() {
        let n = existing("2030-01-01 10:00", "2030-01-01 11:00", 10);
        for (s, e, r, hit) in [
            ("2030-01-01 10:30", "2030-01-01 11:30", 10, true),
            ("2030-01-01 11:00", "2030-01-01 12:00", 10, true),
            ("2030-01-01 11:09", "2030-01-01 12:00", 10, true),
            ("2030-01-01 11:10", "2030-01-01 12:00", 10, false),
            ("2030-01-01 09:00", "2030-01-01 09:51", 10, true),
            ("2030-01-01 09:00", "2030-01-01 09:50", 10, false),
            ("2030-01-01 09:00", "2030-01-01 10:00", 0, false),
        ] {
            assert_eq!(collides(&window(s, e, r), &n), hit, "{s}–{e} +{r}");
        }
        let touching = existing("2030-01-01 10:00", "2030-01-01 11:00", 0);
        assert!(!collides(
            &window("2030-01-01 11:00", "2030-01-01 12:00", 0),
            &touching
        ));
    }

    #[test]
    fn the_refusal_names_the_other_request_and_what_fits() {
        let n = existing("2030-01-01 10:00", "2030-01-01 11:00", 10);
        let msg = refusal(
            "lab1.test",
            &window("2030-01-01 10:30", "2030-01-01 11:30", 15),
            &n,
        );
        assert!(
            msg.starts_with(
                "computer lab1.test is reserved by request 7 (inuse) from 2030-01-01 10:00:00 to 2030-01-01 11:00:00"
            ) && msg.contains("Start at 2030-01-01 11:10:00 or later, end by 2030-01-01 09:45:00")
                && msg.contains("--any"),
            "{msg}"
        );
    }
}
