//! `auto-updates-disabled`: nothing installs security updates on its own.

use super::{Check, Context, Facts, Finding, cannot_tell, evidence, plugin};

/// Unattended security updates are off.
pub struct AutoUpdates;

impl Check for AutoUpdates {
    fn name(&self) -> &'static str {
        "auto-updates-disabled"
    }

    fn describe(&self) -> &'static str {
        "automatic updates (unattended-upgrades, dnf-automatic) are not enabled"
    }

    fn default_grace(&self) -> &'static str {
        "1d"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "auto_updates") {
            Ok(v) => v,
            Err(f) => return f,
        };
        match &v["enabled"] {
            serde_json::Value::Bool(true) => Finding::Clear,
            serde_json::Value::Bool(false) => {
                let how = v["mechanism"].as_str().unwrap_or("automatic updates");
                // apt says `installed: false`; dnf says so in its evidence.
                let missing = v["installed"] == false || evidence(v).contains("is not installed");
                let why = if missing {
                    " (not installed)"
                } else if v["applies"] == "download-only" {
                    ": updates are downloaded but not installed"
                } else {
                    ""
                };
                Finding::Raise(format!("{how} is not enabled{why}"))
            }
            _ => cannot_tell("whether automatic updates are enabled", v),
        }
    }
}
