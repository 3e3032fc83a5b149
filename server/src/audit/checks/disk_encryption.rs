//! `unencrypted-hard-drive`: a local filesystem or swap without encryption.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, cannot_tell, plugin};

/// Some local storage is not encrypted.
pub struct DiskEncryption;

impl Check for DiskEncryption {
    fn name(&self) -> &'static str {
        "unencrypted-hard-drive"
    }

    fn describe(&self) -> &'static str {
        "a mounted local filesystem or swap is not on an encrypted device"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "hd_encryption") {
            Ok(v) => v,
            Err(f) => return f,
        };
        match &v["encrypted"] {
            Value::Bool(true) => Finding::Clear,
            Value::Bool(false) => {
                let mut plain: Vec<String> = Vec::new();
                for (list, label) in [("filesystems", "mountpoint"), ("swap", "device")] {
                    if let Some(items) = v[list].as_array() {
                        plain.extend(
                            items
                                .iter()
                                .filter(|f| f["encrypted"] != Value::Bool(true))
                                .filter_map(|f| f[label].as_str().map(str::to_string)),
                        );
                    }
                }
                if plain.is_empty() {
                    Finding::Raise("storage is not encrypted".into())
                } else {
                    Finding::Raise(format!("not encrypted: {}", plain.join(", ")))
                }
            }
            _ => cannot_tell("whether the disks are encrypted", v),
        }
    }
}
