//! The database: VCL's tables on SQLite (the embedded default) or MySQL/MariaDB (an
//! existing VCL database), with provhost's own data in `provhost_*` tables.
//!
//! Where to start: [`Db::connect`] opens a pool ([`pool`]), [`schema::init`] creates or
//! verifies the schema. What the daemon calls:
//!
//! - [`claim::work_for`], [`claim::claim`], [`claim::recover_pending`] — finding and taking work;
//! - [`reservation::load_reservation`] — the reservation as [`crate::ReservationData`] for `ctx`;
//! - [`ctx_backend::DbBackend`] — `ctx.loadlog` / `ctx.set_image_size` into the database;
//! - [`loadlog::loadlog`] — VCL's insertloadlog; [`loadlog::timeline`] reads it back;
//! - [`lock`] — which reservation holds a computer (one at a time, across nodes);
//! - [`lease`] — which daemon owns a management node (one live owner, heartbeat);
//! - [`state`] — `state_exit`, `reservation_failed`, `insert_reload_request`, computer state;
//! - [`image`] — image size, new revisions, production revision;
//! - [`requests`] — `provhost request new|list`; [`inventory`] — adding users, images,
//!   computers; [`listing`] — reading them back for operators;
//! - [`bookkeeping`] — what VCL's web front end reads: `log`/`sublog`/`changelog`,
//!   `log.loaded`/`log.ending`, `reservation.lastcheck`, removing finished requests;
//!   [`variable`] — VCL's timing variables from the `variable` table.
//!
//! Every operation is one statement or one transaction, retried with bounded backoff when
//! the connection drops ([`Db::retry`]); see `docs/database.md`.

pub mod bookkeeping;
pub mod claim;
pub mod ctx_backend;
pub mod error;
pub mod flow;
pub mod image;
pub mod inventory;
pub mod lease;
pub mod listing;
pub mod loadlog;
pub mod lock;
pub mod modules;
pub mod pool;
pub mod requests;
pub mod reservation;
pub mod schema;
pub mod span;
pub mod state;
pub mod status;
pub mod time;
pub mod variable;
pub mod watch;
pub mod watchbatch;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use ctx_backend::DbBackend;
pub use error::DbError;
pub use pool::{Backend, Db, DbOptions, OpenMode, RetryPolicy};

/// `[database]` in `provhost.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`. Empty: the SQLite
    /// file `provhost.db` in the data folder (`paths.data_dir`), created when missing.
    pub url: String,
}

impl DatabaseConfig {
    /// The URL to open: the configured one, or the SQLite file in `data_dir`.
    pub fn url_or_default(&self, data_dir: &Path) -> String {
        if self.url.trim().is_empty() {
            format!("sqlite://{}", data_dir.join("provhost.db").display())
        } else {
            self.url.trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_section_and_default_url() {
        let c: crate::Config =
            toml::from_str("[database]\nurl = \"mysql://root@127.0.0.1/vcl\"\n").expect("parse");
        assert_eq!(
            c.database.url_or_default(Path::new("/x")),
            "mysql://root@127.0.0.1/vcl"
        );
        let d = crate::Config::default();
        assert_eq!(
            d.database.url_or_default(Path::new("/var/lib/provhost")),
            "sqlite:///var/lib/provhost/provhost.db"
        );
        assert!(toml::from_str::<crate::Config>("[database]\nurl_typo = \"x\"\n").is_err());
    }
}
