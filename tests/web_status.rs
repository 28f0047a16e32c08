//! The operators' view with real parts: a daemon runs reservations of the simulated
//! provisioning module (whose OS module runs real local commands and a real copy), the
//! status page is served by `provhost::web`, and headless Chromium (Debian's `chromium`)
//! opens it during the load: the timeline and the waterfall show the load steps. Also:
//! the bearer token off loopback (refused without one; 401 without it, 200 with it),
//! hostile user names escaped, `/metrics` parsed with `prometheus-parse` and moving as a
//! reservation runs, the spans' retention on both backends, remote commands and copies over
//! a real sshd as spans with the pool's sessions counted, and `provhost status` without a
//! daemon.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flows::{Rig, RECORDING_OS};
use provhost::db::Backend;
use provhost::web::{status::ModuleBook, Modules, WebState};

const T: Duration = Duration::from_secs(90);

/// The recording OS module, whose `post_load` runs two real local commands (one with the
/// reservation's secret in it) and a real copy.
fn os_module(dir: &Path) -> String {
    let post_load = format!(
        r#"fn post_load(ctx) {{
    let h = local_host();
    let pw = secret::password(20);
    h.run("sleep 0.3; echo provhost-waterfall-step");
    h.run(`echo ${{pw}} > /dev/null`);
    h.run(`head -c 4096 /dev/zero > {dir}/src.bin`);
    h.upload("{dir}/src.bin", "{dir}/dst.bin");
    h.run("sleep 5");
    record(ctx, "post_load")
}}"#,
        dir = dir.display()
    );
    RECORDING_OS.replace(
        r#"fn post_load(ctx) { record(ctx, "post_load") }"#,
        &post_load,
    )
}

/// The status page over `rig`'s database and its daemon's modules, on a free loopback
/// port, pages reloading every `refresh` seconds: its address and its stop.
async fn serve_live(rig: &Rig, refresh: u64) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let book = ModuleBook::follow(&rig.host, |_| {});
    let state = WebState::new(
        rig.t.connect_again().await,
        Modules::Live(Arc::clone(&rig.host), book),
        None,
        refresh,
    );
    provhost::web::spawn("127.0.0.1:0", state)
        .await
        .expect("serve")
}

/// One HTTP/1.1 GET to 127.0.0.1:`port`: (status, body). Bounded by a 10 s time-out.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let to = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn get_async(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let (path, token) = (path.to_string(), token.map(str::to_string));
    tokio::task::spawn_blocking(move || get(addr, &path, token.as_deref()))
        .await
        .expect("join")
}

/// Run headless Chromium on `url` with `args`, killed after 60 s; its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new("timeout");
    cmd.args([
        "60",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url);
    let t = Instant::now();
    let out = cmd.output().expect("run chromium");
    eprintln!("chromium {args:?}: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = get_async(addr, "/metrics", None).await;
    assert_eq!(code, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < T, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_sees_the_timeline_and_waterfall_of_a_running_load_and_metrics_move() {
    if !common::tool_or_skip("web_status", "chromium") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let families = provhost::primitive_families(&provhost::Config::default());
    let Some(rig) =
        Rig::with_families(Backend::Sqlite, 1, &os_module(dir.path()), 4.0, &families).await
    else {
        return;
    };
    // A hostile user name: everything on the page is escaped.
    rig.t
        .exec("UPDATE `user` SET `unityid` = '<script>alert(1)</script>' WHERE `unityid` = 'ann'")
        .await;
    let (addr, web_stop) = serve_live(&rig, 1).await;
    let before = scrape(addr).await;

    // Reserved stays reserved while the browser looks (no Connect comes).
    let mut cfg = rig.config();
    cfg.timings.acknowledgetimeout = 600;
    let (daemon, stop) = rig.spawn(cfg).await;
    let created = rig
        .request_for("lab1.test", "debian12", "<script>alert(1)</script>")
        .await;
    let resv = created.reservation_id;
    rig.wait_log(resv, "transfervm", T).await;

    // During the load: the browser sees the timeline so far and the routines already done.
    let url = format!("http://127.0.0.1:{}/reservation/{resv}", addr.port());
    let dom = chromium(&url, &["--dump-dom"]);
    for step in ["begin", "statuscheck", "startload", "transfervm"] {
        assert!(
            dom.contains(&format!("class=\"loadstate\">{step}")),
            "timeline lacks {step}:\n{dom}"
        );
    }
    assert!(
        dom.contains("<svg class=\"waterfall\""),
        "no waterfall during the load:\n{dom}"
    );
    assert!(
        dom.contains("provisioning/sim::node_status"),
        "waterfall lacks the routine done before the load:\n{dom}"
    );
    assert!(
        dom.contains("provisioning/sim::load (running)") && dom.contains("class=\"bar running\""),
        "waterfall lacks the load routine running now:\n{dom}"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-loading.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );

    // During post_load: the commands it finished so far, under the routine still running
    // (the screenshot first: it is the picture docs/status-page.png shows).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-postload.png");
    let _ = std::fs::remove_file(&shot);
    let t0 = Instant::now();
    let page = loop {
        let (_, page) = get_async(addr, &format!("/reservation/{resv}"), None).await;
        if page.contains("os/linux::post_load (running)") && page.contains("src.bin -&gt; ") {
            break page;
        }
        assert!(t0.elapsed() < T, "post_load never seen running:\n{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.contains("class=\"bar running\""), "{page}");
    assert!(page.contains("echo provhost-waterfall-step"), "{page}");
    // Post_load's last command runs 5 s: the browser sees it still running (unless this
    // machine is very slow; the page above already showed it).
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1350",
            "--hide-scrollbars",
        ],
    );
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000);

    // Loaded (reserved, waiting for Connect): the whole load with post_load's commands.
    rig.wait_log(resv, "nodeready", T).await;
    let rig_ref = &rig;
    wait_until("post_load's spans", async || {
        provhost::db::span::of_reservation(&rig_ref.t.db, resv)
            .await
            .map(|s| {
                s.iter()
                    .any(|s| s.routine == "post_load" && s.kind == provhost::trace::SpanKind::Copy)
            })
            .unwrap_or(false)
    })
    .await;
    let dom = chromium(&url, &["--dump-dom"]);
    for want in [
        "class=\"loadstate\">machinebooted",
        "class=\"loadstate\">nodeready",
        "provisioning/sim::load",
        "os/linux::post_load",
        "echo provhost-waterfall-step",
        "src.bin -&gt; ",
        "class=\"bar copy\"",
        "class=\"bar command\"",
    ] {
        assert!(
            dom.contains(want),
            "after the load the page lacks {want:?}:\n{dom}"
        );
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1500",
            "--hide-scrollbars",
        ],
    );
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000);
    eprintln!("screenshots: {}", shot.display());

    // The command with the secret in it is stored redacted; the copy's bytes are kept.
    let spans = provhost::db::span::of_reservation(&rig.t.db, resv)
        .await
        .expect("spans");
    let secret_cmd = spans
        .iter()
        .find(|s| s.detail.starts_with("echo ") && s.detail.ends_with("> /dev/null"))
        .expect("the command with the password");
    assert!(
        secret_cmd.detail.contains("********"),
        "{}",
        secret_cmd.detail
    );
    let copy = spans
        .iter()
        .find(|s| s.kind == provhost::trace::SpanKind::Copy)
        .expect("copy span");
    assert_eq!(copy.bytes, Some(4096));
    let run = spans
        .iter()
        .find(|s| s.detail.contains("provhost-waterfall-step"))
        .expect("the sleep command");
    assert_eq!(run.exit_code, Some(0));
    assert!(run.duration_ms >= 250, "{}", run.duration_ms);
    assert!(
        spans
            .iter()
            .filter(|s| s.kind == provhost::trace::SpanKind::Command)
            .count()
            >= 4,
        "{spans:?}"
    );

    // The overview and the JSON: the hostile user name is escaped, never markup.
    let (code, page) = get_async(addr, "/", None).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("provisioning/sim") && page.contains("lab1.test"));
    let (code, json) = get_async(addr, &format!("/api/reservation/{resv}"), None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(v["timeline"].as_array().is_some_and(|t| t.len() > 5), "{v}");
    assert!(v["spans"].as_array().is_some_and(|s| s.len() > 5), "{v}");

    // The metrics moved.
    let after = scrape(addr).await;
    let load = [("module", "provisioning/sim"), ("routine", "load")];
    assert!(
        metric(&after, "provhost_routine_calls_total", &load)
            >= metric(&before, "provhost_routine_calls_total", &load) + 1.0
    );
    let sim = [("module", "provisioning/sim")];
    assert!(
        metric(&after, "provhost_load_duration_seconds_count", &sim)
            >= metric(&before, "provhost_load_duration_seconds_count", &sim) + 1.0
    );
    assert!(metric(&after, "provhost_load_duration_seconds_sum", &sim) >= 4.0);
    assert!(
        metric(&after, "provhost_commands_total", &[("transport", "local")])
            >= metric(
                &before,
                "provhost_commands_total",
                &[("transport", "local")]
            ) + 3.0
    );
    assert!(
        metric(&after, "provhost_copied_bytes_total", &[])
            >= metric(&before, "provhost_copied_bytes_total", &[]) + 4096.0
    );
    assert!(
        metric(&after, "provhost_claims_total", &[])
            >= metric(&before, "provhost_claims_total", &[]) + 1.0
    );
    // The request is `pending` while its reserved flow waits for Connect.
    assert_eq!(metric(&before, "provhost_reservations", &[]), 0.0);
    assert_eq!(
        metric(&after, "provhost_reservations", &[("state", "pending")]),
        1.0
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(T, daemon).await;
    let _ = web_stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_page_needs_the_bearer_token() {
    let Some(t) = common::db::TestDb::initialized(Backend::Sqlite).await else {
        return;
    };
    let err = provhost::web::bind("0.0.0.0:0", None)
        .await
        .expect_err("no token, not loopback");
    let msg = err.to_string();
    assert!(
        msg.contains("not a loopback address") && msg.contains("PROVHOST_HTTP_TOKEN"),
        "{msg}"
    );
    provhost::web::bind("127.0.0.1:0", None)
        .await
        .expect("loopback needs no token");

    let token = "s3cret-token-for-the-test";
    let state = WebState::new(
        t.connect_again().await,
        Modules::None,
        Some(token.into()),
        0,
    );
    let (addr, stop) = provhost::web::spawn("0.0.0.0:0", state)
        .await
        .expect("with a token");
    for path in ["/", "/metrics", "/api/status", "/reservation/1"] {
        let (code, body) = get_async(addr, path, None).await;
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains(token));
        assert_eq!(get_async(addr, path, Some("wrong")).await.0, 401, "{path}");
        let (code, body) = get_async(addr, path, Some(token)).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let _ = stop.send(());

    // The command line refuses to start, saying how to fix it, before touching anything.
    let out = Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(["serve", "--http", "0.0.0.0:0", "--url", &t.url])
        .env_remove("PROVHOST_HTTP_TOKEN")
        .env_remove("PROVHOST_CONFIG")
        .output()
        .expect("run provhost");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("needs a bearer token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_and_connections_are_bounded() {
    let Some(t) = common::db::TestDb::initialized(Backend::Sqlite).await else {
        return;
    };
    let state = WebState::new(t.connect_again().await, Modules::None, None, 0);
    let (addr, stop) = provhost::web::spawn("127.0.0.1:0", state)
        .await
        .expect("serve");
    // More silent clients than the server serves at once: each holds a slot until its
    // header-read timeout, the ones past the limit are closed at accept.
    let n = provhost::web::MAX_CONNECTIONS + 8;
    let started = std::time::Instant::now();
    let silent: Vec<tokio::task::JoinHandle<Duration>> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let mut buf = [0u8; 256];
                // Bounded: the server closes (EOF, maybe after a 408) well before this.
                let _ = tokio::time::timeout(Duration::from_secs(60), async {
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                    }
                })
                .await;
                started.elapsed()
            })
        })
        .collect();
    let mut longest = Duration::ZERO;
    for h in silent {
        longest = longest.max(h.await.expect("client"));
    }
    eprintln!("{n} silent clients all closed within {longest:?}");
    assert!(
        longest >= Duration::from_secs(5)
            && longest < provhost::web::HEADER_READ_TIMEOUT + Duration::from_secs(10),
        "silent connections are closed by the header-read timeout ({:?}), not held: {longest:?}",
        provhost::web::HEADER_READ_TIMEOUT
    );
    // The server still answers afterwards.
    assert_eq!(get_async(addr, "/api/status", None).await.0, 200);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_pruned_by_age_and_count_sqlite() {
    spans_are_pruned_by_age_and_count(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_pruned_by_age_and_count_mariadb() {
    spans_are_pruned_by_age_and_count(Backend::MySql).await;
}

async fn spans_are_pruned_by_age_and_count(backend: Backend) {
    use provhost::db::span::{insert, of_reservation, prune, TraceConfig};
    use provhost::trace::{Span, SpanKind};
    let Some(t) = common::db::TestDb::initialized(backend).await else {
        return;
    };
    let span = |start_ms: i64| Span {
        kind: SpanKind::Command,
        reservation_id: 9,
        module: "os/linux".into(),
        routine: "post_load".into(),
        host: "local".into(),
        detail: "true".into(),
        exit_code: Some(0),
        bytes: None,
        start_ms,
        duration_ms: 1,
        ok: true,
        error: None,
        running: false,
    };
    let now = 10_000_000_000i64;
    let old: Vec<Span> = (0..50).map(|i| span(now - 3_600_000 - i)).collect();
    let fresh: Vec<Span> = (0..150).map(|i| span(now - 1000 + i)).collect();
    insert(&t.db, &old).await.expect("insert old");
    insert(&t.db, &fresh).await.expect("insert fresh");
    let cfg = TraceConfig {
        enabled: true,
        max_age_secs: 600,
        max_rows: 100,
    };
    let gone = prune(&t.db, &cfg, now).await.expect("prune");
    assert_eq!(gone, 100, "50 too old, then 50 over the row count");
    let left = of_reservation(&t.db, 9).await.expect("read");
    assert_eq!(left.len(), 100);
    assert!(
        left.iter().all(|s| s.start_ms >= now - 1000 + 50),
        "the newest stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provhost_status_says_when_no_daemon_runs() {
    let Some(t) = common::db::TestDb::initialized(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("provhost.toml");
    std::fs::write(
        &config,
        format!("[paths]\ndata_dir = \"{}\"\n", dir.path().display()),
    )
    .expect("config");
    let run = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_provhost"));
        c.args([
            "--config",
            &config.display().to_string(),
            "status",
            "--url",
            &t.url,
        ]);
        if json {
            c.arg("--json");
        }
        c.output().expect("provhost status")
    };
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "MANAGEMENT NODES",
        "none running",
        "RESERVATIONS",
        "COMPUTERS",
        "no daemon runs on this machine",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    // A daemon that died and left its publication behind is not taken for a running one.
    let stale = provhost::web::status::Published {
        pid: 999_999_999,
        node: "mn1.test".into(),
        started: "then".into(),
        updated: "then".into(),
        http: None,
        modules: vec![],
    };
    provhost::web::status::publish(&provhost::web::status::published_path(dir.path()), &stale)
        .expect("publish");
    let out = run(true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["daemon_running"], false);
    assert!(
        v["modules_source"]
            .as_str()
            .is_some_and(|s| s.contains("pid 999999999) is gone")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_shows_in_red_with_its_routine_and_file_line_sqlite() {
    a_failure_shows_in_red_with_its_routine_and_file_line(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_shows_in_red_with_its_routine_and_file_line_mariadb() {
    a_failure_shows_in_red_with_its_routine_and_file_line(Backend::MySql).await;
}

/// Also: a broken edit shows its error on the page, and the metrics count both.
async fn a_failure_shows_in_red_with_its_routine_and_file_line(backend: Backend) {
    let throwing = RECORDING_OS.replace(
        "fn post_load(ctx) { record(ctx, \"post_load\") }",
        "fn post_load(ctx) {\n    local_host().run(\"exit 3\");\n    throw \"firewall refused\";\n}",
    );
    let families = provhost::primitive_families(&provhost::Config::default());
    let Some(rig) = Rig::with_families(backend, 1, &throwing, 0.1, &families).await else {
        return;
    };
    let (addr, web_stop) = serve_live(&rig, 0).await;
    let before = scrape(addr).await;
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_state(c.request_id, "failed", T).await;
    let resv = c.reservation_id;
    let rig_ref = &rig;
    wait_until("the failed post_load span", async || {
        provhost::db::span::of_reservation(&rig_ref.t.db, resv)
            .await
            .map(|s| {
                s.iter().any(|s| {
                    s.routine == "post_load"
                        && !s.ok
                        && s.kind == provhost::trace::SpanKind::Routine
                })
            })
            .unwrap_or(false)
    })
    .await;
    let (code, page) = get_async(addr, &format!("/reservation/{resv}"), None).await;
    assert_eq!(code, 200);
    let path = rig.scripts.path("os/linux.rhai");
    let failed_row = page
        .split("<tr")
        .find(|r| r.contains("class=\"loadstate\">failed"))
        .unwrap_or_else(|| panic!("no failed step:\n{page}"));
    assert!(
        failed_row.starts_with(" class=\"step failed\""),
        "{failed_row}"
    );
    assert!(
        failed_row.contains(&format!("{}:", path.display()))
            && failed_row.contains("os/linux::post_load: threw firewall refused"),
        "{failed_row}"
    );
    assert!(page.contains("class=\"bar failed\""), "{page}");
    assert!(
        page.contains("<tr class=\"span command failed\">"),
        "the exit 3 command: {page}"
    );
    let (_, overview) = get_async(addr, "/", None).await;
    assert!(overview.contains("<tr class=\"failed\">"), "{overview}");

    // A broken edit: the module keeps serving, the page shows the error and when.
    std::fs::write(&path, "const MODULE = #{ kind: \"os\", name: \"linux\" ").expect("write");
    assert!(rig.host.load_file(&path).is_err());
    wait_until("the reload error on the page", async || {
        let (_, overview) = get_async(addr, "/", None).await;
        overview.contains("UTC: ") && overview.contains("class=\"failed\"")
    })
    .await;
    let after = scrape(addr).await;
    assert!(
        metric(&after, "provhost_module_reload_failures_total", &[])
            >= metric(&before, "provhost_module_reload_failures_total", &[]) + 1.0
    );
    let post_load = [("module", "os/linux"), ("routine", "post_load")];
    assert!(
        metric(&after, "provhost_routine_errors_total", &post_load)
            >= metric(&before, "provhost_routine_errors_total", &post_load) + 1.0
    );
    assert!(
        metric(
            &after,
            "provhost_loads_total",
            &[("module", "provisioning/sim"), ("result", "failed")]
        ) >= metric(
            &before,
            "provhost_loads_total",
            &[("module", "provisioning/sim"), ("result", "failed")]
        ) + 1.0
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(T, daemon).await;
    let _ = web_stop.send(());
}

/// Over a real sshd: a remote command and a copy become spans (host, redacted command,
/// exit code, bytes), and the pool's sessions are counted while they are open.
#[test]
fn remote_commands_and_copies_are_spans_and_ssh_sessions_are_counted() {
    use provhost::prim::host::Host;
    use provhost::prim::scp::CopyOptions;
    use provhost::prim::ssh::{ExecOptions, HostKeyPolicy};
    use provhost::trace::{CallTrace, SpanKind};
    let parse = |text: String| {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
    };
    let s = common::sshd::Sshd::start();
    let before = parse(provhost::metrics::encode(&[]));
    let pool = s.pool();
    let h = Host::remote(Arc::clone(&pool), s.target(HostKeyPolicy::Strict));
    provhost::prim::secret::remember_in(
        provhost::prim::secret::Scope::Reservation(77),
        "hunter2-topsecret",
    );
    let src = s.path("src.bin");
    std::fs::write(&src, vec![7u8; 100_000]).expect("write");
    let trace = CallTrace::begin(77, "provisioning/qemu", "load");
    let out = h
        .run("echo hunter2-topsecret; exit 2", &ExecOptions::default())
        .expect("run");
    assert_eq!(out.code, 2);
    h.upload(
        &src,
        &s.path("dst.bin").display().to_string(),
        &CopyOptions::default(),
        &mut |_| {},
    )
    .expect("upload");
    let during = parse(provhost::metrics::encode(&[]));
    let spans = trace.finish(None);
    assert_eq!(spans.len(), 3, "{spans:?}");
    let cmd = &spans[1];
    assert_eq!(cmd.kind, SpanKind::Command);
    assert_eq!(cmd.host, h.label());
    assert_eq!(cmd.detail, "echo ********; exit 2");
    assert_eq!((cmd.exit_code, cmd.ok), (Some(2), false));
    let copy = &spans[2];
    assert_eq!((copy.kind, copy.bytes), (SpanKind::Copy, Some(100_000)));
    assert!(copy.detail.contains(&h.label()), "{}", copy.detail);
    assert!(
        metric(&during, "provhost_ssh_sessions", &[])
            >= metric(&before, "provhost_ssh_sessions", &[]) + 1.0
    );
    assert!(
        metric(&during, "provhost_ssh_connects_total", &[])
            >= metric(&before, "provhost_ssh_connects_total", &[]) + 1.0
    );
    assert!(
        metric(&during, "provhost_commands_total", &[("transport", "ssh")])
            >= metric(&before, "provhost_commands_total", &[("transport", "ssh")]) + 1.0
    );
    drop(h);
    drop(pool);
    let after = parse(provhost::metrics::encode(&[]));
    assert_eq!(
        metric(&after, "provhost_ssh_sessions", &[]),
        metric(&before, "provhost_ssh_sessions", &[]),
        "closed with the pool"
    );
}
