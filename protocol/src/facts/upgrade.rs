//! Reading older facts versions: each step turns version N's JSON into
//! version N+1's.

use serde_json::Value;

use super::{FACTS_VERSION, OLDEST_READABLE, ReadError};

/// Turns collector `name`'s output written in facts version `from` into
/// the current version; `None` when it already is current.
pub fn upgrade(name: &str, value: &Value, from: u32) -> Result<Option<Value>, ReadError> {
    if !(OLDEST_READABLE..=FACTS_VERSION).contains(&from) {
        return Err(ReadError::Version(from));
    }
    if from == FACTS_VERSION {
        return Ok(None);
    }
    let mut v = value.clone();
    if from < 2 {
        v1_to_v2(name, &mut v);
    }
    Ok(Some(v))
}

/// Version 1 (agents before the typed contract) differs from version 2 in:
/// - `evidence`, written as a sentence, a list, or (os_info) a map of
///   field to source; version 2 always writes a list;
/// - auto_updates: apt's `timer` was the state of apt-daily-upgrade.timer,
///   dnf's a list; version 2 has `timers`, each `unit: state`, and dnf
///   says `installed` as apt does.
fn v1_to_v2(name: &str, v: &mut Value) {
    lists_of_evidence(v);
    if name == "auto_updates"
        && let Value::Object(map) = v
    {
        match map.remove("timer") {
            Some(Value::String(state)) => {
                map.insert(
                    "timers".into(),
                    Value::Array(vec![Value::String(format!(
                        "apt-daily-upgrade.timer: {state}"
                    ))]),
                );
            }
            Some(list @ Value::Array(_)) => {
                map.insert("timers".into(), list);
            }
            _ => {}
        }
        let dnf = map.get("mechanism").and_then(Value::as_str) == Some("dnf-automatic");
        if dnf && !map.contains_key("installed") {
            let missing = map["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|e| e.contains("is not installed"));
            map.insert("installed".into(), Value::Bool(!missing));
        }
    }
}

fn lists_of_evidence(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if key == "evidence" {
                    *item = evidence_list(item);
                } else {
                    lists_of_evidence(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(lists_of_evidence),
        _ => {}
    }
}

fn evidence_list(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::Array(vec![Value::String(s.clone())]),
        Value::Object(map) => Value::Array(
            map.iter()
                .map(|(k, v)| {
                    let source = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    Value::String(format!("{k}: {source}"))
                })
                .collect(),
        ),
        Value::Null => Value::Array(vec![]),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_1_evidence_becomes_a_list() {
        let v1 = json!({
            "evidence": {"kernel": "/proc/sys/kernel/osrelease"},
            "filesystems": [{"evidence": "dm-crypt below /"}],
            "swap": [{"evidence": ["a", "b"]}],
        });
        let v2 = upgrade("x", &v1, 1).unwrap().unwrap();
        assert_eq!(
            v2,
            json!({
                "evidence": ["kernel: /proc/sys/kernel/osrelease"],
                "filesystems": [{"evidence": ["dm-crypt below /"]}],
                "swap": [{"evidence": ["a", "b"]}],
            })
        );
        assert!(upgrade("x", &v2, FACTS_VERSION).unwrap().is_none());
        assert!(matches!(upgrade("x", &v2, 99), Err(ReadError::Version(99))));
    }

    #[test]
    fn version_1_auto_updates_name_timers_and_dnf_installation() {
        let apt = json!({"enabled": true, "mechanism": "unattended-upgrades", "timer": "enabled",
            "installed": true, "evidence": ["x"]});
        let v2 = upgrade("auto_updates", &apt, 1).unwrap().unwrap();
        assert_eq!(v2["timers"], json!(["apt-daily-upgrade.timer: enabled"]));
        assert!(v2.get("timer").is_none());
        let dnf = json!({"enabled": false, "mechanism": "dnf-automatic", "applies": "none",
            "evidence": ["dnf-automatic is not installed (no /etc/dnf/automatic.conf)"]});
        let v2 = upgrade("auto_updates", &dnf, 1).unwrap().unwrap();
        assert_eq!(v2["installed"], false);
        let read: crate::facts::auto_updates::AutoUpdates = serde_json::from_value(v2).unwrap();
        assert_eq!(read.installed, Some(false));
    }
}
