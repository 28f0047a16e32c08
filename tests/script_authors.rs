//! What a script author meets (issue 14 items 1, 3, 4): registering a new module from the
//! command line (`add provisioning|os`, with their `module` rows), users with SSH keys,
//! `check`'s cross-check of scripts and rows (and without a database), the load-state
//! list, `call` keeping computer variables and notes between runs, and `config::` in
//! scripts — the binary run as a person runs it, exit codes and messages checked, on
//! SQLite and MariaDB where rows are involved.

mod common;

use std::process::Command;

use common::cli::{fails, ok, provhost, root, stdout};
use common::db::TestDb;
use provhost::db::Backend;

/// A folder with this project's `scripts/` and `stdlib/`, the simulator's load made
/// quick, and a new provisioning module `netns` (the simulator under another name).
fn project_dir() -> tempfile::TempDir {
    let dir = common::cli::project_dir();
    let sim = dir.path().join("scripts/provisioning/sim.rhai");
    let text = std::fs::read_to_string(&sim)
        .expect("sim.rhai")
        .replace("load_seconds: 3.0", "load_seconds: 0.05");
    std::fs::write(&sim, &text).expect("write sim");
    std::fs::write(
        dir.path().join("scripts/provisioning/netns.rhai"),
        text.replace("name: \"sim\"", "name: \"netns\""),
    )
    .expect("write netns");
    dir
}

/// Item 1: a new provisioning module is registered from the command line (the stumble
/// was `no provisioning NAME` with nothing saying how), an OS row reuses VCL's Linux
/// module, duplicates and bad names are refused (exit 2) and nothing is added then; the
/// rows are VCL's (`module` + `provisioning` / `OS`).
async fn modules_are_registered_from_the_command_line(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();

    fails(
        &provhost(
            d,
            &[
                "add",
                "computer",
                "n1",
                "--ip",
                "192.0.2.40",
                "--provisioning",
                "netns",
                "--url",
                url,
            ],
        ),
        2,
        &[
            "no provisioning \"netns\"",
            "`provhost add provisioning netns`",
        ],
    );
    let out = ok(&provhost(
        d,
        &["add", "provisioning", "netns", "--url", url],
    ));
    assert!(out.contains("\"provisioning_netns\", new"), "{out}");
    assert!(out.contains("scripts/provisioning/netns.rhai"), "{out}");
    let module: i64 = t
        .scalar("SELECT `moduleid` FROM `provisioning` WHERE `name` = 'netns'")
        .await;
    assert_eq!(
        t.text(&format!(
            "SELECT `name` FROM `module` WHERE `id` = {module}"
        ))
        .await
        .as_deref(),
        Some("provisioning_netns")
    );
    fails(
        &provhost(d, &["add", "provisioning", "netns", "--url", url]),
        2,
        &["provisioning netns already exists"],
    );
    fails(
        &provhost(d, &["add", "provisioning", "Net NS", "--url", url]),
        2,
        &["provisioning name \"Net NS\"", "not allowed"],
    );
    fails(
        &provhost(d, &["add", "provisioning", "ghost", "--url", url]),
        2,
        &["no script", "provisioning/ghost.rhai", "--no-script-check"],
    );
    fails(
        &provhost(
            d,
            &[
                "add",
                "provisioning",
                "x1",
                "--perl-package",
                "not a package",
                "--url",
                url,
            ],
        ),
        2,
        &["--perl-package \"not a package\" is not a Perl package name"],
    );
    // The refusals added nothing.
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `provisioning` WHERE `name` IN ('ghost', 'x1')")
            .await,
        0
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `module` WHERE `name` IN ('provisioning_ghost', 'provisioning_x1')")
            .await,
        0
    );
    // A module whose script lives on another node.
    ok(&provhost(
        d,
        &[
            "add",
            "provisioning",
            "ghost",
            "--no-script-check",
            "--url",
            url,
        ],
    ));
    ok(&provhost(
        d,
        &[
            "add",
            "computer",
            "n1",
            "--ip",
            "192.0.2.40",
            "--provisioning",
            "netns",
            "--url",
            url,
        ],
    ));

    // An OS served by VCL's Linux module row, then an image of it.
    let out = ok(&provhost(
        d,
        &[
            "add",
            "os",
            "rocky9",
            "--type",
            "linux",
            "--module-name",
            "os_linux",
            "--pretty",
            "Rocky 9",
            "--url",
            url,
        ],
    ));
    assert!(
        out.contains("\"os_linux\" (VCL::Module::OS::Linux), existing"),
        "{out}"
    );
    assert!(out.contains("scripts/os/linux.rhai"), "{out}");
    ok(&provhost(
        d,
        &["add", "image", "r9", "--os", "rocky9", "--url", url],
    ));
    assert_eq!(
        t.text("SELECT `type` FROM `OS` WHERE `name` = 'rocky9'")
            .await
            .as_deref(),
        Some("linux")
    );
    fails(
        &provhost(d, &["add", "os", "beos", "--type", "beos", "--url", url]),
        2,
        &["--type beos is not a row of the OStype table", "linux"],
    );
    fails(
        &provhost(
            d,
            &[
                "add",
                "os",
                "rocky9",
                "--type",
                "linux",
                "--module-name",
                "os_linux",
                "--url",
                url,
            ],
        ),
        2,
        &["OS rocky9 already exists"],
    );
    fails(
        &provhost(
            d,
            &[
                "add",
                "os",
                "r10",
                "--type",
                "linux",
                "--module-name",
                "os_linux",
                "--pretty",
                "Rocky 9",
                "--url",
                url,
            ],
        ),
        2,
        &["already exists", "Rocky 9"],
    );
    fails(
        &provhost(d, &["add", "os", "mine", "--type", "linux", "--url", url]),
        2,
        &["no script", "scripts/os/mine.rhai"],
    );
    fails(
        &provhost(
            d,
            &[
                "add",
                "os",
                "r11",
                "--type",
                "linux",
                "--module-name",
                "os_linux",
                "--perl-package",
                "VCL::Module::OS::Other",
                "--url",
                url,
            ],
        ),
        2,
        &["exists with perl package \"VCL::Module::OS::Linux\""],
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `OS` WHERE `name` IN ('beos', 'r10', 'mine', 'r11')")
            .await,
        0
    );
}
crate::on_both_backends!(modules_are_registered_from_the_command_line);

/// Item 1: `add user --ssh-key` takes public key files (several keys in one file, several
/// files), sets `usepublickeys` and `sshpublickeys`; a private key or a broken line is
/// refused naming the file and line, and the user is not added.
async fn users_get_ssh_public_keys(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();
    for (name, kind) in [("k1", "ed25519"), ("k2", "ecdsa")] {
        let st = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                kind,
                "-N",
                "",
                "-C",
                &format!("{name}@test"),
                "-f",
            ])
            .arg(d.join(name))
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
    }
    let k1 = std::fs::read_to_string(d.join("k1.pub")).expect("k1");
    let k2 = std::fs::read_to_string(d.join("k2.pub")).expect("k2");
    std::fs::write(d.join("both.pub"), format!("# my keys\n{k1}\n{k2}")).expect("write");

    let out = ok(&provhost(
        d,
        &[
            "add",
            "user",
            "ann",
            "--ssh-key",
            "both.pub",
            "--ssh-key",
            "k1.pub",
            "--url",
            url,
        ],
    ));
    assert!(out.contains("2 SSH public key(s)"), "{out}");
    assert_eq!(
        t.scalar("SELECT `usepublickeys` FROM `user` WHERE `unityid` = 'ann'")
            .await,
        1
    );
    assert_eq!(
        t.text("SELECT `sshpublickeys` FROM `user` WHERE `unityid` = 'ann'")
            .await
            .unwrap_or_default(),
        format!("{}\n{}", k1.trim(), k2.trim())
    );
    let err = fails(
        &provhost(d, &["add", "user", "bob", "--ssh-key", "k1", "--url", url]),
        2,
        &["--ssh-key k1 line 1", "PRIVATE key", ".pub"],
    );
    assert!(
        !err.contains("AAAA"),
        "no key material in the message: {err}"
    );
    std::fs::write(
        d.join("cut.pub"),
        format!("{k1}\nssh-rsa AAAAB3NzaC1yc2E\n"),
    )
    .expect("write");
    fails(
        &provhost(
            d,
            &["add", "user", "bob", "--ssh-key", "cut.pub", "--url", url],
        ),
        2,
        &["--ssh-key cut.pub line 3", "does not decode"],
    );
    std::fs::write(d.join("empty.pub"), "# nothing\n").expect("write");
    fails(
        &provhost(
            d,
            &["add", "user", "bob", "--ssh-key", "empty.pub", "--url", url],
        ),
        2,
        &["no public key in it"],
    );
    fails(
        &provhost(
            d,
            &[
                "add",
                "user",
                "bob",
                "--ssh-key",
                "nosuch.pub",
                "--url",
                url,
            ],
        ),
        2,
        &["--ssh-key nosuch.pub: cannot read it"],
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `user` WHERE `unityid` = 'bob'")
            .await,
        0
    );
    let list = ok(&provhost(d, &["user", "list", "--url", url]));
    let ann = list
        .lines()
        .find(|l| l.contains(" ann "))
        .expect("ann listed");
    assert!(ann.trim_end().ends_with("yes"), "{list}");
}
crate::on_both_backends!(users_get_ssh_public_keys);

/// Item 1: `check` says which script no row names and which used row no script serves,
/// with the command that registers it, as warnings (exit 0); registering it clears the
/// warning. A broken script still exits 3.
async fn check_cross_checks_scripts_and_rows(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let dir = project_dir();
    let d = dir.path();
    let url = t.url.as_str();
    let out = ok(&provhost(d, &["check", "--url", url]));
    assert!(
        out.contains("warning") && out.contains("scripts/provisioning/netns.rhai (provisioning/netns) is named by no provisioning row in the database; register it with `provhost add provisioning netns`"),
        "{out}"
    );
    // VCL's seeded row for Ubuntu exists: the hint reuses it.
    assert!(
        out.contains("`provhost add os ubuntu --type linux --module-name os_linux_ubuntu`"),
        "{out}"
    );
    // A used row with no script: a computer on VCL's vbox provisioning.
    ok(&provhost(
        d,
        &[
            "add",
            "computer",
            "v1",
            "--ip",
            "192.0.2.41",
            "--provisioning",
            "vbox",
            "--no-script-check",
            "--url",
            url,
        ],
    ));
    let out = ok(&provhost(d, &["check", "--url", url]));
    assert!(
        out.contains("warning provisioning vbox (module 24 \"provisioning_vbox\"")
            && out.contains("is used but no script serves it: scripts/provisioning/vbox.rhai"),
        "{out}"
    );
    // Unused rows without a script are one note, not a warning each.
    assert!(out.contains("provisioning xcat"), "{out}");
    assert!(!out.contains("warning provisioning xcat"), "{out}");

    ok(&provhost(
        d,
        &["add", "provisioning", "netns", "--url", url],
    ));
    let out = ok(&provhost(d, &["check", "--url", url]));
    assert!(!out.contains("provisioning/netns) is named by no"), "{out}");

    std::fs::write(
        d.join("scripts/os/broken.rhai"),
        "const MODULE = #{ kind: \"os\", name: \"broken\", version: \"1\" };\nfn x( {",
    )
    .expect("write");
    let o = provhost(d, &["check", "--url", url]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
}
crate::on_both_backends!(check_cross_checks_scripts_and_rows);

/// Without a database `check` still checks the scripts and says it skipped the
/// cross-check (exit 0).
#[test]
fn check_without_a_database_skips_the_cross_check() {
    let dir = project_dir();
    let o = provhost(dir.path(), &["check"]);
    let out = ok(&o);
    assert!(
        out.contains("note   skipped the cross-check with the database's provisioning and OS rows: database file data/provhost.db does not exist"),
        "{out}"
    );
    assert!(out.contains("0 error(s)"), "{out}");
    let o = provhost(
        dir.path(),
        &["check", "--url", "mysql://root@127.0.0.1:1/nosuch"],
    );
    assert!(ok(&o).contains("skipped the cross-check"), "{}", stdout(&o));
}

/// Item 1: the load-state names are listed, and an unknown name's error says where.
#[test]
fn load_state_names_are_listed_and_errors_point_to_the_list() {
    let dir = project_dir();
    let d = dir.path();
    let out = ok(&provhost(d, &["loadstates"]));
    assert_eq!(out.lines().count(), provhost::vcl::LOAD_STATES.len());
    assert!(
        out.lines()
            .any(|l| l.starts_with("machinebooted ") && l.ends_with("machine booting")),
        "{out}"
    );
    std::fs::write(
        d.join("scripts/provisioning/t.rhai"),
        common::scripts::provisioning(
            "t",
            "1",
            r#"fn bad(ctx) { ctx.loadlog("machineBooted", "x") }"#,
        ),
    )
    .expect("write");
    fails(
        &provhost(d, &["call", "provisioning/t", "bad"]),
        1,
        &[
            "unknown load-state name \"machineBooted\"",
            "`provhost loadstates`",
        ],
    );
    let api = std::fs::read_to_string(root().join("docs/script-api.md")).expect("api");
    assert!(
        api.contains("## Load-state names")
            && api.contains("| `machinebooted` | machine booting |")
    );
}

/// Item 3: `call … load` then `call … node_status` agree: computer variables persist
/// between calls (per computer in the data folder, or `--state FILE`), the fixture sets
/// the starting values, `--reset-state` starts from them again, `--no-state` keeps
/// nothing; notes persist too.
#[test]
fn call_keeps_computer_variables_and_notes_between_runs() {
    let dir = project_dir();
    let d = dir.path();
    std::fs::write(
        d.join("fx.toml"),
        "computer_id = 7\nimagerevision_id = 3\nimage_name = \"x\"\n[computer_vars]\nsim_power = \"off\"\n[notes]\nseen = 1\n",
    )
    .expect("fixture");
    std::fs::write(
        d.join("scripts/provisioning/t.rhai"),
        common::scripts::provisioning(
            "t",
            "1",
            r#"fn count(ctx) { let n = ctx.note("seen") + 1; ctx.note("seen", n); n }"#,
        ),
    )
    .expect("write");
    let call = |extra: &[&str]| {
        let mut args = vec!["call", "provisioning/sim"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--ctx", "fx.toml"]);
        ok(&provhost(d, &args)).trim().to_string()
    };
    assert_eq!(call(&["node_status"]), "\"reload\"");
    assert_eq!(call(&["load"]), "true");
    assert_eq!(
        call(&["node_status"]),
        "\"ready\"",
        "load then node_status agree"
    );
    assert_eq!(call(&["power_status"]), "\"on\"");
    let state = d.join("data/call-state/computer-7.json");
    let text = std::fs::read_to_string(&state).expect("state file");
    assert!(text.contains("\"sim_power\": \"on\""), "{text}");
    // Starting afresh takes the fixture's values again.
    assert_eq!(call(&["power_status", "--reset-state"]), "\"off\"");
    assert_eq!(call(&["node_status"]), "\"reload\"");
    // An explicit state file, and none at all.
    assert_eq!(call(&["load", "--state", "s.json"]), "true");
    assert_eq!(call(&["node_status", "--state", "s.json"]), "\"ready\"");
    assert_eq!(
        call(&["node_status"]),
        "\"reload\"",
        "the default file is another computer state"
    );
    assert_eq!(call(&["load", "--no-state"]), "true");
    assert_eq!(call(&["node_status", "--no-state"]), "\"reload\"");
    // Notes: the fixture's, then what the last call left.
    let count = || {
        ok(&provhost(
            d,
            &[
                "call",
                "provisioning/t",
                "count",
                "--ctx",
                "fx.toml",
                "--state",
                "n.json",
            ],
        ))
        .trim()
        .to_string()
    };
    assert_eq!(count(), "2");
    assert_eq!(count(), "3");
    // A secret a routine keeps in a note or a variable is not written to the state file.
    std::fs::write(
        d.join("scripts/provisioning/p.rhai"),
        common::scripts::provisioning(
            "p",
            "1",
            r#"fn keep(ctx) { let pw = secret::password(24); ctx.note("pw", pw); ctx.set_computer_var("pw", pw); true }"#,
        ),
    )
    .expect("write");
    ok(&provhost(
        d,
        &[
            "call",
            "provisioning/p",
            "keep",
            "--ctx",
            "fx.toml",
            "--state",
            "pw.json",
        ],
    ));
    let kept = std::fs::read_to_string(d.join("pw.json")).expect("pw.json");
    assert!(
        kept.contains("\"pw\": \"********\""),
        "the password is redacted: {kept}"
    );
    // A state file of another computer is refused, naming both.
    std::fs::write(d.join("fx2.toml"), "computer_id = 8\n").expect("fixture");
    fails(
        &provhost(
            d,
            &[
                "call",
                "provisioning/sim",
                "node_status",
                "--ctx",
                "fx2.toml",
                "--state",
                "s.json",
            ],
        ),
        2,
        &[
            "holds computer 7, not the fixture's computer 8",
            "--reset-state",
        ],
    );
    // The shipped fixture still loads.
    ok(&provhost(
        d,
        &[
            "call",
            "provisioning/sim",
            "node_status",
            "--ctx",
            &root().join("examples/ctx.toml").display().to_string(),
            "--no-state",
        ],
    ));
}

/// Item 4: scripts read the configuration through `config::` (absolute paths, the node
/// name, the database kind, never its URL or password), and `local_host().run` runs in
/// provhost's working directory.
#[test]
fn scripts_read_config_and_local_commands_run_in_the_working_directory() {
    let dir = project_dir();
    let d = dir.path();
    std::fs::write(
        d.join("provhost.toml"),
        "[daemon]\nnode = \"mn7.test\"\n[database]\nurl = \"mysql://root:s3cretpw@127.0.0.1/vcl\"\n[ssh]\nidentity = \"keys/id\"\nport = 2022\n",
    )
    .expect("config");
    std::fs::write(
        d.join("scripts/provisioning/t.rhai"),
        common::scripts::provisioning(
            "t",
            "1",
            r#"fn show(ctx) {
    #{ data: config::data_dir, id: config::ssh_identity, port: config::ssh_port, node: config::node_name,
       db: config::db_kind, pwd: local_host().run("pwd").stdout }
}"#,
        ),
    )
    .expect("write");
    std::fs::write(
        d.join("scripts/provisioning/t2.rhai"),
        common::scripts::provisioning(
            "t2",
            "1",
            r#"fn set(ctx) { config::data_dir = "/tmp"; true }"#,
        ),
    )
    .expect("write");
    let out = ok(&provhost(d, &["call", "provisioning/t", "show"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let base = d.canonicalize().expect("canon");
    let base = base.display();
    assert_eq!(v["data"], format!("{base}/data"), "{out}");
    assert_eq!(v["id"], format!("{base}/keys/id"), "{out}");
    assert_eq!(v["port"], 2022);
    assert_eq!(v["node"], "mn7.test");
    assert_eq!(v["db"], "mysql");
    assert_eq!(
        v["pwd"].as_str().map(str::trim),
        Some(base.to_string().as_str())
    );
    assert!(!out.contains("s3cretpw"), "{out}");
    let o = provhost(d, &["call", "provisioning/t2", "set"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "config:: is read-only: {}",
        stdout(&o)
    );
}

/// Item 4: the README's `[ssh]` block lists every `[ssh]` key the code accepts, and only
/// those.
#[test]
fn the_readme_ssh_block_lists_every_ssh_key() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let start = readme
        .find("\n[ssh]")
        .expect("an [ssh] block in the README");
    // The lines after the `[ssh]` header, up to the blank line that ends the section.
    let block: String = readme[start + 1..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect();
    let listed: toml::Table = toml::from_str(&block).expect("the block is TOML");
    // Every listed key is one the code takes (deny_unknown_fields) …
    let _: provhost::prim::ssh::SshConfig =
        toml::from_str(&block).unwrap_or_else(|e| panic!("README [ssh] key the code refuses: {e}"));
    // … and every key the code takes is listed.
    let all = toml::Table::try_from(provhost::prim::ssh::SshConfig::default()).expect("ser");
    for key in all.keys() {
        assert!(listed.contains_key(key), "README [ssh] lacks {key}");
    }
}

/// Item 4: the shipped example that writes on the management node (`local_host()`, paths
/// from `config::data_dir`) appends its audit lines there.
#[test]
fn the_audit_log_example_writes_on_the_management_node() {
    let dir = project_dir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("scripts/site")).expect("mkdir");
    std::fs::copy(
        root().join("examples/site/audit_log.rhai"),
        d.join("scripts/site/audit_log.rhai"),
    )
    .expect("copy");
    std::fs::create_dir_all(d.join("data")).expect("data");
    std::fs::write(
        d.join("fx.toml"),
        "reservation_id = 12\ncomputer_node_name = \"lab1\"\nuser_login_id = \"ann\"\nimage_name = \"deb12\"\nremote_ip = \"192.0.2.7\"\n",
    )
    .expect("fixture");
    for routine in ["post_load", "post_reserve", "sanitize"] {
        assert_eq!(
            ok(&provhost(
                d,
                &["call", "site/audit_log", routine, "--ctx", "fx.toml"]
            ))
            .trim(),
            "true"
        );
    }
    let log = std::fs::read_to_string(d.join("data/audit.log")).expect("audit.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains(" reservation 12 user ann computer lab1 image deb12: loaded (node "),
        "{log}"
    );
    assert!(
        lines[1].contains(": handed over (user at 192.0.2.7)"),
        "{log}"
    );
    assert!(
        lines[2].contains(": user removed, computer cleaned"),
        "{log}"
    );
    assert!(
        lines[2].starts_with("20") && lines[2].as_bytes()[10] == b'T',
        "{log}"
    );
}
