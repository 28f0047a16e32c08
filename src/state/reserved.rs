//! `reserved` (VCL's reserved.pm): the computer is ready; wait for the user's
//! acknowledgement (`reservation.remoteIP`, set by the web front end on Connect), open
//! access for that address only, add the user (Linux-like OS modules), run the
//! post_reserve hooks, then wait for the user to connect. Every wait is bounded by VCL's
//! timing variables and reads the request on every poll ([`Flow::watch`]): a delete or
//! cancel hands the request over within one poll, and an end time that has come ("end
//! now") ends the wait as a timeout. For a cluster request each reservation runs this
//! flow on its own computer; the acknowledgement is the request's (any reservation's
//! `remoteIP`).

use std::time::{Duration, Instant};

use crate::host::AddUserAt;
use crate::state::{Exit, Flow, FlowError};

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    let t = &f.svc.timings;
    // vcld's reserved.pm starts by recording when the request was loaded (log.loaded).
    if let Err(e) = crate::db::bookkeeping::set_loaded(&f.svc.db, f.data.request_id).await {
        tracing::warn!("log.loaded not written (the web front end shows less): {e}");
    }
    crate::db::state::set_held_computer_state(
        &f.svc.db,
        f.data.computer_id,
        f.data.request_id,
        "reserved",
    )
    .await?;
    f.log("reserved", "ready for Connect").await?;
    f.log(
        "acknowledgetimeout",
        &format!(
            "waiting up to {} s for the user to click Connect",
            t.acknowledgetimeout
        ),
    )
    .await?;

    let ip = match wait_for_ack(f).await? {
        Ack::From(ip) => Some(ip),
        Ack::None => None,
        Ack::Ended => {
            f.log("timeout", "the reservation's end time came before Connect")
                .await?;
            None
        }
    };
    let Some(ip) = ip else {
        f.log("timeout", "no acknowledgement from the user").await?;
        return Ok(Exit {
            request: "timeout",
            laststate: "reserved".into(),
            computer: Some("available"),
            next_holder: None,
        });
    };
    tracing::info!(remote_ip = %ip, "acknowledged");
    let mut data = f.data.clone();
    data.remote_ip = ip;
    let acked = Flow {
        data: data.clone(),
        ctx: f.ctx.with_data(data),
        ..f.clone()
    };

    acked
        .log(
            "noinitialconnection",
            &format!("acknowledged from {}", acked.data.remote_ip),
        )
        .await?;
    acked
        .log(
            "initialconnecttimeout",
            &format!(
                "waiting up to {} s for the user to connect",
                t.initialconnecttimeout
            ),
        )
        .await?;
    acked
        .call_ok(&acked.os.clone(), "grant_access", vec![])
        .await?;
    if acked.add_user_at() == AddUserAt::Acknowledge {
        acked.add_user().await?;
    }
    acked
        .call_optional(&acked.prov.clone(), "post_reserve")
        .await?;
    acked
        .call_optional(&acked.os.clone(), "post_reserve")
        .await?;
    acked.site_hooks("post_reserve").await?;
    acked.log("postreserve", "post reserve completed").await?;

    let connected =
        wait_for_connection(&acked, Duration::from_secs(t.initialconnecttimeout)).await?;
    if connected != Connection::Connected {
        let why = if connected == Connection::Ended {
            "the reservation's end time came before the user connected"
        } else {
            "the user did not connect"
        };
        acked.log("timeout", why).await?;
        return Ok(Exit {
            request: "timeout",
            laststate: "reserved".into(),
            computer: Some("reserved"),
            next_holder: None,
        });
    }
    acked.log("connected", "detected user connection").await?;
    Ok(Exit {
        request: "inuse",
        laststate: "reserved".into(),
        computer: Some("inuse"),
        next_holder: None,
    })
}

/// What the wait for Connect saw.
#[derive(Debug, Clone, PartialEq)]
enum Ack {
    From(String),
    None,
    /// The request's end time came first (`request end`, the web's "end now").
    Ended,
}

/// Poll the request (its state, its end) and its `remoteIP` until the user clicked
/// Connect or `acknowledgetimeout` passes.
async fn wait_for_ack(f: &Flow) -> Result<Ack, FlowError> {
    let t = &f.svc.timings;
    let end = Instant::now() + Duration::from_secs(t.acknowledgetimeout);
    let every = Duration::from_millis(t.acknowledge_poll_ms.max(10));
    let max_polls = t.acknowledgetimeout.saturating_mul(1000) / t.acknowledge_poll_ms.max(10) + 2;
    for _ in 0..max_polls {
        let (ended, ip) = f.look().await?;
        if ended {
            return Ok(Ack::Ended);
        }
        if !ip.is_empty() {
            return Ok(Ack::From(ip));
        }
        if Instant::now() >= end {
            break;
        }
        f.pause(every.min(end.saturating_duration_since(Instant::now())))
            .await?;
    }
    Ok(Ack::None)
}

/// What the wait for the user's connection saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Connection {
    Connected,
    NotConnected,
    /// The request's end time came first.
    Ended,
}

/// Poll the OS module's `is_user_connected` every `connect_poll` s for at most `limit`,
/// reading the request meanwhile ([`Flow::pause_watching`]). Without that routine, with
/// `request.checkuser` off, or for a reservation of `ignore_connections_gte` or longer, the
/// user counts as connected.
pub async fn wait_for_connection(f: &Flow, limit: Duration) -> Result<Connection, FlowError> {
    if !f.data.request_checkuser || !f.defines(&f.os, "is_user_connected") || ignores_connections(f)
    {
        return Ok(Connection::Connected);
    }
    let every = Duration::from_secs(f.svc.timings.connect_poll.max(1));
    let end = Instant::now() + limit;
    let max_polls = limit.as_secs() / every.as_secs().max(1) + 2;
    for _ in 0..max_polls {
        if f.watch().await? {
            return Ok(Connection::Ended);
        }
        if f.user_connected().await? {
            return Ok(Connection::Connected);
        }
        if Instant::now() >= end {
            break;
        }
        if f.pause_watching(every.min(end.saturating_duration_since(Instant::now())))
            .await?
        {
            return Ok(Connection::Ended);
        }
    }
    Ok(Connection::NotConnected)
}

/// vcld's `ignore_connections_gte`: a reservation lasting at least that many minutes
/// (compared in whole hours, as vcld does) is not checked for the user's connection.
pub fn ignores_connections(f: &Flow) -> bool {
    let parse = crate::db::time::parse_datetime;
    match (parse(&f.data.request_start), parse(&f.data.request_end)) {
        (Ok(start), Ok(end)) => {
            let hours = (end - start).num_seconds().max(0) / 3600;
            hours >= (f.svc.timings.ignore_connections_gte / 60) as i64
        }
        _ => false,
    }
}
