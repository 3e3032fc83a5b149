//! `firewall-disabled`: incoming connections are not filtered.

use penguindome_protocol::facts::firewall::{self, Status};

use super::{Check, Context, Facts, Finding, cannot_tell, evidence, fact};

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
        let f = match fact::<firewall::Firewall>(facts) {
            Ok(f) => f,
            Err(f) => return f,
        };
        match f.status {
            Status::On => Finding::Clear,
            Status::Off => Finding::Raise(format!("firewall off: {}", evidence(&f.evidence))),
            Status::Unknown => cannot_tell("whether the firewall is on", &f.evidence),
        }
    }
}
