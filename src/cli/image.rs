//! `provhost image list|build-test`: the images in the database; building (or finding) the
//! test image in the image library and recording it as the production revision of image
//! `provhost-test`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use provhost::db::OpenMode;
use provhost::image::build::{self, BuildError, BuildOptions, Built};
use provhost::Config;

use super::list::{self, opt, Format};
use super::UrlArg;

#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// List the images (not deleted): OS, production revision, size, reload time.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        url: UrlArg,
    },
    /// Build provhost's test image (Debian bookworm minbase + sshd, booting in seconds under
    /// TCG) into the image library, unless its recipe is unchanged; record it in the database.
    BuildTest {
        /// Image library to write to (default: `[images] library`, else `<data_dir>/images`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Public key for root in the image (default: the management node's key,
        /// `[ssh] identity` + `.pub`; made with ssh-keygen when neither file exists).
        #[arg(long)]
        key: Option<PathBuf>,
        /// debootstrap's package cache (default: `[images] build_cache`, else
        /// /var/cache/provhost/debootstrap).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Debian mirror (default: the bookworm source in this machine's apt configuration).
        #[arg(long)]
        mirror: Option<String>,
        /// Longest the build may take, in seconds.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
        /// Only build; do not record the image in the database.
        #[arg(long)]
        no_register: bool,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost image …`.
pub async fn run(config: &Config, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::List { format, url } => {
            let db = super::open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = provhost::db::listing::images(&db).await?;
            db.close().await;
            list::print(
                &format,
                &rows,
                &[
                    "ID",
                    "NAME",
                    "OS",
                    "REVISION",
                    "IMAGENAME",
                    "SIZE MB",
                    "RELOAD MIN",
                    "PRETTY NAME",
                ],
                |i| {
                    vec![
                        i.id.to_string(),
                        i.name.clone(),
                        i.os.clone(),
                        opt(&i.revision),
                        opt(&i.imagename),
                        i.size_mb.to_string(),
                        i.reload_minutes.to_string(),
                        i.prettyname.clone(),
                    ]
                },
            )
        }
        ImageCommand::BuildTest {
            out,
            key,
            cache,
            mirror,
            timeout,
            no_register,
            url,
        } => {
            let pubkey = match key {
                Some(k) => k,
                None => provhost::image::key::node_public_key(&config.ssh.identity)?,
            };
            let opts = BuildOptions {
                library: out.unwrap_or_else(|| config.images.library(&config.paths.data_dir)),
                pubkey,
                cache_dir: cache.unwrap_or_else(|| config.images.build_cache()),
                mirror,
                timeout: Duration::from_secs(timeout.max(1)),
            };
            let built = build_with_progress(&opts).await?;
            if built.built {
                println!(
                    "test image {}: built in {:.1} s, disk.qcow2 {} MB, in {}",
                    built.imagename,
                    built.secs,
                    built.size_mb,
                    built.dir.display()
                );
            } else {
                println!(
                    "test image {}: up to date (recipe unchanged), disk.qcow2 {} MB, in {}",
                    built.imagename,
                    built.size_mb,
                    built.dir.display()
                );
            }
            if !no_register {
                register(config, &url, &built).await?;
            }
            Ok(())
        }
    }
}

/// The build on the blocking pool, its steps printed to stderr with elapsed seconds (and
/// the current one on a spinner at a terminal).
async fn build_with_progress(opts: &BuildOptions) -> Result<Built, BuildError> {
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || {
        let steps = super::progress::Steps::new("building the test image");
        build::build_test_image(&opts, &mut |step| steps.step(step))
    })
    .await
    .unwrap_or_else(|e| {
        Err(BuildError::Io {
            what: "the build thread",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

async fn register(config: &Config, url: &UrlArg, built: &Built) -> anyhow::Result<()> {
    let url = url.resolve(config);
    let shown = provhost::db::pool::redact_url(&url);
    let context = || {
        format!("recording the test image in the database {shown}; run `provhost db init` first, or pass --no-register")
    };
    let db = super::open_db(&url, OpenMode::Existing)
        .await
        .with_context(context)?;
    let r = provhost::db::image::register_library_image(
        &db,
        build::IMAGE_NAME,
        "provhost test image (Debian 12 minbase, sshd)",
        "linux",
        &built.imagename,
        built.size_mb,
        "built by provhost image build-test",
    )
    .await
    .with_context(context);
    db.close().await;
    let r = r?;
    if r.created {
        println!(
            "recorded: image {} ({}), revision {} (imagerevision {}), production, size {} MB",
            r.image_id,
            build::IMAGE_NAME,
            r.revision,
            r.imagerevision_id,
            built.size_mb
        );
    } else {
        println!(
            "already recorded: image {} ({}), revision {} (imagerevision {}); nothing changed",
            r.image_id,
            build::IMAGE_NAME,
            r.revision,
            r.imagerevision_id
        );
    }
    Ok(())
}
