//! Verdicts on a report as it arrives: every check that the report alone
//! decides runs then, and the verdicts are stored with the client, so the
//! periodic audit reads one small row per client and handles only what
//! time changes (grace, not-reporting, snoozes, re-alerts, and verdicts
//! whose `until` has passed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Settings;
use super::checks::{Context, Facts, Finding};

/// Bumped when a check's logic changes, so stored verdicts are judged
/// again (with the server's version, which changes with every release).
const CHECKS_REVISION: u32 = 1;

/// The report checks' verdicts on one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    /// What judged them; verdicts of another basis are judged again.
    pub basis: String,
    /// By check name.
    pub checks: BTreeMap<String, Verdict>,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The detail when the check failed; absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise: Option<String>,
    /// Until when it holds without a new report.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "penguindome_protocol::envelope::utc::option"
    )]
    pub until: Option<DateTime<Utc>>,
}

impl Verdict {
    /// As a finding.
    pub fn finding(&self) -> Finding {
        match &self.raise {
            Some(detail) => Finding::Raise(detail.clone()),
            None => Finding::Clear,
        }
    }
}

impl Verdicts {
    /// Reads stored verdicts, if they are of the settings' basis, have a
    /// verdict for every report check, and none has expired at `now`.
    pub fn current(text: Option<&str>, settings: &Settings, now: DateTime<Utc>) -> Option<Self> {
        let v: Self = serde_json::from_str(text?).ok()?;
        let fresh = v.checks.values().all(|c| c.until.is_none_or(|u| u > now));
        let complete = settings
            .report_checks
            .iter()
            .all(|c| v.checks.contains_key(c.name()));
        (v.basis == settings.basis && fresh && complete).then_some(v)
    }

    /// As JSON text for the store.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("verdicts serialize")
    }

    /// The failing checks, by name, with their details.
    pub fn raised(&self) -> impl Iterator<Item = (&str, &str)> {
        self.checks
            .iter()
            .filter_map(|(name, v)| Some((name.as_str(), v.raise.as_deref()?)))
    }
}

/// What judged a set of verdicts: the server's version, the checks' revision
/// and names, and the settings report checks depend on.
pub fn basis(settings: &Settings) -> String {
    let names: Vec<&str> = settings.report_checks.iter().map(|c| c.name()).collect();
    let text = format!(
        "{}/{CHECKS_REVISION}/{}/screenlock_max_delay={}",
        env!("CARGO_PKG_VERSION"),
        names.join(","),
        settings.screenlock_max_delay.as_secs()
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Runs every report check (enabled or not: enabling one must not need
/// new reports) on `facts` at `now`.
pub fn judge(settings: &Settings, facts: &Facts<'_>, now: DateTime<Utc>) -> Verdicts {
    let cx = Context {
        now,
        hours: &settings.hours,
        not_reporting_after: settings.not_reporting_after,
        screenlock_max_delay: settings.screenlock_max_delay,
    };
    let checks = settings
        .report_checks
        .iter()
        .map(|check| {
            let raise = match check.evaluate(facts, &cx) {
                Finding::Raise(detail) => Some(detail),
                Finding::Clear => None,
            };
            let verdict = Verdict {
                raise,
                until: check.expires(facts, &cx),
            };
            (check.name().to_string(), verdict)
        })
        .collect();
    Verdicts {
        basis: settings.basis.clone(),
        checks,
    }
}
