//! `no-location`: the machine cannot be located (off unless enabled: it
//! needs a geolocation service in agent.toml).

use super::{Check, Context, Facts, Finding, evidence, plugin};

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
        let v = match plugin(facts, "geolocation") {
            Ok(v) => v,
            Err(f) => return f,
        };
        if v["location"].is_object() {
            Finding::Clear
        } else {
            Finding::Raise(format!("no location: {}", evidence(v)))
        }
    }
}
