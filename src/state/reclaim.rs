//! `timeout` and `deleted` (VCL's reclaim.pm): take access away, remove the user, clean
//! the computer (OS module then site hooks), run the post_reservation hooks — each step
//! leaving a load-log entry (`info`, `reclaim: …`, as vcld's reclaim writes its steps) so
//! the timeline shows the user was removed —, forget the
//! reservation's secrets (`host::secrets::forget_reservation`), then insert
//! a reload request for the computer as VCL does, and pass the computer to that reload
//! request as the request ends (`db::lock`). A request deleted before its computer was
//! ever handed over has nothing to undo ([`nothing_to_undo`]). Each reservation of a
//! cluster request is reclaimed on its own computer, with its own reload request.

use crate::state::{Exit, Flow, FlowError};

/// A request that never got its computer (`exclusive::Acquired::NotNeeded`: deleted
/// while new, or while it waited for a computer another request holds): nothing to undo,
/// the computer's state is left alone (it may serve another reservation), as VCL does.
pub async fn nothing_to_undo(f: &Flow) -> Result<Exit, FlowError> {
    let reason = if f.state == "deleted" {
        "reservation deleted"
    } else {
        "reservation timed out"
    };
    f.log(
        &f.state,
        &format!(
            "{reason} (was {}) before it had computer {}: nothing to undo",
            f.prior_laststate, f.data.computer_node_name
        ),
    )
    .await?;
    crate::host::secrets::forget_reservation(f.data.reservation_id);
    Ok(Exit {
        request: "complete",
        laststate: f.state.clone(),
        computer: None,
        next_holder: None,
    })
}

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    let reason = if f.state == "deleted" {
        "reservation deleted"
    } else {
        "reservation timed out"
    };
    f.log(&f.state, &format!("{reason} (was {})", f.prior_laststate))
        .await?;
    let (prov, os) = (f.prov.clone(), f.os.clone());
    let node = f.data.computer_node_name.clone();
    let os_name = format!("{}/{}", os.0, os.1);
    f.call_ok(&os, "revoke_access", vec![]).await?;
    let from = if f.data.remote_ip.is_empty() {
        String::new()
    } else {
        format!(" (was open to {})", f.data.remote_ip)
    };
    f.log(
        "info",
        &format!("reclaim: user access to {node} revoked{from} ({os_name} revoke_access)"),
    )
    .await?;
    if !f.data.user_login_id.is_empty() {
        let user = f.user_map().await?;
        f.call_ok(&os, "delete_user", vec![user.into()]).await?;
        f.log(
            "info",
            &format!(
                "reclaim: user {} deleted from {node} ({os_name} delete_user)",
                f.data.user_login_id
            ),
        )
        .await?;
    }
    f.call_ok(&os, "sanitize", vec![]).await?;
    f.log(
        "info",
        &format!("reclaim: {node} sanitized ({os_name} sanitize)"),
    )
    .await?;
    hooks_logged(f, "sanitize").await?;
    for key in [&prov, &os] {
        if f.defines(key, "post_reservation") {
            f.call_ok(key, "post_reservation", vec![]).await?;
            f.log(
                "info",
                &format!("reclaim: {}/{} post_reservation done", key.0, key.1),
            )
            .await?;
        }
    }
    hooks_logged(f, "post_reservation").await?;
    // The user and its passwords are gone from the computer: stop tracking them (a live
    // reservation's secrets are never evicted, so they go here).
    crate::host::secrets::forget_reservation(f.data.reservation_id);
    let reload = match crate::db::state::insert_reload_request(&f.svc.db, &f.data).await? {
        Some((request, _)) => {
            tracing::info!(reload_request = request, "reload request inserted");
            Some(request)
        }
        None => {
            tracing::info!("a reload of this computer is already on its way");
            None
        }
    };
    // The computer goes from this reservation straight to its reload: no other
    // reservation gets it before the reload has run.
    Ok(Exit {
        request: "complete",
        laststate: f.state.clone(),
        computer: None,
        next_holder: reload,
    })
}

/// Run the site modules' `routine` hooks and say in the load-log which ran: VCL's
/// `info` entry, `reclaim: site hooks sanitize ran (site/a, site/b)` (a hook that failed
/// with `on_failure: "warn"` has its own entry). Nothing is logged
/// when no site module defines the hook.
async fn hooks_logged(f: &Flow, routine: &str) -> Result<(), FlowError> {
    let hooks = f.site_modules_defining(routine);
    f.site_hooks(routine).await?;
    if !hooks.is_empty() {
        f.log(
            "info",
            &format!("reclaim: site hooks {routine} ran ({})", hooks.join(", ")),
        )
        .await?;
    }
    Ok(())
}
