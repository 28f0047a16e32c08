//! `provhost demo --sim`: the life cycle on one simulated computer
//! (`scripts/provisioning/sim.rhai` + `scripts/os/sim.rhai`, which touch no machine), for a
//! machine without QEMU or root.

use std::io::Write;
use std::time::Duration;

use super::lifecycle::{self, Plan, UserLogin};
use super::{fresh_db, load_scripts, DemoError, RunningDaemon};
use crate::config::Config;
use crate::db::inventory::{add_computer, add_image, add_user, NewComputer};
use crate::host::Kind;
use crate::state::Timings;

/// The simulated user is "connected" as soon as Connect is clicked.
struct Simulated;

impl UserLogin for Simulated {
    async fn login(&mut self, _: &mut dyn Write) -> Result<Box<dyn std::any::Any>, DemoError> {
        Ok(Box::new(()))
    }
}

pub(super) async fn run(config: &Config, out: &mut impl Write) -> Result<(), DemoError> {
    let db = fresh_db(config, "demo.db", out).await?;
    add_user(&db, "demo", Some(20001)).await?;
    add_image(&db, "demo-linux", "Demo Linux (simulated)", "sim").await?;
    let mut computer = NewComputer::lab("sim1.demo", "192.0.2.100");
    computer.provisioning = "sim".into();
    computer.computer_type = "virtualmachine".into();
    let computer_id = add_computer(&db, &computer).await?;
    writeln!(out, "  one simulated computer sim1.demo (scripts/provisioning/sim.rhai + scripts/os/sim.rhai), image demo-linux, user demo")?;

    let families = crate::primitive_families(config);
    let host = load_scripts(
        config,
        &families,
        &[(Kind::Provisioning, "sim"), (Kind::Os, "sim")],
        out,
    )?;
    let timings = Timings {
        acknowledgetimeout: 60,
        initialconnecttimeout: 30,
        general_inuse_check: 2,
        acknowledge_poll_ms: 200,
        connect_poll: 1,
        ..Timings::default()
    };
    let daemon = RunningDaemon::start(config, &db, host, timings, out).await?;
    let plan = Plan {
        computer: "sim1.demo",
        computer_id,
        image: "demo-linux",
        user: "demo",
        user_ip: "192.0.2.10",
        limit: Duration::from_secs(120),
    };
    let result = lifecycle::run(&db, &plan, &mut Simulated, out).await;
    daemon.stop().await;
    if result.is_ok() {
        let calls = crate::db::flow::computer_var(&db, computer_id, "os_calls")
            .await?
            .unwrap_or_default();
        let url = format!(
            "sqlite://{}",
            config.paths.data_dir.join("demo.db").display()
        );
        let next = crate::db::requests::next_reservation_id(&db).await?;
        let me = super::invocation();
        writeln!(
            out,
            "\nWhat the OS module was asked to do, in order: {calls}"
        )?;
        writeln!(
            out,
            "\nNext:\n  - change a step: edit scripts/provisioning/sim.rhai (e.g. load_seconds) or add a hook in scripts/site/; \
             `{me} check` tells you what is wrong, a running daemon picks the edit up at once\n  \
             - run it yourself: the daemon in another terminal (Ctrl-C stops it), then a request, the user's Connect \
             (what the web front end records) and the reservation's load-log:\n      \
             {me} serve --url {url}\n      \
             {me} request new --image demo-linux --computer sim1.demo --user demo --url {url}\n      \
             {me} request connect {next} --ip 192.0.2.10 --url {url}\n      \
             {me} log {next} --url {url}\n  \
             - on a real VM: {me} demo (as root, with QEMU installed: make demo)"
        )?;
    }
    db.close().await;
    result
}
