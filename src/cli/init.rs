//! `provhost init [--dir DIR]`: create what a new management node needs — the
//! configuration file, the data folder, the node's SSH key (0600, in a 0700 folder) and
//! the SQLite database — saying what it made. Idempotent: what exists is kept and named,
//! never overwritten; a second run changes nothing and says so.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Args;
use provhost::config::{Config, LOCAL_CONFIG, SYSTEM_CONFIG, SYSTEM_DATA_DIR};
use provhost::db::{schema, OpenMode};
use provhost::image::key::{ensure_private_key, KeyOutcome};

use super::exit::Refused;

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// A folder for a self-contained node: DIR/provhost.toml with its data in DIR/data.
    /// Default: the configuration file provhost reads (--config, PROVHOST_CONFIG,
    /// ./provhost.toml, /etc/provhost/provhost.toml), written at ./provhost.toml when
    /// there is none.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Host name recorded as the management node in a new database (default: this machine's).
    #[arg(long)]
    pub management_node: Option<String>,
}

/// What one step did.
enum Step {
    Made(String),
    Kept(String),
}

/// Run `provhost init`. `config_arg` is `--config` / `PROVHOST_CONFIG`.
pub async fn run(config_arg: Option<&Path>, args: InitArgs) -> anyhow::Result<()> {
    let file = match (&args.dir, config_arg) {
        (Some(dir), _) => dir.join(LOCAL_CONFIG),
        (None, given) => Config::locate(given).unwrap_or_else(|| PathBuf::from(LOCAL_CONFIG)),
    };
    let mut steps = Vec::new();
    let written = write_config(&file)?;
    let missing_scripts = matches!(written, Step::Made(_))
        && (shipped("scripts").is_none() || shipped("stdlib").is_none());
    steps.push(written);
    let config = Config::load(Some(&file))?;
    steps.push(make_dir(&config.paths.data_dir, "data folder")?);
    steps.push(match ensure_private_key(&config.ssh.identity)? {
        KeyOutcome::Created => Step::Made(format!(
            "{}  the management node's SSH key (ed25519, 0600, folder 0700); computers and VM hosts must accept {}.pub",
            config.ssh.identity.display(),
            config.ssh.identity.display()
        )),
        KeyOutcome::Kept => Step::Kept(format!(
            "{}  the management node's SSH key",
            config.ssh.identity.display()
        )),
    });
    // The public half, for the operator to hand out (and for `image build-test`).
    provhost::image::key::node_public_key(&config.ssh.identity)?;
    steps.push(database(&config, args.management_node.as_deref()).await?);
    let mut made = 0;
    for s in &steps {
        match s {
            Step::Made(what) => {
                made += 1;
                println!("created  {what}");
            }
            Step::Kept(what) => println!("exists   {what}"),
        }
    }
    if missing_scripts {
        println!(
            "note     no scripts/stdlib found ({SHARE_DIR} or the current folder): set [paths] scripts and stdlib in {}",
            file.display()
        );
    }
    if made == 0 {
        println!("nothing to do: everything a node needs is there (nothing was changed)");
    } else {
        println!(
            "next: `provhost check` (scripts in {}), then `provhost serve{}` or the systemd unit (docs/install.md)",
            config.paths.scripts.display(),
            if file == Path::new(SYSTEM_CONFIG) {
                String::new()
            } else {
                format!(" --config {}", file.display())
            }
        );
    }
    Ok(())
}

/// The configuration file: kept when it exists (it must be a file), else written from
/// [`template`].
fn write_config(file: &Path) -> anyhow::Result<Step> {
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_file() || (m.file_type().is_symlink() && file.is_file()) => {
            return Ok(Step::Kept(format!("{}  configuration", file.display())))
        }
        Ok(_) => {
            return Err(Refused(format!(
                "{} exists and is not a file; init leaves it as it is (choose another --dir or --config)",
                file.display()
            ))
            .into())
        }
        Err(_) => {}
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let text = template(file);
    // create_new: a file that appeared since the check is not overwritten either.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
    Ok(Step::Made(format!("{}  configuration", file.display())))
}

/// Where the packaged scripts and stdlib are (the Debian package's `/usr/share/provhost`).
pub const SHARE_DIR: &str = "/usr/share/provhost";

/// Where the shipped `name` folder (`scripts`, `stdlib`) is: the packaged copy when
/// installed, else the current folder's (a checkout), made absolute so the file works
/// from anywhere; `None` when neither exists.
fn shipped(name: &str) -> Option<PathBuf> {
    let packaged = Path::new(SHARE_DIR).join(name);
    if packaged.is_dir() {
        return Some(packaged);
    }
    Path::new(name).canonicalize().ok().filter(|p| p.is_dir())
}

/// A new configuration file: the packaged locations for /etc/provhost/provhost.toml,
/// else data beside the file (`data/`).
pub fn template(file: &Path) -> String {
    let data = if file == Path::new(SYSTEM_CONFIG) {
        SYSTEM_DATA_DIR.to_string()
    } else {
        "data".to_string()
    };
    format!(
        "# provhost configuration, written by `provhost init`. Relative paths are taken from\n\
         # this file's folder. Every key and its default: docs/install.md and src/config.rs.\n\
         \n\
         [paths]\n\
         scripts = {scripts:?}\n\
         stdlib = {stdlib:?}\n\
         data_dir = {data:?}\n\
         \n\
         [ssh]\n\
         # The management node's key: computers and VM hosts accept its .pub for root.\n\
         identity = \"{data}/ssh/id_ed25519\"\n\
         known_hosts = \"{data}/ssh/known_hosts\"\n\
         \n\
         [database]\n\
         # Empty: the SQLite file <data_dir>/provhost.db. A VCL database: \"mysql://USER:PASSWORD@HOST/vcl\".\n\
         url = \"\"\n\
         \n\
         [daemon]\n\
         # This node's managementnode.hostname; empty: the machine's host name.\n\
         node = \"\"\n",
        scripts = shipped("scripts").unwrap_or_else(|| "scripts".into()).display().to_string(),
        stdlib = shipped("stdlib").unwrap_or_else(|| "stdlib".into()).display().to_string(),
    )
}

/// A folder, created 0700 when missing; an existing one is kept as it is.
fn make_dir(dir: &Path, what: &str) -> anyhow::Result<Step> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(Step::Kept(format!("{}  {what}", dir.display()))),
        Ok(_) => Err(Refused(format!(
            "{} ({what}) exists and is not a folder; init leaves it as it is",
            dir.display()
        ))
        .into()),
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            Ok(Step::Made(format!("{}  {what} (0700)", dir.display())))
        }
    }
}

/// The SQLite database, created with the schema (`db init`) when its file is missing. A
/// MySQL/MariaDB database is not touched: `provhost db init` is the step for it.
async fn database(config: &Config, management_node: Option<&str>) -> anyhow::Result<Step> {
    let url = config.database.url_or_default(&config.paths.data_dir);
    let shown = provhost::db::pool::redact_url(&url);
    let Some(path) = provhost::db::pool::sqlite_path(&url) else {
        return Ok(Step::Kept(format!(
            "{shown}  database (not SQLite: init leaves it alone; `provhost db init` creates or verifies its tables)"
        )));
    };
    if Path::new(path).exists() {
        return Ok(Step::Kept(format!("{path}  SQLite database")));
    }
    let db = super::open_db(&url, OpenMode::Create).await?;
    let host = management_node
        .map(str::to_string)
        .unwrap_or_else(schema::local_hostname);
    let report = schema::init(&db, &host).await;
    db.close().await;
    let report = report?;
    let node = report
        .management_node
        .map(|(id, name)| format!(", management node {id} ({name})"))
        .unwrap_or_default();
    Ok(Step::Made(format!(
        "{path}  SQLite database (VCL tables, provhost tables{node})"
    )))
}
