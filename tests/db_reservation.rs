//! A reservation as routines see it: `request new` the way the web front end makes one,
//! loaded into `ctx` with one query, load-log and image size written through `ctx`, and
//! clear errors for a reservation that points at rows that are not there.

mod common;

use std::sync::Arc;

use common::db::{world, TestDb};
use provhost::db::inventory::{self, NewComputer};
use provhost::db::requests::{self, ComputerChoice, NewRequest};
use provhost::db::{image, loadlog, reservation, Backend, DbBackend, DbError};
use provhost::host::Ctx;

fn ask(
    image: &str,
    computer: ComputerChoice,
    start: Option<&str>,
    end: Option<&str>,
) -> NewRequest {
    NewRequest {
        image: image.into(),
        computer,
        user: "ann".into(),
        start: start.map(Into::into),
        end: end.map(Into::into),
    }
}

async fn request_new_loads_into_ctx(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 0).await;
    // A VM on a VM host, reached on port 2222.
    let host = inventory::add_computer(&t.db, &NewComputer::lab("kvm1.test", "10.0.1.1"))
        .await
        .expect("host computer");
    let vmhost = inventory::add_vmhost(
        &t.db,
        host,
        "qemu local",
        "/var/lib/provhost/vms",
        "/var/lib/provhost/images",
        "/var/lib/provhost/vms",
    )
    .await
    .expect("vmhost");
    let vm = NewComputer {
        hostname: "vm1.lab.example".into(),
        ip: "192.0.2.10".into(),
        private_ip: "10.0.1.10".into(),
        provisioning: "qemu".into(),
        computer_type: "virtualmachine".into(),
        state: "available".into(),
        vmhost_id: Some(vmhost),
        ssh_port: 2222,
        management_node_id: None,
    };
    let vm_id = inventory::add_computer(&t.db, &vm).await.expect("vm");

    let created = requests::new_request(
        &t.db,
        &ask("debian12", ComputerChoice::Any, None, Some("+2h")),
    )
    .await
    .expect("request new --any");
    assert_eq!(created.computer_id, vm_id, "--any never picks a VM host");
    assert_eq!(created.management_node, "mn1.test");
    let d = reservation::load_reservation(&t.db, created.reservation_id)
        .await
        .expect("load");
    assert_eq!(
        (d.request_id, d.reservation_id),
        (created.request_id, created.reservation_id)
    );
    assert_eq!(
        (d.request_state.as_str(), d.request_laststate.as_str()),
        ("new", "new")
    );
    assert_eq!(d.request_start, created.start);
    assert!(d.request_checkuser && !d.request_forimaging);
    assert_eq!(d.computer_node_name, "vm1");
    assert_eq!(d.computer_hostname, "vm1.lab.example");
    assert_eq!(
        (d.computer_ip.as_str(), d.computer_private_ip.as_str()),
        ("192.0.2.10", "10.0.1.10")
    );
    assert_eq!(d.computer_ssh_port, 2222);
    assert_eq!(
        (d.computer_type.as_str(), d.computer_state.as_str()),
        ("virtualmachine", "available")
    );
    assert_eq!(d.computer_provisioning_module, "qemu");
    assert_eq!(
        (
            d.vmhost_id,
            d.vmhost_hostname.as_str(),
            d.vmprofile.as_str()
        ),
        (vmhost, "kvm1.test", "qemu local")
    );
    assert_eq!(d.vmprofile_datastore_path, "/var/lib/provhost/vms");
    assert_eq!(d.vmprofile_repository_path, "/var/lib/provhost/images");
    assert_eq!(
        (d.image_id, d.imagerevision_id, d.image_name.as_str()),
        (w.image, w.imagerevision, "debian12")
    );
    assert_eq!(d.image_pretty_name, "Debian 12");
    assert_eq!(
        (
            d.image_os_name.as_str(),
            d.image_os_type.as_str(),
            d.image_os_module.as_str()
        ),
        ("linux", "linux", "linux")
    );
    assert_eq!(
        (d.user_id, d.user_login_id.as_str(), d.user_uid),
        (w.user, "ann", 1500)
    );
    assert_eq!(d.management_node_hostname, "mn1.test");
    assert_eq!(d.image_library_path, "/install");

    // A lab computer: port 22, no VM host.
    let lab = inventory::add_computer(&t.db, &NewComputer::lab("lab9.test", "10.0.0.9"))
        .await
        .expect("lab");
    let c2 = requests::new_request(
        &t.db,
        &ask(
            "Debian 12",
            ComputerChoice::Named("lab9".into()),
            Some("+1h"),
            Some("+30m"),
        ),
    )
    .await
    .expect("by pretty name and short host name");
    assert_eq!(c2.computer_id, lab);
    let d2 = reservation::load_reservation(&t.db, c2.reservation_id)
        .await
        .expect("load lab");
    assert_eq!(
        (
            d2.computer_ssh_port,
            d2.vmhost_id,
            d2.vmhost_hostname.as_str()
        ),
        (22, 0, "")
    );

    let listed = requests::list_requests(&t.db, false, 10)
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|r| r.request_id).collect::<Vec<_>>(),
        vec![c2.request_id, created.request_id]
    );
    assert_eq!(listed[0].computer, "lab9.test");
    assert!(requests::format_requests(&listed).contains("new/new"));
}

async fn overlapping_requests_are_refused(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 2).await;
    let first = requests::new_request(
        &t.db,
        &ask(
            "debian12",
            ComputerChoice::Named("lab1.test".into()),
            None,
            Some("+2h"),
        ),
    )
    .await
    .expect("first");
    let err = requests::new_request(
        &t.db,
        &ask(
            "debian12",
            ComputerChoice::Named("lab1.test".into()),
            Some("+1h"),
            Some("+1h"),
        ),
    )
    .await
    .expect_err("overlaps");
    assert!(
        err.to_string().contains(&format!(
            "lab1.test is reserved by request {}",
            first.request_id
        )),
        "{err}"
    );
    let other = requests::new_request(
        &t.db,
        &ask("debian12", ComputerChoice::Any, Some("+1h"), Some("+1h")),
    )
    .await
    .expect("--any");
    assert_eq!(other.computer, "lab2.test");
    let err = requests::new_request(
        &t.db,
        &ask("debian12", ComputerChoice::Any, Some("+1h"), Some("+1h")),
    )
    .await
    .expect_err("all busy");
    assert!(err.to_string().contains("no computer is free"), "{err}");
    // After the first request is complete its computer is free again.
    t.exec(&format!(
        "UPDATE `request` SET `stateid` = 12 WHERE `id` = {}",
        first.request_id
    ))
    .await;
    requests::new_request(
        &t.db,
        &ask("debian12", ComputerChoice::Any, Some("+1h"), Some("+1h")),
    )
    .await
    .expect("free again");

    for (req, want) in [
        (
            ask("nosuch", ComputerChoice::Any, None, None),
            "no image nosuch",
        ),
        (
            NewRequest {
                user: "bob".into(),
                ..ask("debian12", ComputerChoice::Any, None, None)
            },
            "no user bob",
        ),
        (
            ask("debian12", ComputerChoice::Named("lab7".into()), None, None),
            "no computer lab7",
        ),
        (
            ask(
                "debian12",
                ComputerChoice::Any,
                None,
                Some("2001-01-01 00:00"),
            ),
            "must be after the start",
        ),
        (
            ask("debian12", ComputerChoice::Any, Some("tomorrow"), None),
            "start: \"tomorrow\" is not a time: use now, +N",
        ),
        (
            ask(
                "debian12",
                ComputerChoice::Any,
                Some("2001-01-01 00:00"),
                None,
            ),
            "start 2001-01-01 00:00:00 is in the past",
        ),
    ] {
        let err = requests::new_request(&t.db, &req).await.expect_err(want);
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
    }
}

async fn ctx_writes_loadlog_and_image_size(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    let c = requests::new_request(&t.db, &ask("debian12", ComputerChoice::Any, None, None))
        .await
        .expect("request");
    let data = reservation::load_reservation(&t.db, c.reservation_id)
        .await
        .expect("load");
    let backend = Arc::new(DbBackend::new(
        t.db.clone(),
        tokio::runtime::Handle::current(),
    ));
    let ctx = Ctx::new(data.clone(), backend);
    // On an async worker thread the blocking backend refuses instead of panicking.
    let refused = ctx
        .loadlog("info", "from async code")
        .expect_err("not on a worker thread");
    assert!(refused.contains("spawn_blocking"), "{refused}");
    // Routines run on the blocking pool; that is where ctx writes happen.
    let results = tokio::task::spawn_blocking(move || {
        (
            ctx.loadlog("startload", "creating vm1"),
            ctx.loadlog("machinebooted", "up"),
            ctx.set_image_size(2048),
            ctx.loadlog("startLoad", "typo"),
        )
    })
    .await
    .expect("routine thread");
    results.0.expect("startload");
    results.1.expect("machinebooted");
    results.2.expect("image size");
    assert!(results
        .3
        .expect_err("misspelt name")
        .contains("unknown load-state name"));

    let log = loadlog::timeline(&t.db, c.reservation_id)
        .await
        .expect("timeline");
    let names: Vec<&str> = log.iter().map(|e| e.loadstatename.as_str()).collect();
    assert_eq!(names, vec!["startload", "machinebooted"]);
    assert_eq!(log[0].prettyname, "starting load process");
    assert_eq!(log[1].additionalinfo, "up");
    assert!(log
        .iter()
        .all(|e| e.computer_id == data.computer_id && e.elapsed_secs >= 0));
    assert!(loadlog::format_timeline(&log).contains("machinebooted (machine booting)  up"));
    assert_eq!(
        t.scalar(&format!(
            "SELECT `size` FROM `image` WHERE `id` = {}",
            data.image_id
        ))
        .await,
        2048
    );

    // The async API refuses unknown names as well, and writes nothing.
    let err = loadlog::loadlog(
        &t.db,
        c.reservation_id,
        data.computer_id,
        "nosuchstate",
        "x",
    )
    .await
    .expect_err("unknown");
    assert!(matches!(err, DbError::UnknownLoadState(_)), "{err}");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `computerloadlog`").await, 2);
}

async fn image_revisions_and_size(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    let w = world(&t.db, 0).await;
    let r1 = image::create_image_revision(&t.db, w.image, w.user, None, "captured", Some(3000))
        .await
        .expect("revision 1");
    assert_eq!(
        (r1.revision, r1.imagename.as_str(), r1.production),
        (1, "debian12-v1", false)
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT `size` FROM `image` WHERE `id` = {}",
            w.image
        ))
        .await,
        3000
    );
    let r2 =
        image::create_image_revision(&t.db, w.image, w.user, Some("debian12-custom"), "", None)
            .await
            .expect("revision 2");
    assert_eq!(r2.revision, 2);
    image::make_production(&t.db, r2.id)
        .await
        .expect("production");
    let revs = image::image_revisions(&t.db, w.image).await.expect("list");
    assert_eq!(
        revs.iter()
            .map(|r| (r.revision, r.production))
            .collect::<Vec<_>>(),
        vec![(0, false), (1, false), (2, true)]
    );
    image::set_image_size(&t.db, w.image, 65535)
        .await
        .expect("largest VCL size");
    let err = image::set_image_size(&t.db, w.image, 70000)
        .await
        .expect_err("too big for image.size");
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(matches!(
        image::set_image_size(&t.db, 999, 1).await,
        Err(DbError::NotFound { .. })
    ));
    assert!(matches!(
        image::create_image_revision(&t.db, 999, w.user, None, "", None).await,
        Err(DbError::NotFound { .. })
    ));

    // VCL's web "Create image": a hidden revision; a finished capture shows it, dated.
    t.exec(&format!(
        "INSERT INTO `imagerevision` (`imageid`, `revision`, `userid`, `datecreated`, `deleted`, `production`, `imagename`) \
         VALUES ({}, 3, {}, '2000-01-01 00:00:00', 1, 0, 'debian12-v3')",
        w.image, w.user
    ))
    .await;
    let r3 = t
        .scalar("SELECT `id` FROM `imagerevision` WHERE `imagename` = 'debian12-v3'")
        .await;
    image::record_capture(&t.db, w.image, r3, 812)
        .await
        .expect("record capture");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM `imagerevision` WHERE `id` = {r3} AND `deleted` = 0 AND `datecreated` > '2001-01-01 00:00:00'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT `size` FROM `image` WHERE `id` = {}",
            w.image
        ))
        .await,
        812
    );
    assert!(matches!(
        image::record_capture(&t.db, w.image, 999, 1).await,
        Err(DbError::NotFound { .. })
    ));
    let err = image::record_capture(&t.db, w.image, r3, 70000)
        .await
        .expect_err("too big for image.size");
    assert!(err.to_string().contains("does not fit"), "{err}");
}

async fn broken_reservations_are_clear_errors(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 3).await;
    let mut made = Vec::new();
    for i in 1..=3 {
        let c = requests::new_request(
            &t.db,
            &ask(
                "debian12",
                ComputerChoice::Named(format!("lab{i}.test")),
                None,
                None,
            ),
        )
        .await
        .expect("request");
        made.push(c);
    }
    // 1: its image is gone; 2: its computer is gone; 3: its OS has no module.
    t.exec(&format!(
        "UPDATE `reservation` SET `imageid` = 4242 WHERE `id` = {}",
        made[0].reservation_id
    ))
    .await;
    t.exec(&format!(
        "DELETE FROM `computer` WHERE `id` = {}",
        made[1].computer_id
    ))
    .await;
    t.exec("INSERT INTO `OS` (`id`, `name`, `prettyname`, `type`, `installtype`, `moduleid`) VALUES (120, 'plan9', 'Plan 9', 'unix', 'image', 77)").await;
    t.exec(&format!(
        "UPDATE `image` SET `OSid` = 120 WHERE `id` = {}",
        made[2].image_id
    ))
    .await;

    let cases = [
        (
            made[0].reservation_id,
            "image 4242 (reservation.imageid) does not exist",
        ),
        (
            made[1].reservation_id,
            &format!(
                "computer {} (reservation.computerid) does not exist",
                made[1].computer_id
            ) as &str,
        ),
        (
            made[2].reservation_id,
            "OS plan9 of image debian12 has no OS module (OS.moduleid): module 77 does not exist",
        ),
    ];
    for (id, want) in cases {
        let err = reservation::load_reservation(&t.db, id)
            .await
            .expect_err(want);
        assert!(matches!(err, DbError::BrokenReservation { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
        assert!(
            err.to_string().starts_with(&format!("reservation {id}: ")),
            "{err}"
        );
    }
    t.exec("UPDATE `OS` SET `moduleid` = NULL WHERE `id` = 120")
        .await;
    let err = reservation::load_reservation(&t.db, made[2].reservation_id)
        .await
        .expect_err("no module");
    assert!(err.to_string().contains("it has no module"), "{err}");
    assert!(matches!(
        reservation::load_reservation(&t.db, 99999).await,
        Err(DbError::NotFound { .. })
    ));
    // Nothing changed the requests while reading.
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM `request` WHERE `stateid` = 13")
            .await,
        3
    );
}

crate::on_both_backends!(
    request_new_loads_into_ctx,
    overlapping_requests_are_refused,
    ctx_writes_loadlog_and_image_size,
    image_revisions_and_size,
    broken_reservations_are_clear_errors,
);

/// Ten users ask for the same computer at the same time: exactly one gets it.
async fn simultaneous_requests_never_overlap(backend: Backend) {
    let Some(t) = TestDb::initialized(backend).await else {
        return;
    };
    world(&t.db, 1).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let db = t.connect_again().await;
        tasks.push(tokio::spawn(async move {
            let req = ask(
                "debian12",
                ComputerChoice::Named("lab1.test".into()),
                Some("+1h"),
                Some("+1h"),
            );
            requests::new_request(&db, &req).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(e) => assert!(
                e.to_string().contains("lab1.test is reserved by request"),
                "{e}"
            ),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM `reservation`").await, 1);
}

crate::on_both_backends!(simultaneous_requests_never_overlap);
