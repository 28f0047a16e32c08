//! `provhost demo`: the whole reservation life cycle on the embedded default, with nothing
//! configured. A fresh SQLite database in the data folder gets one simulated computer
//! (`provisioning/sim` + `os/sim`: no real machine is touched), a request is submitted,
//! and an in-process daemon takes it new → reserved; the demo then plays the web front
//! end (the user clicks Connect, later ends the reservation) and shows it go inuse →
//! timeout → reload → available, printing the load-log timeline as it grows.
//!
//! Every wait is bounded; on any problem the demo stops its daemon and says what failed.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::{Daemon, DaemonConfig, DaemonError};
use crate::db::inventory::{add_computer, add_image, add_user, NewComputer};
use crate::db::requests::{new_request, ComputerChoice, NewRequest};
use crate::db::{Db, DbError};
use crate::host::ScriptHost;
use crate::state::Timings;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("scripts: {0}")]
    Scripts(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

const NODE: &str = "demo-mn";
const LIMIT: Duration = Duration::from_secs(120);

struct Printer {
    shown: usize,
    started: Instant,
}

impl Printer {
    async fn show(
        &mut self,
        db: &Db,
        reservation: i64,
        out: &mut impl Write,
    ) -> Result<Vec<String>, DemoError> {
        let entries = crate::db::loadlog::timeline(db, reservation).await?;
        for e in entries.iter().skip(self.shown) {
            writeln!(
                out,
                "  {:>6.1}s  {:<22} {}",
                self.started.elapsed().as_secs_f64(),
                e.loadstatename,
                e.additionalinfo
            )?;
        }
        self.shown = entries.len();
        Ok(entries.into_iter().map(|e| e.loadstatename).collect())
    }

    /// Print new entries until `done` holds, bounded by [`LIMIT`].
    async fn until(
        &mut self,
        db: &Db,
        reservation: i64,
        out: &mut impl Write,
        what: &str,
        done: impl AsyncFn(&[String]) -> Result<bool, DemoError>,
    ) -> Result<(), DemoError> {
        let t = Instant::now();
        loop {
            let names = self.show(db, reservation, out).await?;
            if done(&names).await? {
                return Ok(());
            }
            if t.elapsed() > LIMIT {
                return Err(DemoError::Timeout {
                    what: what.into(),
                    secs: LIMIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Run the demo, writing what happens to `out`.
pub async fn run(
    config: &Config,
    families: &[Arc<dyn crate::host::Primitives>],
    out: &mut impl Write,
) -> Result<(), DemoError> {
    let data = &config.paths.data_dir;
    std::fs::create_dir_all(data)?;
    let file = data.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let url = format!("sqlite://{}", file.display());
    writeln!(out, "provhost demo: a fresh database at {}", file.display())?;
    let db = Db::connect(&url).await?;
    crate::db::schema::init(&db, NODE).await?;
    add_user(&db, "demo", Some(20001)).await?;
    add_image(&db, "demo-linux", "Demo Linux (simulated)", "sim").await?;
    let mut computer = NewComputer::lab("sim1.demo", "192.0.2.100");
    computer.provisioning = "sim".into();
    computer.computer_type = "virtualmachine".into();
    let computer_id = add_computer(&db, &computer).await?;
    writeln!(out, "  one simulated computer sim1.demo (scripts/provisioning/sim.rhai + scripts/os/sim.rhai), image demo-linux, user demo")?;

    let host = ScriptHost::new(config.host_options(), families);
    let errors = host.load_all();
    for e in &errors {
        writeln!(out, "  script error (other modules still load): {e}")?;
    }
    for key in [
        (crate::host::Kind::Provisioning, "sim"),
        (crate::host::Kind::Os, "sim"),
    ] {
        if host.module(&(key.0, key.1.to_string())).is_none() {
            return Err(DemoError::Scripts(format!(
                "module {}/{} did not load from {}",
                key.0,
                key.1,
                config.paths.scripts.display()
            )));
        }
    }
    let cfg = DaemonConfig {
        node: NODE.into(),
        poll_interval_secs: 1,
        timings: Timings {
            acknowledgetimeout: 60,
            initialconnecttimeout: 30,
            general_inuse_check: 2,
            acknowledge_poll_ms: 200,
            connect_poll: 1,
            ..Timings::default()
        },
        ..DaemonConfig::default()
    };
    let daemon = Daemon::new(db.clone(), Arc::clone(&host), cfg, None).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        daemon
            .run(
                async move {
                    let _ = stopped.await;
                },
                false,
            )
            .await
    });

    let result = lifecycle(&db, computer_id, out).await;
    let _ = stop.send(());
    let _ = running.await;
    if result.is_ok() {
        let calls = crate::db::flow::computer_var(&db, computer_id, "os_calls")
            .await?
            .unwrap_or_default();
        writeln!(
            out,
            "\nWhat the OS module was asked to do, in order: {calls}"
        )?;
        writeln!(
            out,
            "\nNext:\n  - change a step: edit scripts/provisioning/sim.rhai (e.g. load_seconds) or add a hook in scripts/site/; \
             `provhost check` tells you what is wrong, a running daemon picks the edit up at once\n  \
             - run it yourself: provhost serve --url {url}   (in another terminal)\n                     \
             provhost request new --image demo-linux --computer sim1.demo --user demo --url {url}\n                     \
             provhost log RESERVATION --url {url}"
        )?;
    }
    db.close().await;
    result
}

async fn lifecycle(db: &Db, computer_id: i64, out: &mut impl Write) -> Result<(), DemoError> {
    let created = new_request(
        db,
        &NewRequest {
            image: "demo-linux".into(),
            computer: ComputerChoice::Named("sim1.demo".into()),
            user: "demo".into(),
            start: None,
            end: Some("+1h".into()),
        },
    )
    .await?;
    let res = created.reservation_id;
    writeln!(
        out,
        "\nrequest {} (reservation {res}) submitted: new → the daemon loads the computer\n",
        created.request_id
    )?;
    let mut p = Printer {
        shown: 0,
        started: Instant::now(),
    };
    p.until(
        db,
        res,
        out,
        "the reservation to be ready for Connect",
        async |n: &[String]| Ok(n.iter().any(|x| x == "acknowledgetimeout")),
    )
    .await?;

    writeln!(out, "\n== reserved. The user clicks Connect from 192.0.2.10 (the demo writes reservation.remoteIP, as the web front end does)\n")?;
    crate::db::flow::acknowledge(db, res, "192.0.2.10").await?;
    p.until(
        db,
        res,
        out,
        "the user to connect",
        async |_: &[String]| {
            Ok(crate::db::state::computer_state(db, computer_id)
                .await?
                .as_deref()
                == Some("inuse"))
        },
    )
    .await?;

    writeln!(
        out,
        "\n== in use. The user ends the reservation (the demo sets request.end to now)\n"
    )?;
    crate::db::flow::end_now(db, created.request_id).await?;
    p.until(
        db,
        res,
        out,
        "the reservation to be reclaimed",
        async |_: &[String]| {
            Ok(crate::db::state::request_state(db, created.request_id)
                .await?
                .is_some_and(|(s, _)| s == "complete"))
        },
    )
    .await?;

    let reload = crate::db::requests::list_requests(db, true, 10)
        .await?
        .into_iter()
        .map(|r| r.reservation_id)
        .max()
        .unwrap_or(res);
    writeln!(
        out,
        "\n== reload reservation {reload}: the computer gets a fresh image\n"
    )?;
    let mut p2 = Printer {
        shown: 0,
        started: p.started,
    };
    p2.until(
        db,
        reload,
        out,
        "the reload to finish",
        async |_: &[String]| {
            Ok(crate::db::state::computer_state(db, computer_id)
                .await?
                .as_deref()
                == Some("available"))
        },
    )
    .await?;
    writeln!(out, "\n== sim1.demo is available again")?;
    Ok(())
}
