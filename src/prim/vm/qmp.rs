//! A QMP client (QEMU's JSON control protocol) over any byte stream: a local unix socket
//! or a remote one reached through SSH streamlocal forwarding. One JSON object per line:
//! the greeting, `qmp_capabilities`, then commands; asynchronous events between replies
//! are kept aside. Every read and write is bounded by the stream's timeout, and a whole
//! exchange by a deadline and a cap on the lines read.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest QMP line accepted (a `query-*` reply is a few KiB).
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Events skipped while waiting for one reply, at most.
const MAX_EVENTS: usize = 10_000;

/// Why a QMP exchange failed (the caller adds the VM and socket to the message).
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("{0}")]
    Io(String),
    #[error("no reply within {0:.1} s")]
    Timeout(f64),
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("not QMP: {0}")]
    Protocol(String),
    #[error("{class}: {desc}")]
    Command { class: String, desc: String },
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connected, negotiated QMP session.
pub struct Qmp {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// Events seen so far (`{"event": …}` objects), oldest first.
    pub events: Vec<Value>,
}

/// A local QMP socket with read/write timeouts set.
pub fn connect_local(path: &str, timeout: Duration) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

impl Qmp {
    /// Read the greeting and negotiate capabilities within `timeout`.
    pub fn handshake(stream: Box<dyn Stream>, timeout: Duration) -> Result<Qmp, QmpError> {
        let mut q = Qmp {
            stream,
            buf: Vec::new(),
            timeout,
            events: Vec::new(),
        };
        let end = Instant::now() + timeout;
        let greeting = q.read_value(end)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected the QMP greeting, got {}",
                short(&greeting)
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Run one command; its `return` value, or its `error` as [`QmpError::Command`].
    pub fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .and_then(|_| self.stream.flush())
            .map_err(|e| io_err(e, self.timeout))?;
        let end = Instant::now() + self.timeout;
        for _ in 0..MAX_EVENTS {
            let v = self.read_value(end)?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    class: e
                        .get("class")
                        .and_then(Value::as_str)
                        .unwrap_or("Error")
                        .into(),
                    desc: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("(no description)")
                        .into(),
                });
            }
            return Err(QmpError::Protocol(format!(
                "unexpected reply {}",
                short(&v)
            )));
        }
        Err(QmpError::Protocol(format!(
            "more than {MAX_EVENTS} events before the reply"
        )))
    }

    /// The next JSON object, by `end`.
    fn read_value(&mut self, end: Instant) -> Result<Value, QmpError> {
        let line = self.read_line(end)?;
        serde_json::from_slice(&line)
            .map_err(|e| QmpError::Protocol(format!("bad JSON line ({e})")))
    }

    fn read_line(&mut self, end: Instant) -> Result<Vec<u8>, QmpError> {
        let mut chunk = [0u8; 8192];
        // Bounded by `end` and by MAX_LINE; the count is a further guard.
        for _ in 0..1_000_000u32 {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(QmpError::Protocol(format!(
                    "a line longer than {MAX_LINE} bytes"
                )));
            }
            if Instant::now() >= end {
                return Err(QmpError::Timeout(self.timeout.as_secs_f64()));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e, self.timeout)),
            }
        }
        Err(QmpError::Timeout(self.timeout.as_secs_f64()))
    }
}

fn io_err(e: std::io::Error, timeout: Duration) -> QmpError {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => QmpError::Timeout(timeout.as_secs_f64()),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof => {
            QmpError::Closed
        }
        _ => QmpError::Io(e.to_string()),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A QMP peer on the other end of a socket pair, answering from a script.
    fn peer(lines: &'static [&'static str]) -> UnixStream {
        let (a, mut b) = UnixStream::pair().expect("pair");
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(b.try_clone().expect("clone"));
            let _ = b.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
            for l in lines {
                let mut got = String::new();
                if std::io::BufRead::read_line(&mut r, &mut got).unwrap_or(0) == 0 {
                    return;
                }
                let _ = b.write_all(l.as_bytes());
            }
            std::thread::sleep(Duration::from_secs(2));
        });
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        a
    }

    #[test]
    fn skips_events_reports_errors_and_times_out() {
        let s = peer(&[
            "{\"return\": {}}\n",
            "{\"event\": \"X\"}\n\n{\"return\": {\"status\": \"running\"}}\n",
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\n",
        ]);
        let mut q = Qmp::handshake(Box::new(s), Duration::from_millis(300)).expect("handshake");
        let r = q.execute("query-status", None).expect("status");
        assert_eq!(r["status"], "running");
        assert_eq!(q.events.len(), 1);
        let e = q.execute("bogus", None).unwrap_err();
        assert_eq!(e.to_string(), "CommandNotFound: nope");
        let e = q.execute("query-status", None).unwrap_err();
        assert!(matches!(e, QmpError::Timeout(_)), "{e}");
    }
}
