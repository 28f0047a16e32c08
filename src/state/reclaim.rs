//! `timeout` and `deleted` (VCL's reclaim.pm): take access away, remove the user, clean
//! the computer (OS module then site hooks), run the post_reservation hooks, forget the
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
    f.call_ok(&os, "revoke_access", vec![]).await?;
    if !f.data.user_login_id.is_empty() {
        let user = f.user_map().await?;
        f.call_ok(&os, "delete_user", vec![user.into()]).await?;
    }
    f.call_ok(&os, "sanitize", vec![]).await?;
    f.site_hooks("sanitize").await?;
    f.call_optional(&prov, "post_reservation").await?;
    f.call_optional(&os, "post_reservation").await?;
    f.site_hooks("post_reservation").await?;
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
