//! `inuse` (VCL's inuse.pm), run each time the daemon finds an in-use reservation due for
//! a check: past its end → `timeout`; near its end → the 10 and 5 minute notices (once
//! each); a user who disconnected gets `reconnecttimeout` to come back, else `timeout`.
//! That wait reads the request on every poll: a delete hands it over, an end that comes
//! ends it as a timeout.

use std::time::Duration;

use crate::db::time::parse_datetime;
use crate::state::reserved::{wait_for_connection, Connection};
use crate::state::{Exit, Flow, FlowError};

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    let t = &f.svc.timings;
    let now = parse_datetime(&f.svc.db.now().await?)?;
    let end = parse_datetime(&f.data.request_end)?;
    let left = (end - now).num_seconds();
    if left <= 0 {
        f.log("timeout", "reservation end time reached").await?;
        return Ok(Exit {
            request: "timeout",
            laststate: "inuse".into(),
            computer: Some("timeout"),
            next_holder: None,
        });
    }
    let logged: Vec<String> = crate::db::loadlog::timeline(&f.svc.db, f.data.reservation_id)
        .await?
        .into_iter()
        .map(|e| e.loadstatename)
        .collect();
    if left <= t.general_end_notice_second as i64 && !logged.iter().any(|n| n == "inuseend5") {
        f.log("inuseend5", &format!("{} minute(s) left", (left + 59) / 60))
            .await?;
    } else if left <= t.general_end_notice_first as i64 && !logged.iter().any(|n| n == "inuseend10")
    {
        f.log(
            "inuseend10",
            &format!("{} minute(s) left", (left + 59) / 60),
        )
        .await?;
    }
    if f.data.request_checkuser
        && !crate::state::reserved::ignores_connections(f)
        && f.defines(&f.os, "is_user_connected")
        && !f.user_connected().await?
    {
        f.log(
            "reconnecttimeout",
            &format!("user disconnected; waiting up to {} s", t.reconnecttimeout),
        )
        .await?;
        let limit = Duration::from_secs(t.reconnecttimeout.min(left.max(0) as u64));
        let seen = wait_for_connection(f, limit).await?;
        if seen == Connection::Ended {
            f.log("timeout", "reservation end time reached").await?;
            return Ok(Exit {
                request: "timeout",
                laststate: "inuse".into(),
                computer: Some("timeout"),
                next_holder: None,
            });
        }
        if seen != Connection::Connected {
            f.log("timeout", "the user did not reconnect").await?;
            return Ok(Exit {
                request: "timeout",
                laststate: "inuse".into(),
                computer: Some("inuse"),
                next_holder: None,
            });
        }
    }
    Ok(Exit {
        request: "inuse",
        laststate: "inuse".into(),
        computer: None,
        next_holder: None,
    })
}
