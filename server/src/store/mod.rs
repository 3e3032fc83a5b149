//! Storage behind role traits ([`roles`]), so that every backend serves the
//! same server.
//!
//! Writes that a client request causes (the nonce, the revocation check, the
//! report and its audit records) happen in one atomic unit in the backend,
//! and the caller is answered only after that unit is durable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use penguindome_protocol::envelope::utc;
use penguindome_protocol::wire::Report;
use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

pub mod actions;
pub mod diff;
pub mod mongodb;
pub mod roles;
pub mod sqlite;
pub mod tokens;

#[cfg(test)]
pub(crate) mod conformance;

pub use actions::{ActionFilter, ActionRecord, Delivered, Delivery, NewAction, TargetRecord};
pub use diff::{Change, ChangeAction};
pub use roles::{
    AdminStore, AuditStore, FleetStore, MigrationStore, RequestStore, Store, StoreBase,
};

/// The last-contact windows fleet summaries count clients in: label and
/// length in seconds.
pub const SEEN_WINDOWS: [(&str, i64); 4] = [
    ("1h", 3_600),
    ("1d", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];

/// How long without contact makes an enrolled client "silent" in the web
/// view's client table (and "not reporting" on its overview).
pub const SILENT_AFTER_SECS: i64 = 86_400;

/// Which clients the web view's table shows, in what order, which page.
#[derive(Debug, Clone)]
pub struct ClientQuery {
    /// Host names containing this text (any case), or ids starting with it.
    pub search: Option<String>,
    /// Only clients with an open issue of this check.
    pub open_check: Option<String>,
    /// Only this distro family ([`DistroFamily`]).
    pub family: Option<DistroFamily>,
    /// Only clients in this state.
    pub status: Option<ClientStatus>,
    /// Order of the rows.
    pub sort: ClientSort,
    /// Rows skipped.
    pub offset: u64,
    /// Rows returned at most.
    pub limit: u64,
    /// The time "silent" is measured from.
    pub now: DateTime<Utc>,
}

/// A client's state as the web view filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
    /// Enrolled, seen within [`SILENT_AFTER_SECS`].
    Reporting,
    /// Enrolled, not seen for longer.
    Silent,
    /// Revoked.
    Revoked,
}

/// Orders of the client table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientSort {
    /// By host name, then id.
    #[default]
    Hostname,
    /// Most recent contact first.
    LastSeenNewest,
    /// Oldest contact first.
    LastSeenOldest,
}

/// The package family a client's distribution belongs to, from the
/// `os_info` collector's `id` and `id_like` (os-release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistroFamily {
    /// Debian, Ubuntu and their derivatives (apt).
    Debian,
    /// Fedora, RHEL and their rebuilds (dnf).
    Fedora,
    /// Arch Linux and its derivatives (pacman).
    Arch,
    /// Anything else that reported its distribution.
    Other,
}

/// os-release ids of the Fedora family besides those naming it in `ID_LIKE`.
const FEDORA_IDS: [&str; 5] = ["fedora", "rhel", "centos", "rocky", "almalinux"];

impl DistroFamily {
    /// Every family, in the order the rules try them.
    pub const ALL: [DistroFamily; 4] = [Self::Debian, Self::Fedora, Self::Arch, Self::Other];

    /// The name used in URLs and stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian => "debian",
            Self::Fedora => "fedora",
            Self::Arch => "arch",
            Self::Other => "other",
        }
    }

    /// Parses [`DistroFamily::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The family of an `os_info` output; none when it names no `id`
    /// (sealed, or from a collector that failed).
    pub fn of_os_info(os_info: &serde_json::Value) -> Option<Self> {
        let id = os_info.get("id")?.as_str()?;
        let like: Vec<&str> = os_info
            .get("id_like")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let is = |names: &[&str]| names.contains(&id) || like.iter().any(|l| names.contains(l));
        Some(if is(&["debian"]) {
            Self::Debian
        } else if FEDORA_IDS.contains(&id) || is(&["fedora", "rhel"]) {
            Self::Fedora
        } else if is(&["arch"]) {
            Self::Arch
        } else {
            Self::Other
        })
    }
}

/// One row of the client table.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    /// Machine id.
    pub client_id: String,
    /// Latest host name.
    pub hostname: String,
    /// Latest contact.
    pub last_seen_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its distribution's family, when its `os_info` says.
    pub family: Option<DistroFamily>,
    /// Its open issues.
    pub open_issues: u64,
}

/// A page of the client table and how many rows match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPage {
    /// Clients matching the query, on every page.
    pub total: u64,
    /// This page's rows.
    pub rows: Vec<ClientRow>,
}

/// When an issue was open, for the overview's trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueSpan {
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Closed; none while open.
    pub closed_at: Option<DateTime<Utc>>,
}

/// The fleet in numbers ([`FleetStore::fleet_summary`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Clients not revoked.
    pub enrolled: u64,
    /// Clients revoked.
    pub revoked: u64,
    /// Enrolled clients last seen within each window of [`SEEN_WINDOWS`],
    /// in that order.
    pub seen_within: Vec<(&'static str, u64)>,
    /// Open issues by check name (the server's own included).
    pub open_issues: BTreeMap<String, u64>,
}
pub use tokens::{NewToken, TokenClaim, TokenRecord};

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request's nonce was seen before.
    #[error("this request was already received (replayed nonce)")]
    Replay,
    /// The key that signed is not enrolled.
    #[error("the signing key is not enrolled on this server")]
    UnknownKey,
    /// The key (or its client) has been revoked.
    #[error("client {client_id} has been revoked by an administrator")]
    Revoked {
        /// The client.
        client_id: String,
    },
    /// Enrollment of a machine id that already has another active key.
    #[error(
        "client {client_id} is already enrolled with another key; if this machine was \
         reinstalled, an administrator must run `pdome-admin clients reenroll {client_id}`"
    )]
    AlreadyEnrolled {
        /// The client.
        client_id: String,
    },
    /// An action that is not addressed to this client.
    #[error("action {action_id} is not addressed to this client")]
    NoSuchAction {
        /// The action.
        action_id: String,
    },
    /// A client selected by id or host name does not exist.
    #[error("no client matches {0:?}; `pdome-admin clients list` shows them")]
    NoSuchClient(String),
    /// A host name matches more than one client.
    #[error("{count} clients are named {hostname:?} ({ids}); use a client id")]
    Ambiguous {
        /// The name given.
        hostname: String,
        /// How many match.
        count: usize,
        /// Their ids.
        ids: String,
    },
    /// An enrollment token that is unknown, wrong, used up, expired or
    /// revoked.
    #[error("{0}; ask an administrator for a new one (`pdome-admin tokens create`)")]
    TokenRefused(String),
    /// The data given cannot be stored (e.g. a bad plugin name).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(String),
    /// The store was closed.
    #[error("the store is shutting down")]
    Closed,
    /// This process's own part of the store has failed (the embedded
    /// store's writer); unlike an unreachable database, a restart may help.
    #[error("the store is broken: {0}")]
    Broken(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The facts about one authenticated request every write records.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The client that signed.
    pub client_id: String,
    /// The key it signed with.
    pub fingerprint: String,
    /// The request's nonce.
    pub nonce: String,
    /// When the nonce may be forgotten.
    pub nonce_expires_at: DateTime<Utc>,
    /// When the server received the request.
    pub received_at: DateTime<Utc>,
    /// The peer address.
    pub address: IpAddr,
    /// The listener it came in on.
    pub listener: String,
}

/// A verified submission.
#[derive(Debug)]
pub struct Submission {
    /// Who and how.
    pub meta: RequestMeta,
    /// The report, with each plugin's output as raw JSON text.
    pub report: Report<Box<RawValue>>,
    /// A 128-bit digest of each plugin's text, so that a backend can tell
    /// what changed without reading the stored texts back.
    pub digests: BTreeMap<String, [u8; 16]>,
    /// The audit's verdicts on the report (JSON), kept with the client when
    /// the report is stored, so the periodic audit need not read reports.
    pub verdicts: Option<String>,
    /// The collection time the agent claimed, when it lay after the
    /// request's arrival (a clock that ran ahead): the report is stored as
    /// collected on arrival, or it would make every later report look older.
    pub claimed_collected_at: Option<DateTime<Utc>>,
}

/// Claims this far ahead of the server's clock are noted in the audit
/// trail; smaller ones are clock jitter, bounded without a word.
const CLOCK_NOTE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

impl Submission {
    /// The audit-trail record of a bounded collection time, if it is worth
    /// one.
    pub fn clock_change(&self) -> Option<Change> {
        let claimed = self.claimed_collected_at?;
        let stored = self.report.collected_at;
        (claimed - stored > CLOCK_NOTE_AFTER).then(|| Change {
            field: "collected_at".into(),
            action: ChangeAction::Change,
            old: Some(serde_json::Value::String(utc::format(&claimed))),
            new: Some(serde_json::Value::String(utc::format(&stored))),
        })
    }
}

/// Digest of a plugin's text for change detection. Not cryptographic: a
/// collision could only hide a change in the client's own data, which the
/// client could as well leave out; the signature covers the text itself.
pub fn plugin_digest(text: &str) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes()).to_le_bytes()
}

impl Submission {
    /// Wraps a report, computing its plugin digests (on the caller's thread,
    /// which for the server is one of the request workers, not the writer).
    pub fn new(meta: RequestMeta, mut report: Report<Box<RawValue>>) -> Self {
        let claimed_collected_at = (report.collected_at > meta.received_at).then(|| {
            let claimed = report.collected_at;
            report.collected_at = meta.received_at;
            claimed
        });
        let digests = report
            .plugins
            .iter()
            .map(|(name, raw)| (name.clone(), plugin_digest(raw.get())))
            .collect();
        Self {
            meta,
            report,
            digests,
            verdicts: None,
            claimed_collected_at,
        }
    }

    /// The same, with the audit's verdicts on the report.
    pub fn with_verdicts(mut self, verdicts: String) -> Self {
        self.verdicts = Some(verdicts);
        self
    }
}

/// What the periodic audit reads of every client: identity, contact
/// times, and the verdicts its latest report got when it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Machine id.
    pub client_id: String,
    /// Latest host name.
    pub hostname: String,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Latest authenticated contact.
    pub last_seen_at: DateTime<Utc>,
    /// When the latest report was stored.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When an administrator revoked it.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The verdicts (JSON), if the latest report got them.
    pub verdicts: Option<String>,
    /// The listener of its latest signed request.
    pub last_listener: String,
}

/// What happened to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored; this many audit records were written.
    Stored {
        /// Number of audit records.
        changes: usize,
    },
    /// Already stored, or older than what is stored; nothing changed.
    Duplicate,
}

/// A verified enrollment.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The machine id.
    pub client_id: String,
    /// Host name.
    pub hostname: String,
    /// Key fingerprint.
    pub fingerprint: String,
    /// Binary public certificate.
    pub certificate: Vec<u8>,
    /// Nonce of the enrollment request.
    pub nonce: String,
    /// When it may be forgotten.
    pub nonce_expires_at: DateTime<Utc>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Peer address.
    pub address: IpAddr,
    /// Listener name.
    pub listener: String,
    /// The token it presents; `None` for the site-wide credential, which
    /// the HTTP layer checked.
    pub token: Option<TokenClaim>,
}

/// What happened to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// A new client, or a new key for a client allowed to re-enroll.
    Enrolled,
    /// The same key was enrolled already.
    AlreadyEnrolled,
}

/// An enrolled key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The client it belongs to.
    pub client_id: String,
    /// Binary public certificate.
    pub certificate: Vec<u8>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One line of `clients list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientSummary {
    /// Machine id.
    pub client_id: String,
    /// Latest host name.
    pub hostname: String,
    /// First contact.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub first_seen_at: DateTime<Utc>,
    /// Latest authenticated contact.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub last_seen_at: DateTime<Utc>,
    /// When the latest stored report was collected.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub collected_at: Option<DateTime<Utc>>,
    /// Address of the latest contact.
    pub last_address: String,
    /// Listener of the latest contact.
    pub last_listener: String,
    /// When an administrator revoked it.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A rewrite of stored values (`pdome-admin secrets encrypt`): called with
/// a value and where it stands (`plugins.<name>` for a client's plugin
/// output, the record's field for an audit record's old and new values);
/// returns whether it changed the value.
pub type ValueRewrite =
    std::sync::Arc<dyn Fn(&str, &mut serde_json::Value) -> Result<bool, String> + Send + Sync>;

/// Passes one stored JSON text through a [`ValueRewrite`]: the new text
/// when it changed something, none otherwise (or when the text is not
/// JSON, which no rewrite can read).
pub fn rewrite_text(f: &ValueRewrite, path: &str, text: &str) -> StoreResult<Option<String>> {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok(None);
    };
    match f(path, &mut v) {
        Ok(true) => Ok(Some(v.to_string())),
        Ok(false) => Ok(None),
        Err(e) => Err(StoreError::Invalid(e)),
    }
}

/// What a [`ValueRewrite`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// Client plugin outputs rewritten.
    pub plugin_outputs: u64,
    /// Audit records rewritten.
    pub audit_records: u64,
}

/// Everything stored about one client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientDocument {
    /// The summary fields, flattened.
    #[serde(flatten)]
    pub summary: ClientSummary,
    /// When it enrolled.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub enrolled_at: DateTime<Utc>,
    /// When the latest report was stored.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// Agent version of the latest report.
    pub agent_version: Option<String>,
    /// The facts version the latest report's collectors wrote.
    #[serde(default = "first_facts_version")]
    pub facts_version: u32,
    /// Fingerprints of its keys, active first.
    pub keys: Vec<KeyInfo>,
    /// Latest output of each collector.
    pub plugins: BTreeMap<String, serde_json::Value>,
}

/// One key of a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyInfo {
    /// Fingerprint.
    pub fingerprint: String,
    /// When it enrolled.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One audit-trail record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Client.
    pub client_id: String,
    /// Host name at the time.
    pub hostname: String,
    /// Dotted path, e.g. `plugins.os_info.kernel`.
    pub field: String,
    /// add, change or delete.
    pub action: ChangeAction,
    /// Previous value.
    pub old: Option<serde_json::Value>,
    /// New value.
    pub new: Option<serde_json::Value>,
    /// When the server recorded it.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub recorded_at: DateTime<Utc>,
    /// When the report that caused it was collected.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub collected_at: Option<DateTime<Utc>>,
}

/// A problem on a client that the issues audit (or an administrator) opened.
///
/// At most one issue of a name is open per client; the audit keeps that rule
/// (under its lock), the stores only keep records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Issue {
    /// `<client_id>/<name>/<opened_at in milliseconds>`: stable across
    /// stores, so that a retried write replaces instead of duplicating.
    pub id: String,
    /// The client, or `server:<listener>` for the server's own issues.
    pub client_id: String,
    /// The check's name, e.g. `firewall-disabled`.
    pub name: String,
    /// What the check saw, for people.
    pub detail: Option<String>,
    /// When it was opened.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub opened_at: DateTime<Utc>,
    /// When it was closed.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Who closed it: `audit` when the check passed, else the administrator.
    pub closed_by: Option<String>,
    /// When it was last reported to people.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub alerted_at: Option<DateTime<Utc>>,
    /// When an administrator last snoozed it.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub snoozed_at: Option<DateTime<Utc>>,
    /// Until when it is snoozed.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub unsnooze_at: Option<DateTime<Utc>>,
    /// When an administrator ended a snooze early.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub unsnoozed_at: Option<DateTime<Utc>>,
}

impl Issue {
    /// A new open issue.
    pub fn open(
        client_id: &str,
        name: &str,
        detail: Option<String>,
        opened_at: DateTime<Utc>,
    ) -> Self {
        // Both stores keep milliseconds; so does the id.
        let opened_at =
            DateTime::from_timestamp_millis(opened_at.timestamp_millis()).unwrap_or(opened_at);
        Self {
            id: format!("{client_id}/{name}/{}", opened_at.timestamp_millis()),
            client_id: client_id.to_string(),
            name: name.to_string(),
            detail,
            opened_at,
            closed_at: None,
            closed_by: None,
            alerted_at: None,
            snoozed_at: None,
            unsnooze_at: None,
            unsnoozed_at: None,
        }
    }

    /// Whether it is snoozed at `now`.
    pub fn snoozed(&self, now: DateTime<Utc>) -> bool {
        self.unsnooze_at.is_some_and(|t| t > now)
    }
}

/// Which issues to read.
#[derive(Debug, Clone, Default)]
pub struct IssueFilter {
    /// Only this client's.
    pub client_id: Option<String>,
    /// Only open ones.
    pub open_only: bool,
}

/// An administrator's setting for one client (`user_email`, `user_clients`,
/// `suspended_at`), read by the issues audit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Parameter {
    /// The client.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// Its value; null removes it.
    pub value: serde_json::Value,
    /// When it was set.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub updated_at: DateTime<Utc>,
}

/// The kinds of records a store holds, in the order a copy writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client documents (with their plugin outputs).
    Clients,
    /// Enrolled keys.
    Keys,
    /// Audit trail.
    Audit,
    /// Seen nonces still within their window.
    Nonces,
    /// Actions and their targets.
    Actions,
    /// Issues, open and closed.
    Issues,
    /// Client parameters.
    Parameters,
    /// Enrollment tokens.
    Tokens,
}

impl Kind {
    /// Every kind, in copy order.
    pub const ALL: [Kind; 8] = [
        Kind::Clients,
        Kind::Keys,
        Kind::Audit,
        Kind::Nonces,
        Kind::Actions,
        Kind::Issues,
        Kind::Parameters,
        Kind::Tokens,
    ];

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clients => "clients",
            Kind::Keys => "client keys",
            Kind::Audit => "audit records",
            Kind::Nonces => "nonces",
            Kind::Actions => "actions",
            Kind::Issues => "issues",
            Kind::Parameters => "client parameters",
            Kind::Tokens => "enrollment tokens",
        }
    }
}

/// One record in a backend-neutral form, for copying between stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A client and its latest plugin outputs (as the JSON texts received).
    Client {
        /// Machine id.
        client_id: String,
        /// Host name.
        hostname: String,
        /// Enrollment.
        #[serde(with = "penguindome_protocol::envelope::utc")]
        enrolled_at: DateTime<Utc>,
        /// First contact.
        #[serde(with = "penguindome_protocol::envelope::utc")]
        first_seen_at: DateTime<Utc>,
        /// Latest contact.
        #[serde(with = "penguindome_protocol::envelope::utc")]
        last_seen_at: DateTime<Utc>,
        /// Its address.
        last_address: String,
        /// Its listener.
        last_listener: String,
        /// Latest report's collection time.
        #[serde(with = "penguindome_protocol::envelope::utc::option")]
        collected_at: Option<DateTime<Utc>>,
        /// Latest report's arrival.
        #[serde(with = "penguindome_protocol::envelope::utc::option")]
        submitted_at: Option<DateTime<Utc>>,
        /// Latest report's id.
        last_report_id: Option<String>,
        /// Latest agent version.
        agent_version: Option<String>,
        /// The facts version of its latest report.
        #[serde(default = "first_facts_version")]
        facts_version: u32,
        /// Revocation.
        #[serde(with = "penguindome_protocol::envelope::utc::option")]
        revoked_at: Option<DateTime<Utc>>,
        /// May enroll a new key once.
        reenroll_allowed: bool,
        /// Plugin outputs, JSON text by plugin name.
        plugins: BTreeMap<String, String>,
        /// SHA-256 (hex) of its repository password, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo_credential_sha256: Option<String>,
    },
    /// An enrolled key.
    Key {
        /// Signing fingerprint.
        fingerprint: String,
        /// Its client.
        client_id: String,
        /// Binary certificate, base64.
        certificate: String,
        /// Enrollment.
        #[serde(with = "penguindome_protocol::envelope::utc")]
        created_at: DateTime<Utc>,
        /// Revocation.
        #[serde(with = "penguindome_protocol::envelope::utc::option")]
        revoked_at: Option<DateTime<Utc>>,
    },
    /// An audit record.
    Audit {
        /// Client.
        client_id: String,
        /// Host name then.
        hostname: String,
        /// Dotted path.
        field: String,
        /// add, change, delete.
        action: ChangeAction,
        /// Old value, JSON text.
        old: Option<String>,
        /// New value, JSON text.
        new: Option<String>,
        /// When recorded.
        #[serde(with = "penguindome_protocol::envelope::utc")]
        recorded_at: DateTime<Utc>,
        /// Its order ([`audit_order`]).
        n: i64,
        /// Collection time of the report.
        #[serde(with = "penguindome_protocol::envelope::utc::option")]
        collected_at: Option<DateTime<Utc>>,
    },
    /// A nonce still within its window.
    Nonce {
        /// Client.
        client_id: String,
        /// Nonce.
        nonce: String,
        /// Unix seconds after which it may be forgotten.
        expires_at: i64,
    },
    /// An action and its targets (sorted by client).
    Action(ActionRecord),
    /// An issue.
    Issue(Issue),
    /// A client parameter.
    Parameter(Parameter),
    /// An enrollment token (its secret's hash, uses and expiry).
    Token(TokenRecord),
}

impl Record {
    /// SHA-256 of the record's canonical JSON, to compare copies.
    pub fn checksum(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(serde_json::to_vec(self).expect("records serialize")).into()
    }
}

/// Clients stored before facts versions were kept reported version 1.
fn first_facts_version() -> u32 {
    1
}

/// The order of an audit record: its request's arrival in microseconds, then
/// its position within the request. Both stores keep it, so that history
/// reads in the same order after a migration, even for requests that
/// arrived within one millisecond.
pub fn audit_order(received_at: &DateTime<Utc>, index: usize) -> i64 {
    received_at
        .timestamp_micros()
        .saturating_mul(1000)
        .saturating_add(index as i64)
}

/// Checks a collector name: what the agent names plugins, and safe in paths.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks the report fields the store relies on.
pub fn validate_report(report: &Report<Box<RawValue>>) -> StoreResult<()> {
    if report.hostname.is_empty() || report.hostname.len() > 253 {
        return Err(StoreError::Invalid(
            "the report's hostname must be 1 to 253 characters".into(),
        ));
    }
    if report.report_id.is_empty() || report.report_id.len() > 64 {
        return Err(StoreError::Invalid(
            "the report's report_id must be 1 to 64 characters".into(),
        ));
    }
    if let Some(bad) = report.plugins.keys().find(|n| !valid_plugin_name(n)) {
        return Err(StoreError::Invalid(format!(
            "plugin name {bad:?} is not allowed; use 1 to 64 letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

/// Opens the store the configuration names.
/// What a running server keeps where every server of the site sees it.
pub struct Serving {
    /// The store.
    pub store: std::sync::Arc<dyn Store>,
    /// Where the published repositories are read from.
    pub releases: std::sync::Arc<dyn crate::release::source::ReleaseSource>,
    /// The web view's logins.
    pub sessions: std::sync::Arc<dyn crate::web::session::SessionStore>,
    /// Which server holds a waiting shell session.
    pub shell_routes: std::sync::Arc<dyn crate::shell::routes::ShellRoutes>,
}

/// Opens the store, and with it where releases, web logins and shell
/// routes are kept: this server's disk and memory with the embedded
/// store, the database (shared by every server of the site) with MongoDB.
pub async fn open_for_serving(config: &crate::config::ServerConfig) -> anyhow::Result<Serving> {
    use crate::release::source::{DiskReleases, site_repository};
    use anyhow::Context as _;
    let web = &config.web;
    match &config.store {
        crate::config::StoreConfig::Sqlite { .. } => Ok(Serving {
            store: open(config).await?,
            releases: std::sync::Arc::new(DiskReleases::new(site_repository(config))),
            sessions: std::sync::Arc::new(crate::web::memory_sessions::MemorySessions::new(
                web.session_lifetime,
                web.idle_timeout,
            )),
            shell_routes: std::sync::Arc::new(crate::shell::routes::LocalRoutes),
        }),
        crate::config::StoreConfig::Mongodb(m) => {
            let store = mongodb::MongoStore::connect(m, &config.config_dir)
                .await
                .context("cannot use the MongoDB store")?;
            Ok(Serving {
                releases: std::sync::Arc::new(
                    store
                        .releases()
                        .with_apt_validity(config.server.apt_valid_for),
                ),
                sessions: std::sync::Arc::new(
                    store.sessions(web.session_lifetime, web.idle_timeout),
                ),
                shell_routes: std::sync::Arc::new(store.shell_routes()),
                store: std::sync::Arc::new(store),
            })
        }
    }
}

/// Where `pdome-admin` reads the published repositories from (see
/// [`open_for_serving`]).
pub async fn release_source(
    config: &crate::config::ServerConfig,
) -> anyhow::Result<std::sync::Arc<dyn crate::release::source::ReleaseSource>> {
    use crate::release::source::{DiskReleases, site_repository};
    use anyhow::Context as _;
    match &config.store {
        crate::config::StoreConfig::Sqlite { .. } => Ok(std::sync::Arc::new(DiskReleases::new(
            site_repository(config),
        ))),
        crate::config::StoreConfig::Mongodb(m) => Ok(std::sync::Arc::new(
            mongodb::MongoReleases::connect(m, &config.config_dir)
                .await
                .context("cannot reach the releases in MongoDB")?,
        )),
    }
}

/// Opens the store `config` names.
pub async fn open(
    config: &crate::config::ServerConfig,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context as _;
    match &config.store {
        crate::config::StoreConfig::Sqlite { path } => {
            let path = config.data_path(path);
            let store = sqlite::SqliteStore::open(&path)
                .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
            Ok(std::sync::Arc::new(store))
        }
        crate::config::StoreConfig::Mongodb(m) => {
            let store = mongodb::MongoStore::connect(m, &config.config_dir)
                .await
                .context("cannot use the MongoDB store")?;
            Ok(std::sync::Arc::new(store))
        }
    }
}
