//! The checks the issues audit runs on each client's latest report, one
//! file per check. A check sees only facts, so the same code judges a
//! report as it arrives, a stored client, and a test's fixtures.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use penguindome_protocol::facts::{Fact, ReadError, read, read_text};
use penguindome_protocol::wire::Report;
use serde_json::Value;
use serde_json::value::RawValue;

use super::business::BusinessHours;
use crate::store::ClientDocument;

mod agent_upgrade;
mod auto_updates;
mod certificate_refused;
mod deprecated_port;
mod disk_encryption;
mod firewall;
mod guest_session;
mod location;
mod not_reporting;
mod os_release;
mod passwordless_accounts;
mod pending_patches;
mod reboot_required;
mod required_software;
mod screenlock;
mod security_updates;
mod ssh;

/// A latest report's collector outputs: parsed, as a stored client has
/// them, or as raw text, as a submission arrives (each check then parses
/// only the collector it reads).
pub enum Plugins<'a> {
    /// A stored client's outputs.
    Parsed(&'a BTreeMap<String, Value>),
    /// A submission's outputs.
    Raw(&'a BTreeMap<String, Box<RawValue>>),
}

/// What a check knows about one client.
pub struct Facts<'a> {
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// When its latest report arrived (the server's clock).
    pub submitted_at: Option<DateTime<Utc>>,
    /// The latest report's collector outputs.
    pub plugins: Plugins<'a>,
    /// The facts version they are written in.
    pub facts_version: u32,
    /// Patches queued for it and not acknowledged.
    pub pending_patches: usize,
    /// The latest contact of the machines its user also uses
    /// (`user_clients`), if any.
    pub peer_seen_at: Option<DateTime<Utc>>,
    /// The listener of its latest signed request (none for a report
    /// being judged as it arrives).
    pub last_listener: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// A stored client's facts.
    pub fn of_client(
        doc: &'a ClientDocument,
        pending_patches: usize,
        peer_seen_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            enrolled_at: doc.enrolled_at,
            submitted_at: doc.submitted_at,
            plugins: Plugins::Parsed(&doc.plugins),
            facts_version: doc.facts_version,
            pending_patches,
            peer_seen_at,
            last_listener: Some(&doc.summary.last_listener),
        }
    }

    /// The facts of a report arriving at `received_at`, for the checks
    /// the report alone decides ([`Check::decided_by_report`]).
    pub fn of_report(report: &'a Report<Box<RawValue>>, received_at: DateTime<Utc>) -> Self {
        Self {
            enrolled_at: received_at,
            submitted_at: Some(received_at),
            plugins: Plugins::Raw(&report.plugins),
            facts_version: report.facts_version,
            pending_patches: 0,
            peer_seen_at: None,
            last_listener: None,
        }
    }

    /// Whether the report has output of the collector `name`.
    pub fn has(&self, name: &str) -> bool {
        match &self.plugins {
            Plugins::Parsed(p) => p.contains_key(name),
            Plugins::Raw(p) => p.contains_key(name),
        }
    }

    /// One collector's facts.
    pub fn read<F: Fact>(&self) -> Result<F, ReadError> {
        match &self.plugins {
            Plugins::Parsed(p) => read(p.get(F::NAME), self.facts_version),
            Plugins::Raw(p) => read_text(p.get(F::NAME).map(|r| r.get()), self.facts_version),
        }
    }
}

/// What a check knows about the audit itself.
pub struct Context<'a> {
    /// The audit's time.
    pub now: DateTime<Utc>,
    /// Business hours.
    pub hours: &'a BusinessHours,
    /// Business time without a report after which a client is not reporting.
    pub not_reporting_after: Duration,
    /// Longest screen-lock delay accepted.
    pub screenlock_max_delay: Duration,
    /// Names of the listeners marked deprecated.
    pub deprecated_listeners: &'a [String],
}

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Nothing wrong.
    Clear,
    /// A problem, described for people.
    Raise(String),
}

/// One compliance check.
pub trait Check: Send + Sync {
    /// The name, e.g. `firewall-disabled`.
    fn name(&self) -> &'static str;
    /// One line for `pdome-admin issues checks`.
    fn describe(&self) -> &'static str;
    /// Business time before anyone is told (`[audit.checks.NAME] grace`).
    fn default_grace(&self) -> &'static str {
        "0s"
    }
    /// Wall-clock time before telling again (`realert`).
    fn default_realert(&self) -> &'static str {
        "1d"
    }
    /// Whether it runs without being enabled in server.toml.
    fn enabled_by_default(&self) -> bool {
        true
    }
    /// Judges one client.
    fn evaluate(&self, facts: &Facts<'_>, cx: &Context<'_>) -> Finding;
    /// Whether the latest report alone decides, so the verdict is reached
    /// when the report arrives and kept with the client; false for checks
    /// of contact times or queued patches, which the periodic run judges.
    fn decided_by_report(&self) -> bool {
        true
    }
    /// Until when a verdict on these facts holds without a new report, for
    /// checks that time alone can change (a support end, a week's window).
    fn expires(&self, _facts: &Facts<'_>, _cx: &Context<'_>) -> Option<DateTime<Utc>> {
        None
    }
}

/// Every check, in the order the audit runs them.
pub fn all() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(not_reporting::NotReporting),
        Box::new(security_updates::SecurityUpdates),
        Box::new(os_release::EndOfLife),
        Box::new(os_release::UpdateAvailable),
        Box::new(reboot_required::RebootRequired),
        Box::new(auto_updates::AutoUpdates),
        Box::new(disk_encryption::DiskEncryption),
        Box::new(firewall::Firewall),
        Box::new(screenlock::ScreenLock),
        Box::new(guest_session::GuestSession),
        Box::new(ssh::PasswordAuthentication),
        Box::new(ssh::RootPasswordLogin),
        Box::new(passwordless_accounts::PasswordlessAccounts),
        Box::new(required_software::RequiredSoftware),
        Box::new(pending_patches::PendingPatches),
        Box::new(agent_upgrade::AgentUpgrade),
        Box::new(certificate_refused::CertificateRefused),
        Box::new(deprecated_port::DeprecatedPort),
        Box::new(location::Location),
    ]
}

/// A collector's facts from the latest report, or the issue their absence
/// is: a client that does not say it is compliant is not known to be.
fn fact<F: Fact>(facts: &Facts<'_>) -> Result<F, Finding> {
    facts.read::<F>().map_err(|e| match e {
        ReadError::Missing { name } => Finding::Raise(format!(
            "no {name} output in the latest report (the collector did not run, failed, or the \
             agent is too old)"
        )),
        ReadError::Failed { name, error } => {
            Finding::Raise(format!("the {name} collector failed: {error}"))
        }
        // A renamed field or an agent of another facts version: said as
        // such, not as a compliance verdict.
        other => Finding::Raise(format!(
            "cannot read the latest report: {other}; upgrade the agent or the server, \
             whichever is older"
        )),
    })
}

/// The first piece of evidence a collector gave, for the detail.
fn evidence(evidence: &[String]) -> &str {
    evidence.first().map(String::as_str).unwrap_or_default()
}

/// `what` could not be determined: an issue too, with the agent's reason.
fn cannot_tell(what: &str, reasons: &[String]) -> Finding {
    let why = evidence(reasons);
    if why.is_empty() {
        Finding::Raise(format!("the agent could not tell {what}"))
    } else {
        Finding::Raise(format!("the agent could not tell {what}: {why}"))
    }
}

#[cfg(test)]
pub(crate) mod tests;
