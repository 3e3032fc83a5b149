//! Login sessions from logind: over D-Bus, else from its session files in
//! /run/systemd/sessions. logind's lock and idle hints are not read: they
//! change whenever the user steps away, and the report must not.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::host::{BusError, Host};

const SERVICE: &str = "org.freedesktop.login1";
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";
const SESSIONS_DIR: &str = "/run/systemd/sessions";

/// One logind session.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Owner.
    pub uid: Option<u32>,
    /// Owner's name.
    pub user: String,
    /// x11, wayland, mir, tty or unspecified.
    pub kind: String,
    /// user, greeter, lock-screen, background, manager...
    pub class: String,
    /// XDG_SESSION_DESKTOP.
    pub desktop: String,
    /// Logged in over the network.
    pub remote: bool,
    /// active, online or closing.
    pub state: String,
}

/// Where the sessions came from, or why none could be listed.
pub struct Listing {
    /// The sessions (any class and type).
    pub sessions: Vec<Session>,
    /// How they were found.
    pub evidence: Vec<String>,
    /// False when neither D-Bus nor the session files answered.
    pub available: bool,
}

/// The sessions logind knows.
pub fn sessions(host: &Host) -> Listing {
    match from_bus(host) {
        Ok(sessions) => Listing {
            sessions,
            evidence: vec!["logind over D-Bus (ListSessions, session properties)".into()],
            available: true,
        },
        Err(e) => {
            let why = format!("logind over D-Bus unavailable ({e})");
            if host.exists(SESSIONS_DIR) {
                Listing {
                    sessions: from_files(host),
                    evidence: vec![
                        why,
                        format!("{SESSIONS_DIR} (no lock or idle hints in these files)"),
                    ],
                    available: true,
                }
            } else {
                Listing {
                    sessions: vec![],
                    evidence: vec![why, format!("{SESSIONS_DIR} absent: logind is not running")],
                    available: false,
                }
            }
        }
    }
}

fn from_bus(host: &Host) -> Result<Vec<Session>, BusError> {
    let list = host
        .bus()
        .call(SERVICE, MANAGER_PATH, MANAGER, "ListSessions", &[])?;
    let rows = list.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for row in rows {
        let Some(f) = row.as_array() else { continue };
        // The session id changes with every login: it stays out of the report.
        let Some(path) = f.get(4).and_then(Value::as_str) else {
            continue;
        };
        let props = properties(host, path);
        let s = |k: &str| {
            props
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let b = |k: &str| props.get(k).and_then(Value::as_bool);
        let uid = f
            .get(1)
            .and_then(Value::as_u64)
            .and_then(|u| u32::try_from(u).ok());
        let user = f
            .get(2)
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| s("Name"));
        out.push(Session {
            uid,
            user,
            kind: s("Type"),
            class: s("Class"),
            desktop: s("Desktop"),
            remote: b("Remote").unwrap_or(false),
            state: s("State"),
        });
    }
    Ok(out)
}

/// A session's properties: one GetAll, else one read per property.
fn properties(host: &Host, path: &str) -> BTreeMap<String, Value> {
    if let Ok(Value::Object(m)) = host.bus().call(
        SERVICE,
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        &[SESSION],
    ) {
        return m.into_iter().collect();
    }
    ["Type", "Class", "Desktop", "Remote", "State", "Name"]
        .iter()
        .filter_map(|k| {
            host.bus()
                .property(SERVICE, path, SESSION, k)
                .ok()
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

fn from_files(host: &Host) -> Vec<Session> {
    let mut out = Vec::new();
    for id in host.list_dir(SESSIONS_DIR) {
        if id.ends_with(".ref") || id.starts_with('.') {
            continue;
        }
        let Ok(text) = host.read_to_string(&format!("{SESSIONS_DIR}/{id}")) else {
            continue;
        };
        let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or("").to_string();
        out.push(Session {
            uid: kv.get("UID").and_then(|u| u.parse().ok()),
            user: get("USER"),
            kind: kv.get("TYPE").copied().unwrap_or("unspecified").to_string(),
            class: get("CLASS"),
            desktop: get("DESKTOP"),
            remote: get("REMOTE") == "1",
            state: get("STATE"),
        });
    }
    out
}
