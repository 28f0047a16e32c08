//! `new`, `reload`, `reinstall` and `tomaintenance` (VCL's new.pm).
//!
//! new: `statuscheck` → `node_status` → (post_load only, or the whole reload:
//! `loadimageblade`, computer `reloading`, `doesimageexists` / `copyfrompartnerMN`,
//! `pre_reload`, `load` → `loadimagecomplete` or `loadimagefailed`, then the OS module's
//! `post_load` and the site hooks — provhost calls post_load itself, VCL's modules call it
//! from inside load) → Windows-like OS: add the user now → `reserve` hooks → `nodeready` →
//! request `reserved`. reload/reinstall always reload and end with the computer
//! `available`. tomaintenance powers the computer off and leaves it in `maintenance`.
//!
//! A preload (a `new` request claimed inside the preload window, before its start; vcld's
//! `PRELOADONLY`) loads the computer the same way and then puts the request back to
//! `new` and the computer back to the state it had; at the start the request is
//! processed again, finds the image loaded (`node_status` "ready") and becomes reserved.
//! A preload that fails is not a failed reservation: the load is tried again at the
//! start (vcld does the same).

use crate::state::{Exit, Flow, FlowError};

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    if f.state == "tomaintenance" {
        return to_maintenance(f).await;
    }
    let computer_state = crate::db::state::computer_state(&f.svc.db, f.data.computer_id)
        .await?
        .unwrap_or_default();
    if !f.preload {
        return load(f, &computer_state).await;
    }
    f.log(
        "info",
        &format!(
            "preloading {} with {} ahead of the start ({})",
            f.data.computer_node_name, f.data.image_name, f.data.request_start
        ),
    )
    .await?;
    let back = |computer: Option<&'static str>| Exit {
        request: "new",
        laststate: "new".into(),
        computer,
        next_holder: None,
    };
    // The computer goes back to the state it had (vcld): the reservation holds it
    // (`db::lock`) until its start either way.
    let original = crate::vcl::state_id(&computer_state).and_then(crate::vcl::state_name);
    match load(f, &computer_state).await {
        Ok(_) => {
            f.log(
                "info",
                "preload done; the reservation becomes ready at its start",
            )
            .await?;
            Ok(back(original))
        }
        Err(
            e @ (FlowError::Cancelled
            | FlowError::LeaseStale
            | FlowError::Superseded(_)
            | FlowError::Db(_)
            | FlowError::Held(_)),
        ) => Err(e),
        Err(e) => {
            f.log(
                "WARNING",
                &format!("preload failed, loading again at the start: {e}"),
            )
            .await?;
            Ok(back(original))
        }
    }
}

async fn load(f: &Flow, computer_state: &str) -> Result<Exit, FlowError> {
    let computer_state = computer_state.to_string();
    // VCL: a computer in these states takes no reservation and no reload.
    if matches!(
        computer_state.as_str(),
        "maintenance" | "deleted" | "vmhostinuse"
    ) {
        return Err(FlowError::Failed(format!(
            "computer {} is not available: its state is {computer_state}",
            f.data.computer_node_name
        )));
    }
    // VCL: a computer waiting for a reload (a reclaim's reload request this flow took the
    // computer from, or an operator's) is always reloaded, whatever node_status says.
    let status = if f.state == "new" && computer_state != "reload" {
        f.log(
            "statuscheck",
            &format!(
                "checking {} for image {}",
                f.data.computer_node_name, f.data.image_name
            ),
        )
        .await?;
        match f.call(&f.prov.clone(), "node_status", vec![]).await {
            Ok(s) => s.to_string(),
            Err(FlowError::Routine(e)) => {
                // VCL: a failed status check means "reload".
                f.log("WARNING", &format!("node_status failed, reloading: {e}"))
                    .await?;
                "reload".to_string()
            }
            Err(e) => return Err(e),
        }
    } else {
        "reload".to_string()
    };
    tracing::info!(status, "node status");

    match status.as_str() {
        "ready" => {}
        "post_load" => f.post_load().await?,
        _ => reload_image(f).await?,
    }

    if f.state == "new" && f.preload {
        // vcld: a preload reserves nothing yet (no user, no reserve steps).
        f.log("nodeready", "resource preloaded").await?;
        return Ok(Exit {
            request: "new",
            laststate: "new".into(),
            computer: None,
            next_holder: None,
        });
    }
    if f.state == "new" {
        if f.add_user_at() == crate::host::AddUserAt::Ready {
            f.add_user().await?;
        }
        f.call_optional(&f.prov.clone(), "reserve").await?;
        f.call_optional(&f.os.clone(), "reserve").await?;
        f.site_hooks("reserve").await?;
        f.log("nodeready", "resource ready").await?;
        Ok(Exit {
            request: "reserved",
            laststate: "new".into(),
            computer: Some("reserved"),
            next_holder: None,
        })
    } else {
        f.log("nodeready", "reload complete").await?;
        Ok(Exit {
            request: "complete",
            laststate: f.state.clone(),
            computer: Some("available"),
            next_holder: None,
        })
    }
}

/// VCL's `reload_image`.
async fn reload_image(f: &Flow) -> Result<(), FlowError> {
    let (prov, os) = (f.prov.clone(), f.os.clone());
    f.log(
        "loadimageblade",
        &format!(
            "reloading {} with {}",
            f.data.computer_node_name, f.data.image_name
        ),
    )
    .await?;
    crate::db::state::set_held_computer_state(
        &f.svc.db,
        f.data.computer_id,
        f.data.request_id,
        "reloading",
    )
    .await?;
    f.log(
        "doesimageexists",
        &format!("checking for image {}", f.data.image_name),
    )
    .await?;
    if !f.call_bool(&prov, "does_image_exist").await? {
        f.log(
            "copyfrompartnerMN",
            &format!(
                "image {} is not here; asking partner management nodes",
                f.data.image_name
            ),
        )
        .await?;
        if !f.call_bool(&prov, "retrieve_image").await? {
            return Err(FlowError::Failed(format!(
                "image {} does not exist in this node's image library and could not be retrieved from a partner node",
                f.data.image_name
            )));
        }
    }
    f.call_optional(&os, "pre_reload").await?;
    f.call_optional(&prov, "pre_reload").await?;
    f.log(
        "startload",
        &format!(
            "loading {} on {}",
            f.data.image_name, f.data.computer_node_name
        ),
    )
    .await?;
    match f.call_ok(&prov, "load", vec![]).await {
        Ok(()) => {}
        Err(e) => {
            let _ = f.log("loadimagefailed", &e.to_string()).await;
            return Err(e);
        }
    }
    f.log("loadimagecomplete", "running post configuration")
        .await?;
    f.post_load().await?;
    crate::db::state::set_computer_image(
        &f.svc.db,
        f.data.request_id,
        f.data.computer_id,
        f.data.image_id,
        f.data.imagerevision_id,
    )
    .await?;
    Ok(())
}

async fn to_maintenance(f: &Flow) -> Result<Exit, FlowError> {
    f.log(
        "info",
        &format!("putting {} into maintenance", f.data.computer_node_name),
    )
    .await?;
    match f
        .call(&f.prov.clone(), "control_vm", vec!["off".into()])
        .await
    {
        Ok(v) if v.as_bool().unwrap_or(false) => {}
        Ok(_) => {
            f.log(
                "WARNING",
                "power off returned false; computer goes to maintenance anyway",
            )
            .await?
        }
        Err(FlowError::Routine(e)) => {
            f.log(
                "WARNING",
                &format!("power off failed ({e}); computer goes to maintenance anyway"),
            )
            .await?
        }
        Err(e) => return Err(e),
    }
    Ok(Exit {
        request: "complete",
        laststate: "tomaintenance".into(),
        computer: Some("maintenance"),
        next_holder: None,
    })
}
