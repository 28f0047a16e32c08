//! The database commands as a user types them: `provhost db init`, `request new`,
//! `request list`, `log`, against a real database on both backends.

mod common;

use std::process::{Command, Output};

use common::db::{world, TestDb};
use provhost::db::{loadlog, Backend};

fn provhost(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("an empty folder to run in (no provhost.toml)");
    Command::new(env!("CARGO_BIN_EXE_provhost"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run provhost")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "provhost failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn cli_init_request_list_log(backend: Backend) {
    let Some(t) = TestDb::empty(backend).await else {
        return;
    };
    let url = t.url.as_str();
    let init = ok(&provhost(&[
        "db",
        "init",
        "--url",
        url,
        "--management-node",
        "mn1.test",
    ]));
    assert!(
        init.contains("created VCL tables") && init.contains("management node 1: mn1.test"),
        "{init}"
    );
    let again = ok(&provhost(&["db", "init", "--url", url]));
    assert!(
        again.contains("verified the existing VCL tables"),
        "{again}"
    );

    world(&t.db, 1).await;
    let new = ok(&provhost(&[
        "request",
        "new",
        "--url",
        url,
        "--image",
        "debian12",
        "--computer",
        "lab1",
        "--user",
        "ann",
        "--end",
        "+2h",
    ]));
    assert!(
        new.starts_with("request 1 (reservation 1)")
            && new.contains("on lab1.test, management node mn1.test"),
        "{new}"
    );
    let busy = provhost(&[
        "request", "new", "--url", url, "--image", "debian12", "--any", "--user", "ann",
    ]);
    assert_eq!(busy.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("no computer is free"),
        "{busy:?}"
    );
    let both = provhost(&[
        "request",
        "new",
        "--url",
        url,
        "--image",
        "debian12",
        "--any",
        "--computer",
        "lab1",
        "--user",
        "ann",
    ]);
    assert!(
        !both.status.success(),
        "--any and --computer exclude each other"
    );

    let list = ok(&provhost(&["request", "list", "--url", url]));
    assert!(
        list.lines()
            .nth(1)
            .is_some_and(|l| l.contains("new/new") && l.contains("ann") && l.contains("lab1.test")),
        "{list}"
    );

    // A reservation without entries yet is not an error.
    let empty = ok(&provhost(&["log", "1", "--url", url]));
    assert!(empty.contains("no load-log entries"), "{empty}");
    loadlog::loadlog(&t.db, 1, 1, "begin", "")
        .await
        .expect("loadlog");
    loadlog::loadlog(&t.db, 1, 1, "startload", "creating the VM")
        .await
        .expect("loadlog");
    let log = ok(&provhost(&["log", "1", "--url", url]));
    assert!(
        log.contains("begin (beginning to process reservation)")
            && log.contains("startload (starting load process)  creating the VM"),
        "{log}"
    );
    let none = provhost(&["log", "77", "--url", url]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no reservation 77"),
        "{none:?}"
    );
}

crate::on_both_backends!(cli_init_request_list_log);

/// `request new` refuses a window on a computer that another live reservation (plus the
/// reload time VCL leaves after it) covers: exit code 2, the other request and its window
/// named, and the first start that fits; that start is accepted, and `--any` finds a free
/// computer for the busy window.
async fn cli_request_new_refuses_overlap_and_reload_time(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let url = t.url.as_str();
    world(&t.db, 2).await;
    let new = |start: &str, end: &str, computer: Option<&str>| {
        let mut args = vec![
            "request", "new", "--url", url, "--image", "debian12", "--user", "ann",
        ];
        args.extend(["--start", start, "--end", end]);
        match computer {
            Some(c) => args.extend(["--computer", c]),
            None => args.push("--any"),
        }
        provhost(&args)
    };
    let first = ok(&new("2030-01-01 10:00", "2030-01-01 11:00", Some("lab1")));
    assert!(first.starts_with("request 1 "), "{first}");

    // Overlapping, and inside the 10 minutes image.reloadtime after request 1.
    for (start, end) in [
        ("2030-01-01 10:30", "2030-01-01 11:30"),
        ("2030-01-01 11:00", "2030-01-01 12:00"),
        ("2030-01-01 11:09", "2030-01-01 12:00"),
        ("2030-01-01 09:00", "2030-01-01 09:55"),
    ] {
        let out = new(start, end, Some("lab1"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{start}: {err}");
        assert!(
            err.contains("computer lab1.test is reserved by request 1 (new) from 2030-01-01 10:00:00 to 2030-01-01 11:00:00")
                && err.contains("10 min")
                && err.contains("Start at 2030-01-01 11:10:00 or later")
                && err.contains("end by 2030-01-01 09:50:00"),
            "{start}: {err}"
        );
        assert!(out.stdout.is_empty(), "nothing reported as made: {out:?}");
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `request`").await, 1);

    // Exactly the reload time after it, or before it: fine.
    let after = ok(&new("2030-01-01 11:10", "2030-01-01 12:00", Some("lab1")));
    assert!(after.starts_with("request 2 "), "{after}");
    let before = ok(&new("2030-01-01 09:00", "2030-01-01 09:50", Some("lab1")));
    assert!(before.starts_with("request 3 "), "{before}");
    // --any for a window lab1 cannot take picks lab2.
    let any = ok(&new("2030-01-01 10:30", "2030-01-01 11:30", None));
    assert!(any.contains("on lab2.test"), "{any}");
}

crate::on_both_backends!(cli_request_new_refuses_overlap_and_reload_time);

/// A wrong password is refused at once (not retried) and never printed.
#[test]
fn passwords_in_urls_are_not_shown() {
    let server = common::db::mariadb_server().replacen("mysql://root@", "mysql://root:hunter2@", 1);
    let out = provhost(&["request", "list", "--url", &format!("{server}/vcl")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !err.contains("hunter2") && err.contains("root:***@"),
        "{err}"
    );
}
