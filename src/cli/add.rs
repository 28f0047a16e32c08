//! `provhost add user|image|computer`: what an operator (or VCL's web front end) enters
//! before requests can be made.

use std::net::IpAddr;

use clap::Subcommand;
use provhost::db::inventory::{self, NewComputer};
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
        AddCommand::User { login, uid, url } => {
            check_login(&login)?;
            if let Some(u) = uid.filter(|u| !(1..=i64::from(u32::MAX)).contains(u)) {
                return Err(Refused(format!("--uid {u}: a uid is 1 to {}", u32::MAX)).into());
            }
            let db = open_db(&url.resolve(config), OpenMode::Existing).await?;
            let id = inventory::add_user(&db, &login, uid).await?;
            println!("user {id}: {login}");
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
            let mut problems = Vec::new();
            match &found {
                None => problems.push(format!(
                    "the database has no OS {os:?} (OS.name or OS.prettyname; it has: {}); VCL's web front end or SQL adds one",
                    oses.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
                Some(o) if o.module.is_empty() => problems.push(format!(
                    "OS {} has no module (OS.moduleid); point it at an os_NAME row of the module table",
                    o.name
                )),
                Some(o) if !no_script_check => {
                    let row = o.module_row();
                    problems.extend(script_problem(config, Kind::Os, ScriptFor::Row(&row)));
                }
                Some(_) => {}
            }
            refuse_if(&format!("image {name}"), problems)?;
            let o =
                found.ok_or_else(|| Refused(format!("not adding image {name}: no OS {os:?}")))?;
            let (image, revision) = inventory::add_image(&db, &name, &pretty, &o.name).await?;
            println!("image {image}: {name} (OS {}), revision {revision}", o.name);
            println!("{}", os_mapping(config, &o));
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
                    "the database has no provisioning {provisioning:?} (provisioning.name; it has: {}); VCL's web front end or SQL adds one",
                    rows.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if !no_script_check {
                let script = match row {
                    Some(m) if !m.name.is_empty() => ScriptFor::Row(m),
                    // No row (said above) or no module row: the script named like it.
                    _ => ScriptFor::Name(&provisioning),
                };
                problems.extend(script_problem(config, Kind::Provisioning, script));
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

/// Which module an OS row maps to, in one line: `OS centos7 ("CentOS 7") → module 5
/// os_linux (VCL::Module::OS::Linux) → scripts/os/linux.rhai`.
fn os_mapping(config: &Config, o: &inventory::OsRow) -> String {
    let row = o.module_row();
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    let _ = host.load_all();
    let script = match host.map_module_row(Kind::Os, &row) {
        Some(m) => config
            .paths
            .scripts
            .join(m.key.0.as_str())
            .join(format!("{}.rhai", m.key.1))
            .display()
            .to_string(),
        None => "no script (docs/modules.md says how rows map to scripts)".into(),
    };
    format!("OS {} ({:?}) → {row} → {script}", o.name, o.prettyname)
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
fn script_problem(config: &Config, kind: Kind, what: ScriptFor<'_>) -> Option<String> {
    let host = ScriptHost::new(config.host_options(), &provhost::primitive_families(config));
    let hint = "write it (`provhost check` tests it), or pass --no-script-check when the scripts live on another management node";
    let (name, via) = match what {
        ScriptFor::Name(name) => (name.to_string(), String::new()),
        ScriptFor::Row(row) => {
            // Whether a script's MODULE.serves claims the row needs the scripts loaded;
            // files that do not load are reported below only when they are the one wanted.
            let _ = host.load_all();
            match host.map_module_row(kind, row) {
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
