//! What `provhost call` runs a routine against, and what it keeps between runs: a
//! reservation fixture (the `ctx` properties, plus the tables `computer_vars` and
//! `notes` a module would find set) and the state file that carries per-computer
//! variables and notes from one `call` to the next, as the daemon's database and a
//! reservation's `Ctx` do.
//!
//! The state file is JSON (`{"computer_id": 1, "computer_vars": {…}, "notes": {…}}`),
//! written by temp name then rename, readable by its owner only; known secrets are
//! redacted in it as in logs, so a password a routine kept in a note is not on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::ctx::ReservationData;
use crate::host::error::HostError;

/// The fixture's tables that are not `ctx` properties.
const VARS_KEY: &str = "computer_vars";
const NOTES_KEY: &str = "notes";

/// A `provhost call` fixture: the reservation data and the variables and notes a routine
/// starts with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixture {
    pub data: ReservationData,
    /// `ctx.computer_var(name)` values (strings, as the database stores them).
    pub computer_vars: BTreeMap<String, String>,
    /// `ctx.note(key)` values.
    pub notes: serde_json::Map<String, serde_json::Value>,
}

/// What one `provhost call` leaves for the next: the computer's variables and the
/// reservation's notes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallState {
    /// The computer the variables belong to (`ctx.computer_id`).
    pub computer_id: i64,
    pub computer_vars: BTreeMap<String, String>,
    pub notes: serde_json::Map<String, serde_json::Value>,
}

impl Fixture {
    /// Read a fixture (`.toml`, `.json`; other extensions are tried as TOML then JSON).
    /// Unknown keys are an error naming them, so a typo does not pass as a default;
    /// `computer_vars` values may be strings, numbers or booleans (stored as text).
    pub fn from_file(path: &Path) -> Result<Fixture, HostError> {
        let bad = |message: String| HostError::Fixture {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value = read_as(path)?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(bad("expected a table of ctx properties".into()));
        };
        let vars = match map.remove(VARS_KEY) {
            None => BTreeMap::new(),
            Some(serde_json::Value::Object(v)) => v
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    serde_json::Value::Number(n) => Ok((k, n.to_string())),
                    serde_json::Value::Bool(b) => Ok((k, b.to_string())),
                    other => Err(bad(format!(
                        "{VARS_KEY}.{k} = {other}: a computer variable is a string, number or boolean"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "{VARS_KEY} = {other}: expected a table, e.g. [{VARS_KEY}] power = \"on\""
                )))
            }
        };
        let notes = match map.remove(NOTES_KEY) {
            None => serde_json::Map::new(),
            Some(serde_json::Value::Object(n)) => n,
            Some(other) => {
                return Err(bad(format!(
                    "{NOTES_KEY} = {other}: expected a table, e.g. [{NOTES_KEY}] disk = \"/tmp/x\""
                )))
            }
        };
        let data: ReservationData = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Fixture {
            data,
            computer_vars: vars,
            notes,
        })
    }
}

/// Read a fixture file as `T`: `.json` as JSON, `.toml` as TOML, any other extension
/// tried as TOML then JSON; a read or parse error names the file.
pub fn read_as<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HostError> {
    let text = std::fs::read_to_string(path).map_err(|e| HostError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let bad = |message: String| HostError::Fixture {
        path: path.to_path_buf(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text).map_err(|e| bad(e.to_string())),
        Some("toml") => toml::from_str(&text).map_err(|e| bad(e.to_string())),
        _ => toml::from_str(&text)
            .or_else(|t| {
                serde_json::from_str(&text).map_err(|j| format!("as TOML: {t}; as JSON: {j}"))
            })
            .map_err(bad),
    }
}

impl CallState {
    /// Where `provhost call` keeps the state of computer `computer_id` by default.
    pub fn default_path(data_dir: &Path, computer_id: i64) -> PathBuf {
        data_dir
            .join("call-state")
            .join(format!("computer-{computer_id}.json"))
    }

    /// Read a state file; `None` when there is none yet.
    pub fn read(path: &Path) -> Result<Option<CallState>, HostError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(HostError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HostError::Fixture {
                path: path.to_path_buf(),
                message: format!(
                    "not a provhost call state file ({e}); delete it or pass --reset-state"
                ),
            })
    }

    /// Write it (folder created, temp name then rename, mode 0600), secrets redacted.
    pub fn write(&self, path: &Path) -> Result<(), HostError> {
        let io = |source: std::io::Error| HostError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let text = crate::prim::secret::redact(&text);
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.write_all(b"\n").map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_sets_variables_and_notes_and_typos_stay_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ctx.toml");
        std::fs::write(
            &p,
            "computer_id = 4\n[computer_vars]\npower = \"on\"\nport = 2222\n[notes]\ndisk = \"/tmp/d\"\n",
        )
        .expect("write");
        let f = Fixture::from_file(&p).expect("fixture");
        assert_eq!(f.data.computer_id, 4);
        assert_eq!(f.computer_vars.get("power").map(String::as_str), Some("on"));
        assert_eq!(
            f.computer_vars.get("port").map(String::as_str),
            Some("2222")
        );
        assert_eq!(f.notes.get("disk"), Some(&serde_json::json!("/tmp/d")));
        std::fs::write(&p, "computer_idd = 4\n").expect("write");
        let e = Fixture::from_file(&p).expect_err("typo").to_string();
        assert!(e.contains("computer_idd"), "{e}");
        std::fs::write(&p, "[computer_vars]\nx = [1]\n").expect("write");
        let e = Fixture::from_file(&p).expect_err("array").to_string();
        assert!(e.contains("computer_vars.x"), "{e}");
    }

    #[test]
    fn state_round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = CallState::default_path(dir.path(), 3);
        assert_eq!(CallState::read(&p).expect("read"), None);
        let mut s = CallState {
            computer_id: 3,
            ..Default::default()
        };
        s.computer_vars.insert("power".into(), "on".into());
        s.notes.insert("n".into(), serde_json::json!({"a": 1}));
        s.write(&p).expect("write");
        assert_eq!(CallState::read(&p).expect("read"), Some(s));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
    }
}
