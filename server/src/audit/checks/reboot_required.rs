//! `reboot-required`: updates installed that only a reboot applies.

use super::{Check, Context, Facts, Finding, plugin};

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
        let v = match plugin(facts, "os_updates") {
            Ok(v) => v,
            Err(f) => return f,
        };
        // Only a definite yes: distributions without a reboot marker say
        // "unknown", which is not worth an alert of its own.
        if v["reboot_required"] == true {
            let why = v["reboot_evidence"]
                .as_str()
                .unwrap_or("the package manager says so");
            Finding::Raise(format!("a reboot is required: {why}"))
        } else {
            Finding::Clear
        }
    }
}
