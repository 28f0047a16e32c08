//! `image` (VCL's image.pm): capture the computer's disk as a new image revision. The
//! image must not exist yet; `pre_capture` (OS module, then site hooks) → `capture` →
//! `get_image_size` → a new `imagerevision` row with the size → a reload request for the
//! computer. A failure leaves request and computer in `maintenance`, as in VCL.

use crate::state::{Exit, Flow, FlowError};

/// The note a provisioning module's `capture` may set to the name it stored the image
/// under; the new revision gets `<image>-v<N>` otherwise.
pub const CAPTURED_NAME_NOTE: &str = "captured_image_name";

pub async fn run(f: &Flow) -> Result<Exit, FlowError> {
    let (prov, os) = (f.prov.clone(), f.os.clone());
    f.log("info", &format!("capturing {} from {}", f.data.image_name, f.data.computer_node_name)).await?;
    if f.call_bool(&prov, "does_image_exist").await? {
        return Err(FlowError::Failed(format!(
            "image {} already exists; a capture never overwrites an image",
            f.data.image_name
        )));
    }
    f.call_optional(&prov, "post_reservation").await?;
    f.call_optional(&os, "post_reservation").await?;
    f.call_ok(&os, "pre_capture", vec![]).await?;
    f.site_hooks("pre_capture").await?;
    f.call_ok(&prov, "capture", vec![]).await?;
    let size = f.call(&prov, "get_image_size", vec![]).await?.as_int().unwrap_or(0);
    let name = f.ctx.note(CAPTURED_NAME_NOTE).map(|v| v.to_string()).filter(|s| !s.is_empty());
    let rev = crate::db::image::create_image_revision(
        &f.svc.db,
        f.data.image_id,
        f.data.user_id,
        name.as_deref(),
        &format!("captured from {} by reservation {}", f.data.computer_node_name, f.data.reservation_id),
        Some(size),
    )
    .await?;
    f.log("info", &format!("captured revision {} ({}), {size} MB", rev.revision, rev.imagename)).await?;
    crate::db::state::insert_reload_request(&f.svc.db, &f.data).await?;
    Ok(Exit { request: "complete", laststate: "image".into(), computer: None })
}
