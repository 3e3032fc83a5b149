//! `guest-session-enabled`: anyone can log in without an account.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::guest_session;

use super::{Check, Context, Facts, Finding, cannot_tell, evidence, fact};

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
        let g = match fact::<guest_session::GuestSession>(facts) {
            Ok(g) => g,
            Err(f) => return f,
        };
        match g.enabled {
            Known::Value(false) => Finding::Clear,
            Known::Value(true) => Finding::Raise(format!(
                "{} allows logging in without a password: {}",
                Some(g.display_manager.as_str())
                    .filter(|d| !d.is_empty())
                    .unwrap_or("the display manager"),
                evidence(&g.evidence)
            )),
            Known::Unknown(_) => cannot_tell("whether guest sessions are enabled", &g.evidence),
            // Sealed: the administrators chose not to let the server judge it.
            Known::Sealed(_) => Finding::Clear,
        }
    }
}
