//! `agent-upgrade-failing`: the agent cannot install the site's release.

use penguindome_protocol::facts::Fact;
use penguindome_protocol::facts::agent::Agent;

use super::{Check, Context, Facts, Finding, fact};

/// The agent's last self-upgrade failed.
pub struct AgentUpgrade;

impl Check for AgentUpgrade {
    fn name(&self) -> &'static str {
        "agent-upgrade-failing"
    }

    fn describe(&self) -> &'static str {
        "the agent's last attempt to install the newest release failed"
    }

    fn default_grace(&self) -> &'static str {
        "4h"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        // Agents run by hand (not from a package) report no upgrade state.
        if !facts.has(Agent::NAME) {
            return Finding::Clear;
        }
        let agent = match fact::<Agent>(facts) {
            Ok(a) => a,
            Err(f) => return f,
        };
        // An error from before the newest release got installed (by hand,
        // or by a later attempt whose record is gone) no longer matters.
        let installed = agent
            .package_version
            .as_deref()
            .and_then(|v| v.rsplit_once('-'))
            .and_then(|(_, revision)| revision.parse::<u64>().ok());
        if let (Some(installed), Some(latest)) = (installed, agent.latest_release)
            && installed >= latest
        {
            return Finding::Clear;
        }
        match agent.upgrade.and_then(|u| u.error) {
            Some(error) => Finding::Raise(format!(
                "upgrade to {} failed: {error}",
                agent
                    .latest_release
                    .map(|r| format!("release {r}"))
                    .unwrap_or_else(|| "the newest release".into())
            )),
            None => Finding::Clear,
        }
    }
}
