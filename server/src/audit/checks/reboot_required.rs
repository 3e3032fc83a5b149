//! `reboot-required`: updates installed that only a reboot applies.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::os_updates::OsUpdates;

use super::{Check, Context, Facts, Finding, fact};

/// The running kernel or libraries are older than the installed ones.
pub struct RebootRequired;

impl Check for RebootRequired {
    fn name(&self) -> &'static str {
        "reboot-required"
    }

    fn describe(&self) -> &'static str {
        "installed updates (a kernel, core libraries) wait for a reboot"
    }

    fn default_grace(&self) -> &'static str {
        "2d"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let u = match fact::<OsUpdates>(facts) {
            Ok(u) => u,
            Err(f) => return f,
        };
        // Only a definite yes: distributions without a reboot marker say
        // "unknown", which is not worth an alert of its own.
        if u.reboot_required == Known::Value(true) {
            let why = Some(u.reboot_evidence.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("the package manager says so");
            Finding::Raise(format!("a reboot is required: {why}"))
        } else {
            Finding::Clear
        }
    }
}
