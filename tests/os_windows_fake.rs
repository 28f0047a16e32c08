//! os/windows against a NAMED FAKE: no Windows machine runs here, so a real sshd whose
//! `ForceCommand` is tests/fixtures/fake_windows.py plays one. The fake checks every command
//! against the syntax Windows accepts for what os/windows sends (cmd.exe, `net`, `netsh
//! advfirewall`, PowerShell), answers as Windows does, keeps the accounts, groups, firewall
//! rules and files in a state file, and logs each command line with its stdin. Tests are
//! named `fake_windows_*`; passing them says os/windows speaks the fake's Windows, not that
//! it works on a real one (docs/os-windows.md).

mod common;

use std::sync::Arc;

use common::namedfake::NamedFake;
use provhost::host::{Ctx, Kind, MemoryBackend, Primitives, ReservationData};
use provhost::prim::remote::RemotePrims;

struct FakeWindows {
    fake: NamedFake,
}

impl std::ops::Deref for FakeWindows {
    type Target = NamedFake;
    fn deref(&self) -> &NamedFake {
        &self.fake
    }
}

impl FakeWindows {
    fn start() -> FakeWindows {
        let fake = NamedFake::start(
            "fake_windows.py",
            "",
            |_| {},
            (Kind::Os, "windows"),
            |sshd, _| {
                let families: Vec<Arc<dyn Primitives>> =
                    vec![Arc::new(RemotePrims::new(sshd.config()))];
                families
            },
        );
        FakeWindows { fake }
    }

    fn ctx(&self, f: impl FnOnce(&mut ReservationData)) -> Ctx {
        let mut d = ReservationData {
            reservation_id: 1,
            computer_node_name: "win1".into(),
            computer_private_ip: "127.0.0.1".into(),
            computer_ssh_port: i64::from(self.sshd.port),
            computer_type: "virtualmachine".into(),
            imagerevision_id: 7,
            image_os_type: "windows".into(),
            ..ReservationData::default()
        };
        f(&mut d);
        Ctx::new(d, Arc::new(MemoryBackend::default()))
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state.path().join("state.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).expect("state.json")
    }

    fn set_state(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut s = self.state();
        f(&mut s);
        std::fs::write(self.state.path().join("state.json"), s.to_string()).expect("write state");
    }

    /// Every command the fake received: (command line, stdin, exit code, recognized).
    fn commands(&self) -> Vec<(String, String, i64, bool)> {
        std::fs::read_to_string(self.state.path().join("commands.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("log line");
                (
                    v["cmd"].as_str().unwrap_or("").to_string(),
                    v["stdin"].as_str().unwrap_or("").to_string(),
                    v["code"].as_i64().unwrap_or(-1),
                    v["recognized"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    /// Every command was one Windows knows, and `secret` was on no command line.
    fn assert_clean(&self, secret: Option<&str>) {
        let cmds = self.commands();
        assert!(!cmds.is_empty(), "the fake received no command");
        for (cmd, _, _, recognized) in &cmds {
            assert!(recognized, "Windows would not recognize: {cmd}");
            if let Some(s) = secret {
                assert!(!cmd.contains(s), "a secret on a command line: {cmd}");
            }
        }
    }
}

fn user(login: &str, password: &str, keys: &str, root: bool) -> rhai::Dynamic {
    let mut m = rhai::Map::new();
    m.insert("login".into(), login.into());
    m.insert("uid".into(), 0_i64.into());
    m.insert("password".into(), password.into());
    m.insert("ssh_keys".into(), keys.into());
    m.insert("root".into(), root.into());
    m.into()
}

#[test]
fn fake_windows_post_load_sets_the_firewall_and_the_marker_node_status_reads_it() {
    let w = FakeWindows::start();
    // A lab computer keeps its Administrator password: no secret involved.
    let ctx = w.ctx(|d| d.computer_type = "lab".into());
    assert_eq!(
        w.call(&ctx, "node_status", vec![])
            .expect("status")
            .to_string(),
        "post_load"
    );
    assert!(w
        .call(&ctx, "post_load", vec![])
        .expect("post_load")
        .as_bool()
        .expect("bool"));
    let s = w.state();
    let rule = &s["rules"]["provhost-mn-ssh"];
    assert_eq!(rule["remoteip"], "127.0.0.1", "{s}");
    assert_eq!(
        rule["localport"],
        w.sshd.port.to_string(),
        "the computer's SSH port, not 22"
    );
    assert_eq!(rule["action"], "allow");
    assert!(s["disabled_rules"]
        .as_array()
        .expect("list")
        .iter()
        .any(|r| r == "OpenSSH-Server-In-TCP"));
    assert_eq!(s["files"]["c:\\programdata\\provhost\\post_load"], "7\r\n");
    assert!(
        s["users"]["administrator"]["password"].is_null(),
        "lab: unchanged"
    );
    assert_eq!(
        w.call(&ctx, "node_status", vec![])
            .expect("status")
            .to_string(),
        "ready"
    );
    // Another image revision: post_load has not run for it.
    let other = w.ctx(|d| d.imagerevision_id = 8);
    assert_eq!(
        w.call(&other, "node_status", vec![])
            .expect("status")
            .to_string(),
        "post_load"
    );
    assert!(w
        .call(&ctx, "is_ready", vec![])
        .expect("ready")
        .as_bool()
        .expect("bool"));
    w.assert_clean(None);
}

#[test]
fn fake_windows_post_load_randomizes_administrator_without_a_command_line_password() {
    let w = FakeWindows::start();
    let ctx = w.ctx(|_| {});
    let result = w.call(&ctx, "post_load", vec![]);
    assert_eq!(result.expect("post_load").as_bool(), Ok(true));
    let pw = w.state()["users"]["administrator"]["password"]
        .as_str()
        .expect("Administrator's password was set")
        .to_string();
    assert!(pw.len() >= 16, "{pw}");
    w.assert_clean(Some(&pw));
    assert!(
        w.commands()
            .iter()
            .any(|(_, stdin, _, _)| stdin.contains(&pw)),
        "given on stdin"
    );
    assert_eq!(
        w.state()["files"]["c:\\programdata\\provhost\\post_load"],
        "7\r\n"
    );
}

#[test]
fn fake_windows_add_user_and_delete_user() {
    let w = FakeWindows::start();
    let ctx = w.ctx(|_| {});
    let pw = "Vq7xKp2mWz9rTb4n";
    let keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAnnKey ann@laptop";
    // Hostile or reserved names are refused before any command runs.
    for bad in [
        "ann & calc",
        "ann\"x",
        "Administrator",
        "1ann",
        "a-name-longer-than-20c",
    ] {
        let err = w
            .call(&ctx, "add_user", vec![user(bad, pw, "", false)])
            .expect_err(bad);
        assert!(err.to_string().contains("refusing user name"), "{err}");
    }
    assert!(w.commands().is_empty(), "no command for a refused name");
    // A local account provhost did not make is not taken over.
    w.set_state(|s| {
        s["users"] = serde_json::json!({ "administrator": { "name": "Administrator", "password": null },
                                          "bob": { "name": "bob", "password": "x" } });
    });
    let err = w
        .call(&ctx, "add_user", vec![user("bob", pw, "", false)])
        .expect_err("not ours");
    assert!(
        err.to_string().contains("was not created by provhost"),
        "{err}"
    );

    let added = w.call(&ctx, "add_user", vec![user("ann", pw, keys, true)]);
    assert_eq!(added.expect("add_user").as_bool(), Ok(true));
    let s = w.state();
    assert_eq!(s["users"]["ann"]["password"], pw);
    assert!(s["groups"]["Remote Desktop Users"]
        .as_array()
        .expect("g")
        .iter()
        .any(|m| m == "ann"));
    assert!(s["groups"]["Administrators"]
        .as_array()
        .expect("g")
        .iter()
        .any(|m| m == "ann"));
    assert_eq!(
        s["files"]["c:\\users\\ann\\.ssh\\authorized_keys"],
        format!("{keys}\n")
    );
    assert_eq!(s["files"]["c:\\programdata\\provhost\\users"], "ann\r\n");
    // Again (a retried flow): ours, groups already joined (error 1378) is fine.
    assert_eq!(
        w.call(&ctx, "add_user", vec![user("ann", pw, "", true)])
            .expect("again")
            .as_bool(),
        Ok(true)
    );
    w.assert_clean(Some(pw));
    assert!(w
        .call(&ctx, "delete_user", vec![user("ann", "", "", false)])
        .expect("delete")
        .as_bool()
        .expect("bool"));
    let s = w.state();
    assert!(s["users"].get("ann").is_none(), "{s}");
    assert!(!s["groups"]["Remote Desktop Users"]
        .as_array()
        .expect("g")
        .iter()
        .any(|m| m == "ann"));
    assert_eq!(s["files"]["c:\\programdata\\provhost\\users"], "");
    // bob is not ours: delete_user leaves him alone.
    assert_eq!(
        w.call(&ctx, "delete_user", vec![user("bob", "", "", false)])
            .expect("left alone")
            .as_bool(),
        Ok(true)
    );
    assert!(w.state()["users"].get("bob").is_some());
    w.assert_clean(Some(pw));
}

#[test]
fn fake_windows_set_password_gives_the_password_on_stdin_only() {
    let w = FakeWindows::start();
    let ctx = w.ctx(|_| {});
    w.set_state(|s| {
        s["users"] = serde_json::json!({ "ann": { "name": "ann", "password": "Old-Pass-1" } });
    });
    let pw = "N3w-Pa55word-for-ann";
    let result = w.call(&ctx, "set_password", vec!["ann".into(), pw.into()]);
    assert_eq!(result.expect("set_password").as_bool(), Ok(true));
    assert_eq!(w.state()["users"]["ann"]["password"], pw);
    let cmds = w.commands();
    assert!(cmds
        .iter()
        .any(|(c, stdin, _, _)| c.contains("Set-LocalUser -Name 'ann'")
            && stdin == &format!("{pw}\n")));
    // A password Windows' complexity rule refuses is an error naming the rule.
    let err = w
        .call(
            &ctx,
            "set_password",
            vec!["ann".into(), "alllowercase".into()],
        )
        .expect_err("weak");
    assert!(err.to_string().contains("complexity"), "{err}");
    let err = w
        .call(
            &ctx,
            "set_password",
            vec!["root; net user x".into(), pw.into()],
        )
        .expect_err("bad name");
    assert!(err.to_string().contains("refusing user name"), "{err}");
    if !w.commands().is_empty() {
        w.assert_clean(Some(pw));
    }
}

#[test]
fn fake_windows_grant_and_revoke_access_use_the_users_address_and_the_computers_port() {
    let w = FakeWindows::start();
    let ctx = w.ctx(|d| d.remote_ip = "192.0.2.9".into());
    assert!(w
        .call(&ctx, "grant_access", vec![])
        .expect("grant")
        .as_bool()
        .expect("bool"));
    let s = w.state();
    assert_eq!(s["rules"]["provhost-connect-rdp"]["remoteip"], "192.0.2.9");
    assert_eq!(s["rules"]["provhost-connect-rdp"]["localport"], "3389");
    assert_eq!(s["rules"]["provhost-connect-ssh"]["remoteip"], "192.0.2.9");
    assert_eq!(
        s["rules"]["provhost-connect-ssh"]["localport"],
        w.sshd.port.to_string()
    );
    // Granting again replaces the rules (no duplicates).
    assert_eq!(
        w.call(&ctx, "grant_access", vec![])
            .expect("again")
            .as_bool(),
        Ok(true)
    );
    assert!(w
        .call(&ctx, "revoke_access", vec![])
        .expect("revoke")
        .as_bool()
        .expect("bool"));
    let s = w.state();
    assert!(
        s["rules"].get("provhost-connect-rdp").is_none()
            && s["rules"].get("provhost-connect-ssh").is_none(),
        "{s}"
    );
    // Nothing left to close: fine.
    assert_eq!(
        w.call(&ctx, "revoke_access", vec![])
            .expect("revoke twice")
            .as_bool(),
        Ok(true)
    );
    for bad in ["192.0.2.9 remoteip=any", "300.1.1.1", "::1", ""] {
        let c = w.ctx(|d| d.remote_ip = bad.into());
        assert!(
            w.call(&c, "grant_access", vec![]).is_err(),
            "{bad:?} refused"
        );
    }
    assert!(w.state()["rules"].get("provhost-connect-rdp").is_none());
    w.assert_clean(None);
}

#[test]
fn fake_windows_is_user_connected_sees_the_user_and_not_provhosts_own_session() {
    let w = FakeWindows::start();
    let user_ctx = w.ctx(|d| d.remote_ip = "192.0.2.9".into());
    assert!(!w
        .call(&user_ctx, "is_user_connected", vec![])
        .expect("call")
        .as_bool()
        .expect("bool"));
    w.set_state(|s| {
        s["connections"] =
            serde_json::json!(["TCP    10.0.0.5:3389         192.0.2.9:50123        ESTABLISHED"]);
    });
    assert!(w
        .call(&user_ctx, "is_user_connected", vec![])
        .expect("call")
        .as_bool()
        .expect("bool"));
    // The user's address is the management node's (NAT, a lab): provhost's own SSH
    // session, which netstat lists, does not count…
    let nat = w.ctx(|d| d.remote_ip = "127.0.0.1".into());
    assert!(!w
        .call(&nat, "is_user_connected", vec![])
        .expect("call")
        .as_bool()
        .expect("bool"));
    // …the user's own session from that address does.
    w.set_state(|s| {
        s["connections"] = serde_json::json!([
            "TCP    10.0.0.5:3389         127.0.0.1:50999        ESTABLISHED",
            "TCP    10.0.0.5:445          127.0.0.1:50998        ESTABLISHED"
        ]);
    });
    assert!(w
        .call(&nat, "is_user_connected", vec![])
        .expect("call")
        .as_bool()
        .expect("bool"));
    w.assert_clean(None);
}

#[test]
fn fake_windows_sanitize_and_pre_capture_remove_what_provhost_made() {
    let w = FakeWindows::start();
    let ctx = w.ctx(|d| d.remote_ip = "192.0.2.9".into());
    w.set_state(|s| {
        s["users"] = serde_json::json!({ "ann": { "name": "ann", "password": "p" }, "carl": { "name": "carl", "password": "p" },
                                         "localadmin": { "name": "localadmin", "password": "p" } });
        s["files"] = serde_json::json!({ "c:\\programdata\\provhost\\users": "ann\r\ncarl\r\n",
                                         "c:\\programdata\\provhost\\post_load": "7\r\n" });
    });
    assert_eq!(
        w.call(&ctx, "grant_access", vec![])
            .expect("grant")
            .as_bool(),
        Ok(true)
    );
    assert!(w
        .call(&ctx, "sanitize", vec![])
        .expect("sanitize")
        .as_bool()
        .expect("bool"));
    let s = w.state();
    assert!(
        s["users"].get("ann").is_none() && s["users"].get("carl").is_none(),
        "{s}"
    );
    assert!(
        s["users"].get("localadmin").is_some(),
        "an account provhost did not make stays"
    );
    assert!(s["rules"].get("provhost-connect-rdp").is_none());
    assert!(w
        .call(&ctx, "pre_capture", vec![])
        .expect("pre_capture")
        .as_bool()
        .expect("bool"));
    let files = w.state()["files"].clone();
    assert!(
        files
            .as_object()
            .expect("files")
            .keys()
            .all(|k| !k.starts_with("c:\\programdata\\provhost\\")),
        "{files}"
    );
    w.assert_clean(None);
}
