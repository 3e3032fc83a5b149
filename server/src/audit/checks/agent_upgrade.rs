//! `agent-upgrade-failing`: the agent cannot install the site's release.

use super::{Check, Context, Facts, Finding};

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
        let Some(agent) = facts.client.plugins.get("agent") else {
            return Finding::Clear;
        };
        // An error from before the newest release got installed (by hand,
        // or by a later attempt whose record is gone) no longer matters.
        let installed = agent["package_version"]
            .as_str()
            .and_then(|v| v.rsplit_once('-'))
            .and_then(|(_, revision)| revision.parse::<u64>().ok());
        if let (Some(installed), Some(latest)) = (installed, agent["latest_release"].as_u64())
            && installed >= latest
        {
            return Finding::Clear;
        }
        match agent["upgrade"]["error"].as_str() {
            Some(error) => Finding::Raise(format!(
                "upgrade to {} failed: {error}",
                agent["latest_release"]
                    .as_u64()
                    .map(|r| format!("release {r}"))
                    .unwrap_or_else(|| "the newest release".into())
            )),
            None => Finding::Clear,
        }
    }
}
