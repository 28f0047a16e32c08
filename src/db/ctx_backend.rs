//! [`DbBackend`]: the [`CtxBackend`] that makes `ctx.loadlog(...)` and
//! `ctx.set_image_size(...)` write real rows (`computerloadlog`, `image.size`).
//!
//! The trait is synchronous because routines are: they run on threads of their own (the
//! daemon's `state::lanes`, or `spawn_blocking`), and these methods reach the async pool with
//! [`tokio::runtime::Handle::block_on`]. Calling them on a runtime worker thread (inside an
//! `async fn`) makes `block_on` panic; that panic is caught and returned as an error; from async code, call [`crate::db::loadlog::loadlog`] directly.

use tokio::runtime::Handle;

use crate::db::pool::Db;
use crate::host::{CtxBackend, ReservationData};

/// Writes a routine's load-log entries and image size to the database.
#[derive(Debug, Clone)]
pub struct DbBackend {
    db: Db,
    handle: Handle,
}

impl DbBackend {
    /// A backend on `db` that runs its queries on the runtime `handle` belongs to (take it
    /// with `Handle::current()` inside the runtime, before spawning the blocking task).
    pub fn new(db: Db, handle: Handle) -> Self {
        DbBackend { db, handle }
    }

    fn block_on<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, crate::db::DbError>>,
    ) -> Result<T, String> {
        // `block_on` panics on a runtime worker thread; turn that programming error into an
        // error the routine reports instead of a crashed reservation task.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle.block_on(fut))) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("database backend called on an async worker thread; call routines on a thread of their own (state::lanes or spawn_blocking)".into()),
        }
    }
}

impl CtxBackend for DbBackend {
    fn loadlog(&self, data: &ReservationData, name: &str, text: &str) -> Result<(), String> {
        self.block_on(crate::db::loadlog::loadlog(
            &self.db,
            data.reservation_id,
            data.computer_id,
            name,
            text,
        ))
    }

    fn set_image_size(&self, data: &ReservationData, mb: i64) -> Result<(), String> {
        self.block_on(crate::db::image::set_image_size(
            &self.db,
            data.image_id,
            mb,
        ))
    }

    fn computer_var(&self, data: &ReservationData, name: &str) -> Result<Option<String>, String> {
        self.block_on(crate::db::flow::computer_var(
            &self.db,
            data.computer_id,
            name,
        ))
    }

    fn set_computer_var(
        &self,
        data: &ReservationData,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        self.block_on(crate::db::flow::set_computer_var(
            &self.db,
            data.computer_id,
            name,
            value,
        ))
    }
}
