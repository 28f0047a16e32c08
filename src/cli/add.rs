//! `provhost add user|image|computer`: what an operator (or VCL's web front end) enters
//! before requests can be made.

use clap::Subcommand;
use provhost::db::Db;
use provhost::Config;

use super::UrlArg;

/// `provhost add …`: what an operator (or VCL's web front end) enters before requests can
/// be made: users, images, computers.
#[derive(Debug, Clone, Subcommand)]
pub enum AddCommand {
    /// A user (`user.unityid`).
    User {
        login: String,
        /// Numeric uid to create the account with on computers (default: the OS picks).
        #[arg(long)]
        uid: Option<i64>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// An image with its first (production) revision.
    Image {
        /// `image.name`, also the revision's on-disk name.
        name: String,
        /// `OS.name`: `linux`, `windows`, `sim`, … (its module runs the OS routines).
        #[arg(long)]
        os: String,
        /// `image.prettyname` (default: the name).
        #[arg(long)]
        pretty: Option<String>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// A computer, available at once.
    Computer {
        /// `computer.hostname`
        hostname: String,
        /// Address (public and private).
        #[arg(long)]
        ip: String,
        /// `provisioning.name`: `lab`, `sim`, `qemu`, …
        #[arg(long)]
        provisioning: String,
        /// `lab`, `virtualmachine` or `blade` (default: lab for provisioning lab, else virtualmachine).
        #[arg(long = "type")]
        computer_type: Option<String>,
        /// SSH port provhost uses to reach it.
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
        #[command(flatten)]
        url: UrlArg,
    },
}

/// Run `provhost add …`.
pub async fn run(config: &Config, cmd: AddCommand) -> anyhow::Result<()> {
    match cmd {
        AddCommand::User { login, uid, url } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let id = provhost::db::inventory::add_user(&db, &login, uid).await?;
            println!("user {id}: {login}");
            db.close().await;
        }
        AddCommand::Image {
            name,
            os,
            pretty,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let pretty = pretty.unwrap_or_else(|| name.clone());
            let (image, revision) =
                provhost::db::inventory::add_image(&db, &name, &pretty, &os).await?;
            println!("image {image}: {name} (OS {os}), revision {revision}");
            db.close().await;
        }
        AddCommand::Computer {
            hostname,
            ip,
            provisioning,
            computer_type,
            ssh_port,
            url,
        } => {
            let db = Db::connect(&url.resolve(config)).await?;
            let mut c = provhost::db::inventory::NewComputer::lab(&hostname, &ip);
            c.computer_type = computer_type.unwrap_or_else(|| {
                if provisioning == "lab" {
                    "lab".into()
                } else {
                    "virtualmachine".into()
                }
            });
            c.provisioning = provisioning;
            c.ssh_port = ssh_port;
            let id = provhost::db::inventory::add_computer(&db, &c).await?;
            println!(
                "computer {id}: {hostname} ({ip}), provisioning {}, type {}",
                c.provisioning, c.computer_type
            );
            db.close().await;
        }
    }
    Ok(())
}
