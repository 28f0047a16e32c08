//! provhost inside another Rust program: no `provhost.toml`, no database, no daemon — the
//! program builds its own [`provhost::Config`], registers a primitive family of its own
//! (`rack::`, a stand-in for whatever the program controls: a PDU, a cloud API) beside
//! provhost's, loads a module script, calls its routines with a reservation it makes up,
//! and reacts to reload events while it edits the script (a good edit is served from the
//! next call; a broken one is reported and the last good version keeps serving).
//!
//! Run it: `cargo run --example embed`. `cargo test` runs it too (`[[example]] test = true`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provhost::{
    CallOptions, Config, Ctx, Kind, MemoryBackend, ModuleKey, Primitives, ReloadEvent,
    ReservationData, ScriptHost,
};
use rhai::{Engine, FuncRegistration, Module};

/// The program's own primitive family: which rack slots have power. Scripts see it as
/// `rack::power_on(name)` and `rack::is_on(name)`.
#[derive(Default)]
struct Rack {
    powered: Arc<Mutex<BTreeSet<String>>>,
}

impl Primitives for Rack {
    fn register(&self, engine: &mut Engine) {
        let mut m = Module::new();
        let p = Arc::clone(&self.powered);
        FuncRegistration::new("power_on")
            .with_comments(["/// Switch the rack slot of computer `name` on."])
            .with_params_info(["name: &str", "()"])
            .set_into_module(&mut m, move |name: &str| {
                if let Ok(mut s) = p.lock() {
                    s.insert(name.to_string());
                }
            });
        let p = Arc::clone(&self.powered);
        FuncRegistration::new("is_on")
            .with_comments(["/// Whether the rack slot of computer `name` has power."])
            .with_params_info(["name: &str", "bool"])
            .set_into_module(&mut m, move |name: &str| {
                p.lock().map(|s| s.contains(name)).unwrap_or(false)
            });
        engine.register_static_module("rack", m.into());
    }
}

/// The module the program ships: a provisioning module for rack computers. `VERSION` and
/// `NOTE` change between the edits the example makes.
fn module_source(version: &str, note: &str) -> String {
    format!(
        r#"// rack: computers that are slots of a rack the embedding program powers.
const MODULE = #{{ kind: "provisioning", name: "rack", version: "{version}" }};
import "shell" as shell;

fn node_status(ctx) {{
    if rack::is_on(ctx.computer_node_name) {{ "ready" }} else {{ "reload" }}
}}
fn does_image_exist(ctx) {{ true }}
fn retrieve_image(ctx) {{ true }}

fn load(ctx) {{
    // Local commands run in the program's working directory: build paths from config::.
    let dir = `${{config::data_dir}}/rack`;
    let r = local_host().run(`mkdir -p ${{shell::quote(dir)}} && printf %s ${{shell::quote(ctx.image_name)}} > ${{shell::quote(dir + "/" + ctx.computer_node_name)}}`);
    if r.code != 0 {{ throw `cannot record the image in ${{dir}}: ${{r.stderr}}`; }}
    rack::power_on(ctx.computer_node_name);
    ctx.loadlog("machinebooted", `${{ctx.computer_node_name}} powered on by node ${{config::node_name}} ({note})`);
    true
}}
fn capture(ctx) {{ false }}
fn control_vm(ctx, action) {{
    if action == "status" {{ if rack::is_on(ctx.computer_node_name) {{ "running" }} else {{ "stopped" }} }} else {{ true }}
}}
fn get_image_size(ctx) {{ 0 }}
"#
    )
}

/// Wait (at most `within`) for the reload event of `file`, skipping others.
fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<ReloadEvent>,
    file: &Path,
    within: Duration,
) -> Result<ReloadEvent, String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match rx.try_recv() {
            Ok(e) => {
                let path = match &e {
                    ReloadEvent::Loaded { path, .. }
                    | ReloadEvent::Failed { path, .. }
                    | ReloadEvent::Deleted { path, .. } => path,
                };
                if path.file_name() == file.file_name() {
                    return Ok(e);
                }
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("reload events: {e}")),
        }
    }
    Err(format!(
        "no reload event for {} within {within:?}",
        file.display()
    ))
}

/// Everything the example does; `dir` is the program's folder (scripts, data).
fn run(dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut said = Vec::new();
    let mut say = |s: String| {
        println!("{s}");
        said.push(s);
    };
    // 1. The program's own configuration, in code.
    let mut config = Config::default();
    config.paths.scripts = dir.join("scripts");
    config.paths.data_dir = dir.join("data");
    config.paths.stdlib = Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
    config.daemon.node = "embedder.example".into();
    config.scripts.call_timeout_secs = 20;
    config.validate()?;
    let script = config.paths.scripts.join("provisioning/rack.rhai");
    std::fs::create_dir_all(script.parent().ok_or("no folder")?)?;
    std::fs::write(&script, module_source("1", "first version"))?;

    // 2. provhost's primitives, plus the program's own.
    let rack = Arc::new(Rack::default());
    let mut families = provhost::primitive_families(&config);
    families.push(rack.clone());
    let host = ScriptHost::new(config.host_options(), &families);
    let errors = host.load_all();
    if !errors.is_empty() {
        return Err(format!("scripts did not load: {errors:?}").into());
    }
    let mut events = host.subscribe();
    let _watcher = host.watch()?;

    // 3. A reservation the program makes up, and routine calls on it.
    let backend = Arc::new(MemoryBackend::default());
    let ctx = Ctx::new(
        ReservationData {
            reservation_id: 1,
            computer_id: 1,
            computer_node_name: "slot3".into(),
            image_name: "debian12".into(),
            ..Default::default()
        },
        backend.clone(),
    );
    let key: ModuleKey = (Kind::Provisioning, "rack".into());
    let call =
        |routine: &str| host.call(&key, routine, Some(&ctx), vec![], &CallOptions::default());
    say(format!("node_status before load: {}", call("node_status")?));
    say(format!("load: {}", call("load")?));
    say(format!("node_status after load: {}", call("node_status")?));
    let recorded = std::fs::read_to_string(config.paths.data_dir.join("rack/slot3"))?;
    say(format!("recorded image: {recorded}"));

    // 4. Edit the script: the watcher reloads it, the program hears of it, the next call
    //    runs the new version.
    std::fs::write(&script, module_source("2", "second version"))?;
    match next_event(&mut events, &script, Duration::from_secs(15))? {
        ReloadEvent::Loaded { version, .. } => say(format!("reloaded: rack v{version}")),
        other => return Err(format!("expected a reload, got {other:?}").into()),
    }
    say(format!("load: {}", call("load")?));
    // 5. A broken edit: reported, and version 2 keeps serving.
    std::fs::write(&script, "const MODULE = #{ kind: \"provisioning\", name: \"rack\", version: \"3\" };\nfn load(ctx) {")?;
    match next_event(&mut events, &script, Duration::from_secs(15))? {
        ReloadEvent::Failed {
            keeping, errors, ..
        } => say(format!(
            "broken edit refused ({} error(s)), still serving {:?}",
            errors.len(),
            keeping.map(|(k, n)| format!("{k}/{n}"))
        )),
        other => return Err(format!("expected a failed reload, got {other:?}").into()),
    }
    say(format!("load: {}", call("load")?));
    for (name, text) in backend.entries() {
        say(format!("load-log {name}: {text}"));
    }
    Ok(said)
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|_| ())
}

/// A fresh folder for the program's scripts and data.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "provhost-embed-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    /// The example as CI runs it: every step happened, in order.
    #[test]
    fn the_embedding_example_runs() {
        let dir = super::tempfile_dir().expect("dir");
        let said = super::run(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let said = said.expect("the example runs");
        let want = [
            "node_status before load: reload",
            "load: true",
            "node_status after load: ready",
            "recorded image: debian12",
            "reloaded: rack v2",
            "load: true",
            "load: true",
            "load-log machinebooted: slot3 powered on by node embedder.example (first version)",
            "load-log machinebooted: slot3 powered on by node embedder.example (second version)",
            "load-log machinebooted: slot3 powered on by node embedder.example (second version)",
        ];
        // The broken edit's line: the error count is the compiler's business.
        let (broken, rest): (Vec<String>, Vec<String>) = said
            .into_iter()
            .partition(|s| s.starts_with("broken edit refused ("));
        assert_eq!(rest, want);
        assert_eq!(broken.len(), 1);
        assert!(
            broken[0].ends_with("still serving Some(\"provisioning/rack\")"),
            "{broken:?}"
        );
    }
}
