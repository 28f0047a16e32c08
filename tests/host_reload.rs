//! Hot reload against real files and the real watcher: edits go live, broken edits keep the
//! last good version, a running call keeps its code, deleted files keep their module, a
//! stdlib change recompiles its importers, and a double save within 10 ms ends on the
//! second content. Every wait is on an event with a bounded timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scripts::{provisioning, test_limits, wait_event, ScriptDir};
use provhost::host::{
    CallOptions, Ctx, Kind, MemoryBackend, ReloadEvent, ReservationData, ScriptHost,
};

const WAIT: Duration = Duration::from_secs(10);

fn key() -> (Kind, String) {
    (Kind::Provisioning, "p".to_string())
}

fn marker(host: &ScriptHost) -> String {
    let ctx = Ctx::new(
        ReservationData::default(),
        Arc::new(MemoryBackend::default()),
    );
    host.call(
        &key(),
        "marker",
        Some(&ctx),
        vec![],
        &CallOptions::default(),
    )
    .expect("marker call")
    .to_string()
}

fn module(marker: &str) -> String {
    provisioning("p", marker, &format!("fn marker(ctx) {{ \"{marker}\" }}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_goes_live_and_a_broken_edit_keeps_the_last_good_version() {
    let dir = ScriptDir::new();
    let path = dir.write("provisioning/p.rhai", module("v1"));
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let _watch = host.watch().expect("watch");
    let mut rx = host.subscribe();
    assert_eq!(marker(&host), "v1");

    std::fs::write(&path, module("v2")).expect("write");
    let ev = wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Loaded { .. })
    })
    .await;
    assert!(
        matches!(ev, ReloadEvent::Loaded { generation: 2, .. }),
        "{ev:?}"
    );
    assert_eq!(marker(&host), "v2");

    std::fs::write(&path, "const MODULE = #{ kind: \"provisioning\", name: \"p\", version: \"3\" };\nfn marker(ctx) { \"v3\" \n").expect("write");
    let ev = wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Failed { .. })
    })
    .await;
    let ReloadEvent::Failed {
        errors, keeping, ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(keeping, Some(key()));
    assert!(
        errors[0].contains("p.rhai:") && errors[0].contains("syntax error"),
        "{errors:?}"
    );
    assert_eq!(marker(&host), "v2", "the last good version keeps serving");

    std::fs::write(&path, module("v4")).expect("write");
    wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Loaded { .. })
    })
    .await;
    assert_eq!(marker(&host), "v4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_keeps_the_code_it_started_with() {
    let dir = ScriptDir::new();
    let slow = |m: &str| {
        provisioning(
            "p",
            m,
            &format!("fn marker(ctx) {{ \"{m}\" }}\nfn slow(ctx) {{ wait::sleep(0.8); \"{m}\" }}"),
        )
    };
    let path = dir.write("provisioning/p.rhai", slow("old"));
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let _watch = host.watch().expect("watch");
    let mut rx = host.subscribe();

    let h = Arc::clone(&host);
    let running = std::thread::spawn(move || {
        let ctx = Ctx::new(
            ReservationData::default(),
            Arc::new(MemoryBackend::default()),
        );
        h.call(&key(), "slow", Some(&ctx), vec![], &CallOptions::default())
            .map(|v| v.to_string())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&path, slow("new")).expect("write");
    wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Loaded { .. })
    })
    .await;
    assert_eq!(marker(&host), "new", "new calls see the new code at once");
    let finished = running.join().expect("thread").expect("slow call");
    assert_eq!(
        finished, "old",
        "the running call finished on the code it started with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_keeps_its_module_and_a_new_file_is_picked_up() {
    let dir = ScriptDir::new();
    let path = dir.write("provisioning/p.rhai", module("kept"));
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let _watch = host.watch().expect("watch");
    let mut rx = host.subscribe();

    std::fs::remove_file(&path).expect("rm");
    let ev = wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Deleted { .. })
    })
    .await;
    assert_eq!(
        ev,
        ReloadEvent::Deleted {
            path: path.clone(),
            keeping: Some(key())
        }
    );
    assert_eq!(marker(&host), "kept");

    let other = dir.write("provisioning/p2.rhai", module("replacement"));
    wait_event(&mut rx, &other, WAIT, |e| {
        matches!(e, ReloadEvent::Loaded { .. })
    })
    .await;
    assert_eq!(
        marker(&host),
        "replacement",
        "a replacement file may take over the module name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_saves_within_10ms_end_on_the_second() {
    let dir = ScriptDir::new();
    let path = dir.write("provisioning/p.rhai", module("first"));
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty());
    let _watch = host.watch().expect("watch");
    let mut rx = host.subscribe();

    std::fs::write(&path, module("a")).expect("write");
    std::thread::sleep(Duration::from_millis(5));
    std::fs::write(&path, module("b")).expect("write");
    wait_event(
        &mut rx,
        &path,
        WAIT,
        |e| matches!(e, ReloadEvent::Loaded { version, .. } if version == "b"),
    )
    .await;
    assert_eq!(marker(&host), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdlib_change_recompiles_its_importers() {
    let dir = ScriptDir::new();
    dir.write("stdlib/greet.rhai", "fn word() { \"hello\" }");
    let path = dir.write(
        "provisioning/p.rhai",
        format!(
            "import \"greet\" as greet;\n{}",
            provisioning("p", "1", "fn marker(ctx) { greet::word() }")
        ),
    );
    let host = dir.host(test_limits());
    assert!(host.load_all().is_empty(), "{:?}", host.load_all());
    let _watch = host.watch().expect("watch");
    let mut rx = host.subscribe();
    assert_eq!(marker(&host), "hello");

    dir.write("stdlib/greet.rhai", "fn word() { \"bonjour\" }");
    wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Loaded { .. })
    })
    .await;
    assert_eq!(marker(&host), "bonjour");

    dir.write("stdlib/greet.rhai", "fn word() { \"broken\" ");
    let ev = wait_event(&mut rx, &path, WAIT, |e| {
        matches!(e, ReloadEvent::Failed { .. })
    })
    .await;
    let ReloadEvent::Failed { errors, .. } = ev else {
        unreachable!()
    };
    assert!(
        errors[0].contains("in imported module \"greet\""),
        "{errors:?}"
    );
    assert_eq!(marker(&host), "bonjour");
}

/// A restart (a fresh host on the same files and store) while the module file is broken
/// and the stdlib file it imported is gone: the saved copy is served, compiled against the
/// stdlib saved with it, so it behaves as before. Without a store nothing is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_broken_file_serves_the_saved_copy_with_its_imports() {
    let dir = ScriptDir::new();
    let store_dir = dir
        .scripts
        .parent()
        .expect("parent")
        .join("data/modules-good");
    dir.write("stdlib/greet.rhai", "fn word() { \"saved hello\" }");
    let path = dir.write(
        "provisioning/p.rhai",
        format!(
            "import \"greet\" as greet;\n{}",
            provisioning("p", "7", "fn marker(ctx) { greet::word() }")
        ),
    );
    let first = dir.host(test_limits());
    first.use_good_store(provhost::host::good::GoodStore::new(&store_dir));
    assert!(first.load_all().is_empty());
    assert_eq!(marker(&first), "saved hello");
    drop(first);

    std::fs::write(&path, "const MODULE = #{ kind: \"provisioning\", name: \"p\", version: \"8\" };\nfn marker(ctx) {\n").expect("break");
    std::fs::remove_file(dir.path("stdlib/greet.rhai")).expect("remove stdlib file");

    let without = dir.host(test_limits());
    assert!(!without.load_all().is_empty());
    assert!(without.module(&key()).is_none(), "no store, nothing served");

    let second = dir.host(test_limits());
    second.use_good_store(provhost::host::good::GoodStore::new(&store_dir));
    let errors = second.load_all();
    assert_eq!(
        errors.len(),
        1,
        "the file's own error is still reported: {errors:?}"
    );
    assert!(errors[0].to_string().contains("p.rhai"), "{errors:?}");
    assert_eq!(marker(&second), "saved hello");
    let m = second.module(&key()).expect("served");
    assert_eq!(m.info.version, "7");
    assert!(
        m.restored_from
            .as_deref()
            .is_some_and(|f| f.contains("modules-good/provisioning/p.rhai.json")),
        "{:?}",
        m.restored_from
    );
    let state = second
        .file_states()
        .into_iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| s);
    assert!(
        matches!(
            state,
            Some(provhost::host::FileState::Failed {
                keeping: Some(_),
                ..
            })
        ),
        "{state:?}"
    );
}
