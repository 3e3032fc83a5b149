//! The typed contract of what each built-in collector reports: one module
//! per collector. The agent builds these types, the server's checks read
//! them, tests make fixtures with them, and the JSON Schema published for
//! site plugin authors and API readers is generated from them.
//!
//! Conventions every collector follows:
//! - An answer that cannot be determined is [`Known::Unknown`] (on the wire
//!   the string `"unknown"`), never a reassuring default; the reason is in
//!   `evidence`.
//! - `evidence` is a list of sentences naming the files, programs or D-Bus
//!   properties the answer rests on.
//! - A collector that fails as a whole is reported as [`Failure`] instead.
//!
//! Reports carry the facts version they were written in
//! ([`crate::wire::Report::facts_version`]); [`upgrade`] turns an older
//! version into this one, so that agents one release behind keep passing
//! the server's checks. Site plugins stay free-form JSON.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub mod agent;
pub mod auto_updates;
pub mod firewall;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod geolocation;
pub mod guest_session;
pub mod hardware;
pub mod hd_encryption;
pub mod ip_addresses;
pub mod network;
pub mod os_info;
pub mod os_updates;
pub mod screenlock;
pub mod software;
pub mod sshd;
mod upgrade;
pub mod users;

pub use upgrade::upgrade;

/// The facts version this crate's types describe.
pub const FACTS_VERSION: u32 = 2;

/// The oldest facts version the server still reads.
pub const OLDEST_READABLE: u32 = 1;

/// One built-in collector's output type.
pub trait Fact: Serialize + DeserializeOwned + JsonSchema {
    /// The collector's name: its key under `plugins` in a report.
    const NAME: &'static str;
}

/// The marker of an answer that could not be determined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Serialized as `"unknown"`.
    #[default]
    Unknown,
}

/// A value the agent determined, the admission that it could not, or the
/// value sealed for a quorum of administrators ([`crate::sealing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Known<T> {
    /// Could not be determined (the evidence says why). Listed first:
    /// `"unknown"` is never read as a value.
    Unknown(Unknown),
    /// Known to the agent, sealed before it left the machine: the server
    /// knows there is a value, not what it is.
    Sealed(crate::sealing::Sealed),
    /// The answer.
    Value(T),
}

impl<T> Known<T> {
    /// The unknown answer.
    pub const UNKNOWN: Self = Known::Unknown(Unknown::Unknown);

    /// The value, if known and readable here.
    pub fn known(&self) -> Option<&T> {
        match self {
            Known::Value(v) => Some(v),
            Known::Unknown(_) | Known::Sealed(_) => None,
        }
    }

    /// Whether the value is sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self, Known::Sealed(_))
    }

    /// Whether the answer is unknown.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Known::Unknown(_))
    }
}

impl<T> From<Option<T>> for Known<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::UNKNOWN, Known::Value)
    }
}

impl<T> From<T> for Known<T> {
    fn from(v: T) -> Self {
        Known::Value(v)
    }
}

impl<T> Default for Known<T> {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// A timestamp in the project's one format (RFC 3339 UTC, milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::envelope::utc::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::envelope::utc::deserialize(d).map(Timestamp)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }

    fn inline_schema() -> bool {
        true
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(crate::envelope::utc::truncate(t))
    }
}

/// What the agent sends instead of a collector's facts when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Failure {
    /// What went wrong.
    pub error: String,
}

/// Why a collector's facts could not be read from a report.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The report has no output of this collector.
    #[error("no {name} output in the report")]
    Missing {
        /// The collector.
        name: &'static str,
    },
    /// The collector failed on the client.
    #[error("the {name} collector failed: {error}")]
    Failed {
        /// The collector.
        name: &'static str,
        /// The agent's reason.
        error: String,
    },
    /// The output does not have the collector's shape.
    #[error("the {name} output does not match facts version {version}: {source}")]
    Malformed {
        /// The collector.
        name: &'static str,
        /// The version it was read as.
        version: u32,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A facts version this build cannot read.
    #[error(
        "facts version {0} is not readable here (this build reads {OLDEST_READABLE} to {FACTS_VERSION})"
    )]
    Version(u32),
}

/// Reads one collector's facts from a report's output for it, written in
/// facts `version`.
pub fn read<F: Fact>(output: Option<&Value>, version: u32) -> Result<F, ReadError> {
    let name = F::NAME;
    let value = match output {
        None | Some(Value::Null) => return Err(ReadError::Missing { name }),
        Some(v) => v,
    };
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(ReadError::Failed {
            name,
            error: error.to_string(),
        });
    }
    let current = upgrade(name, value, version)?;
    let value = current.as_ref().unwrap_or(value);
    F::deserialize(value).map_err(|source| ReadError::Malformed {
        name,
        version,
        source,
    })
}

/// Reads one collector's facts from its output's JSON text, as a
/// submission carries it: the current version straight from the text,
/// older ones through [`upgrade`].
pub fn read_text<F: Fact>(text: Option<&str>, version: u32) -> Result<F, ReadError> {
    let name = F::NAME;
    let Some(text) = text.filter(|t| t.trim() != "null") else {
        return Err(ReadError::Missing { name });
    };
    if version != FACTS_VERSION {
        let value: Value = serde_json::from_str(text).map_err(|source| ReadError::Malformed {
            name,
            version,
            source,
        })?;
        return read(Some(&value), version);
    }
    if let Ok(Failure { error }) = serde_json::from_str::<Failure>(text) {
        return Err(ReadError::Failed { name, error });
    }
    serde_json::from_str(text).map_err(|source| ReadError::Malformed {
        name,
        version,
        source,
    })
}

/// A fact as the JSON the agent sends.
pub fn to_value<F: Fact>(fact: &F) -> Value {
    // Facts are plain data: maps with string keys, no non-finite floats
    // from the agent's own collectors.
    serde_json::to_value(fact).unwrap_or_else(
        |e| serde_json::json!({"error": format!("cannot serialize the {} facts: {e}", F::NAME)}),
    )
}

/// The JSON Schema of every built-in collector's facts, by name.
pub fn schemas() -> Vec<(&'static str, Schema)> {
    fn one<F: Fact>() -> (&'static str, Schema) {
        (F::NAME, schemars::schema_for!(F))
    }
    vec![
        one::<agent::Agent>(),
        one::<auto_updates::AutoUpdates>(),
        one::<firewall::Firewall>(),
        one::<geolocation::Geolocation>(),
        one::<guest_session::GuestSession>(),
        one::<hardware::Hardware>(),
        one::<hd_encryption::HdEncryption>(),
        one::<ip_addresses::IpAddresses>(),
        one::<network::Network>(),
        one::<os_info::OsInfo>(),
        one::<os_updates::OsUpdates>(),
        one::<screenlock::ScreenLock>(),
        one::<software::Software>(),
        one::<sshd::Sshd>(),
        one::<users::Users>(),
    ]
}

/// Checks that a selector names a field that may be sealed: for a built-in
/// collector, a field its type declares [`Known`] (the only kind that can
/// hold a sealed marker and stay typed); any field of a site plugin, whose
/// output is free-form.
pub fn check_sealable(sel: &crate::sealing::Selector) -> Result<(), String> {
    let Some((_, schema)) = schemas().into_iter().find(|(n, _)| *n == sel.plugin) else {
        return Ok(());
    };
    let root = schema.to_value();
    let mut here = &root;
    for (i, key) in sel.path.iter().enumerate() {
        let field = object_of(&root, here)
            .and_then(|o| o.get("properties"))
            .and_then(|p| p.get(key));
        let Some(field) = field else {
            return Err(format!(
                "{} has no field {key:?}; sealable fields: {}",
                sel.plugin,
                sealable_fields(&root).join(", ")
            ));
        };
        if i + 1 == sel.path.len() {
            return if admits_sealed(&root, field) {
                Ok(())
            } else {
                Err(format!(
                    "{sel} cannot be sealed (its type has no sealed form); sealable fields of {}: {}",
                    sel.plugin,
                    sealable_fields(&root).join(", ")
                ))
            };
        }
        here = field;
    }
    Ok(())
}

/// The object schema a schema stands for: through a `$ref`, or the one
/// object among a [`Known`]'s alternatives.
fn object_of<'a>(root: &'a Value, schema: &'a Value) -> Option<&'a serde_json::Map<String, Value>> {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => root.pointer(r.strip_prefix('#')?)?,
        None => schema,
    };
    if resolved.get("properties").is_some() {
        return resolved.as_object();
    }
    let alternatives = resolved.get("anyOf")?.as_array()?;
    alternatives
        .iter()
        .filter(|a| !is_sealed_ref(a))
        .find_map(|a| object_of(root, a))
}

fn is_sealed_ref(schema: &Value) -> bool {
    schema.get("$ref").and_then(Value::as_str) == Some("#/$defs/Sealed")
}

fn admits_sealed(root: &Value, schema: &Value) -> bool {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r.strip_prefix('#').and_then(|p| root.pointer(p)),
        None => Some(schema),
    };
    resolved
        .and_then(|s| s.get("anyOf"))
        .and_then(Value::as_array)
        .is_some_and(|alts| alts.iter().any(is_sealed_ref))
}

/// The top-level fields of a collector's schema that may be sealed.
fn sealable_fields(root: &Value) -> Vec<String> {
    let Some(props) = root.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .filter(|(_, s)| admits_sealed(root, s))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The folder, relative to a schema root, of this version's schemas.
pub fn schema_dir() -> String {
    format!("facts-v{FACTS_VERSION}")
}

/// Every schema as pretty JSON text, by file name (`<collector>.json`).
pub fn schema_files() -> Vec<(String, String)> {
    schemas()
        .into_iter()
        .map(|(name, schema)| {
            let sorted = sorted_keys(schema.to_value());
            let text = serde_json::to_string_pretty(&sorted).unwrap_or_default() + "\n";
            (format!("{name}.json"), text)
        })
        .collect()
}

/// The same JSON with every object's keys in order, whether or not a
/// dependency turned on serde_json's `preserve_order` in this build (the
/// published text must not depend on which crates are built together).
pub(crate) fn sorted_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas in protocol/schema/ are what the types say. After a
    /// change to a facts type, run the tests with PENGUINDOME_BLESS=1 to
    /// rewrite them, and bump FACTS_VERSION if the change is incompatible.
    #[test]
    fn published_schemas_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schema")
            .join(schema_dir());
        let bless = std::env::var_os("PENGUINDOME_BLESS").is_some();
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (file, text) in schema_files() {
            let path = dir.join(&file);
            if bless {
                std::fs::write(&path, &text).unwrap();
            }
            let published = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                published == text,
                "{} is not what the types say; run the protocol tests with PENGUINDOME_BLESS=1",
                path.display()
            );
        }
        let names: Vec<String> = schema_files().into_iter().map(|(f, _)| f).collect();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&name),
                "{name} in {} has no type",
                dir.display()
            );
        }
    }

    #[test]
    fn unknown_is_never_read_as_a_value() {
        let v: Known<String> = serde_json::from_str("\"unknown\"").unwrap();
        assert!(v.is_unknown());
        let v: Known<u64> = serde_json::from_str("3").unwrap();
        assert_eq!(v.known(), Some(&3));
        assert_eq!(
            serde_json::to_string(&Known::<bool>::UNKNOWN).unwrap(),
            "\"unknown\""
        );
    }

    #[test]
    fn text_reads_like_values() {
        let on = fixtures::firewall(firewall::Status::On, "nft");
        let text = serde_json::to_string(&on).unwrap();
        let read: firewall::Firewall = read_text(Some(&text), FACTS_VERSION).unwrap();
        assert_eq!(read, on);
        assert!(matches!(
            read_text::<firewall::Firewall>(Some(r#"{"error":"boom"}"#), FACTS_VERSION),
            Err(ReadError::Failed { .. })
        ));
        assert!(matches!(
            read_text::<firewall::Firewall>(None, FACTS_VERSION),
            Err(ReadError::Missing { .. })
        ));
        let v1 = r#"{"status":"on","ipv4":{"filtered":true,"by":[]},
            "ipv6":{"filtered":true,"by":[],"disabled":false},"managers":[],"evidence":"nft"}"#;
        let read: firewall::Firewall = read_text(Some(v1), 1).unwrap();
        assert_eq!(read.evidence, ["nft"]);
    }

    #[test]
    fn only_known_fields_and_site_plugin_fields_are_sealable() {
        use crate::sealing::Selector;
        let ok = |s: &str| check_sealable(&Selector::parse(s).unwrap());
        ok("geolocation.location").unwrap();
        ok("users.logged_in").unwrap();
        ok("os_updates.counts.security").unwrap();
        ok("asset_tag.owner").unwrap();
        let e = ok("users.accounts").unwrap_err();
        assert!(e.contains("logged_in"), "{e}");
        let e = ok("geolocation.nowhere").unwrap_err();
        assert!(e.contains("no field"), "{e}");
    }

    #[test]
    fn a_sealed_known_reads_as_sealed() {
        let sealed = serde_json::json!({"sealed": {"key": "K", "digest": "d", "ciphertext": "c"}});
        let v: Known<geolocation::Location> = serde_json::from_value(sealed).unwrap();
        assert!(v.is_sealed() && v.known().is_none() && !v.is_unknown());
    }

    #[test]
    fn failures_and_absences_are_told_apart() {
        let failed = serde_json::json!({"error": "boom"});
        assert!(matches!(
            read::<sshd::Sshd>(Some(&failed), FACTS_VERSION),
            Err(ReadError::Failed { .. })
        ));
        assert!(matches!(
            read::<sshd::Sshd>(None, FACTS_VERSION),
            Err(ReadError::Missing { .. })
        ));
        let wrong = serde_json::json!({"status": 7});
        assert!(matches!(
            read::<sshd::Sshd>(Some(&wrong), FACTS_VERSION),
            Err(ReadError::Malformed { .. })
        ));
    }
}
