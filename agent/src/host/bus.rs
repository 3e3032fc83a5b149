//! The system D-Bus as collectors see it: property reads and simple method
//! calls, answered as JSON so that fixtures can record them in a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};
use zbus::zvariant;

/// Why a D-Bus question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No system bus (a container without dbus, say).
    #[error("the system D-Bus is not available: {0}")]
    NoBus(String),
    /// The service, object, property or method does not exist.
    #[error("{0}")]
    Unknown(String),
}

/// The system bus, or a recording of one.
pub trait Bus: Send + Sync {
    /// Reads `interface.name` of `path` at `service`.
    fn property(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        name: &str,
    ) -> Result<Value, BusError>;

    /// Calls `interface.method(args...)` with string arguments; the reply's
    /// values (one value alone, several as an array).
    fn call(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        method: &str,
        args: &[&str],
    ) -> Result<Value, BusError>;
}

/// The key a question is recorded under in a fixture.
fn key(parts: &[&str]) -> String {
    parts.join(" ")
}

/// A recording: `<root>/.dbus.json` holds `{"properties": {"SERVICE PATH
/// INTERFACE NAME": value}, "calls": {"SERVICE PATH INTERFACE METHOD
/// [ARGS...]": value}}`. Anything not recorded is "unknown service".
#[derive(Debug, Default)]
pub struct FixtureBus {
    properties: BTreeMap<String, Value>,
    calls: BTreeMap<String, Value>,
    present: bool,
}

impl FixtureBus {
    /// Loads a recording; a missing file is a machine without a bus.
    pub fn load(path: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()));
        let table = |k: &str| -> BTreeMap<String, Value> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        Self {
            properties: table("properties"),
            calls: table("calls"),
            present: true,
        }
    }
}

impl Bus for FixtureBus {
    fn property(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        name: &str,
    ) -> Result<Value, BusError> {
        if !self.present {
            return Err(BusError::NoBus("no .dbus.json in the fixture".into()));
        }
        let k = key(&[service, path, interface, name]);
        self.properties
            .get(&k)
            .cloned()
            .ok_or_else(|| BusError::Unknown(format!("not recorded: {k}")))
    }

    fn call(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        method: &str,
        args: &[&str],
    ) -> Result<Value, BusError> {
        if !self.present {
            return Err(BusError::NoBus("no .dbus.json in the fixture".into()));
        }
        let mut parts = vec![service, path, interface, method];
        parts.extend_from_slice(args);
        let k = key(&parts);
        self.calls
            .get(&k)
            .cloned()
            .ok_or_else(|| BusError::Unknown(format!("not recorded: {k}")))
    }
}

/// Longest wait for one D-Bus answer: a hung service must not stall a run.
const METHOD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The real system bus, connected on first use.
#[derive(Default)]
pub(super) struct SystemBus {
    conn: OnceLock<Result<zbus::blocking::Connection, String>>,
    /// Services known to be running (or not), asked once per run.
    running: Mutex<BTreeMap<String, bool>>,
}

impl SystemBus {
    fn conn(&self) -> Result<&zbus::blocking::Connection, BusError> {
        self.conn
            .get_or_init(|| {
                zbus::blocking::connection::Builder::system()
                    .map(|b| b.method_timeout(METHOD_TIMEOUT))
                    .and_then(|b| b.build())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| BusError::NoBus(e.clone()))
    }

    /// Errs unless `service` already runs: asking a stopped service would
    /// make the bus start it, and a monitoring agent must not do that.
    fn require_running(
        &self,
        conn: &zbus::blocking::Connection,
        service: &str,
    ) -> Result<(), BusError> {
        let known = self
            .running
            .lock()
            .ok()
            .and_then(|m| m.get(service).copied());
        let running = match known {
            Some(r) => r,
            None => {
                let reply = conn
                    .call_method(
                        Some("org.freedesktop.DBus"),
                        "/org/freedesktop/DBus",
                        Some("org.freedesktop.DBus"),
                        "NameHasOwner",
                        &(service,),
                    )
                    .map_err(unknown)?;
                let r: bool = reply.body().deserialize().map_err(unknown)?;
                if let Ok(mut m) = self.running.lock() {
                    m.insert(service.to_string(), r);
                }
                r
            }
        };
        if running {
            Ok(())
        } else {
            Err(BusError::Unknown(format!("{service} is not running")))
        }
    }
}

fn unknown(e: impl std::fmt::Display) -> BusError {
    BusError::Unknown(e.to_string())
}

impl Bus for SystemBus {
    fn property(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        name: &str,
    ) -> Result<Value, BusError> {
        let conn = self.conn()?;
        self.require_running(conn, service)?;
        let reply = conn
            .call_method(
                Some(service),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(interface, name),
            )
            .map_err(unknown)?;
        let v: zvariant::OwnedValue = reply.body().deserialize().map_err(unknown)?;
        Ok(to_json(&v))
    }

    fn call(
        &self,
        service: &str,
        path: &str,
        interface: &str,
        method: &str,
        args: &[&str],
    ) -> Result<Value, BusError> {
        let conn = self.conn()?;
        self.require_running(conn, service)?;
        let reply = match args {
            [] => conn.call_method(Some(service), path, Some(interface), method, &()),
            [a] => conn.call_method(Some(service), path, Some(interface), method, &(*a,)),
            [a, b] => conn.call_method(Some(service), path, Some(interface), method, &(*a, *b)),
            _ => {
                return Err(BusError::Unknown(
                    "at most two arguments are supported".into(),
                ));
            }
        }
        .map_err(unknown)?;
        let body = reply.body();
        if body.signature().to_string().is_empty() {
            return Ok(Value::Null);
        }
        let s: zvariant::Structure = body.deserialize().map_err(unknown)?;
        let mut fields: Vec<Value> = s.fields().iter().map(to_json).collect();
        Ok(if fields.len() == 1 {
            fields.remove(0)
        } else {
            Value::Array(fields)
        })
    }
}

/// D-Bus values as JSON: dictionaries with string keys become objects,
/// other dictionaries arrays of pairs, structures arrays.
fn to_json(v: &zvariant::Value<'_>) -> Value {
    use zvariant::Value as V;
    match v {
        V::U8(n) => Value::from(*n),
        V::Bool(b) => Value::Bool(*b),
        V::I16(n) => Value::from(*n),
        V::U16(n) => Value::from(*n),
        V::I32(n) => Value::from(*n),
        V::U32(n) => Value::from(*n),
        V::I64(n) => Value::from(*n),
        V::U64(n) => Value::from(*n),
        V::F64(n) => Value::from(*n),
        V::Str(s) => Value::String(s.as_str().to_string()),
        V::Signature(s) => Value::String(s.to_string()),
        V::ObjectPath(p) => Value::String(p.as_str().to_string()),
        V::Value(inner) => to_json(inner),
        V::Array(a) => Value::Array(a.inner().iter().map(to_json).collect()),
        V::Dict(d) => {
            let pairs: Vec<(Value, Value)> =
                d.iter().map(|(k, v)| (to_json(k), to_json(v))).collect();
            if pairs.iter().all(|(k, _)| k.is_string()) {
                let mut m = Map::new();
                for (k, v) in pairs {
                    if let Value::String(k) = k {
                        m.insert(k, v);
                    }
                }
                Value::Object(m)
            } else {
                Value::Array(
                    pairs
                        .into_iter()
                        .map(|(k, v)| Value::Array(vec![k, v]))
                        .collect(),
                )
            }
        }
        V::Structure(s) => Value::Array(s.fields().iter().map(to_json).collect()),
        V::Fd(_) => Value::Null,
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_answers_what_it_recorded() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".dbus.json"),
            r#"{"properties": {"org.freedesktop.login1 /org/freedesktop/login1/session/_32 org.freedesktop.login1.Session LockedHint": true},
                "calls": {"org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1.zone getZoneOfInterface eth0": "public"}}"#,
        )
        .unwrap();
        let bus = FixtureBus::load(&d.path().join(".dbus.json"));
        assert_eq!(
            bus.property(
                "org.freedesktop.login1",
                "/org/freedesktop/login1/session/_32",
                "org.freedesktop.login1.Session",
                "LockedHint"
            )
            .unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            bus.call(
                "org.fedoraproject.FirewallD1",
                "/org/fedoraproject/FirewallD1",
                "org.fedoraproject.FirewallD1.zone",
                "getZoneOfInterface",
                &["eth0"]
            )
            .unwrap(),
            "public"
        );
        assert!(matches!(
            bus.property("a", "/b", "c", "d"),
            Err(BusError::Unknown(_))
        ));
        let none = FixtureBus::load(&d.path().join("missing.json"));
        assert!(matches!(
            none.property("a", "/b", "c", "d"),
            Err(BusError::NoBus(_))
        ));
    }

    #[test]
    fn values_convert_to_json() {
        use zvariant::Value as V;
        let dict: std::collections::HashMap<&str, V> =
            [("Id", V::from("2")), ("Active", V::from(true))]
                .into_iter()
                .collect();
        let v = to_json(&V::from(dict));
        assert_eq!(v["Id"], "2");
        assert_eq!(v["Active"], true);
        let arr = to_json(&V::from(vec![1u32, 2, 3]));
        assert_eq!(arr, serde_json::json!([1, 2, 3]));
    }
}
