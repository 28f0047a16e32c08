//! State flows against a real machine: a lab host (a network namespace with its own
//! sshd) is the computer, and the shipped `os/linux.rhai` does the remote steps over SSH:
//! the reservation user is really created and removed, and the user's address really
//! enters and leaves the nftables set of the host's namespace. The lab hosts are isolated
//! (their own /etc, /home, host name: `LabHost::start_isolated`), so root's password and
//! accounts change there, never on this machine.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::flows::Rig;
use common::netns::LabHost;
use provhost::db::Backend;
use provhost::prim::remote::RemotePrims;

const T: Duration = Duration::from_secs(90);

/// One test at a time (they share the test user names).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn user_exists(lab: &LabHost, login: &str) -> bool {
    lab.sh(&format!("id -u {login}")).status.success()
}

fn connect_set(lab: &LabHost) -> String {
    String::from_utf8_lossy(&lab.sh("nft list set inet provhost connect").stdout).into_owned()
}

/// A rig whose one computer is `lab` (type lab), reached over SSH, with the shipped
/// os/linux.rhai.
async fn lab_rig(backend: Backend, lab: &LabHost) -> Option<Rig> {
    let ssh = RemotePrims::new(lab.sshd().config());
    let linux = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/os/linux.rhai"
    ))
    .expect("linux.rhai");
    let rig = Rig::with_families(backend, 1, &linux, 0.1, &[Arc::new(ssh)]).await?;
    rig.t
        .exec(&format!(
            "UPDATE `computer` SET `IPaddress` = '{0}', `privateIPaddress` = '{0}', `type` = 'lab'",
            lab.addr
        ))
        .await;
    Some(rig)
}

async fn lab_host_user_and_firewall_follow_the_reservation(backend: Backend) {
    if !common::root_or_skip(
        "lab_host_user_and_firewall_follow_the_reservation",
        "network namespaces, useradd",
    ) || !common::tool_or_skip("lab_host_user_and_firewall_follow_the_reservation", "nft")
        || !common::tool_or_skip(
            "lab_host_user_and_firewall_follow_the_reservation",
            "useradd",
        )
    {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let login = format!(
        "pht{}{}",
        std::process::id() % 100_000,
        if backend == Backend::Sqlite { "s" } else { "m" }
    );
    // A uid no account of this machine has: users' processes are killed by uid, and lab
    // hosts share this machine's process table.
    let uid = 62_000 + i64::from(std::process::id() % 1000) * 2 + i64::from(backend == Backend::Sqlite);
    provhost::db::inventory::add_user(&rig.t.db, &login, Some(uid))
        .await
        .expect("user");

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request_for("lab1.test", "debian12", &login).await;
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `checkuser` = 0 WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    assert!(
        !user_exists(&lab, &login),
        "no user before the acknowledgement (Linux adds users at Connect)"
    );
    assert!(
        !connect_set(&lab).contains("192.0.2.55"),
        "no access before Connect"
    );

    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.55")
        .await
        .expect("ack");
    rig.wait_log(c.reservation_id, "connected", T).await;
    assert!(user_exists(&lab, &login), "user {login} created on the lab host");
    assert!(
        connect_set(&lab).contains("192.0.2.55"),
        "firewall opened for the user: {}",
        connect_set(&lab)
    );

    provhost::db::flow::end_now(&rig.t.db, c.request_id)
        .await
        .expect("end");
    rig.wait_state(c.request_id, "complete", T).await;
    assert!(
        !user_exists(&lab, &login),
        "user {login} removed from the lab host"
    );
    assert!(
        !connect_set(&lab).contains("192.0.2.55"),
        "firewall closed again: {}",
        connect_set(&lab)
    );
    let log = rig.log(c.reservation_id).await;
    assert!(log.iter().all(|(n, _)| n != "failed"), "{log:?}");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn shell_metacharacters_in_a_user_name_fail_the_reservation_safely(backend: Backend) {
    let test = "shell_metacharacters_in_a_user_name_fail_the_reservation_safely";
    if !common::root_or_skip(test, "network namespaces") || !common::tool_or_skip(test, "nft") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let marker = format!(
        "/tmp/provhost-pwned-{}-{}",
        std::process::id(),
        if backend == Backend::Sqlite { "s" } else { "m" }
    );
    let evil = format!("x$(touch {marker});id");
    provhost::db::inventory::add_user(&rig.t.db, &evil, None)
        .await
        .expect("user");

    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request_for("lab1.test", "debian12", &evil).await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.56")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "failed"
                && t.contains("os/linux::add_user: threw refusing user name")),
        "{log:?}"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the user name was executed as a command"
    );
    assert_eq!(rig.computer_state(c.computer_id).await, "failed");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_remote_ip_that_is_not_an_address_never_reaches_nft(backend: Backend) {
    let test = "a_remote_ip_that_is_not_an_address_never_reaches_nft";
    if !common::root_or_skip(test, "network namespaces") || !common::tool_or_skip(test, "nft") {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = LabHost::start_isolated(22);
    let Some(rig) = lab_rig(backend, &lab).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    // (VCL's remoteIP is varchar(15): the injection has to be short.)
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "1.2.3.4};flush")
        .await
        .expect("ack");
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "failed" && t.contains("is not an IPv4 address")),
        "{log:?}"
    );
    let rules = Command::new("ip")
        .args([
            "netns", "exec", &lab.ns, "nft", "list", "table", "inet", "provhost",
        ])
        .output()
        .expect("nft");
    assert!(
        rules.status.success()
            && String::from_utf8_lossy(&rules.stdout).contains("tcp dport 22 drop"),
        "the firewall is intact"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

on_both_backends!(
    a_remote_ip_that_is_not_an_address_never_reaches_nft,
    lab_host_user_and_firewall_follow_the_reservation,
    shell_metacharacters_in_a_user_name_fail_the_reservation_safely,
);
