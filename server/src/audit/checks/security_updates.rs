//! `os-security-updates`: security fixes offered and not installed.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, cannot_tell, plugin};

/// Security updates pending on the client.
pub struct SecurityUpdates;

/// Names shown in the detail.
const SHOWN: usize = 5;

impl Check for SecurityUpdates {
    fn name(&self) -> &'static str {
        "os-security-updates"
    }

    fn describe(&self) -> &'static str {
        "security updates are offered by the distribution and not installed"
    }

    fn default_grace(&self) -> &'static str {
        "1d"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "os_updates") {
            Ok(v) => v,
            Err(f) => return f,
        };
        let Some(count) = v["counts"]["security"].as_u64() else {
            // The backend cannot tell security fixes apart (pacman without
            // advisories, a repository without updateinfo): then any
            // pending update may be one.
            return match v["counts"]["pending"].as_u64() {
                Some(0) => Finding::Clear,
                Some(n) => Finding::Raise(format!(
                    "{n} update(s) pending, and none can be told to be a security fix or not: {}",
                    v["security_evidence"].as_str().unwrap_or("no reason given")
                )),
                None => cannot_tell("whether security updates are pending", v),
            };
        };
        if count == 0 {
            return Finding::Clear;
        }
        let names: Vec<&str> = v["pending"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|p| p["security"] == Value::Bool(true))
                    .filter_map(|p| p["name"].as_str())
                    .take(SHOWN)
                    .collect()
            })
            .unwrap_or_default();
        let more = if count as usize > names.len() && !names.is_empty() {
            ", ..."
        } else {
            ""
        };
        if names.is_empty() {
            Finding::Raise(format!("{count} security update(s) pending"))
        } else {
            Finding::Raise(format!(
                "{count} security update(s) pending: {}{more}",
                names.join(", ")
            ))
        }
    }
}
