//! docs/porting-from-vcl.md stays true: every `ctx.NAME` its tables name is a `ctx`
//! property or a method the engine registers on `Ctx`, every `ctx` property has a row in
//! the DataStructure table, and every primitive the tables name (`h.run`, `wait::poll`, …)
//! is registered.

use std::collections::BTreeSet;
use std::path::PathBuf;

use provhost::host::ctx::CTX_PROPERTIES;
use provhost::host::{HostOptions, Limits, ScriptHost};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The table rows (`| … |` lines after the header separator) of the section `heading`.
fn rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.starts_with(heading);
            continue;
        }
        if inside && line.starts_with('|') && !line.starts_with("|---") {
            out.push(
                line.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect(),
            );
        }
    }
    assert!(!out.is_empty(), "no table under {heading:?}");
    out.remove(0); // the header
    out
}

/// `ctx.name` and `ctx.name(` occurrences in `text`: (name, is a call).
fn ctx_refs(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("ctx.") {
        let after = &rest[i + 4..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let call = after[name.len()..].starts_with('(');
        if !name.is_empty() {
            out.push((name.clone(), call));
        }
        rest = &after[name.len()..];
    }
    out
}

/// Registered functions: (namespace or "", name, first parameter's type).
fn registered() -> Vec<(String, String, String)> {
    let config = provhost::Config::default();
    let host = ScriptHost::new(
        HostOptions {
            scripts_dir: root().join("scripts"),
            stdlib_dir: root().join("stdlib"),
            limits: Limits::default(),
        },
        &provhost::primitive_families(&config),
    );
    let json = host
        .engine()
        .gen_fn_metadata_to_json(false)
        .expect("metadata");
    let meta: serde_json::Value = serde_json::from_str(&json).expect("json");
    let mut out = Vec::new();
    let mut add = |ns: &str, f: &serde_json::Value| {
        let first = f["params"]
            .get(0)
            .and_then(|p| p["type"].as_str())
            .unwrap_or("")
            .to_string();
        out.push((
            ns.to_string(),
            f["name"].as_str().unwrap_or("").to_string(),
            first,
        ));
    };
    for f in meta["functions"].as_array().into_iter().flatten() {
        add("", f);
    }
    for (ns, m) in meta["modules"].as_object().into_iter().flatten() {
        for f in m["functions"].as_array().into_iter().flatten() {
            add(ns, f);
        }
    }
    out
}

#[test]
fn every_ctx_name_in_the_porting_guide_exists_and_every_property_has_a_row() {
    let doc = std::fs::read_to_string(root().join("docs/porting-from-vcl.md")).expect("doc");
    let props: BTreeSet<&str> = CTX_PROPERTIES.iter().map(|(n, _, _)| *n).collect();
    let fns = registered();
    let ctx_methods: BTreeSet<String> = fns
        .iter()
        .filter(|(ns, _, first)| ns.is_empty() && first == "Ctx")
        .map(|(_, n, _)| n.clone())
        .collect();
    assert!(ctx_methods.contains("loadlog"), "{ctx_methods:?}");

    let mut seen = BTreeSet::new();
    let mut checked = 0;
    for heading in [
        "## The module",
        "## DataStructure accessors",
        "## Running commands",
    ] {
        for row in rows(&doc, heading) {
            let provhost = row.get(1).cloned().unwrap_or_default();
            for (name, call) in ctx_refs(&provhost) {
                checked += 1;
                if call {
                    assert!(
                        ctx_methods.contains(&name),
                        "docs/porting-from-vcl.md names ctx.{name}(…), which the engine does not register on Ctx (has: {ctx_methods:?})"
                    );
                } else {
                    assert!(
                        props.contains(name.as_str()),
                        "docs/porting-from-vcl.md names ctx.{name}, which is not a ctx property"
                    );
                    seen.insert(name);
                }
            }
        }
    }
    assert!(checked > 60, "only {checked} ctx names found");
    let missing: Vec<&&str> = props.iter().filter(|p| !seen.contains(**p)).collect();
    assert!(
        missing.is_empty(),
        "ctx properties without a row in docs/porting-from-vcl.md: {missing:?}"
    );
}

#[test]
fn every_primitive_in_the_porting_guide_is_registered() {
    let doc = std::fs::read_to_string(root().join("docs/porting-from-vcl.md")).expect("doc");
    let fns = registered();
    let has = |ns: &str, name: &str| fns.iter().any(|(n, f, _)| n == ns && f == name);
    let mut checked = 0;
    for row in rows(&doc, "## Running commands") {
        let cell = row.get(1).cloned().unwrap_or_default();
        // `h.run(`, `ctx.computer().run(`, `wait::poll(`, `local_host()`, `scp_between(`.
        for part in cell.split('`').skip(1).step_by(2) {
            for (i, _) in part.match_indices('(') {
                let head = &part[..i];
                let name_start = head
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .map(|p| p + 1)
                    .unwrap_or(0);
                let full = &head[name_start..];
                if full.is_empty() || full == "ctx" {
                    continue;
                }
                let (ns, name) = match full.rsplit_once("::") {
                    Some((ns, n)) => (ns, n),
                    None => ("", full),
                };
                if ns == "shell" {
                    // stdlib: checked by its file.
                    let src =
                        std::fs::read_to_string(root().join("stdlib/shell.rhai")).expect("shell");
                    assert!(
                        src.contains(&format!("fn {name}(")),
                        "stdlib shell has no {name}"
                    );
                } else {
                    assert!(
                        has(ns, name),
                        "docs/porting-from-vcl.md names {full}(…), which is not registered"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "only {checked} primitives found");
}
