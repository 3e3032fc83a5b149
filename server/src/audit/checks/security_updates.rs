//! `os-security-updates`: security fixes offered and not installed.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::os_updates::OsUpdates;

use super::{Check, Context, Facts, Finding, cannot_tell, fact};

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
        let u = match fact::<OsUpdates>(facts) {
            Ok(u) => u,
            Err(f) => return f,
        };
        let Some(counts) = u.counts else {
            return cannot_tell("whether security updates are pending", &u.evidence);
        };
        let count = match counts.security {
            Known::Value(n) => n,
            // The backend cannot tell security fixes apart (pacman without
            // advisories, a repository without updateinfo): then any
            // pending update may be one.
            Known::Unknown(_) if counts.pending == 0 => return Finding::Clear,
            // Sealed: the administrators chose not to let the server judge it.
            Known::Sealed(_) => return Finding::Clear,
            Known::Unknown(_) => {
                let why = Some(u.security_evidence.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or("no reason given");
                return Finding::Raise(format!(
                    "{} update(s) pending, and none can be told to be a security fix or not: {why}",
                    counts.pending
                ));
            }
        };
        if count == 0 {
            return Finding::Clear;
        }
        let names: Vec<&str> = u
            .pending
            .iter()
            .filter(|p| p.security)
            .map(|p| p.name.as_str())
            .take(SHOWN)
            .collect();
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
