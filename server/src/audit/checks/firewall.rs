//! `firewall-disabled`: incoming connections are not filtered.

use super::{Check, Context, Facts, Finding, cannot_tell, evidence, plugin};

/// The firewall is off.
pub struct Firewall;

impl Check for Firewall {
    fn name(&self) -> &'static str {
        "firewall-disabled"
    }

    fn describe(&self) -> &'static str {
        "the active ruleset does not filter incoming connections"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "firewall") {
            Ok(v) => v,
            Err(f) => return f,
        };
        match v["status"].as_str() {
            Some("on") => Finding::Clear,
            Some("off") => Finding::Raise(format!("firewall off: {}", evidence(v))),
            _ => cannot_tell("whether the firewall is on", v),
        }
    }
}
