//! VCL module rows → scripts through the daemon, on SQLite and MariaDB, with VCL's own
//! module rows (`db init` seeds them with VCL's ids, names and perl packages) and OS rows
//! written as VCL writes them: `ubuntuimage` → module 14 `os_linux_ubuntu`
//! (`VCL::Module::OS::Linux::Ubuntu`) fails, naming the row and `os/ubuntu.rhai`, while
//! that script is missing; once `os/ubuntu.rhai` (extends `linux`) exists the next
//! reservation runs it, its override calling the parent's post_load; a site's own module
//! row is served by the script that lists it in `MODULE.serves`.

mod common;

use std::time::Duration;

use common::flows::{Rig, RECORDING_OS};
use provhost::db::{inventory, reservation, Backend};

const T: Duration = Duration::from_secs(30);

const UBUNTU: &str = r#"const MODULE = #{ kind: "os", name: "ubuntu", version: "1", extends: "linux" };
fn post_load(ctx) {
    record(ctx, `ubuntu:${ctx.image_os_module}:${ctx.image_os_module_perl_package}`);
    super::post_load(ctx)
}
"#;

const ROCKY: &str = r#"const MODULE = #{ kind: "os", name: "rocky", version: "1", extends: "linux", serves: ["os_site_rocky"] };
fn post_load(ctx) {
    record(ctx, `rocky:${ctx.image_os_module}:${ctx.image_os_module_name}`);
    super::post_load(ctx)
}
"#;

async fn vcl_module_rows_map_to_scripts(backend: Backend) {
    let Some(rig) = Rig::new(backend, 3, RECORDING_OS, 0.0).await else {
        return;
    };
    // VCL's own OS row for Ubuntu images (mysql/vcl.sql) and a site's own module + OS.
    rig.t
        .exec("INSERT INTO `OS` (`id`, `name`, `prettyname`, `type`, `installtype`, `sourcepath`, `moduleid`) VALUES (30, 'ubuntuimage', 'Ubuntu (Bare Metal)', 'linux', 'partimage', 'image', 14)")
        .await;
    rig.t
        .exec("INSERT INTO `module` (`id`, `name`, `prettyname`, `description`, `perlpackage`) VALUES (120, 'os_site_rocky', 'Rocky (site)', '', 'Site::VCL::Rocky')")
        .await;
    rig.t
        .exec("INSERT INTO `OS` (`id`, `name`, `prettyname`, `type`, `installtype`, `sourcepath`, `moduleid`) VALUES (121, 'rocky9', 'Rocky 9', 'linux', 'partimage', 'image', 120)")
        .await;
    inventory::add_image(&rig.t.db, "jammy", "Ubuntu 22.04", "ubuntuimage")
        .await
        .expect("ubuntu image");
    inventory::add_image(&rig.t.db, "rocky", "Rocky 9", "rocky9")
        .await
        .expect("rocky image");

    let (daemon, stop) = rig.spawn(rig.config()).await;

    // No script for module 14 yet: the reservation fails naming the row and the script.
    let c1 = rig.request("lab1.test", "jammy").await;
    let data = reservation::load_reservation(&rig.t.db, c1.reservation_id)
        .await
        .expect("load");
    assert_eq!(
        (
            data.image_os_module.as_str(),
            data.image_os_moduleid,
            data.image_os_module_name.as_str(),
            data.image_os_module_perl_package.as_str()
        ),
        (
            "ubuntu",
            14,
            "os_linux_ubuntu",
            "VCL::Module::OS::Linux::Ubuntu"
        )
    );
    assert_eq!(
        (
            data.computer_provisioning_module.as_str(),
            data.computer_provisioning_module_id,
            data.computer_provisioning_module_name.as_str()
        ),
        ("sim", 101, "provisioning_sim")
    );
    rig.wait_state(c1.request_id, "failed", T).await;
    let want = format!(
        "os module \"ubuntu\" of the image jammy is not loaded: module 14 \"os_linux_ubuntu\" (VCL::Module::OS::Linux::Ubuntu) maps to {} (by its perl package; as in VCL, that script would `extends: \"linux\"`), which does not exist or did not load (docs/modules.md)",
        rig.scripts.path("os/ubuntu.rhai").display()
    );
    let log = rig.log(c1.reservation_id).await;
    assert!(
        log.iter().any(|(n, t)| n == "failed" && t.contains(&want)),
        "{want}\n{log:?}"
    );

    // The script appears: the next reservation runs the child, whose post_load calls
    // os/linux's (the recording module) through super::.
    let path = rig.scripts.write("os/ubuntu.rhai", UBUNTU);
    rig.host.load_file(&path).expect("ubuntu loads");
    let c2 = rig.request("lab2.test", "jammy").await;
    rig.wait_log(c2.reservation_id, "reserved", T).await;
    let calls = rig
        .computer_var(c2.computer_id, "os_calls")
        .await
        .unwrap_or_default();
    assert!(
        calls.starts_with("ubuntu:ubuntu:VCL::Module::OS::Linux::Ubuntu,post_load"),
        "{calls}"
    );

    // A site's row (no VCL package) is served by the script that lists it.
    let path = rig.scripts.write("os/rocky.rhai", ROCKY);
    rig.host.load_file(&path).expect("rocky loads");
    let c3 = rig.request("lab3.test", "rocky").await;
    rig.wait_log(c3.reservation_id, "reserved", T).await;
    let calls = rig
        .computer_var(c3.computer_id, "os_calls")
        .await
        .unwrap_or_default();
    assert!(
        calls.starts_with("rocky:rocky:os_site_rocky,post_load"),
        "{calls}"
    );

    let _ = stop.send(());
    daemon.await.expect("daemon");
}

on_both_backends!(vcl_module_rows_map_to_scripts);
