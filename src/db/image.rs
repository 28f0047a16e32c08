//! Images and their revisions: recording an image's size (`image.size`, MB, what
//! `get_image_size` reports), creating the revision a capture produces, recording a
//! finished capture the way VCL's web front end expects it, and making a revision the
//! production one (makeproduction.pm).

use crate::db::error::{DbError, During};
use crate::db::pool::{with_pool, Db, InsertedId, RowExt};

/// Largest size VCL's `image.size` (smallint unsigned, MB) can hold.
pub const MAX_IMAGE_SIZE_MB: i64 = 65_535;

fn check_size(mb: i64) -> Result<(), DbError> {
    if (0..=MAX_IMAGE_SIZE_MB).contains(&mb) {
        Ok(())
    } else {
        Err(DbError::Invalid(format!(
            "image size {mb} MB does not fit VCL's image.size (0..={MAX_IMAGE_SIZE_MB} MB)"
        )))
    }
}

/// Set `image.size` (MB) and `image.lastupdate`.
pub async fn set_image_size(db: &Db, image: i64, mb: i64) -> Result<(), DbError> {
    check_size(mb)?;
    let sql = format!(
        "UPDATE `image` SET `size` = ?, `lastupdate` = {} WHERE `id` = ?",
        db.now_sql()
    );
    let what = format!("setting the size of image {image} to {mb} MB");
    let n = db
        .retry(&what, || async {
            with_pool!(db, p => sqlx::query(&sql).bind(mb).bind(image).execute(p).await.during(what.as_str()).map(|r| r.rows_affected()))
        })
        .await?;
    if n == 0 {
        return Err(DbError::NotFound {
            what: "image",
            key: image.to_string(),
        });
    }
    Ok(())
}

/// Record a finished capture as image.pm does: `image.size` (MB), `image.lastupdate`,
/// `image.deleted = 0`, and the captured revision `deleted = 0` with `datecreated` now.
/// VCL's web front end inserts the revision of a "Create image" with `deleted = 1` and
/// only lists it once this has run.
pub async fn record_capture(
    db: &Db,
    image: i64,
    imagerevision: i64,
    mb: i64,
) -> Result<(), DbError> {
    check_size(mb)?;
    let now = db.now_sql();
    let image_sql = format!(
        "UPDATE `image` SET `size` = ?, `lastupdate` = {now}, `deleted` = 0 WHERE `id` = ?"
    );
    let rev_sql = format!(
        "UPDATE `imagerevision` SET `deleted` = 0, `datecreated` = {now} WHERE `id` = ? AND `imageid` = ?"
    );
    let what = format!("recording the capture of image {image} revision {imagerevision} ({mb} MB)");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let n = sqlx::query(&image_sql).bind(mb).bind(image).execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 0 {
                return Err(DbError::NotFound { what: "image", key: image.to_string() });
            }
            let n = sqlx::query(&rev_sql).bind(imagerevision).bind(image).execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 0 {
                return Err(DbError::NotFound { what: "imagerevision of this image", key: imagerevision.to_string() });
            }
            tx.commit().await.during(what.as_str())
        })
    })
    .await
}

/// A row of `imagerevision`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRevision {
    pub id: i64,
    pub image_id: i64,
    pub revision: i64,
    pub imagename: String,
    pub production: bool,
}

/// Create the next revision of `image` (not production yet), as a capture does: revision
/// = highest + 1, `imagename` = `<image.name>-v<revision>` unless given. When `size_mb`
/// is given, `image.size` is set in the same transaction.
pub async fn create_image_revision(
    db: &Db,
    image: i64,
    user: i64,
    imagename: Option<&str>,
    comments: &str,
    size_mb: Option<i64>,
) -> Result<ImageRevision, DbError> {
    if let Some(mb) = size_mb {
        check_size(mb)?;
    }
    let now = db.now_sql();
    let insert = format!(
        "INSERT INTO `imagerevision` (`imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `comments`, `imagename`) \
         VALUES (?, ?, ?, {now}, 0, 0, ?, ?)"
    );
    let size = format!("UPDATE `image` SET `size` = ?, `lastupdate` = {now} WHERE `id` = ?");
    let what = format!("creating a revision of image {image}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            // Touch the image row first: it locks the image, so two captures number in turn.
            let n = sqlx::query("UPDATE `image` SET `lastupdate` = `lastupdate` WHERE `id` = ?").bind(image).execute(&mut *tx).await.during(what.as_str())?.rows_affected();
            if n == 0 {
                return Err(DbError::NotFound { what: "image", key: image.to_string() });
            }
            let row = sqlx::query("SELECT `name`, (SELECT MAX(`revision`) FROM `imagerevision` WHERE `imageid` = ?) AS `last` FROM `image` WHERE `id` = ?")
                .bind(image).bind(image).fetch_one(&mut *tx).await.during(what.as_str())?;
            let revision = row.opt_int("last")?.map_or(1, |r| r + 1);
            let name = match imagename {
                Some(n) => n.to_string(),
                None => format!("{}-v{revision}", row.text("name")?),
            };
            let id = sqlx::query(&insert).bind(image).bind(revision).bind(user).bind(comments).bind(&name)
                .execute(&mut *tx).await.during(what.as_str())?.inserted_id();
            if let Some(mb) = size_mb {
                sqlx::query(&size).bind(mb).bind(image).execute(&mut *tx).await.during(what.as_str())?;
            }
            tx.commit().await.during(what.as_str())?;
            Ok(ImageRevision { id, image_id: image, revision, imagename: name, production: false })
        })
    })
    .await
}

/// Make `imagerevision` the production revision of its image (and no other).
pub async fn make_production(db: &Db, imagerevision: i64) -> Result<(), DbError> {
    let what = format!("making image revision {imagerevision} production");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let mut tx = p.begin().await.during(what.as_str())?;
            let row = sqlx::query("SELECT `imageid` FROM `imagerevision` WHERE `id` = ?").bind(imagerevision).fetch_optional(&mut *tx).await.during(what.as_str())?;
            let Some(row) = row else {
                return Err(DbError::NotFound { what: "imagerevision", key: imagerevision.to_string() });
            };
            let image = row.int("imageid")?;
            sqlx::query("UPDATE `imagerevision` SET `production` = CASE WHEN `id` = ? THEN 1 ELSE 0 END WHERE `imageid` = ?")
                .bind(imagerevision).bind(image).execute(&mut *tx).await.during(what.as_str())?;
            tx.commit().await.during(what.as_str())
        })
    })
    .await
}

/// The revisions of `image`, oldest first.
pub async fn image_revisions(db: &Db, image: i64) -> Result<Vec<ImageRevision>, DbError> {
    let what = format!("listing revisions of image {image}");
    db.retry(&what, || async {
        with_pool!(db, p => {
            let rows = sqlx::query("SELECT `id`, `imageid`, `revision`, `imagename`, `production` FROM `imagerevision` WHERE `imageid` = ? ORDER BY `revision`")
                .bind(image).fetch_all(p).await.during(what.as_str())?;
            rows.iter().map(|r| Ok(ImageRevision {
                id: r.int("id")?, image_id: r.int("imageid")?, revision: r.int("revision")?, imagename: r.text("imagename")?, production: r.int("production")? != 0,
            })).collect::<Result<Vec<_>, DbError>>()
        })
    })
    .await
}

/// What [`register_library_image`] found or did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub image_id: i64,
    pub imagerevision_id: i64,
    pub revision: i64,
    /// False when a live revision with that `imagename` was already there (nothing changed).
    pub created: bool,
}

/// Record an image directory of the library as the production revision of image `name`:
/// nothing changes when a revision (not deleted) already has `imagename`; a new image
/// (revision 0) when `name` is unknown; else its next revision, made production. The size
/// goes into `image.size`.
pub async fn register_library_image(
    db: &Db,
    name: &str,
    prettyname: &str,
    os: &str,
    imagename: &str,
    size_mb: i64,
    comments: &str,
) -> Result<Registered, DbError> {
    check_size(size_mb)?;
    let what = format!("looking up image revision {imagename}");
    let found = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query("SELECT `id`, `imageid`, `revision` FROM `imagerevision` WHERE `imagename` = ? AND `deleted` = 0 ORDER BY `id` LIMIT 1")
                    .bind(imagename).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| Ok::<_, DbError>((r.int("id")?, r.int("imageid")?, r.int("revision")?))).transpose()
            })
        })
        .await?;
    if let Some((id, image_id, revision)) = found {
        return Ok(Registered {
            image_id,
            imagerevision_id: id,
            revision,
            created: false,
        });
    }
    let what = format!("looking up image {name}");
    let image = db
        .retry(&what, || async {
            with_pool!(db, p => {
                let row = sqlx::query("SELECT `id` FROM `image` WHERE `name` = ?").bind(name).fetch_optional(p).await.during(what.as_str())?;
                row.map(|r| r.int("id")).transpose()
            })
        })
        .await?;
    let (image_id, rev) = match image {
        None => {
            let (image_id, rev_id) =
                crate::db::inventory::add_image_as(db, name, prettyname, os, imagename).await?;
            set_image_size(db, image_id, size_mb).await?;
            (image_id, (rev_id, 0))
        }
        Some(image_id) => {
            let r =
                create_image_revision(db, image_id, 1, Some(imagename), comments, Some(size_mb))
                    .await?;
            make_production(db, r.id).await?;
            (image_id, (r.id, r.revision))
        }
    };
    Ok(Registered {
        image_id,
        imagerevision_id: rev.0,
        revision: rev.1,
        created: true,
    })
}
