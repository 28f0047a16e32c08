//! The reservation life cycle both demos walk through, playing the web front end: a request
//! for the demo computer goes new → reserved; the user clicks Connect from `user_ip` (the
//! demo writes `reservation.remoteIP`) and logs in (a real SSH session for the VM demo); in
//! use; the user ends it; the reclaim and the reload it makes; the computer is available.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{DemoError, Printer};
use crate::db::requests::{new_request, ComputerChoice, NewRequest};
use crate::db::Db;

/// What the demo's user does after clicking Connect: nothing more (the simulator sees the
/// user at once), or a real login that stays open until the daemon sees the user.
#[allow(async_fn_in_trait)]
pub(crate) trait UserLogin {
    /// Log in; return a session that stays connected until dropped.
    async fn login(&mut self, out: &mut dyn Write) -> Result<Box<dyn std::any::Any>, DemoError>;
}

pub(crate) struct Plan<'a> {
    pub computer: &'a str,
    pub computer_id: i64,
    pub image: &'a str,
    pub user: &'a str,
    pub user_ip: &'a str,
    /// Longest wait for one step (a load, a reload).
    pub limit: Duration,
}

async fn computer_is(db: &Db, computer: i64, state: &str) -> Result<bool, DemoError> {
    Ok(crate::db::state::computer_state(db, computer)
        .await?
        .as_deref()
        == Some(state))
}

pub(crate) async fn run(
    db: &Db,
    plan: &Plan<'_>,
    login: &mut impl UserLogin,
    out: &mut impl Write,
) -> Result<(), DemoError> {
    let created = new_request(
        db,
        &NewRequest {
            image: plan.image.into(),
            computer: ComputerChoice::Named(plan.computer.into()),
            user: plan.user.into(),
            start: None,
            end: Some("+1h".into()),
        },
    )
    .await?;
    let res = created.reservation_id;
    writeln!(
        out,
        "\nrequest {} (reservation {res}) submitted: new → the daemon loads {}\n",
        created.request_id, plan.computer
    )?;
    let mut p = Printer::new(Instant::now());
    p.until(
        db,
        res,
        out,
        "the reservation to be ready for Connect",
        plan.limit,
        async |n: &[String]| Ok(n.iter().any(|x| x == "acknowledgetimeout")),
    )
    .await?;

    writeln!(out, "\n== reserved. The user clicks Connect from {} (the demo writes reservation.remoteIP, as the web front end does)\n", plan.user_ip)?;
    crate::db::flow::acknowledge(db, res, plan.user_ip).await?;
    p.until(
        db,
        res,
        out,
        "access to be granted",
        plan.limit,
        async |n: &[String]| Ok(n.iter().any(|x| x == "postreserve")),
    )
    .await?;
    let session = login.login(out).await?;
    p.until(
        db,
        res,
        out,
        "the daemon to see the user connected",
        plan.limit,
        async |_: &[String]| computer_is(db, plan.computer_id, "inuse").await,
    )
    .await?;
    drop(session);

    writeln!(
        out,
        "\n== in use. The user ends the reservation (the demo sets request.end to now)\n"
    )?;
    crate::db::flow::end_now(db, created.request_id).await?;
    p.until(
        db,
        res,
        out,
        "the reservation to be reclaimed",
        plan.limit,
        async |_: &[String]| {
            Ok(crate::db::state::request_state(db, created.request_id)
                .await?
                .is_some_and(|(s, _)| s == "complete"))
        },
    )
    .await?;

    let reload = crate::db::requests::list_requests(db, true, 10)
        .await?
        .into_iter()
        .map(|r| r.reservation_id)
        .max()
        .unwrap_or(res);
    writeln!(
        out,
        "\n== reload reservation {reload}: {} gets a fresh image\n",
        plan.computer
    )?;
    let mut p2 = Printer::new(p.started);
    p2.until(
        db,
        reload,
        out,
        "the reload to finish",
        plan.limit,
        async |_: &[String]| computer_is(db, plan.computer_id, "available").await,
    )
    .await?;
    writeln!(out, "\n== {} is available again", plan.computer)?;
    Ok(())
}
