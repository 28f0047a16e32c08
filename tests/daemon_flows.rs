//! The daemon's state flows end to end on SQLite and MariaDB with the simulated
//! provisioning module: new → reserved → (acknowledge) → inuse → (end) → timeout →
//! reload → available, with VCL's load-log names; failures (unknown image, broken
//! script, a throw, a hang) fail the reservation with a load-log entry saying why while
//! the daemon goes on; a clean stop hands running requests back.

mod common;

use std::time::Duration;

use common::flows::{Rig, RECORDING_OS};
use provhost::db::Backend;

const T: Duration = Duration::from_secs(60);

async fn full_lifecycle(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.3).await else {
        return;
    };
    // A site module with reclaim hooks: the reclaim timeline says they ran.
    rig.scripts.write(
        "site/tidy.rhai",
        r#"const MODULE = #{ kind: "site", name: "tidy", version: "1" };
fn sanitize(ctx) { true }
fn post_reservation(ctx) { true }"#,
    );
    let errors = rig.host.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let computer = rig.world.computers[0];
    let c = rig.request("lab1.test", "debian12").await;

    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    // The web front end records the user's address when they click Connect.
    rig.connect_from(c.reservation_id, "192.0.2.7").await;
    rig.wait_log(c.reservation_id, "connected", T).await;
    let t = std::time::Instant::now();
    while rig.computer_state(computer).await != "inuse" {
        assert!(t.elapsed() < T, "computer never went inuse");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reservation ends.
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `end` = '2000-01-01 00:00:00' WHERE `id` = {}",
            c.request_id
        ))
        .await;
    rig.wait_state(c.request_id, "complete", T).await;

    let names = rig.names(c.reservation_id).await;
    let expected_order = [
        "statuscheck",
        "loadimageblade",
        "doesimageexists",
        "startload",
        "transfervm",
        "vmsetupconfig",
        "startvm",
        "machinebooted",
        "loadimagecomplete",
        "nodeready",
        "exited",
        "reserved",
        "acknowledgetimeout",
        "noinitialconnection",
        "initialconnecttimeout",
        "addinguser",
        "postreserve",
        "connected",
        "exited",
        "timeout",
        "exited",
        "timeout",
        "info",
        "exited",
    ];
    let mut it = names.iter();
    for want in expected_order {
        assert!(
            it.any(|n| n == want),
            "load-log lacks {want} in order: {names:?}"
        );
    }
    // Every reclaim step leaves a load-log entry (VCL's `info`, "reclaim: …"), in order, so
    // the timeline shows the user was removed.
    let log = rig.log(c.reservation_id).await;
    let reclaim_start = log
        .iter()
        .rposition(|(n, _)| n == "timeout")
        .expect("reclaim's timeout entry");
    let reclaim: Vec<&str> = log[reclaim_start..]
        .iter()
        .filter(|(n, i)| n == "info" && i.starts_with("reclaim: "))
        .map(|(_, i)| i.as_str())
        .collect();
    let want = [
        "reclaim: user access to lab1 revoked (was open to 192.0.2.7)",
        "reclaim: user ann deleted from lab1",
        "reclaim: lab1 sanitized",
        "reclaim: site hooks sanitize ran (site/tidy)",
        "reclaim: site hooks post_reservation ran (site/tidy)",
    ];
    assert_eq!(reclaim.len(), want.len(), "{log:?}");
    for (got, want) in reclaim.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}…: {log:?}");
    }
    let calls = rig
        .computer_var(computer, "os_calls")
        .await
        .unwrap_or_default();
    assert_eq!(
        calls,
        "post_load,grant_access:192.0.2.7,add_user:ann,revoke_access,delete_user:ann,sanitize"
    );

    // VCL's reclaim inserts a reload request for the computer; the daemon runs it.
    let reload = rig
        .t
        .scalar(&format!(
            "SELECT MAX(`requestid`) FROM `reservation` WHERE `computerid` = {computer}"
        ))
        .await;
    assert_ne!(reload, c.request_id);
    rig.wait_state(reload, "complete", T).await;
    assert_eq!(rig.computer_state(computer).await, "available");
    let reload_res = rig
        .t
        .scalar(&format!(
            "SELECT `id` FROM `reservation` WHERE `requestid` = {reload}"
        ))
        .await;
    let names = rig.names(reload_res).await;
    assert!(
        names.contains(&"loadimagecomplete".to_string())
            && names.contains(&"nodeready".to_string()),
        "{names:?}"
    );
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `userid` FROM `request` WHERE `id` = {reload}"
            ))
            .await,
        2,
        "reloads belong to vclreload"
    );

    let _ = stop.send(());
    let summary = daemon.await.expect("daemon");
    assert!(summary.processed >= 5, "{summary:?}");
}

async fn unknown_image_fails_with_a_reason_and_the_daemon_goes_on(backend: Backend) {
    let Some(rig) = Rig::new(backend, 2, RECORDING_OS, 0.1).await else {
        return;
    };
    provhost::db::inventory::add_image(&rig.t.db, "missing-win11", "Windows 11", "linux")
        .await
        .expect("image");
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let bad = rig.request("lab1.test", "missing-win11").await;
    let good = rig.request("lab2.test", "debian12").await;
    rig.wait_state(bad.request_id, "failed", T).await;
    rig.wait_log(good.reservation_id, "nodeready", T).await;
    let log = rig.log(bad.reservation_id).await;
    let failed = log
        .iter()
        .find(|(n, _)| n == "failed")
        .expect("failed entry");
    assert!(
        failed
            .1
            .contains("image missing-win11 does not exist in this node's image library"),
        "{log:?}"
    );
    assert_eq!(rig.computer_state(bad.computer_id).await, "failed");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn script_errors_fail_the_reservation_with_file_and_line(backend: Backend) {
    let Some(rig) = Rig::new(backend, 3, RECORDING_OS, 0.1).await else {
        return;
    };
    // post_load throws; the error names the file and line.
    let throwing = RECORDING_OS.replace(
        "fn post_load(ctx) { record(ctx, \"post_load\") }",
        "fn post_load(ctx) {\n    throw \"firewall refused\";\n}",
    );
    let path = rig.scripts.write("os/linux.rhai", &throwing);
    rig.host.load_file(&path).expect("reload");
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_state(c.request_id, "failed", T).await;
    let log = rig.log(c.reservation_id).await;
    let failed = log
        .iter()
        .find(|(n, _)| n == "failed")
        .expect("failed entry");
    assert!(
        failed.1.contains(&format!(
            "{}:8: os/linux::post_load: threw firewall refused",
            path.display()
        )),
        "{log:?}"
    );

    // A broken edit keeps the last good version: the next reservation still runs it.
    std::fs::write(&path, "const MODULE = #{ kind: \"os\", name: \"linux\" ").expect("write");
    assert!(rig.host.load_file(&path).is_err());
    let c2 = rig.request("lab2.test", "debian12").await;
    rig.wait_state(c2.request_id, "failed", T).await;
    let log = rig.log(c2.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "failed" && t.contains("threw firewall refused")),
        "{log:?}"
    );

    // A provisioning module that is not loaded at all: the reason says so.
    rig.t
        .exec("UPDATE `computer` SET `provisioningid` = 100 WHERE `hostname` = 'lab3.test'")
        .await;
    let c3 = rig.request("lab3.test", "debian12").await;
    rig.wait_state(c3.request_id, "failed", T).await;
    let log = rig.log(c3.reservation_id).await;
    assert!(
        log.iter().any(|(n, t)| n == "failed"
            && t.contains("provisioning module \"qemu\" of the computer lab3 is not loaded")),
        "{log:?}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn a_hanging_routine_meets_its_deadline(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.1).await else {
        return;
    };
    let hanging = RECORDING_OS.replace(
        "fn post_load(ctx) { record(ctx, \"post_load\") }",
        "fn post_load(ctx) { loop { wait::sleep(1); } }",
    );
    rig.scripts.write("os/linux.rhai", &hanging);
    let mut limits = common::scripts::test_limits();
    limits.call_timeout_secs = 2;
    let host = rig.scripts.host(limits);
    assert!(host.load_all().is_empty());
    let d = provhost::daemon::Daemon::new(rig.t.connect_again().await, host, rig.config(), None)
        .await
        .expect("daemon");
    let c = rig.request("lab1.test", "debian12").await;
    let t = std::time::Instant::now();
    let summary = d.run(std::future::pending(), true).await.expect("run once");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(summary.processed, 1);
    assert_eq!(rig.request_state(c.request_id).await, "failed");
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter().any(|(n, t)| n == "failed"
            && t.contains("post_load: did not finish within its deadline of 2 s")),
        "{log:?}"
    );
}

async fn a_clean_stop_hands_running_requests_back(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 30.0).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    // Wait until the load is under way.
    rig.wait_log(c.reservation_id, "transfervm", T).await;
    let t = std::time::Instant::now();
    let _ = stop.send(());
    daemon.await.expect("daemon");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        rig.request_state(c.request_id).await,
        "new",
        "handed back, not left pending"
    );
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "info" && t.contains("handed back")),
        "{log:?}"
    );
}

async fn an_edit_mid_flow_does_not_change_the_running_load(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 1.0).await else {
        return;
    };
    let _watch = rig.host.watch().expect("watch");
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "transfervm", T).await;
    // Mid-load, the site changes the module: the running load finishes on its own code,
    // the next routine (post_load of the OS module) is unaffected, the edit is live after.
    let edited =
        common::flows::sim_source(1.0).replace("simulated boot complete", "edited boot message");
    rig.scripts.write("provisioning/sim.rhai", &edited);
    rig.wait_log(c.reservation_id, "nodeready", T).await;
    let log = rig.log(c.reservation_id).await;
    assert!(
        log.iter()
            .any(|(n, t)| n == "machinebooted" && t == "simulated boot complete"),
        "{log:?}"
    );
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn image_capture_makes_a_new_revision_and_reloads(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    let (daemon, stop) = rig.spawn(rig.config()).await;
    let c = rig.request("lab1.test", "debian12").await;
    rig.wait_log(c.reservation_id, "acknowledgetimeout", T)
        .await;
    provhost::db::flow::acknowledge(&rig.t.db, c.reservation_id, "192.0.2.8")
        .await
        .expect("ack");
    rig.wait_log(c.reservation_id, "connected", T).await;
    rig.wait_state(c.request_id, "inuse", T).await;
    // The user asks for an image of their computer (the web front end sets state image).
    let image_state = provhost::vcl::state_id("image").expect("id");
    rig.t.exec(&format!("UPDATE `request` SET `stateid` = {image_state}, `laststateid` = 8 WHERE `id` = {} AND `stateid` = 8", c.request_id)).await;
    rig.wait_state(c.request_id, "complete", T).await;
    let revisions = rig
        .t
        .scalar(&format!(
            "SELECT COUNT(*) FROM `imagerevision` WHERE `imageid` = {}",
            c.image_id
        ))
        .await;
    assert_eq!(revisions, 2, "a new revision was created");
    assert_eq!(
        rig.t
            .scalar(&format!(
                "SELECT `size` FROM `image` WHERE `id` = {}",
                c.image_id
            ))
            .await,
        1024
    );
    assert_eq!(
        rig.computer_var(c.computer_id, "sim_captured")
            .await
            .as_deref(),
        Some("debian12-v1")
    );
    let calls = rig
        .computer_var(c.computer_id, "os_calls")
        .await
        .unwrap_or_default();
    assert!(
        calls.ends_with("pre_capture") || calls.contains("pre_capture"),
        "{calls}"
    );
    let reload = rig
        .t
        .scalar(&format!(
            "SELECT MAX(`requestid`) FROM `reservation` WHERE `computerid` = {}",
            c.computer_id
        ))
        .await;
    rig.wait_state(reload, "complete", T).await;
    assert_eq!(rig.computer_state(c.computer_id).await, "available");
    let _ = stop.send(());
    daemon.await.expect("daemon");
}

async fn tomaintenance_powers_off_and_parks_the_computer(backend: Backend) {
    let Some(rig) = Rig::new(backend, 1, RECORDING_OS, 0.2).await else {
        return;
    };
    let c = rig.request("lab1.test", "debian12").await;
    provhost::db::flow::set_computer_var(&rig.t.db, c.computer_id, "sim_power", "on")
        .await
        .expect("var");
    let tm = provhost::vcl::state_id("tomaintenance").expect("id");
    rig.t
        .exec(&format!(
            "UPDATE `request` SET `stateid` = {tm} WHERE `id` = {}",
            c.request_id
        ))
        .await;
    let d = rig.daemon(rig.config()).await;
    d.run(std::future::pending(), true).await.expect("once");
    assert_eq!(rig.request_state(c.request_id).await, "complete");
    assert_eq!(rig.computer_state(c.computer_id).await, "maintenance");
    assert_eq!(
        rig.computer_var(c.computer_id, "sim_power")
            .await
            .as_deref(),
        Some("off")
    );
}

on_both_backends!(
    image_capture_makes_a_new_revision_and_reloads,
    tomaintenance_powers_off_and_parks_the_computer,
    full_lifecycle,
    unknown_image_fails_with_a_reason_and_the_daemon_goes_on,
    script_errors_fail_the_reservation_with_file_and_line,
    a_hanging_routine_meets_its_deadline,
    a_clean_stop_hands_running_requests_back,
    an_edit_mid_flow_does_not_change_the_running_load,
);
