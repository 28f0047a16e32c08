//! A TCP proxy the test controls, to give a daemon a real database outage: it forwards
//! to the real server until [`Proxy::cut`], which closes every forwarded connection and
//! stops listening, so new connections are refused as if the server were down.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Proxy {
    /// Listen on a free loopback port and forward each connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let set = std::sync::Arc::clone(&conns);
        let accept = tokio::spawn(async move {
            // Bounded by the test: `cut` (or drop) aborts this task.
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    continue;
                };
                if let Ok(mut s) = set.lock() {
                    s.spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            }
        });
        Proxy {
            addr,
            accept: Some(accept),
            conns,
        }
    }

    /// The outage: no more connections accepted (refused), every open one closed.
    pub fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        if let Ok(mut s) = self.conns.lock() {
            s.abort_all();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Where `url` (`mysql://USER[:PW]@HOST[:PORT]/DB`) points, and a function giving the
/// same URL pointed at another address.
fn split(url: &str) -> (String, String, String) {
    let scheme_end = url.find("://").expect("scheme") + 3;
    let rest = &url[scheme_end..];
    let at = rest.find('@').map(|i| i + 1).unwrap_or(0);
    let slash = rest[at..].find('/').map(|i| i + at).unwrap_or(rest.len());
    (
        format!("{}{}", &url[..scheme_end], &rest[..at]),
        rest[at..slash].to_string(),
        rest[slash..].to_string(),
    )
}

/// The server address a MySQL URL names (port 3306 when none is given).
pub fn target_of(url: &str) -> SocketAddr {
    let (_, hostport, _) = split(url);
    let target = if hostport.contains(':') {
        hostport
    } else {
        format!("{hostport}:3306")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&target)
        .expect("resolve the database address")
        .next()
        .expect("an address")
}

/// `url` pointed at `addr` instead.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (head, _, tail) = split(url);
    format!("{head}{addr}{tail}")
}
