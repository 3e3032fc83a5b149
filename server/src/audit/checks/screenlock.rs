//! `screenlock-disabled`: a graphical session that never locks, or locks
//! too late.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, plugin};

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
        let v = match plugin(facts, "screenlock") {
            Ok(v) => v,
            Err(f) => return f,
        };
        // Servers and machines nobody has logged in to graphically have no
        // sessions: nothing to lock.
        let Some(sessions) = v["sessions"].as_array() else {
            return Finding::Clear;
        };
        let max = cx.screenlock_max_delay.as_secs();
        let mut problems = Vec::new();
        for s in sessions {
            let user = s["user"].as_str().unwrap_or("?");
            match &s["enabled"] {
                Value::Bool(true) => match s["delay_seconds"].as_u64() {
                    Some(d) if d > max => problems.push(format!(
                        "{user} locks only after {} min (at most {} min allowed)",
                        d / 60,
                        max / 60
                    )),
                    _ => {}
                },
                Value::Bool(false) => problems.push(format!("{user} never locks")),
                _ => problems.push(format!("{user}: cannot tell whether the screen locks")),
            }
        }
        if problems.is_empty() {
            Finding::Clear
        } else {
            Finding::Raise(problems.join("; "))
        }
    }
}
