//! `screenlock-disabled`: a graphical session that never locks, or locks
//! too late.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::screenlock;

use super::{Check, Context, Facts, Finding, fact};

/// A user's screen does not lock when left alone.
pub struct ScreenLock;

impl Check for ScreenLock {
    fn name(&self) -> &'static str {
        "screenlock-disabled"
    }

    fn describe(&self) -> &'static str {
        "a graphical session does not lock when idle, or only after `screenlock_max_delay`"
    }

    fn default_grace(&self) -> &'static str {
        "4h"
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        let s = match fact::<screenlock::ScreenLock>(facts) {
            Ok(s) => s,
            Err(f) => return f,
        };
        // Servers and machines nobody has logged in to graphically have no
        // sessions: nothing to lock.
        let max = cx.screenlock_max_delay.as_secs();
        let mut problems = Vec::new();
        for session in &s.sessions {
            let user = &session.user;
            match (&session.enabled, session.delay_seconds) {
                (Known::Value(true), Some(d)) if d > max => problems.push(format!(
                    "{user} locks only after {} min (at most {} min allowed)",
                    d / 60,
                    max / 60
                )),
                // Sealed: the administrators chose not to let the server
                // judge it.
                (Known::Value(true), _) | (Known::Sealed(_), _) => {}
                (Known::Value(false), _) => problems.push(format!("{user} never locks")),
                (Known::Unknown(_), _) => {
                    problems.push(format!("{user}: cannot tell whether the screen locks"))
                }
            }
        }
        if problems.is_empty() {
            Finding::Clear
        } else {
            Finding::Raise(problems.join("; "))
        }
    }
}
