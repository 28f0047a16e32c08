//! The routine contract: which routines each module kind must (and may) define, with how
//! many parameters, what `const MODULE` must say, and what each routine must return.
//!
//! `check` runs on every compile (CLI `check`, start-up, every hot reload); `check_return`
//! runs on every call, so a routine that returns the wrong shape fails its step with a
//! message naming what was expected instead of confusing the state flow.

use std::path::Path;

use rhai::{Dynamic, AST};

use crate::host::error::{HostError, SourcePos};

/// A module's kind, which is also the folder it lives in under `scripts/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Provisioning,
    Os,
    Site,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Provisioning, Kind::Os, Kind::Site];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Provisioning => "provisioning",
            Kind::Os => "os",
            Kind::Site => "site",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a file's folder implies (`scripts/os/linux.rhai` → `Os`), if any.
    pub fn from_path(path: &Path) -> Option<Kind> {
        path.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(Kind::parse)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a routine must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// `true` or `false`.
    Bool,
    /// `"ready"`, `"post_load"` or `"reload"` (VCL's prefix match, any case; `false` and
    /// `"failed"` count as reload, as in VCL).
    NodeStatus,
    /// `control_vm(ctx, action)`: a status string for `"status"`, a bool for the others.
    ControlVm,
    /// A size in MB: an integer >= 0.
    SizeMb,
    /// `"on"`, `"off"` or `"suspended"`.
    PowerStatus,
    /// Anything (site-specific helpers).
    Any,
}

impl Returns {
    fn describe(self) -> &'static str {
        match self {
            Returns::Bool => "true or false",
            Returns::NodeStatus => "\"ready\", \"post_load\" or \"reload\"",
            Returns::ControlVm => "a status string for \"status\", true or false otherwise",
            Returns::SizeMb => "an integer >= 0 (MB)",
            Returns::PowerStatus => "\"on\", \"off\" or \"suspended\"",
            Returns::Any => "any value",
        }
    }
}

/// One routine of a kind's contract.
#[derive(Debug, Clone, Copy)]
pub struct RoutineSpec {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub returns: Returns,
    pub required: bool,
    pub doc: &'static str,
}

impl RoutineSpec {
    /// `name(ctx, user)` as the contract writes it.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

const fn req(
    name: &'static str,
    params: &'static [&'static str],
    returns: Returns,
    doc: &'static str,
) -> RoutineSpec {
    RoutineSpec {
        name,
        params,
        returns,
        required: true,
        doc,
    }
}
const fn opt(
    name: &'static str,
    params: &'static [&'static str],
    returns: Returns,
    doc: &'static str,
) -> RoutineSpec {
    RoutineSpec {
        name,
        params,
        returns,
        required: false,
        doc,
    }
}

const CTX: &[&str] = &["ctx"];

const PROVISIONING: &[RoutineSpec] = &[
    req(
        "node_status",
        CTX,
        Returns::NodeStatus,
        "Is the computer up, reachable, running the requested image revision and post-loaded?",
    ),
    req(
        "does_image_exist",
        CTX,
        Returns::Bool,
        "Is the image in this node's image library / on the VM host?",
    ),
    req(
        "retrieve_image",
        CTX,
        Returns::Bool,
        "Copy the image from another management node's image library.",
    ),
    req(
        "load",
        CTX,
        Returns::Bool,
        "Remove any old VM, create it from the image, power on, wait for it to answer.",
    ),
    req(
        "capture",
        CTX,
        Returns::Bool,
        "Turn the computer's current disk into a new image revision.",
    ),
    req(
        "control_vm",
        &["ctx", "action"],
        Returns::ControlVm,
        "\"remove\", \"on\", \"off\", \"reset\" (bool) or \"status\" (status string).",
    ),
    req(
        "get_image_size",
        CTX,
        Returns::SizeMb,
        "Size of the image in MB.",
    ),
    opt(
        "reserve",
        CTX,
        Returns::Bool,
        "Extra work when the reservation becomes reserved.",
    ),
    opt(
        "pre_reload",
        CTX,
        Returns::Bool,
        "Run before a reload replaces the computer's image.",
    ),
    opt(
        "post_reserve",
        CTX,
        Returns::Bool,
        "Run after access is granted.",
    ),
    opt(
        "post_reservation",
        CTX,
        Returns::Bool,
        "Run when the reservation ends.",
    ),
    opt(
        "unload",
        CTX,
        Returns::Bool,
        "Take the computer down when it is not needed (predictive unload).",
    ),
    opt(
        "power_status",
        CTX,
        Returns::PowerStatus,
        "\"on\", \"off\" or \"suspended\".",
    ),
];

const OS: &[RoutineSpec] = &[
    req(
        "post_load",
        CTX,
        Returns::Bool,
        "Wait until the OS answers, randomize root passwords, set the firewall.",
    ),
    req(
        "add_user",
        &["ctx", "user"],
        Returns::Bool,
        "Create the reservation user's account (user: #{login, uid, password, ssh_keys, root}).",
    ),
    req(
        "delete_user",
        &["ctx", "user"],
        Returns::Bool,
        "Remove a user's account and home.",
    ),
    req(
        "grant_access",
        CTX,
        Returns::Bool,
        "Open the connect port to ctx.remote_ip only.",
    ),
    req(
        "revoke_access",
        CTX,
        Returns::Bool,
        "Close what grant_access opened.",
    ),
    req(
        "set_password",
        &["ctx", "user", "password"],
        Returns::Bool,
        "Set a user's password.",
    ),
    req(
        "sanitize",
        CTX,
        Returns::Bool,
        "Back to a clean state before reuse.",
    ),
    req(
        "pre_capture",
        CTX,
        Returns::Bool,
        "Prepare the OS for imaging.",
    ),
    req(
        "is_ready",
        CTX,
        Returns::Bool,
        "Does the OS answer and accept commands?",
    ),
    opt(
        "reserve",
        CTX,
        Returns::Bool,
        "Extra work when the reservation becomes reserved.",
    ),
    opt(
        "pre_reload",
        CTX,
        Returns::Bool,
        "Run on the old image before a reload.",
    ),
    opt(
        "post_reserve",
        CTX,
        Returns::Bool,
        "Run after access is granted.",
    ),
    opt(
        "post_reservation",
        CTX,
        Returns::Bool,
        "Run when the reservation ends.",
    ),
    opt(
        "is_user_connected",
        CTX,
        Returns::Bool,
        "Is the reservation user logged in?",
    ),
];

const SITE: &[RoutineSpec] = &[
    opt(
        "post_load",
        CTX,
        Returns::Bool,
        "Run after the OS module's post_load.",
    ),
    opt(
        "reserve",
        CTX,
        Returns::Bool,
        "Run when the reservation becomes reserved.",
    ),
    opt(
        "post_reserve",
        CTX,
        Returns::Bool,
        "Run after access is granted.",
    ),
    opt(
        "post_reservation",
        CTX,
        Returns::Bool,
        "Run when the reservation ends.",
    ),
    opt(
        "sanitize",
        CTX,
        Returns::Bool,
        "Run after the OS module's sanitize.",
    ),
    opt(
        "pre_capture",
        CTX,
        Returns::Bool,
        "Run before the OS module's pre_capture.",
    ),
];

/// The contract of a kind: required routines first, then optional ones.
pub fn routines(kind: Kind) -> &'static [RoutineSpec] {
    match kind {
        Kind::Provisioning => PROVISIONING,
        Kind::Os => OS,
        Kind::Site => SITE,
    }
}

/// The contract entry for `routine` taking `arity` arguments, if it is a contract routine.
pub fn spec(kind: Kind, routine: &str, arity: usize) -> Option<&'static RoutineSpec> {
    routines(kind)
        .iter()
        .find(|s| s.name == routine && s.params.len() == arity)
}

/// When an OS module adds the reservation's user (DESIGN.md: Windows-like at "ready",
/// Linux-like at "acknowledge").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddUserAt {
    Ready,
    Acknowledge,
}

/// What `const MODULE` declares, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    /// Only meaningful for `os` modules; defaults to `Acknowledge` (or the parent's).
    pub add_user_at: AddUserAt,
    /// `MODULE.add_user_at` was given (else a child takes its parent's).
    pub add_user_at_declared: bool,
    /// `MODULE.extends`: the name of the module of the same kind this one inherits from.
    pub extends: Option<String>,
    /// `MODULE.serves`: VCL `module.name` or `module.perlpackage` values this module
    /// serves, ahead of the default mapping (docs/modules.md).
    pub serves: Vec<String>,
    /// Only meaningful for `site` modules: what a failing hook does; defaults to `Fail`
    /// (or the parent's).
    pub on_failure: OnFailure,
    /// `MODULE.on_failure` was given (else a child takes its parent's).
    pub on_failure_declared: bool,
}

/// What a failing site hook (a throw, `false`, a timeout) does to the reservation:
/// `MODULE.on_failure`, `"fail"` (the default) or `"warn"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// The reservation fails, as when the OS module fails.
    #[default]
    Fail,
    /// A warning in the daemon's log and the reservation's load-log; the flow goes on.
    Warn,
}

/// 1-based line of the first match of `re` in `source`, or 0.
fn line_of(source: &str, re: &regex::Regex) -> usize {
    re.find(source)
        .map(|m| source[..m.start()].matches('\n').count() + 1)
        .unwrap_or(0)
}

/// The line where `fn name(` is defined, or 0.
pub fn fn_line(source: &str, name: &str) -> usize {
    match regex::Regex::new(&format!(
        r"(?m)^[ \t]*(?:private[ \t]+)?fn[ \t]+{}[ \t]*\(",
        regex::escape(name)
    )) {
        Ok(re) => line_of(source, &re),
        Err(_) => 0,
    }
}

/// The line of `const MODULE` in `source`, or 0.
pub fn module_line_of(source: &str) -> usize {
    module_line(source)
}

fn module_line(source: &str) -> usize {
    match regex::Regex::new(r"(?m)^[ \t]*const[ \t]+MODULE\b") {
        Ok(re) => line_of(source, &re),
        Err(_) => 0,
    }
}

/// Check a compiled module against its kind's contract. `folder_kind` is the kind its
/// folder implies, if any; MODULE.kind must agree with it. All problems are returned, not
/// just the first.
pub fn check(
    path: &Path,
    source: &str,
    ast: &AST,
    folder_kind: Option<Kind>,
) -> Result<ModuleInfo, Vec<HostError>> {
    let info = read_module(path, source, ast, folder_kind)?;
    let defined: Vec<(String, usize)> = ast
        .iter_functions()
        .map(|f| (f.name.to_string(), f.params.len()))
        .collect();
    let errors = check_routines(path, source, info.kind, &defined, None);
    if errors.is_empty() {
        Ok(info)
    } else {
        Err(errors)
    }
}

/// Read and check `const MODULE` (kind, name, version, add_user_at, on_failure, extends,
/// serves).
/// All problems are returned, not just the first.
pub fn read_module(
    path: &Path,
    source: &str,
    ast: &AST,
    folder_kind: Option<Kind>,
) -> Result<ModuleInfo, Vec<HostError>> {
    let at = |line: usize| SourcePos {
        path: path.to_path_buf(),
        line,
    };
    let err = |line: usize, message: String| HostError::Contract {
        at: at(line),
        message,
    };
    let mline = module_line(source);

    let module = ast
        .iter_literal_variables(true, false)
        .find(|(name, _, _)| *name == "MODULE")
        .map(|(_, _, v)| v);
    let Some(module) = module else {
        let message = if mline > 0 {
            "MODULE must be a literal object map, e.g. const MODULE = #{ kind: \"os\", name: \"linux\", version: \"1\" };".to_string()
        } else {
            format!(
                "missing `const MODULE = #{{ kind: \"{}\", name: \"...\", version: \"1\" }};` declaring what this module is",
                folder_kind.map(Kind::as_str).unwrap_or("provisioning")
            )
        };
        return Err(vec![err(mline.max(1), message)]);
    };
    let Some(map) = module.read_lock::<rhai::Map>().map(|m| m.clone()) else {
        return Err(vec![err(
            mline,
            format!("MODULE must be an object map, found {}", describe(&module)),
        )]);
    };

    let mut errors = Vec::new();
    let field = |key: &str| {
        map.get(key)
            .and_then(|v| v.clone().into_immutable_string().ok())
            .map(|s| s.to_string())
    };

    let kind = match field("kind").as_deref().map(|k| (k, Kind::parse(k))) {
        Some((_, Some(k))) => Some(k),
        Some((k, None)) => {
            errors.push(err(mline, format!("MODULE.kind {k:?} is not a module kind (expected \"provisioning\", \"os\" or \"site\")")));
            None
        }
        None => {
            errors.push(err(mline, "MODULE.kind is missing or not a string (expected \"provisioning\", \"os\" or \"site\")".into()));
            None
        }
    };
    if let (Some(k), Some(f)) = (kind, folder_kind) {
        if k != f {
            errors.push(err(
                mline,
                format!(
                    "MODULE.kind is {:?} but the file is in the {:?} folder",
                    k.as_str(),
                    f.as_str()
                ),
            ));
        }
    }
    let name = field("name").unwrap_or_default();
    if !name_re(&name) {
        errors.push(err(mline, format!("MODULE.name {name:?} must be 1-63 of a-z, 0-9, '_' or '-', starting with a letter or digit")));
    }
    let version = match map.get("version") {
        Some(v) if v.is_string() || v.is_int() => v.to_string(),
        _ => {
            errors.push(err(
                mline,
                "MODULE.version is missing (a string such as \"1\")".into(),
            ));
            String::new()
        }
    };
    let add_user_at_declared = map.contains_key("add_user_at");
    let add_user_at = match field("add_user_at").as_deref() {
        None | Some("acknowledge") => AddUserAt::Acknowledge,
        Some("ready") => AddUserAt::Ready,
        Some(other) => {
            errors.push(err(
                mline,
                format!("MODULE.add_user_at {other:?} must be \"ready\" or \"acknowledge\""),
            ));
            AddUserAt::Acknowledge
        }
    };
    let extends = match map.get("extends") {
        None => None,
        Some(v) => match v.clone().into_immutable_string() {
            Ok(s) => {
                let (k, n) = match s.split_once('/') {
                    Some((k, n)) => (Some(k), n),
                    None => (None, s.as_str()),
                };
                if !name_re(n) {
                    errors.push(err(mline, format!("MODULE.extends {s:?} must name a module: \"linux\" (same kind) or \"os/linux\"")));
                    None
                } else if let (Some(k), Some(own)) = (k, kind) {
                    if Kind::parse(k) != Some(own) {
                        errors.push(err(mline, format!("MODULE.extends {s:?}: kind mismatch: a {own} module extends a module of its own kind (\"{n}\" or \"{own}/{n}\")")));
                        None
                    } else {
                        Some(n.to_string())
                    }
                } else {
                    Some(n.to_string())
                }
            }
            Err(_) => {
                errors.push(err(
                    mline,
                    format!(
                        "MODULE.extends must be a string naming the parent module, found {}",
                        describe(v)
                    ),
                ));
                None
            }
        },
    };
    if extends.is_some() && extends.as_deref() == Some(name.as_str()) {
        errors.push(err(
            mline,
            format!("MODULE.extends {name:?}: inheritance cycle: a module cannot extend itself"),
        ));
    }
    let serves = match map.get("serves") {
        None => Vec::new(),
        Some(v) => {
            let items: Option<Vec<String>> = if v.is_string() {
                Some(vec![v.to_string()])
            } else {
                v.read_lock::<rhai::Array>().and_then(|a| {
                    a.iter()
                        .map(|x| {
                            x.clone()
                                .into_immutable_string()
                                .ok()
                                .map(|s| s.to_string())
                        })
                        .collect()
                })
            };
            match items {
                Some(items) if items.iter().all(|s| !s.trim().is_empty()) => items,
                _ => {
                    errors.push(err(mline, format!("MODULE.serves must be a list of VCL module names or perl packages, e.g. [\"os_centos\", \"VCL::Module::OS::Linux::CentOS\"]; found {}", describe(v))));
                    Vec::new()
                }
            }
        }
    };
    let on_failure_declared = map.contains_key("on_failure");
    let on_failure = match field("on_failure").as_deref() {
        None | Some("fail") => OnFailure::Fail,
        Some("warn") => OnFailure::Warn,
        Some(other) => {
            errors.push(err(
                mline,
                format!("MODULE.on_failure {other:?} must be \"fail\" or \"warn\""),
            ));
            OnFailure::Fail
        }
    };
    if on_failure == OnFailure::Warn && kind.is_some_and(|k| k != Kind::Site) {
        errors.push(err(
            mline,
            "MODULE.on_failure is for site modules only (provisioning and OS routines always fail the reservation)".into(),
        ));
    }
    const KNOWN: &str = "kind, name, version, add_user_at, on_failure, extends, serves";
    for key in map.keys() {
        if !KNOWN.split(", ").any(|k| k == key.as_str()) {
            errors.push(err(
                mline,
                format!("MODULE has an unknown key {key:?} (known: {KNOWN})"),
            ));
        }
    }
    if let Some(kind) = kind {
        if errors.is_empty() {
            return Ok(ModuleInfo {
                kind,
                name,
                version,
                add_user_at,
                add_user_at_declared,
                on_failure,
                on_failure_declared,
                extends,
                serves,
            });
        }
    }
    Err(errors)
}

/// Check the functions a module has (its own, plus inherited ones when `inherited_from`
/// names its parent chain) against its kind's contract. All problems are returned.
pub fn check_routines(
    path: &Path,
    source: &str,
    kind: Kind,
    defined: &[(String, usize)],
    inherited_from: Option<&str>,
) -> Vec<HostError> {
    let at = |line: usize| SourcePos {
        path: path.to_path_buf(),
        line,
    };
    let err = |line: usize, message: String| HostError::Contract {
        at: at(line),
        message,
    };
    let mline = module_line(source);
    let mut errors = Vec::new();
    let via = inherited_from
        .map(|chain| format!(" (neither this module nor {chain} defines it)"))
        .unwrap_or_default();

    {
        for spec in routines(kind) {
            let arities: Vec<usize> = defined
                .iter()
                .filter(|(n, _)| n == spec.name)
                .map(|(_, a)| *a)
                .collect();
            if arities.contains(&spec.params.len()) {
                continue;
            }
            if let Some(a) = arities.first() {
                errors.push(err(
                    fn_line(source, spec.name),
                    format!(
                        "routine {} takes {a} parameter(s); kind {:?} expects {}",
                        spec.name,
                        kind.as_str(),
                        spec.signature()
                    ),
                ));
            } else if spec.required {
                errors.push(err(
                    0,
                    format!(
                        "missing routine {} required for kind {:?}{via}",
                        spec.signature(),
                        kind.as_str()
                    ),
                ));
            }
        }
        if kind == Kind::Site
            && !routines(kind).iter().any(|s| {
                defined
                    .iter()
                    .any(|(n, a)| n == s.name && *a == s.params.len())
            })
        {
            let hooks: Vec<String> = routines(kind).iter().map(RoutineSpec::signature).collect();
            errors.push(err(
                mline,
                format!(
                    "a site module defines no hook; define one of {}",
                    hooks.join(", ")
                ),
            ));
        }
    }

    errors
}

fn name_re(name: &str) -> bool {
    regex::Regex::new(r"^[a-z0-9][a-z0-9_-]{0,62}$")
        .map(|re| re.is_match(name))
        .unwrap_or(false)
}

/// A short description of a value for error messages: `"abc" (string)`, `42 (int)`.
pub fn describe(v: &Dynamic) -> String {
    let shown = if v.is_string() {
        format!("{:?}", v.to_string())
    } else {
        v.to_string()
    };
    let shown = if shown.chars().count() > 60 {
        format!("{}…", shown.chars().take(60).collect::<String>())
    } else {
        shown
    };
    format!(
        "{shown} ({})",
        v.type_name().rsplit("::").next().unwrap_or("?")
    )
}

/// Check (and normalize) a routine's return value against its contract. `args` are the
/// arguments after `ctx` (used by `control_vm` to tell a status query from an action).
/// `Err` carries what was expected.
pub fn check_return(
    spec: &RoutineSpec,
    args: &[Dynamic],
    value: Dynamic,
) -> Result<Dynamic, String> {
    let expected = || spec.returns.describe().to_string();
    match spec.returns {
        Returns::Any => Ok(value),
        Returns::Bool => value.as_bool().map(Dynamic::from).map_err(|_| expected()),
        Returns::NodeStatus => {
            if let Ok(false) = value.as_bool() {
                return Ok("reload".into());
            }
            let s = value
                .clone()
                .into_immutable_string()
                .map_err(|_| expected())?
                .to_lowercase();
            let norm = if s.starts_with("ready") {
                "ready"
            } else if s.starts_with("post_load")
                || s.starts_with("post-load")
                || s.starts_with("postload")
            {
                "post_load"
            } else if s.starts_with("reload") || s.starts_with("failed") {
                "reload"
            } else {
                return Err(expected());
            };
            Ok(norm.into())
        }
        Returns::ControlVm => {
            let action = args.first().map(|a| a.to_string()).unwrap_or_default();
            if action == "status" {
                value
                    .into_immutable_string()
                    .map(Dynamic::from)
                    .map_err(|_| "a status string for control_vm(ctx, \"status\")".into())
            } else {
                value
                    .as_bool()
                    .map(Dynamic::from)
                    .map_err(|_| format!("true or false for control_vm(ctx, {action:?})"))
            }
        }
        Returns::SizeMb => match value.as_int() {
            Ok(n) if n >= 0 => Ok(n.into()),
            _ => Err(expected()),
        },
        Returns::PowerStatus => {
            let s = value
                .into_immutable_string()
                .map_err(|_| expected())?
                .to_lowercase();
            if ["on", "off", "suspended"].contains(&s.as_str()) {
                Ok(s.into())
            } else {
                Err(expected())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, folder: Option<Kind>) -> Result<ModuleInfo, Vec<String>> {
        let ast = rhai::Engine::new().compile(src).expect("compiles");
        check(Path::new("scripts/os/x.rhai"), src, &ast, folder)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn on_failure_is_fail_by_default_warn_when_asked_and_only_for_site_modules() {
        let check_src = |src: &str| {
            let engine = rhai::Engine::new();
            let ast = engine.compile(src).expect("compile");
            check(std::path::Path::new("scripts/site/x.rhai"), src, &ast, None)
        };
        let site = |extra: &str| {
            format!("const MODULE = #{{ kind: \"site\", name: \"x\", version: \"1\"{extra} }};\nfn post_load(ctx) {{ true }}\n")
        };
        assert_eq!(
            check_src(&site("")).expect("ok").on_failure,
            OnFailure::Fail
        );
        assert_eq!(
            check_src(&site(", on_failure: \"warn\""))
                .expect("ok")
                .on_failure,
            OnFailure::Warn
        );
        let errs = check_src(&site(", on_failure: \"ignore\"")).expect_err("bad value");
        assert!(
            format!("{errs:?}").contains("must be \\\"fail\\\" or \\\"warn\\\""),
            "{errs:?}"
        );
    }

    const OS_OK: &str = r#"const MODULE = #{ kind: "os", name: "x", version: "1", add_user_at: "ready" };
fn post_load(ctx) { true }
fn add_user(ctx, user) { true }
fn delete_user(ctx, user) { true }
fn grant_access(ctx) { true }
fn revoke_access(ctx) { true }
fn set_password(ctx, user, password) { true }
fn sanitize(ctx) { true }
fn pre_capture(ctx) { true }
fn is_ready(ctx) { true }
"#;

    #[test]
    fn complete_os_module_passes() {
        let info = run(OS_OK, Some(Kind::Os)).expect("ok");
        assert_eq!(
            (info.kind, info.name.as_str(), info.add_user_at),
            (Kind::Os, "x", AddUserAt::Ready)
        );
    }

    #[test]
    fn missing_and_wrong_arity_are_named_with_lines() {
        let src = OS_OK
            .replace("fn sanitize(ctx) { true }\n", "")
            .replace("fn add_user(ctx, user)", "fn add_user(ctx)");
        let errs = run(&src, Some(Kind::Os)).expect_err("bad");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| e == "scripts/os/x.rhai:3: routine add_user takes 1 parameter(s); kind \"os\" expects add_user(ctx, user)"), "{errs:?}");
        assert!(
            errs.iter().any(|e| e
                == "scripts/os/x.rhai: missing routine sanitize(ctx) required for kind \"os\""),
            "{errs:?}"
        );
    }

    #[test]
    fn module_constant_is_checked() {
        let errs = run("fn a() {}", Some(Kind::Os)).expect_err("no MODULE");
        assert!(
            errs[0].starts_with("scripts/os/x.rhai:1: missing `const MODULE"),
            "{errs:?}"
        );
        let errs = run(
            "\n\nconst MODULE = #{ kind: \"provisioning\", name: \"Bad Name\" };",
            Some(Kind::Os),
        )
        .expect_err("bad");
        assert!(
            errs.iter().any(|e| e.contains(
                ":3: MODULE.kind is \"provisioning\" but the file is in the \"os\" folder"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("MODULE.name \"Bad Name\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("MODULE.version is missing")),
            "{errs:?}"
        );
    }

    #[test]
    fn returns_are_checked_and_normalized() {
        let ns = spec(Kind::Provisioning, "node_status", 1).expect("spec");
        assert_eq!(
            check_return(ns, &[], "READY".into())
                .expect("ok")
                .to_string(),
            "ready"
        );
        assert_eq!(
            check_return(ns, &[], false.into()).expect("ok").to_string(),
            "reload"
        );
        assert!(check_return(ns, &[], 3_i64.into()).is_err());
        let cv = spec(Kind::Provisioning, "control_vm", 2).expect("spec");
        assert!(check_return(cv, &["status".into()], "running".into()).is_ok());
        assert!(check_return(cv, &["off".into()], "running".into()).is_err());
        let sz = spec(Kind::Provisioning, "get_image_size", 1).expect("spec");
        assert!(check_return(sz, &[], (-1_i64).into()).is_err());
    }
}
