//! `guest-session-enabled`: anyone can log in without an account.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, cannot_tell, evidence, plugin};

/// A guest session or automatic login is enabled.
pub struct GuestSession;

impl Check for GuestSession {
    fn name(&self) -> &'static str {
        "guest-session-enabled"
    }

    fn describe(&self) -> &'static str {
        "a guest session or automatic graphical login is enabled"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "guest_session") {
            Ok(v) => v,
            Err(f) => return f,
        };
        match &v["enabled"] {
            Value::Bool(false) => Finding::Clear,
            Value::Bool(true) => Finding::Raise(format!(
                "{} allows logging in without a password: {}",
                v["display_manager"]
                    .as_str()
                    .unwrap_or("the display manager"),
                evidence(v)
            )),
            _ => cannot_tell("whether guest sessions are enabled", v),
        }
    }
}
