//! The `provhost` binary as an operator meets it when things are wrong (issue 11, items
//! 5-10): ids that do not exist, finished records, bad input to `add`, databases that do
//! not exist, messages and exit codes (0 done, 1 failed, 2 usage/refused, 3 check found
//! errors), and the operator commands (`computer|image|user|node list`, `computer
//! set-state`), on SQLite and MariaDB.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cli::{fails, ok, project_dir, provhost, stderr};
use common::db::{world, TestDb};
use provhost::db::Backend;

/// Item 5: every command taking an id or a name says when it does not exist, exit 2.
async fn unknown_ids_and_names_are_refused(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();
    fails(
        &provhost(d, &["request", "end", "999", "--url", url]),
        2,
        &["no request 999"],
    );
    fails(
        &provhost(
            d,
            &[
                "request",
                "connect",
                "999",
                "--ip",
                "192.0.2.9",
                "--url",
                url,
            ],
        ),
        2,
        &["no reservation 999"],
    );
    fails(
        &provhost(d, &["log", "999", "--url", url]),
        2,
        &["no reservation 999"],
    );
    fails(
        &provhost(d, &["request", "cancel", "999", "--url", url]),
        2,
        &["no request 999"],
    );
    fails(
        &provhost(
            d,
            &[
                "computer",
                "set-state",
                "nope.test",
                "available",
                "--url",
                url,
            ],
        ),
        2,
        &["no computer nope.test"],
    );
    for (flag, value, what) in [
        ("--image", "nope", "no image nope"),
        ("--user", "nobody", "no user nobody"),
        ("--computer", "nope", "no computer nope"),
    ] {
        let mut args = vec![
            "request",
            "new",
            "--url",
            url,
            "--image",
            "debian12",
            "--user",
            "ann",
            "--computer",
            "lab1",
        ];
        let at = args.iter().position(|a| *a == flag).expect("flag") + 1;
        args[at] = value;
        fails(&provhost(d, &args), 2, &[what]);
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `request`").await, 0);
}

crate::on_both_backends!(unknown_ids_and_names_are_refused);

/// Item 6: a finished request is not changed (its end time stays), a reservation of a
/// finished request takes no Connect, a request that has not started is not "ended", and
/// `--ip` must be an address; every refusal names the state.
async fn finished_records_are_not_changed(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 2).await;
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();
    let new = |computer: &str, start: &str| {
        ok(&provhost(
            d,
            &[
                "request",
                "new",
                "--url",
                url,
                "--image",
                "debian12",
                "--user",
                "ann",
                "--computer",
                computer,
                "--start",
                start,
            ],
        ))
    };
    assert!(new("lab1", "now").starts_with("request 1 (reservation 1)"));
    fails(
        &provhost(
            d,
            &["request", "connect", "1", "--ip", "notanip", "--url", url],
        ),
        2,
        &["\"notanip\" is not an IPv4 address"],
    );
    fails(
        &provhost(
            d,
            &["request", "connect", "1", "--ip", "300.1.2.3", "--url", url],
        ),
        2,
        &["is not an IPv4 address"],
    );
    // A live request: Connect and End work.
    let out = ok(&provhost(
        d,
        &["request", "connect", "1", "--ip", "192.0.2.9", "--url", url],
    ));
    assert!(out.contains("acknowledged from 192.0.2.9"), "{out}");
    ok(&provhost(d, &["request", "end", "1", "--url", url]));

    for (state, shown) in [
        (12, "complete"),
        (5, "failed"),
        (1, "deleted"),
        (11, "timeout"),
    ] {
        t.exec(&format!(
            "UPDATE `request` SET `stateid` = {state}, `laststateid` = 8, `end` = '2001-01-01 00:00:00' WHERE `id` = 1"
        ))
        .await;
        fails(
            &provhost(d, &["request", "end", "1", "--url", url]),
            2,
            &[&format!("request 1 is {shown}")],
        );
        fails(
            &provhost(
                d,
                &[
                    "request",
                    "connect",
                    "1",
                    "--ip",
                    "192.0.2.10",
                    "--url",
                    url,
                ],
            ),
            2,
            &[&format!("its request 1 is {shown}")],
        );
        assert_eq!(
            t.scalar(
                "SELECT COUNT(*) FROM `request` WHERE `id` = 1 AND `end` = '2001-01-01 00:00:00'"
            )
            .await,
            1,
            "the end time of a {shown} request stays"
        );
        assert_eq!(
            t.scalar(
                "SELECT COUNT(*) FROM `reservation` WHERE `id` = 1 AND `remoteIP` = '192.0.2.9'"
            )
            .await,
            1,
            "remoteIP of a {shown} request stays"
        );
    }
    // A reclaim running (pending from timeout) is ending too.
    t.exec("UPDATE `request` SET `stateid` = 14, `laststateid` = 11 WHERE `id` = 1")
        .await;
    fails(
        &provhost(d, &["request", "end", "1", "--url", url]),
        2,
        &["request 1 is pending (from timeout)"],
    );
    // Not started yet: cancel it, not end it.
    assert!(new("lab2", "+2h").starts_with("request 2 "));
    fails(
        &provhost(d, &["request", "end", "2", "--url", url]),
        2,
        &["request 2 has not started yet", "provhost request cancel 2"],
    );
}

crate::on_both_backends!(finished_records_are_not_changed);

/// Item 7: `add` refuses bad names and addresses, duplicates (in a sentence, not SQL),
/// and a provisioning or OS module that has no row or no script, saying which and how
/// to fix it; nothing is added.
async fn add_validates_and_explains(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();
    let add = |args: &[&str]| {
        let mut a = vec!["add"];
        a.extend_from_slice(args);
        a.extend(["--url", url]);
        provhost(d, &a)
    };
    ok(&add(&["user", "ann", "--uid", "1500"]));
    let err = fails(&add(&["user", "ann"]), 2, &["user ann already exists"]);
    assert!(
        !err.contains("2067") && !err.contains("1062") && !err.contains("UNIQUE"),
        "{err}"
    );
    fails(
        &add(&["user", "bob", "--uid", "1500"]),
        2,
        &["uid 1500 already exists (user ann has it)"],
    );
    fails(&add(&["user", ""]), 2, &["user name \"\": empty"]);
    fails(&add(&["user", "a;reboot"]), 2, &["';' is not allowed"]);
    fails(&add(&["user", ".hidden"]), 2, &["must start with"]);
    fails(&add(&["user", &"x".repeat(40)]), 2, &["longer than 32"]);

    ok(&add(&[
        "computer",
        "sim1",
        "--ip",
        "192.0.2.5",
        "--provisioning",
        "sim",
    ]));
    fails(
        &add(&[
            "computer",
            "sim1",
            "--ip",
            "192.0.2.6",
            "--provisioning",
            "sim",
        ]),
        2,
        &["computer sim1 already exists (computer"],
    );
    fails(
        &add(&[
            "computer",
            "sim2",
            "--ip",
            "300.1.2.3",
            "--provisioning",
            "sim",
        ]),
        2,
        &["\"300.1.2.3\" is not an IPv4 address"],
    );
    fails(
        &add(&[
            "computer",
            "sim2",
            "--ip",
            "2001:db8::1",
            "--provisioning",
            "sim",
        ]),
        2,
        &["IPv4 only"],
    );
    fails(
        &add(&[
            "computer",
            "bad_name",
            "--ip",
            "192.0.2.7",
            "--provisioning",
            "sim",
        ]),
        2,
        &["'_' is not allowed"],
    );
    // A row but no script; neither row nor script.
    fails(
        &add(&[
            "computer",
            "vm9",
            "--ip",
            "192.0.2.9",
            "--provisioning",
            "vbox",
        ]),
        2,
        &["no script", "provisioning/vbox.rhai", "--no-script-check"],
    );
    let err = fails(
        &add(&[
            "computer",
            "vm9",
            "--ip",
            "192.0.2.9",
            "--provisioning",
            "nope",
        ]),
        2,
        &[
            "has no provisioning \"nope\"",
            "qemu",
            "no script",
            "provisioning/nope.rhai",
        ],
    );
    assert!(!err.contains("has no provisioning \"vmware\""), "{err}");
    // The script check can be left to the node that has the scripts.
    ok(&add(&[
        "computer",
        "vm9",
        "--ip",
        "192.0.2.9",
        "--provisioning",
        "vmware",
        "--no-script-check",
    ]));
    // A shared address is allowed (port forwards) but said.
    let shared = add(&[
        "computer",
        "sim3",
        "--ip",
        "192.0.2.5",
        "--provisioning",
        "sim",
    ]);
    ok(&shared);
    assert!(
        stderr(&shared).contains("note: computer 1 (sim1) has address 192.0.2.5 too"),
        "{}",
        stderr(&shared)
    );

    ok(&add(&["image", "deb", "--os", "sim"]));
    fails(
        &add(&["image", "deb", "--os", "sim"]),
        2,
        &["image deb already exists"],
    );
    fails(
        &add(&["image", "sol", "--os", "sun4x_58"]),
        2,
        &["no script", "os/unixlab.rhai", "module 15 \"os_unix_lab\""],
    );
    fails(
        &add(&["image", "x", "--os", "beos"]),
        2,
        &["has no OS \"beos\"", "linux"],
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `user` WHERE `unityid` IN ('bob', '')")
            .await,
        0
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `computer` WHERE `hostname` LIKE 'sim%'")
            .await,
        2
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `image` WHERE `name` IN ('w10', 'x')")
            .await,
        0
    );
}

crate::on_both_backends!(add_validates_and_explains);

/// Item 8: read-only and record-changing commands never create a SQLite database; they
/// name the missing file and the `db init` that makes it. `db init` creates it.
#[test]
fn only_db_init_creates_a_sqlite_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("no/such/dir/x.db");
    let url = format!("sqlite://{}", file.display());
    for args in [
        vec!["request", "list"],
        vec!["log", "1"],
        vec!["request", "end", "1"],
        vec!["computer", "list"],
        vec!["user", "list"],
        vec!["node", "list"],
        vec!["image", "list"],
        vec!["add", "user", "ann"],
    ] {
        let mut a = args.clone();
        a.extend(["--url", &url]);
        fails(
            &provhost(dir.path(), &a),
            2,
            &[
                &format!("database file {} does not exist", file.display()),
                &format!("provhost db init --url {url}"),
            ],
        );
        assert!(!dir.path().join("no").exists(), "{args:?} created a folder");
    }
    // The default database in the data folder, too.
    fails(
        &provhost(dir.path(), &["request", "list"]),
        2,
        &["data/provhost.db does not exist"],
    );
    assert!(!dir.path().join("data").exists());
    ok(&provhost(dir.path(), &["db", "init", "--url", &url]));
    assert!(file.is_file());
    let list = ok(&provhost(dir.path(), &["request", "list", "--url", &url]));
    assert!(
        list.starts_with("REQUEST") || list.contains("STATE"),
        "{list}"
    );
}

/// Item 8 on MariaDB: `db init` on a database that does not exist says how to create it.
#[test]
fn db_init_on_a_missing_mariadb_database_says_how_to_create_it() {
    let server = common::db::mariadb_server();
    let name = format!("provhost_missing_{}", std::process::id());
    let url = format!("{server}/{name}");
    let dir = tempfile::tempdir().expect("tmp");
    for args in [vec!["db", "init"], vec!["request", "list"]] {
        let mut a = args.clone();
        a.extend(["--url", &url]);
        let out = provhost(dir.path(), &a);
        if std::env::var("PROVHOST_SKIP_MARIADB").as_deref() == Ok("1")
            && stderr(&out).contains("cannot connect")
        {
            eprintln!("SKIP: MariaDB unreachable and PROVHOST_SKIP_MARIADB=1");
            return;
        }
        fails(
            &out,
            2,
            &[
                &format!("database `{name}` does not exist"),
                &format!("CREATE DATABASE `{name}`"),
                &format!("provhost db init --url {url}"),
            ],
        );
    }
}

/// Item 9: an unreachable MySQL fails a one-shot command at once, in one line, exit 1.
#[test]
fn an_unreachable_mysql_fails_fast_in_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let started = Instant::now();
    let out = provhost(
        dir.path(),
        &["request", "list", "--url", "mysql://root@127.0.0.1:1/vcl"],
    );
    let took = started.elapsed();
    let err = fails(
        &out,
        1,
        &["cannot connect to mysql://root@127.0.0.1:1/vcl", "refused"],
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("WARN") && !err.contains("retrying"), "{err}");
}

/// Item 9: a missing config file is named once, with the OS error once; a usage error is
/// exit 2, and `check` finding errors exit 3.
#[test]
fn config_errors_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let err = fails(
        &provhost(dir.path(), &["--config", "missing.toml", "request", "list"]),
        2,
        &["cannot read the configuration file missing.toml"],
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // clap's usage errors.
    fails(&provhost(dir.path(), &["request", "end"]), 2, &["REQUEST"]);
    fails(
        &provhost(dir.path(), &["nonsense"]),
        2,
        &["unrecognized subcommand"],
    );
    // check: 3 for errors in scripts.
    std::fs::create_dir_all(dir.path().join("scripts/os")).expect("mkdir");
    std::fs::write(
        dir.path().join("scripts/os/broken.rhai"),
        "const MODULE = #{ kind: \"os\", name: \"broken\", version: \"1\" };\nfn post_load(ctx) {\n",
    )
    .expect("write");
    fails(&provhost(dir.path(), &["check"]), 3, &[]);
    // The codes are documented in --help.
    let help = ok(&provhost(dir.path(), &["--help"]));
    assert!(
        help.contains("Exit codes:") && help.contains("3  `provhost check` found errors"),
        "{help}"
    );
    assert!(help.contains("Relative paths in a config file"), "{help}");
}

/// Item 9: relative paths in a config file follow the file's folder, not the current one.
#[test]
fn relative_paths_in_a_config_file_follow_its_folder() {
    let dir = project_dir();
    let conf = dir.path().join("etc");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::write(
        conf.join("provhost.toml"),
        "[paths]\ndata_dir = \"state\"\nscripts = \"../scripts\"\nstdlib = \"../stdlib\"\n",
    )
    .expect("config");
    let elsewhere = tempfile::tempdir().expect("tmp");
    let cfg = conf.join("provhost.toml");
    ok(&provhost(
        elsewhere.path(),
        &["--config", cfg.to_str().expect("utf8"), "db", "init"],
    ));
    assert!(conf.join("state/provhost.db").is_file());
    assert!(!elsewhere.path().join("state").exists());
    ok(&provhost(
        elsewhere.path(),
        &["--config", cfg.to_str().expect("utf8"), "check"],
    ));
}

/// Item 9: request times: a start in the past is refused, an unknown form lists the
/// accepted ones.
async fn request_times_are_explained(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = t.url.as_str();
    let new = |start: &str| {
        provhost(
            dir.path(),
            &[
                "request",
                "new",
                "--url",
                url,
                "--image",
                "debian12",
                "--user",
                "ann",
                "--computer",
                "lab1",
                "--start",
                start,
            ],
        )
    };
    fails(
        &new("2020-01-01 10:00"),
        2,
        &["start 2020-01-01 10:00:00 is in the past", "now, +30m"],
    );
    fails(
        &new("tomorrow"),
        2,
        &[
            "start: \"tomorrow\" is not a time",
            "now",
            "+30m",
            "YYYY-MM-DD HH:MM",
        ],
    );
    fails(&new("+5y"), 2, &["\"+5y\" is not a time", "+2h"]);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `request`").await, 0);
}

crate::on_both_backends!(request_times_are_explained);

/// The project's scripts (where `sim` is both a provisioning and an OS module) plus a
/// provisioning module `t` with a slow routine and an echo.
fn call_dir() -> tempfile::TempDir {
    let dir = project_dir();
    std::fs::write(
        dir.path().join("scripts/provisioning/t.rhai"),
        common::scripts::provisioning(
            "t",
            "1",
            r#"fn slow(ctx) { if !ctx.computer().wait_for_ssh(#{ timeout: 600, interval: 0.2 }) { throw "not ready within 600 s"; } true }
fn echo(ctx, v) { v }"#,
        ),
    )
    .expect("write");
    dir
}

/// Item 9: `call` picks the kind that has the routine for a name two kinds use (or says
/// which kinds), refuses malformed JSON, and a deadline that cut a wait short is named
/// with its own seconds.
#[test]
fn call_messages() {
    let dir = call_dir();
    let d = dir.path();
    // node_status: only provisioning/sim has it, so `sim` means that one.
    let out = ok(&provhost(d, &["call", "sim", "node_status"]));
    assert!(out.trim().starts_with('"'), "{out}");
    let err = fails(
        &provhost(d, &["call", "sim", "nope"]),
        2,
        &[
            "module name \"sim\" is used by more than one kind (",
            "os/sim",
            "provisioning/sim",
            "say which",
        ],
    );
    assert!(!err.contains("loaded: ambiguous"), "{err}");
    // JSON arguments: good ones pass as values, malformed ones are refused.
    let out = ok(&provhost(
        d,
        &["call", "provisioning/t", "echo", r#"{"login":"ann"}"#],
    ));
    assert!(out.contains("\"login\": \"ann\""), "{out}");
    let out = ok(&provhost(
        d,
        &["call", "provisioning/t", "echo", "plain text"],
    ));
    assert_eq!(out.trim(), "\"plain text\"");
    fails(
        &provhost(d, &["call", "provisioning/t", "echo", "{login: ann}"]),
        2,
        &["argument 1 ({login: ann}) looks like JSON but does not parse"],
    );
    fails(
        &provhost(d, &["call", "provisioning/t", "echo", "[1, 2"]),
        2,
        &["looks like JSON"],
    );
    // The call's deadline (1 s) is what ended the 600 s wait for SSH (nothing listens on
    // port 1), after which the routine threw its own words.
    let fixture = d.join("ctx.toml");
    std::fs::write(
        &fixture,
        "computer_ip = \"127.0.0.1\"\ncomputer_ssh_port = 1\n",
    )
    .expect("fixture");
    let started = Instant::now();
    let err = fails(
        &provhost(
            d,
            &[
                "call",
                "provisioning/t",
                "slow",
                "--ctx",
                fixture.to_str().expect("utf8"),
                "--timeout",
                "1",
            ],
        ),
        1,
        &["reached its deadline of 1 s", "not ready within 600 s"],
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
}

/// Item 10: the list commands, as tables and as JSON.
async fn operator_lists(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 2).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = t.url.as_str();
    let list = |what: &str, json: bool| {
        let mut a = vec![what, "list", "--url", url];
        if json {
            a.push("--json");
        }
        ok(&provhost(dir.path(), &a))
    };
    let table = list("computer", false);
    assert!(
        table.starts_with("ID  HOSTNAME")
            && table.contains("lab1.test")
            && table.contains("available"),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_str(&list("computer", true)).expect("json");
    assert_eq!(v[1]["hostname"], "lab2.test");
    assert_eq!(v[1]["ip"], "10.0.0.2");
    assert_eq!(v[1]["provisioning"], "lab");
    assert_eq!(v[1]["held_by_request"], serde_json::Value::Null);

    let v: serde_json::Value = serde_json::from_str(&list("image", true)).expect("json");
    let deb = v
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["name"] == "debian12")
        .expect("debian12 listed");
    assert_eq!(deb["os"], "linux");
    assert_eq!(deb["revision"], 0);
    assert!(list("image", false).contains("debian12"));

    let v: serde_json::Value = serde_json::from_str(&list("user", true)).expect("json");
    let ann = v
        .as_array()
        .expect("array")
        .iter()
        .find(|u| u["login"] == "ann")
        .expect("ann");
    assert_eq!(ann["uid"], 1500);
    assert!(list("user", false).contains("ann"));

    // A node with a live lease shows its holder.
    provhost::db::lease::acquire(&t.db, &provhost::db::lease::Lease::new(1), 60)
        .await
        .expect("lease");
    let v: serde_json::Value = serde_json::from_str(&list("node", true)).expect("json");
    assert_eq!(v[0]["hostname"], "mn1.test");
    assert_eq!(v[0]["lease_live"], true);
    let nodes = list("node", false);
    assert!(
        nodes.contains("mn1.test") && nodes.contains("lease until"),
        "{nodes}"
    );
}

crate::on_both_backends!(operator_lists);

/// Item 10: `computer set-state` brings a failed computer back with the reason in the
/// load-log, and refuses while a reservation holds the computer, naming it.
async fn set_state_brings_a_computer_back(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 1).await;
    let lab1 = w.computers[0];
    let dir = tempfile::tempdir().expect("tmp");
    let url = t.url.as_str();
    let set = |state: &str, reason: &str| {
        provhost(
            dir.path(),
            &[
                "computer",
                "set-state",
                "lab1",
                state,
                "--reason",
                reason,
                "--url",
                url,
            ],
        )
    };
    t.exec(&format!(
        "UPDATE `computer` SET `stateid` = 5 WHERE `id` = {lab1}"
    ))
    .await;
    let out = ok(&set("available", "disk replaced"));
    assert!(out.contains("failed -> available"), "{out}");
    assert_eq!(
        t.scalar(&format!(
            "SELECT `stateid` FROM `computer` WHERE `id` = {lab1}"
        ))
        .await,
        2
    );
    let log = ok(&provhost(dir.path(), &["log", "0", "--url", url]));
    assert!(
        log.contains("operator: computer lab1.test failed -> available: disk replaced"),
        "{log}"
    );
    let out = ok(&set("available", ""));
    assert!(out.contains("already available; nothing changed"), "{out}");

    // A reservation in use holds it: refused, nothing changes.
    let new = ok(&provhost(
        dir.path(),
        &[
            "request",
            "new",
            "--url",
            url,
            "--image",
            "debian12",
            "--user",
            "ann",
            "--computer",
            "lab1",
        ],
    ));
    assert!(new.starts_with("request 1 "), "{new}");
    t.exec("UPDATE `request` SET `stateid` = 8, `laststateid` = 3 WHERE `id` = 1")
        .await;
    t.exec(&format!(
        "UPDATE `computer` SET `stateid` = 8 WHERE `id` = {lab1}"
    ))
    .await;
    fails(
        &set("maintenance", "x"),
        2,
        &[
            "computer lab1.test (inuse) is held by request 1",
            "provhost request end 1",
        ],
    );
    // Also through the lock row alone (a flow's hold).
    t.exec("UPDATE `request` SET `stateid` = 14, `laststateid` = 13 WHERE `id` = 1")
        .await;
    t.exec(&format!(
        "INSERT INTO `provhost_computerlock` (`computerid`, `requestid`, `reservationid`, `managementnodeid`, `token`, `locked`) \
         VALUES ({lab1}, 1, 1, 1, 't', '2026-01-01 00:00:00')"
    ))
    .await;
    fails(&set("available", "x"), 2, &["is held by request 1"]);
    assert_eq!(
        t.scalar(&format!(
            "SELECT `stateid` FROM `computer` WHERE `id` = {lab1}"
        ))
        .await,
        8
    );
    // Finished: the computer is free to set.
    t.exec("UPDATE `request` SET `stateid` = 12 WHERE `id` = 1")
        .await;
    let out = ok(&set("maintenance", "bios update"));
    assert!(out.contains("inuse -> maintenance"), "{out}");
}

crate::on_both_backends!(set_state_brings_a_computer_back);

/// Item 10: `serve` says at start which database, scripts folder and modules it serves,
/// and a fixed script's reload is logged at info after its error.
#[test]
fn serve_says_what_it_serves_and_logs_a_fixed_reload() {
    let dir = project_dir();
    let d = dir.path();
    std::fs::write(
        d.join("provhost.toml"),
        "[daemon]\npoll_interval_secs = 1\n",
    )
    .expect("cfg");
    ok(&provhost(d, &["db", "init"]));
    let log_path = d.join("serve.log");
    let log_file = std::fs::File::create(&log_path).expect("log");
    let mut serve = common::procs::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_provhost"))
            .arg("serve")
            .current_dir(d)
            .env_remove("PROVHOST_CONFIG")
            .env_remove("PROVHOST_DATABASE_URL")
            .env("PROVHOST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("serve"),
    );
    let wait_for = |word: &str| {
        let t = Instant::now();
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains(word) {
                return log;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {word:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let log = wait_for("provhost daemon running");
    let start = log
        .lines()
        .find(|l| l.contains("serving"))
        .unwrap_or_else(|| panic!("no startup line:\n{log}"));
    for word in [
        "data/provhost.db",
        "scripts=scripts",
        "provisioning/sim v",
        "os/linux v",
    ] {
        assert!(start.contains(word), "{word:?} missing: {start}");
    }
    // Break a module, then fix it: the ERROR is followed by an INFO reload line.
    let file = d.join("scripts/provisioning/sim.rhai");
    let good = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("{good}\nfn broken( {{\n")).expect("break");
    wait_for("keeping the last good version");
    std::fs::write(&file, &good).expect("fix");
    let log = wait_for("reloaded provisioning/sim v");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("reloaded provisioning/sim"))
        .expect("line");
    assert!(line.contains("INFO"), "{line}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    while serve.0.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
