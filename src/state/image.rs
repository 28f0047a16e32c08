//! `image` (VCL's image.pm): capture the computer's disk as a new image revision.
//!
//! In VCL the web front end creates the new `imagerevision` row and the imaging
//! reservation points at it, so `does_image_exist` must be false before the capture. A
//! reservation that still points at an existing revision (the image the computer runs)
//! gets its next revision created here first. Then `pre_capture` (OS module, then site
//! hooks) → `capture` → `get_image_size` → `image.size`, the revision un-deleted with its
//! `datecreated` (what VCL's web waits for) → a reload request for the computer, which
//! loads the new revision. A failure leaves the computer in `maintenance`, as in VCL.

use crate::state::{Exit, Flow, FlowError};

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    let mut flow = f.clone();
    if f.call_bool(&f.prov, "does_image_exist").await? {
        let rev = crate::db::image::create_image_revision(
            &f.svc.db,
            f.data.image_id,
            f.data.user_id,
            None,
            &format!(
                "captured from {} by reservation {}",
                f.data.computer_node_name, f.data.reservation_id
            ),
            None,
        )
        .await?;
        crate::db::flow::set_reservation_revision(&f.svc.db, f.data.reservation_id, rev.id).await?;
        let mut data = f.data.clone();
        data.imagerevision_id = rev.id;
        data.imagerevision_revision = rev.revision;
        data.image_name = rev.imagename.clone();
        flow.ctx = f.ctx.with_data(data.clone());
        flow.data = data;
        f.log(
            "info",
            &format!(
                "new revision {} of the image: {}",
                rev.revision, rev.imagename
            ),
        )
        .await?;
        if flow.call_bool(&flow.prov, "does_image_exist").await? {
            return Err(FlowError::Failed(format!(
                "image {} already exists; a capture never overwrites an image",
                flow.data.image_name
            )));
        }
    }
    let f = &flow;
    let (prov, os) = (f.prov.clone(), f.os.clone());
    f.log(
        "info",
        &format!(
            "capturing {} as {}",
            f.data.computer_node_name, f.data.image_name
        ),
    )
    .await?;
    f.call_optional(&prov, "post_reservation").await?;
    f.call_optional(&os, "post_reservation").await?;
    f.call_ok(&os, "pre_capture", vec![]).await?;
    f.site_hooks("pre_capture").await?;
    f.call_ok(&prov, "capture", vec![]).await?;
    let size = f
        .call(&prov, "get_image_size", vec![])
        .await?
        .as_int()
        .unwrap_or(0);
    crate::db::image::record_capture(&f.svc.db, f.data.image_id, f.data.imagerevision_id, size)
        .await?;
    f.log(
        "info",
        &format!("captured {} ({size} MB)", f.data.image_name),
    )
    .await?;
    let reload = crate::db::state::insert_reload_request(&f.svc.db, &f.data).await?;
    Ok(Exit {
        request: "complete",
        laststate: "image".into(),
        computer: None,
        next_holder: reload.map(|(request, _)| request),
    })
}
