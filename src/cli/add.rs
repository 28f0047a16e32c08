//! `provhost add user|image|computer|provisioning|os`: what an operator (or VCL's web
//! front end) enters before requests can be made, and the rows that register a module
//! script as VCL knows modules.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;
use provhost::db::inventory::{self, NewComputer};
use provhost::db::modules::{self, NewModuleRow};
use provhost::db::OpenMode;
use provhost::host::modmap::ModuleRow;
use provhost::host::{Kind, ScriptHost};
use provhost::Config;

use super::exit::Refused;
use super::{open_db, UrlArg};

/// Longest login: Linux account names (what `add_user` creates on computers) stop at 32.
const MAX_LOGIN: usize = 32;
/// Longest host name: VCL's `computer.hostname` is `varchar(36)`.
const MAX_HOSTNAME: usize = 36;

/// `provhost add …`: what an operator (or VCL's web front end) enters before requests can
/// be made: users, images, computers.
#[derive(Debug, Clone, Subcommand)]
pub enum AddCommand {
    /// A user (`user.unityid`).
    User {
        /// 1-32 letters, digits, `.`, `_`, `-`, starting with a letter, digit or `_`, not
        /// all digits (it becomes an account name on computers).
        login: String,
        /// Numeric uid to create the account with on computers (default: the OS picks).
        #[arg(long)]
        uid: Option<i64>,
        /// An OpenSSH public key file (`~/.ssh/id_ed25519.pub`; several keys, one per
        /// line, are fine); repeat for more files. Sets `user.sshpublickeys` and
        /// `usepublickeys = 1`: the keys are installed for the user on their computers.
        #[arg(long = "ssh-key", value_name = "FILE")]
        ssh_keys: Vec<PathBuf>,
        #[command(flatten)]
        url: UrlArg,
    },
    /// A provisioning module: a `provisioning` row (what `add computer --provisioning`
    /// names) and the `module` row it points at, as VCL registers its Perl modules. The
    /// script serving it is `scripts/provisioning/NAME.rhai` (docs/modules.md).
    Provisioning {
        /// `provisioning.name`: 1-30 of a-z, 0-9, `_`, `-`.
        name: String,
        /// `module.name` (default `provisioning_NAME`); an existing module row of that
        /// name is used as it is.
        #[arg(long)]
        module_name: Option<String>,
        /// `provisioning.prettyname` (default: the name).
        #[arg(long)]
        pretty: Option<String>,
        /// `module.perlpackage` (default: none, a module only provhost serves); e.g.
        /// `VCL::Module::Provisioning::VMware::VMware` for a port of a VCL module.
        #[arg(long)]
        perl_package: Option<String>,
        /// Do not look for the script here (it lives on another management node).
        #[arg(long)]
        no_script_check: bool,
        #[command(flatten)]
        url: UrlArg,
    },
    /// An OS: an `OS` row (what `add image --os` names) and the `module` row it points
    /// at. The script serving it is `scripts/os/…` as the module row maps
    /// (docs/modules.md): `--module-name os_linux` reuses the Linux module.
    Os {
        /// `OS.name`: 1-20 of a-z, 0-9, `_`, `-`, `.`.
        name: String,
        /// `OS.type`: a row of the `OStype` table (`linux`, `windows`, `unix`, `osx`).
        #[arg(long = "type")]
        os_type: String,
        /// `module.name` (default `os_NAME`); an existing module row of that name (e.g.
        /// `os_linux`) is used as it is.
        #[arg(long)]
        module_name: Option<String>,
        /// `OS.prettyname` (default: the name).
        #[arg(long)]
        pretty: Option<String>,
        /// `module.perlpackage` for a new module row (default: none).
        #[arg(long)]
        perl_package: Option<String>,
        /// `OS.installtype` (default `image`, what provhost's modules load).
        #[arg(long, default_value = "image")]
        installtype: String,
        /// `OS.minram` in MB.
        #[arg(long, default_value_t = 512)]
        minram: i64,
        /// Do not look for the script here (it lives on another management node).
        #[arg(long)]
        no_script_check: bool,
        #[command(flatten)]
        url: UrlArg,
    },
    /// An image with its first (production) revision.
    Image {
        /// `image.name`, also the revision's on-disk name.
        name: String,
        /// `OS.name` or `OS.prettyname`: `linux`, `sim`, … on provhost's own database;
        /// VCL's rows (`centos7`, `ubuntuimage`, …) on a VCL database. Its module
        /// (`OS.moduleid` → `module.name`) runs the OS routines, from
        /// `scripts/os/MODULE.rhai`; the command says which.
        #[arg(long)]
        os: String,
        /// Do not look for the OS module's script here (it lives on another management
        /// node).
        #[arg(long)]
        no_script_check: bool,
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
        /// `provisioning.name`: `lab`, `sim`, `qemu`, … (a row of the database's
        /// `provisioning` table with a script `scripts/provisioning/NAME.rhai`).
        #[arg(long)]
        provisioning: String,
        /// Do not look for the provisioning script here (it lives on another
        /// management node).
        #[arg(long)]
        no_script_check: bool,
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
        AddCommand::User {
            login,
            uid,
            ssh_keys,
            url,
        } => {
            check_login(&login)?;
            if let Some(u) = uid.filter(|u| !(1..=i64::from(u32::MAX)).contains(u)) {
                return Err(Refused(format!("--uid {u}: a uid is 1 to {}", u32::MAX)).into());
            }
            // Every key file is read and checked before anything is written.
            let keys = if ssh_keys.is_empty() {
                None
            } else {
                Some(super::sshkey::read_keys(&ssh_keys)?)
            };
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let id = inventory::add_user(&db, &login, uid).await?;
            match &keys {
                Some(keys) => {
                    inventory::set_user_ssh_keys(&db, &login, keys).await?;
                    println!(
                        "user {id}: {login}, {} SSH public key(s) (usepublickeys = 1)",
                        keys.lines().count()
                    );
                }
                None => println!("user {id}: {login}"),
            }
            db.close().await;
        }
        AddCommand::Provisioning {
            name,
            module_name,
            pretty,
            perl_package,
            no_script_check,
            url,
        } => {
            check_row_name("provisioning name", &name, 30, false)?;
            let module = new_module_row(Kind::Provisioning, &name, module_name, perl_package)?;
            let pretty = pretty.unwrap_or_else(|| name.clone());
            check_text("--pretty", &pretty, 70)?;
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let row = module_row_to_check(&db, &module).await?;
            let scripts = Scripts::new(config);
            if !no_script_check {
                let problems = script_problem(&scripts, Kind::Provisioning, ScriptFor::Row(&row));
                refuse_if(
                    &format!("provisioning {name}"),
                    problems.into_iter().collect(),
                )?;
            }
            let r = modules::add_provisioning(&db, &name, &pretty, &module).await?;
            print_registered(
                &scripts,
                Kind::Provisioning,
                &format!("provisioning {}: {name} ({pretty:?})", r.id),
                &r,
                &format!("add computers with `provhost add computer HOST --ip ADDRESS --provisioning {name}`"),
            );
            db.close().await;
        }
        AddCommand::Os {
            name,
            os_type,
            module_name,
            pretty,
            perl_package,
            installtype,
            minram,
            no_script_check,
            url,
        } => {
            check_row_name("OS name", &name, 20, true)?;
            check_row_name("--installtype", &installtype, 30, false)?;
            if !(1..=16_777_215).contains(&minram) {
                return Err(
                    Refused(format!("--minram {minram}: OS.minram is 1 to 16777215 MB")).into(),
                );
            }
            let module = new_module_row(Kind::Os, &name, module_name, perl_package)?;
            let pretty = pretty.unwrap_or_else(|| name.clone());
            check_text("--pretty", &pretty, 64)?;
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let types = modules::os_types(&db).await?;
            if !types.contains(&os_type) {
                return Err(Refused(format!(
                    "not adding OS {name}: --type {os_type} is not a row of the OStype table; use one of: {}",
                    types.join(", ")
                ))
                .into());
            }
            let row = module_row_to_check(&db, &module).await?;
            let scripts = Scripts::new(config);
            if !no_script_check {
                let problems = script_problem(&scripts, Kind::Os, ScriptFor::Row(&row));
                refuse_if(&format!("OS {name}"), problems.into_iter().collect())?;
            }
            let os = modules::NewOs {
                name: name.clone(),
                prettyname: pretty.clone(),
                os_type,
                installtype,
                minram,
            };
            let r = modules::add_os(&db, &os, &module).await?;
            print_registered(
                &scripts,
                Kind::Os,
                &format!("OS {}: {name} ({pretty:?}, type {})", r.id, os.os_type),
                &r,
                &format!("add images with `provhost add image NAME --os {name}`"),
            );
            db.close().await;
        }
        AddCommand::Image {
            name,
            os,
            pretty,
            no_script_check,
            url,
        } => {
            check_text("image name", &name, 70)?;
            let pretty = pretty.unwrap_or_else(|| name.clone());
            check_text("--pretty", &pretty, 60)?;
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let oses = inventory::os_rows(&db).await?;
            let found = inventory::find_os(&oses, &os).cloned();
            let scripts = Scripts::new(config);
            let mut problems = Vec::new();
            match &found {
                None => problems.push(format!(
                    "the database has no OS {os:?} (OS.name or OS.prettyname; it has: {}); register it with `provhost add os {os} --type linux` (--module-name os_linux to use the Linux module)",
                    oses.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Some(o) if o.module.is_empty() => problems.push(format!(
                    "OS {} has no module (OS.moduleid); point it at an os_NAME row of the module table",
                    o.name
                )),
                Some(o) if !no_script_check => {
                    let row = o.module_row();
                    problems.extend(script_problem(&scripts, Kind::Os, ScriptFor::Row(&row)));
                }
                Some(_) => {}
            }
            refuse_if(&format!("image {name}"), problems)?;
            let o =
                found.ok_or_else(|| Refused(format!("not adding image {name}: no OS {os:?}")))?;
            let (image, revision) = inventory::add_image(&db, &name, &pretty, &o.name).await?;
            println!("image {image}: {name} (OS {}), revision {revision}", o.name);
            println!("{}", os_mapping(&scripts, &o));
            db.close().await;
        }
        AddCommand::Computer {
            hostname,
            ip,
            provisioning,
            no_script_check,
            computer_type,
            ssh_port,
            url,
        } => {
            check_hostname(&hostname)?;
            let ip = check_ipv4(&ip)?;
            if ssh_port == 0 {
                return Err(Refused("--ssh-port 0: a port is 1 to 65535".into()).into());
            }
            let computer_type = computer_type.unwrap_or_else(|| {
                if provisioning == "lab" {
                    "lab".into()
                } else {
                    "virtualmachine".into()
                }
            });
            if !matches!(computer_type.as_str(), "lab" | "virtualmachine" | "blade") {
                return Err(Refused(format!(
                    "--type {computer_type}: VCL's computer.type is lab, virtualmachine or blade"
                ))
                .into());
            }
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let rows = inventory::provisioning_modules(&db).await?;
            let row = rows
                .iter()
                .find(|(n, _)| *n == provisioning)
                .map(|(_, m)| m);
            let mut problems = Vec::new();
            if row.is_none() {
                problems.push(format!(
                    "the database has no provisioning {provisioning:?} (provisioning.name; it has: {}); register it with `provhost add provisioning {provisioning}`",
                    rows.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if !no_script_check {
                let script = match row {
                    Some(m) if !m.name.is_empty() => ScriptFor::Row(m),
                    // No row (said above) or no module row: the script named like it.
                    _ => ScriptFor::Name(&provisioning),
                };
                problems.extend(script_problem(
                    &Scripts::new(config),
                    Kind::Provisioning,
                    script,
                ));
            }
            refuse_if(&format!("computer {hostname}"), problems)?;
            for (id, other) in inventory::computers_at(&db, &ip).await? {
                eprintln!("note: computer {id} ({other}) has address {ip} too");
            }
            let mut c = NewComputer::lab(&hostname, &ip);
            c.computer_type = computer_type;
            c.provisioning = provisioning;
            c.ssh_port = ssh_port;
            let id = inventory::add_computer(&db, &c).await?;
            println!(
                "computer {id}: {hostname} ({ip}), provisioning {}, type {}",
                c.provisioning, c.computer_type
            );
            db.close().await;
        }
    }
    Ok(())
}

/// The configured scripts folder as `add` checks it: one host, its modules loaded once,
/// when a module row is first mapped.
struct Scripts<'a> {
    config: &'a Config,
    host: std::sync::Arc<ScriptHost>,
    loaded: std::cell::Cell<bool>,
}

impl<'a> Scripts<'a> {
    fn new(config: &'a Config) -> Self {
        Scripts {
            config,
            host: ScriptHost::new(config.host_options(), &provhost::primitive_families(config)),
            loaded: std::cell::Cell::new(false),
        }
    }

    /// The host with every module that loads (whether a script's `MODULE.serves` claims a
    /// row needs them loaded; a file that does not load is reported by [`script_problem`]
    /// only when it is the one wanted).
    fn loaded(&self) -> &ScriptHost {
        if !self.loaded.replace(true) {
            let _ = self.host.load_all();
        }
        &self.host
    }

    /// The script a module row maps to (docs/modules.md), if any.
    fn script_of(&self, kind: Kind, row: &ModuleRow) -> Option<PathBuf> {
        self.loaded().map_module_row(kind, row).map(|m| {
            self.config
                .paths
                .scripts
                .join(m.key.0.as_str())
                .join(format!("{}.rhai", m.key.1))
        })
    }
}

/// Which module an OS row maps to, in one line: `OS centos7 ("CentOS 7") → module 5
/// os_linux (VCL::Module::OS::Linux) → scripts/os/linux.rhai`.
fn os_mapping(scripts: &Scripts<'_>, o: &inventory::OsRow) -> String {
    let row = o.module_row();
    let script = match scripts.script_of(Kind::Os, &row) {
        Some(path) => path.display().to_string(),
        None => "no script (docs/modules.md says how rows map to scripts)".into(),
    };
    format!("OS {} ({:?}) → {row} → {script}", o.name, o.prettyname)
}

/// The module row `add provisioning|os NAME` points at: `--module-name` (default
/// `KIND_NAME`) with `--perl-package`; its description names the script its name maps to,
/// as the seeded rows do (`scripts/provisioning/qemu.rhai`).
fn new_module_row(
    kind: Kind,
    name: &str,
    module_name: Option<String>,
    perl_package: Option<String>,
) -> Result<NewModuleRow, Refused> {
    let module_name = module_name.unwrap_or_else(|| format!("{kind}_{name}"));
    check_row_name("--module-name", &module_name, 30, false)?;
    let perlpackage = perl_package.unwrap_or_default();
    if !perlpackage.is_empty() {
        check_perl_package(&perlpackage)?;
    }
    let script = format!(
        "scripts/{kind}/{}.rhai",
        module_name
            .strip_prefix(&format!("{kind}_"))
            .unwrap_or(&module_name)
    );
    Ok(NewModuleRow {
        prettyname: format!("{name} {kind} module (provhost)"),
        description: script,
        name: module_name,
        perlpackage,
    })
}

/// The module row the new row will point at, as the script mapping sees it: the
/// existing row of that name, or the one about to be created (id 0).
async fn module_row_to_check(
    db: &provhost::db::Db,
    module: &NewModuleRow,
) -> anyhow::Result<ModuleRow> {
    Ok(match modules::module_named(db, &module.name).await? {
        Some(found) => found,
        None => ModuleRow {
            id: 0,
            name: module.name.clone(),
            perl_package: module.perlpackage.clone(),
        },
    })
}

/// What `add provisioning|os` prints: the new row `what` and its module row (new or
/// existing), the script that row maps to, and the `next` step.
fn print_registered(
    scripts: &Scripts<'_>,
    kind: Kind,
    what: &str,
    r: &modules::Registered,
    next: &str,
) {
    let made = if r.module_created {
        ", new"
    } else {
        ", existing"
    };
    println!("{what} → {}{made}", r.module);
    println!("{}", mapping_line(scripts, kind, &r.module));
    println!("{next}");
}

/// Which script serves a module row, in one line.
fn mapping_line(scripts: &Scripts<'_>, kind: Kind, row: &ModuleRow) -> String {
    match scripts.script_of(kind, row) {
        Some(path) => format!("{row} → {}", path.display()),
        None => {
            format!("{row} names no {kind} script (docs/modules.md says how rows map to scripts)")
        }
    }
}

/// A name column of VCL's module tables: 1 to `max` of a-z, 0-9, `_`, `-` (and `.` when
/// `dots`), starting with a letter or digit.
fn check_row_name(what: &str, name: &str, max: usize, dots: bool) -> Result<(), Refused> {
    let bad = |why: String| Err(Refused(format!("{what} {name:?}: {why}")));
    if name.is_empty() {
        return bad("empty".into());
    }
    if name.len() > max {
        return bad(format!("longer than {max} characters (VCL's column)"));
    }
    if let Some(c) = name.chars().find(|c| {
        !(c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '_' | '-')
            || (dots && *c == '.'))
    }) {
        return bad(format!(
            "{c:?} is not allowed; use a-z, 0-9, '_', '-'{}",
            if dots { ", '.'" } else { "" }
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return bad("must start with a letter or a digit".into());
    }
    Ok(())
}

/// A Perl package name: `Word::Word…` of letters, digits and `_`, at most 150 characters.
fn check_perl_package(p: &str) -> Result<(), Refused> {
    let ok = p.len() <= 150
        && p.split("::").all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Refused(format!(
            "--perl-package {p:?} is not a Perl package name (e.g. VCL::Module::Provisioning::VMware::VMware, at most 150 characters)"
        )))
    }
}

/// Nothing is added when anything is wrong: every problem in one message.
fn refuse_if(what: &str, problems: Vec<String>) -> Result<(), Refused> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Refused(format!(
        "not adding {what}: {}",
        problems.join("; and ")
    )))
}

/// Which script `add` checks: the one a module row maps to (docs/modules.md), or one by
/// name when there is no row.
enum ScriptFor<'a> {
    Row(&'a ModuleRow),
    Name(&'a str),
}

/// What is wrong with the script that serves `what` (a module row, mapped as the daemon
/// maps it: a script's `MODULE.serves`, then the perl package, then the module name) in the
/// configured scripts folder, if anything: none, missing, not loading, or declaring another
/// module.
fn script_problem(scripts: &Scripts<'_>, kind: Kind, what: ScriptFor<'_>) -> Option<String> {
    let (config, host) = (scripts.config, &scripts.host);
    let hint = "write it (`provhost check` tests it), or pass --no-script-check when the scripts live on another management node";
    let (name, via) = match what {
        ScriptFor::Name(name) => (name.to_string(), String::new()),
        ScriptFor::Row(row) => {
            match scripts.loaded().map_module_row(kind, row) {
                None => {
                    return Some(format!(
                        "{row} names no {kind} script (its perl package is not under VCL::Module::{} and its name is not a script name); list it in a script's MODULE.serves (docs/modules.md), or pass --no-script-check when the scripts live on another management node",
                        if kind == Kind::Os { "OS" } else { "Provisioning" }
                    ))
                }
                Some(m) if host.module(&m.key).is_some() => return None,
                Some(m) => (m.key.1, format!(" (what {row} maps to, docs/modules.md)")),
            }
        }
    };
    let path = config
        .paths
        .scripts
        .join(kind.as_str())
        .join(format!("{name}.rhai"));
    if !path.is_file() {
        return Some(format!(
            "there is no script {} for the {kind} module {name:?}{via}; {hint}",
            path.display()
        ));
    }
    match host.compile_file(&path, Some(kind)) {
        Ok((info, _, _)) if info.name == name => None,
        Ok((info, _, _)) => Some(format!(
            "{} declares module {:?}, not {name:?}; fix its MODULE name",
            path.display(),
            info.name
        )),
        Err(errors) => Some(format!(
            "{} does not load ({}); fix it (`provhost check {}`)",
            path.display(),
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            path.display()
        )),
    }
}

/// A login `add_user` can create on a computer (see [`AddCommand::User`]).
fn check_login(login: &str) -> Result<(), Refused> {
    let bad = |why: &str| Err(Refused(format!("user name {login:?}: {why}")));
    if login.is_empty() {
        return bad("empty; give the login, e.g. `provhost add user ann`");
    }
    if login.len() > MAX_LOGIN {
        return bad(&format!(
            "longer than {MAX_LOGIN} characters (account names on computers stop there)"
        ));
    }
    if let Some(c) = login
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "{c:?} is not allowed; use letters, digits, '.', '_' and '-'"
        ));
    }
    if login.starts_with(['.', '-']) {
        return bad("must start with a letter, a digit or '_'");
    }
    if login.chars().all(|c| c.is_ascii_digit()) {
        return bad("all digits reads as a uid on computers; add a letter");
    }
    Ok(())
}

/// A host name: labels of letters, digits and '-', not starting or ending with '-',
/// separated by dots, at most [`MAX_HOSTNAME`] characters.
fn check_hostname(name: &str) -> Result<(), Refused> {
    let bad = |why: String| Err(Refused(format!("host name {name:?}: {why}")));
    if name.is_empty() {
        return bad("empty".into());
    }
    if name.len() > MAX_HOSTNAME {
        return bad(format!(
            "longer than {MAX_HOSTNAME} characters (VCL's computer.hostname)"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return bad(format!(
                "{label:?} is not a host name part (letters, digits and '-' between dots, not starting or ending with '-')"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(format!(
                "{c:?} is not allowed (letters, digits, '-' and '.')"
            ));
        }
    }
    Ok(())
}

/// An IPv4 address as text (VCL's address columns are `varchar(15)`: IPv4 only).
pub fn check_ipv4(ip: &str) -> Result<String, Refused> {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a.to_string()),
        Ok(IpAddr::V6(_)) => Err(Refused(format!(
            "--ip {ip}: an IPv6 address; VCL's address columns hold IPv4 only"
        ))),
        Err(_) => Err(Refused(format!(
            "--ip {ip:?} is not an IPv4 address (four numbers 0-255, e.g. 192.0.2.5)"
        ))),
    }
}

/// Text for a name column: not empty, at most `max` characters, no control characters.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), Refused> {
    let bad = |why: &str| Err(Refused(format!("{what} {text:?}: {why}")));
    if text.trim().is_empty() {
        return bad("empty");
    }
    if text.chars().count() > max {
        return bad(&format!("longer than {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        for ok in ["ann", "a.b-c_d", "_svc", "u2", "x"] {
            assert!(check_login(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-rf",
            ".x",
            "1234",
            "ann smith",
            "a;rm",
            "ä",
            &"a".repeat(33),
        ] {
            assert!(check_login(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_names_and_addresses() {
        for ok in ["sim1", "lab1.example.org", "a-b"] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a..b", "a b", "a_b", &"a".repeat(37)] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_ipv4("192.0.2.5").expect("ok"), "192.0.2.5");
        assert!(check_ipv4("300.1.2.3").is_err());
        assert!(check_ipv4("::1").expect_err("v6").0.contains("IPv4 only"));
        assert!(check_ipv4("notanip").is_err());
    }
}
