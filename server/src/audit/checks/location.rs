//! `no-location`: the machine cannot be located (off unless enabled: it
//! needs a geolocation service in agent.toml).

use penguindome_protocol::facts::geolocation::Geolocation;

use super::{Check, Context, Facts, Finding, evidence, fact};

/// The client reports no location.
pub struct Location;

impl Check for Location {
    fn name(&self) -> &'static str {
        "no-location"
    }

    fn describe(&self) -> &'static str {
        "the client cannot be located (enable only with [collectors.geolocation] in agent.toml)"
    }

    fn default_grace(&self) -> &'static str {
        "1d"
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let g = match fact::<Geolocation>(facts) {
            Ok(g) => g,
            Err(f) => return f,
        };
        if g.location.is_unknown() {
            Finding::Raise(format!("no location: {}", evidence(&g.evidence)))
        } else {
            Finding::Clear
        }
    }
}
