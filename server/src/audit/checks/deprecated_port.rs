//! `deprecated-port`: the client's latest signed request came through a
//! listener the site is retiring (`deprecated = true` in its
//! `[[listener]]`). It closes once the client uses another listener.

use super::{Check, Context, Facts, Finding};

/// A client still talking to a deprecated listener.
pub struct DeprecatedPort;

impl Check for DeprecatedPort {
    fn name(&self) -> &'static str {
        "deprecated-port"
    }

    fn describe(&self) -> &'static str {
        "the latest contact came through a listener marked deprecated in server.toml"
    }

    fn decided_by_report(&self) -> bool {
        false
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        match facts.last_listener {
            Some(name) if cx.deprecated_listeners.iter().any(|d| d == name) => {
                Finding::Raise(format!(
                    "its latest contact came through listener {name:?}, which is deprecated; \
                     point its agent.toml server_url at another listener (a new site package \
                     does, at its next upgrade)"
                ))
            }
            _ => Finding::Clear,
        }
    }
}
