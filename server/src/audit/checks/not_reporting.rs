//! `not-reporting`: no report for a business day.

use chrono::Duration;

use super::{Check, Context, Facts, Finding};
use crate::audit::business::BusinessHours;

/// A client that has not reported for longer than `not_reporting_after`.
pub struct NotReporting;

/// A peer machine explains a silent one only this long: after that the
/// silent one is probably lost, not just left at home.
const PEER_EXCUSE_DAYS: i64 = 31;

impl Check for NotReporting {
    fn name(&self) -> &'static str {
        "not-reporting"
    }

    fn describe(&self) -> &'static str {
        "no report for more than `not_reporting_after` business time (default one business day)"
    }

    fn default_grace(&self) -> &'static str {
        "4h"
    }

    fn decided_by_report(&self) -> bool {
        false
    }

    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding {
        let last = facts.submitted_at.unwrap_or(facts.enrolled_at);
        let silent = cx.hours.elapsed(last, cx.now);
        if silent <= cx.not_reporting_after {
            return Finding::Clear;
        }
        // The user works on another of their machines: this one is at home.
        if let Some(peer) = facts.peer_seen_at
            && peer > last
            && cx.now - last < Duration::days(PEER_EXCUSE_DAYS)
        {
            return Finding::Clear;
        }
        match facts.submitted_at {
            Some(t) if silent >= BusinessHours::FOREVER => Finding::Raise(format!(
                "last report {} (over two years ago)",
                t.format("%Y-%m-%d %H:%M UTC")
            )),
            Some(t) => Finding::Raise(format!(
                "last report {} ({} business hours ago)",
                t.format("%Y-%m-%d %H:%M UTC"),
                silent.as_secs() / 3600
            )),
            None => Finding::Raise(format!(
                "enrolled {} and has never sent a report",
                facts.enrolled_at.format("%Y-%m-%d %H:%M UTC")
            )),
        }
    }
}
