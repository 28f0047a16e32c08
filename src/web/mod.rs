//! The operators' view over HTTP (`provhost serve --http ADDR`, `[http]`; on in the demo):
//! a read-only, server-rendered status page ([`page`]) with each reservation's load-log
//! timeline and waterfall ([`waterfall`]), the same data as JSON (`/api/…`), and
//! `/metrics` in Prometheus' text format ([`crate::metrics`]). [`status`] gathers the data.
//!
//! Loopback only by default: any other bind address needs a bearer token (`[http] token`
//! or `PROVHOST_HTTP_TOKEN`), or the server refuses to start; with a token every request
//! must carry `Authorization: Bearer TOKEN` (else 401). The token is remembered as a
//! secret (redacted from every log line) and never printed.

pub mod page;
pub mod status;
pub mod waterfall;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::host::ScriptHost;
use status::ModuleBook;

/// The environment variable that gives the token (wins over `[http] token`).
pub const TOKEN_ENV: &str = "PROVHOST_HTTP_TOKEN";

/// `[http]` in `provhost.toml`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `provhost serve` serves the status page (`127.0.0.1:8080`); empty: off
    /// (`--http` turns it on for one run).
    pub listen: String,
    /// The bearer token every request must carry; required for a non-loopback `listen`.
    /// `PROVHOST_HTTP_TOKEN` wins. Never logged.
    #[serde(skip_serializing)]
    pub token: String,
    /// How often pages reload themselves, seconds (0: never).
    pub refresh_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            token: String::new(),
            refresh_secs: 2,
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("refresh_secs", &self.refresh_secs)
            .finish()
    }
}

impl HttpConfig {
    pub fn check(&self) -> Result<(), String> {
        crate::config::Bound::secs("refresh_secs", self.refresh_secs, 0, 3600).check()
    }

    /// The token to require: `PROVHOST_HTTP_TOKEN`, else `[http] token`; `None` when
    /// neither is set. Remembered as a secret so no log line shows it.
    pub fn token(&self) -> Option<String> {
        let t = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| self.token.clone());
        let t = t.trim().to_string();
        if t.is_empty() {
            return None;
        }
        crate::prim::secret::remember_in(crate::prim::secret::Scope::Process, &t);
        Some(t)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("[http] listen = {addr:?} is not a loopback address, so the status page needs a bearer token: set [http] token in provhost.toml or {TOKEN_ENV} in the environment (or listen on 127.0.0.1)")]
    NeedsToken { addr: String },
    #[error("[http] listen = {addr:?}: {reason}; give an address and port such as 127.0.0.1:8080")]
    BadAddress { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source} (is another program using the port?)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the page gets the module list.
#[derive(Clone)]
pub enum Modules {
    /// This process's scripting host (the daemon's).
    Live(Arc<ScriptHost>, Arc<ModuleBook>),
    /// None known (a server without a host).
    None,
}

impl Modules {
    fn list(&self) -> (Vec<status::ModuleStatus>, String) {
        match self {
            Modules::Live(host, book) => (
                status::modules(host, Some(book)),
                format!("as loaded by this daemon (pid {})", std::process::id()),
            ),
            Modules::None => (Vec::new(), "no scripting host in this process".into()),
        }
    }
}

struct Inner {
    db: Db,
    modules: Modules,
    token: Option<String>,
    refresh_secs: u64,
}

/// What every handler reads. Cheap to clone.
#[derive(Clone)]
pub struct WebState(Arc<Inner>);

impl WebState {
    pub fn new(db: Db, modules: Modules, token: Option<String>, refresh_secs: u64) -> Self {
        WebState(Arc::new(Inner {
            db,
            modules,
            token,
            refresh_secs,
        }))
    }
}

/// Resolve `listen` and bind it, refusing a non-loopback address without a token.
pub async fn bind(listen: &str, token: Option<&str>) -> Result<tokio::net::TcpListener, WebError> {
    let bad = |reason: String| WebError::BadAddress {
        addr: listen.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| bad(e.to_string()))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(bad("it resolves to no address".into()));
    };
    if token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(WebError::NeedsToken {
            addr: listen.to_string(),
        });
    }
    tokio::net::TcpListener::bind(first)
        .await
        .map_err(|source| WebError::Bind {
            addr: first.to_string(),
            source,
        })
}

/// The routes.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/reservation/{id}", get(reservation))
        .route("/api/status", get(api_status))
        .route("/api/reservation/{id}", get(api_reservation))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// At most this many connections are served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this (hyper's header-read timeout).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A connection (keep-alive included) lives at most this long.
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Serve on `listener` until `stop` resolves. Every connection is bounded: its request
/// head must arrive within [`HEADER_READ_TIMEOUT`], it lives at most
/// [`CONNECTION_LIFETIME`], and at most [`MAX_CONNECTIONS`] are open at once, so a client
/// that connects and sends nothing holds no file descriptor for long.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // A failed accept (e.g. out of file descriptors) is not the server's end.
                Err(e) => {
                    tracing::warn!("status page: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "status page: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

/// Bind `listen` and serve in the background until the returned sender fires or is
/// dropped; the address it listens on (a port 0 resolved).
pub async fn spawn(
    listen: &str,
    state: WebState,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), WebError> {
    let token = state.0.token.clone();
    let listener = bind(listen, token.as_deref()).await?;
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, state, async move {
            let _ = rx.await;
        })
        .await
        {
            tracing::error!("status page server stopped: {e}");
        }
    });
    Ok((addr, tx))
}

/// Equal in time whatever the content (the length may show).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(
    State(st): State<WebState>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.0.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "401: this status page needs `Authorization: Bearer TOKEN` ([http] token or PROVHOST_HTTP_TOKEN on the server)\n",
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"provhost\""),
            );
            return r;
        }
    }
    next.run(req).await
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(format!(
            "<!DOCTYPE html><p>The database did not answer: {}</p>",
            page::esc(&crate::host::secrets::redact(&e.to_string()))
        )),
    )
        .into_response()
}

async fn gather(st: &WebState) -> Result<status::Status, crate::db::DbError> {
    let (modules, source) = st.0.modules.list();
    status::gather(&st.0.db, modules, source).await
}

async fn index(State(st): State<WebState>) -> Response {
    match gather(&st).await {
        Ok(s) => Html(page::overview(&s, st.0.refresh_secs)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn api_status(State(st): State<WebState>) -> Response {
    match gather(&st).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn reservation(State(st): State<WebState>, Path(id): Path<i64>) -> Response {
    match status::detail(&st.0.db, id).await {
        Ok(d) => Html(page::reservation(&d, st.0.refresh_secs)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn api_reservation(State(st): State<WebState>, Path(id): Path<i64>) -> Response {
    match status::detail(&st.0.db, id).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(st): State<WebState>) -> Response {
    let by_state = match crate::db::span::reservations_by_state(&st.0.db).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("/metrics: reservations by state not read: {e}");
            Vec::new()
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::encode(&by_state),
    )
        .into_response()
}
