//! `auto-updates-disabled`: nothing installs security updates on its own.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::auto_updates::{self, Applies, Mechanism};

use super::{Check, Context, Facts, Finding, cannot_tell, fact};

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
        let a = match fact::<auto_updates::AutoUpdates>(facts) {
            Ok(a) => a,
            Err(f) => return f,
        };
        match a.enabled {
            Known::Value(true) => Finding::Clear,
            Known::Value(false) => {
                let how = match a.mechanism {
                    Some(Mechanism::UnattendedUpgrades) => "unattended-upgrades",
                    Some(Mechanism::DnfAutomatic) => "dnf-automatic",
                    Some(Mechanism::None) | None => "automatic updates",
                };
                let why = if a.installed == Some(false) {
                    " (not installed)"
                } else if a.applies == Some(Applies::DownloadOnly) {
                    ": updates are downloaded but not installed"
                } else {
                    ""
                };
                Finding::Raise(format!("{how} is not enabled{why}"))
            }
            Known::Unknown(_) => cannot_tell("whether automatic updates are enabled", &a.evidence),
            // Sealed: the administrators chose not to let the server judge it.
            Known::Sealed(_) => Finding::Clear,
        }
    }
}
