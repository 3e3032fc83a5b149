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

/// The report checks' verdicts on one report, kept small because the
/// periodic audit reads one per client: only failing checks are listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    /// What judged them; verdicts of another basis are judged again.
    pub basis: String,
    /// The failing checks' issue details, by check name; every other
    /// report check passed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raised: BTreeMap<String, String>,
    /// When the first of them stops holding without a new report.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "penguindome_protocol::envelope::utc::option"
    )]
    pub until: Option<DateTime<Utc>>,
}

impl Verdicts {
    /// Reads stored verdicts, if they are of the settings' basis (which
    /// names every report check) and have not expired at `now`.
    pub fn current(text: Option<&str>, settings: &Settings, now: DateTime<Utc>) -> Option<Self> {
        let v: Self = serde_json::from_str(text?).ok()?;
        let fresh = v.until.is_none_or(|u| u > now);
        (v.basis == settings.basis && fresh).then_some(v)
    }

    /// As JSON text for the store.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("verdicts serialize")
    }

    /// The failing checks, by name, with their details.
    pub fn raised(&self) -> impl Iterator<Item = (&str, &str)> {
        self.raised.iter().map(|(n, d)| (n.as_str(), d.as_str()))
    }

    /// One report check's verdict as a finding.
    pub fn finding(&self, check: &str) -> Finding {
        match self.raised.get(check) {
            Some(detail) => Finding::Raise(detail.clone()),
            None => Finding::Clear,
        }
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
        deprecated_listeners: &settings.deprecated_listeners,
    };
    let mut verdicts = Verdicts {
        basis: settings.basis.clone(),
        raised: BTreeMap::new(),
        until: None,
    };
    for check in &settings.report_checks {
        if let Finding::Raise(detail) = check.evaluate(facts, &cx) {
            verdicts.raised.insert(check.name().to_string(), detail);
        }
        if let Some(until) = check.expires(facts, &cx) {
            verdicts.until = Some(verdicts.until.map_or(until, |u| u.min(until)));
        }
    }
    verdicts
}
