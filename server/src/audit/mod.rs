//! The issues audit: runs the checks on every client's latest report, opens
//! and closes issues, and says which ones people must hear about now.
//!
//! The audit and the `pdome-admin issues` commands change issues under one
//! lease kept in the store, so that "at most one open issue of a name per
//! client" holds without transactions, even for several servers sharing a
//! MongoDB database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;

use crate::config::AuditConfig;
use crate::store::{AuditRow, AuditStore, Issue, IssueFilter, StoreError};

pub mod business;
pub mod certificates;
pub mod checks;
pub mod mail;
pub mod text;
pub mod verdicts;

use business::BusinessHours;
use checks::{Check, Context, Facts, Finding};
use verdicts::Verdicts;

/// Errors from the audit.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A bad `[audit]` setting.
    #[error("[audit] in server.toml: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another audit or issues command holds the lease.
    #[error(
        "another issues audit or `pdome-admin issues` command is running (on this server or \
         another one sharing the database); try again when it is done (a lease whose holder \
         died expires after 30 minutes)"
    )]
    Busy,
    /// Mail could not be sent.
    #[error("cannot send mail: {0}")]
    Mail(String),
}

/// Client parameter: the user's mail address.
pub const USER_EMAIL: &str = "user_email";
/// Client parameter: the other machines of the same user.
pub const USER_CLIENTS: &str = "user_clients";
/// Client parameter: hidden from the audit until its next report.
pub const SUSPENDED_AT: &str = "suspended_at";
/// `closed_by` of issues the audit closed.
pub const CLOSED_BY_AUDIT: &str = "audit";
/// How much earlier than its re-alert time an issue may be told again.
const REALERT_SLACK: Duration = Duration::from_secs(5 * 60);
/// Grace and re-alert of issues no check owns (opened by hand).
const MANUAL_GRACE: Duration = Duration::ZERO;
const MANUAL_REALERT: Duration = Duration::from_secs(86_400);

/// One enabled check with its timing.
pub struct CheckSettings {
    /// The check.
    pub check: Box<dyn Check>,
    /// Business time before alerting.
    pub grace: Duration,
    /// Wall-clock time between alerts.
    pub realert: Duration,
}

/// The audit's settings, validated.
pub struct Settings {
    /// Business hours.
    pub hours: BusinessHours,
    /// Enabled checks.
    pub checks: Vec<CheckSettings>,
    /// Names of the disabled checks (their open issues close).
    pub disabled: Vec<&'static str>,
    /// Business time without a report before `not-reporting`.
    pub not_reporting_after: Duration,
    /// Longest screen-lock delay accepted.
    pub screenlock_max_delay: Duration,
    /// Every check the report alone decides, enabled or not.
    pub report_checks: Vec<Box<dyn Check>>,
    /// What judges verdicts ([`verdicts::basis`]).
    pub basis: String,
    /// Listeners marked deprecated in server.toml (`deprecated-port`).
    pub deprecated_listeners: Vec<String>,
}

impl Settings {
    /// Reads and checks `[audit]`.
    pub fn from_config(c: &AuditConfig) -> Result<Self, AuditError> {
        let hours = BusinessHours::new(
            c.timezone.as_deref(),
            c.business_days.as_deref(),
            c.business_hours.as_deref(),
        )?
        .with_holidays(&c.holidays)?;
        let all = checks::all();
        if let Some(unknown) = c
            .checks
            .keys()
            .find(|k| !all.iter().any(|ch| ch.name() == k.as_str()))
        {
            let names: Vec<&str> = all.iter().map(|ch| ch.name()).collect();
            return Err(AuditError::Config(format!(
                "[audit.checks.{unknown}]: no such check; the checks are {}",
                names.join(", ")
            )));
        }
        let wall = |text: &str| {
            humantime::parse_duration(text).map_err(|e| {
                AuditError::Config(format!("{text:?} is not a duration like \"1h\": {e}"))
            })
        };
        let mut enabled = Vec::new();
        let mut disabled = Vec::new();
        for check in all {
            let own = c.checks.get(check.name()).cloned().unwrap_or_default();
            if !own.enabled.unwrap_or(check.enabled_by_default()) {
                disabled.push(check.name());
                continue;
            }
            let grace = hours.span(own.grace.as_deref().unwrap_or(check.default_grace()))?;
            let realert = wall(own.realert.as_deref().unwrap_or(check.default_realert()))?;
            enabled.push(CheckSettings {
                check,
                grace,
                realert,
            });
        }
        let not_reporting_after = hours.span(c.not_reporting_after.as_deref().unwrap_or("1d"))?;
        let screenlock_max_delay = wall(c.screenlock_max_delay.as_deref().unwrap_or("15m"))?;
        let mut settings = Self {
            hours,
            checks: enabled,
            disabled,
            not_reporting_after,
            screenlock_max_delay,
            report_checks: checks::all()
                .into_iter()
                .filter(|c| c.decided_by_report())
                .collect(),
            basis: String::new(),
            deprecated_listeners: Vec::new(),
        };
        settings.basis = verdicts::basis(&settings);
        Ok(settings)
    }

    /// Notes which of the server's listeners are deprecated.
    pub fn with_listeners(mut self, listeners: &[crate::config::ListenerConfig]) -> Self {
        self.deprecated_listeners = listeners
            .iter()
            .filter(|l| l.deprecated)
            .map(|l| l.name.clone())
            .collect();
        self
    }

    fn timing(&self, name: &str) -> (Duration, Duration) {
        self.checks
            .iter()
            .find(|c| c.check.name() == name)
            .map(|c| (c.grace, c.realert))
            .unwrap_or((MANUAL_GRACE, MANUAL_REALERT))
    }

    /// The names of the checks that run at this site.
    pub fn enabled_checks(&self) -> Vec<&'static str> {
        self.checks.iter().map(|c| c.check.name()).collect()
    }

    /// Whether the check `name` runs at this site.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.checks.iter().any(|c| c.check.name() == name)
    }

    /// Whether a check (enabled or not) owns the name, so the audit closes
    /// its issues; other names are closed only by people.
    fn owns(&self, name: &str) -> bool {
        self.checks.iter().any(|c| c.check.name() == name) || self.disabled.contains(&name)
    }
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Show every open issue, ignoring grace, snoozes, suspensions and
    /// recent alerts (and record no alert).
    pub full: bool,
}

/// A finding that belongs to no client's report (the server's own).
pub struct ServerFinding {
    /// `server:<host>/<listener>`.
    pub client_id: String,
    /// Check name.
    pub name: &'static str,
    /// Verdict.
    pub finding: Finding,
    /// When the data behind it last changed (a person's close sticks
    /// until then).
    pub as_of: Option<DateTime<Utc>>,
}

/// One host's issues that people must hear about now.
#[derive(Debug, Clone, Serialize)]
pub struct Due {
    /// The client.
    pub client_id: String,
    /// Its host name.
    pub hostname: String,
    /// Its last report.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub last_report_at: Option<DateTime<Utc>>,
    /// Its user's address, if set.
    pub user_email: Option<String>,
    /// The issues.
    pub issues: Vec<Issue>,
}

/// What one audit did.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// Issues opened.
    pub opened: Vec<Issue>,
    /// Issues closed.
    pub closed: Vec<Issue>,
    /// Issues to tell, by host.
    pub due: Vec<Due>,
}

/// Per-client parameters the audit reads.
#[derive(Default)]
struct ClientParams {
    user_email: Option<String>,
    user_clients: Vec<String>,
    suspended_at: Option<DateTime<Utc>>,
}

/// The store lease every writer of issues takes: the audit and the
/// `pdome-admin issues` commands, on this server or on another one that
/// shares the database.
pub const LEASE: &str = "issues";
/// How long a lease lasts if its holder dies without giving it back.
const LEASE_TTL: Duration = Duration::from_secs(30 * 60);

/// The issues lease, held; give it back with [`IssuesLease::release`].
pub struct IssuesLease {
    holder: String,
}

impl IssuesLease {
    /// Takes the lease, waiting up to `wait` for its holder to finish.
    pub async fn take(store: &dyn AuditStore, wait: Duration) -> Result<Self, AuditError> {
        let holder = format!(
            "{}:{}:{}",
            crate::host_name(),
            std::process::id(),
            &penguindome_protocol::envelope::new_nonce()[..8]
        );
        let deadline = std::time::Instant::now() + wait;
        loop {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
            if store.take_lease(LEASE, &holder, until, now).await? {
                return Ok(Self { holder });
            }
            if std::time::Instant::now() >= deadline {
                return Err(AuditError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Gives the lease back.
    pub async fn release(self, store: &dyn AuditStore) {
        if let Err(e) = store.release_lease(LEASE, &self.holder).await {
            log::warn!("cannot give back the issues lease (it expires by itself): {e}");
        }
    }
}

/// Opens an issue unless one is open (whose detail it refreshes) or an
/// administrator closed one after the data it is based on (`as_of`).
/// Returns the issue to write, if any.
fn open_or_refresh(
    existing: Option<&Issue>,
    last_closed: Option<&Issue>,
    client_id: &str,
    name: &str,
    detail: Option<String>,
    as_of: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Issue> {
    if let Some(open) = existing {
        if open.detail != detail {
            let mut updated = open.clone();
            updated.detail = detail;
            return Some(updated);
        }
        return None;
    }
    // Only a person's close sticks: the audit's own closes must not stop a
    // problem that comes back (a client going silent again) from reopening.
    if let (Some(closed), Some(as_of)) = (last_closed, as_of)
        && closed.closed_by.as_deref() != Some(CLOSED_BY_AUDIT)
        && closed.closed_at.is_some_and(|t| t > as_of)
    {
        return None;
    }
    Some(Issue::open(client_id, name, detail, now))
}

/// Open issues by (client, name), and what the audit changes in them.
struct Ledger {
    open: HashMap<(String, String), Issue>,
    /// Clients with an open issue at the start or opened since.
    with_open: HashSet<String>,
    writes: Vec<Issue>,
    outcome: Outcome,
    now: DateTime<Utc>,
}

impl Ledger {
    /// Whether `client_id` may have an open issue (it had one at the start
    /// or got one since).
    fn has_open(&self, client_id: &str) -> bool {
        self.with_open.contains(client_id)
    }

    fn is_open(&self, client_id: &str, name: &str) -> bool {
        self.open
            .contains_key(&(client_id.to_string(), name.to_string()))
    }

    /// A check failed: open the issue, or refresh an open one's detail.
    fn raise(
        &mut self,
        client_id: &str,
        name: &str,
        detail: String,
        last_closed: Option<&Issue>,
        as_of: Option<DateTime<Utc>>,
    ) {
        let key = (client_id.to_string(), name.to_string());
        let existing = self.open.get(&key);
        let was_open = existing.is_some();
        if let Some(issue) = open_or_refresh(
            existing,
            last_closed,
            client_id,
            name,
            Some(detail),
            as_of,
            self.now,
        ) {
            if !was_open {
                self.outcome.opened.push(issue.clone());
                self.with_open.insert(client_id.to_string());
            }
            self.open.insert(key, issue.clone());
            self.writes.push(issue);
        }
    }

    /// A check passed (or no longer runs): close its open issue.
    fn clear(&mut self, client_id: &str, name: &str) {
        if let Some(mut issue) = self.open.remove(&(client_id.to_string(), name.to_string())) {
            issue.closed_at = Some(self.now);
            issue.closed_by = Some(CLOSED_BY_AUDIT.into());
            self.outcome.closed.push(issue.clone());
            self.writes.push(issue);
        }
    }
}

/// What the run knows of the fleet besides each client's own row, which
/// it reads as a stream.
struct Fleet {
    params: HashMap<String, ClientParams>,
    pending_patches: HashMap<String, usize>,
    /// The last contact (the server's clock, not the agents'
    /// collected_at) of every machine named in a `user_clients`.
    peers_seen: HashMap<String, DateTime<Utc>>,
    /// Host name and latest report of the clients with open issues, for
    /// the alerts.
    hosts: HashMap<String, HostInfo>,
}

/// What an alert says about a host.
struct HostInfo {
    hostname: String,
    submitted_at: Option<DateTime<Utc>>,
}

impl Fleet {
    async fn read(store: &dyn AuditStore, now: DateTime<Utc>) -> Result<Self, AuditError> {
        let params = read_params(store).await?;
        let peers: HashSet<&str> = params
            .values()
            .flat_map(|p| p.user_clients.iter().map(String::as_str))
            .collect();
        let mut peers_seen = HashMap::new();
        // A pass of its own, only when some user has several machines: a
        // peer may come after its client in the stream.
        if !peers.is_empty() {
            let mut rows = store.audit_rows().await?;
            while let Some(row) = rows.try_next().await? {
                if peers.contains(row.client_id.as_str()) {
                    peers_seen.insert(row.client_id, row.last_seen_at);
                }
            }
        }
        Ok(Self {
            pending_patches: store.pending_patch_counts(now).await?,
            params,
            peers_seen,
            hosts: HashMap::new(),
        })
    }

    /// The latest contact of the machines `client_id`'s user also uses.
    fn peer_seen_at(&self, client_id: &str) -> Option<DateTime<Utc>> {
        let params = self.params.get(client_id)?;
        params
            .user_clients
            .iter()
            .filter_map(|peer| self.peers_seen.get(peer).copied())
            .max()
    }
}

/// Runs the audit at `now`.
pub async fn run(
    store: &dyn AuditStore,
    settings: &Settings,
    server_findings: Vec<ServerFinding>,
    now: DateTime<Utc>,
    opts: Options,
) -> Result<Outcome, AuditError> {
    let mut ledger = Ledger::load(store, now).await?;
    let mut fleet = Fleet::read(store, now).await?;
    let mut rows = store.audit_rows().await?;
    while let Some(row) = rows.try_next().await? {
        if row.revoked_at.is_some() {
            ledger.retire(&row.client_id, settings);
        } else {
            judge_client(store, settings, &fleet, &row, &mut ledger).await?;
        }
        if ledger.has_open(&row.client_id) {
            let info = HostInfo {
                hostname: row.hostname,
                submitted_at: row.submitted_at,
            };
            fleet.hosts.insert(row.client_id, info);
        }
    }
    apply_server_findings(store, &mut ledger, server_findings).await?;
    let Ledger {
        open,
        writes,
        mut outcome,
        ..
    } = ledger;
    if !writes.is_empty() {
        store.put_issues(writes).await?;
    }
    outcome.due = due(open, &fleet, settings, now, opts);
    Ok(outcome)
}

impl Ledger {
    /// The open issues. Oldest first: should two issues of one name be
    /// open for a client (written before the lease existed, or by hand in
    /// the database), the oldest stays and the others close.
    async fn load(store: &dyn AuditStore, now: DateTime<Utc>) -> Result<Self, AuditError> {
        let mut ledger = Ledger {
            open: HashMap::new(),
            with_open: HashSet::new(),
            writes: Vec::new(),
            outcome: Outcome::default(),
            now,
        };
        let filter = IssueFilter {
            client_id: None,
            open_only: true,
        };
        for issue in store.issues(filter).await? {
            ledger.with_open.insert(issue.client_id.clone());
            let key = (issue.client_id.clone(), issue.name.clone());
            match ledger.open.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    let mut duplicate = issue;
                    duplicate.closed_at = Some(now);
                    duplicate.closed_by = Some(CLOSED_BY_AUDIT.into());
                    ledger.outcome.closed.push(duplicate.clone());
                    ledger.writes.push(duplicate);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(issue);
                }
            }
        }
        Ok(ledger)
    }

    /// A revoked machine is gone: its checks' issues end with it (issues
    /// opened by hand stay until a person closes them).
    fn retire(&mut self, client_id: &str, settings: &Settings) {
        let names: Vec<String> = self
            .open
            .keys()
            .filter(|(c, n)| c == client_id && settings.owns(n))
            .map(|(_, n)| n.clone())
            .collect();
        for name in names {
            self.clear(client_id, &name);
        }
    }
}

/// Judges one client: report checks from its stored verdicts (judged
/// again from its document when missing, of another basis or expired),
/// the others from its contact times and patches.
async fn judge_client(
    store: &dyn AuditStore,
    settings: &Settings,
    fleet: &Fleet,
    row: &AuditRow,
    ledger: &mut Ledger,
) -> Result<(), AuditError> {
    let now = ledger.now;
    let no_plugins = BTreeMap::new();
    let facts = Facts {
        enrolled_at: row.enrolled_at,
        submitted_at: row.submitted_at,
        plugins: checks::Plugins::Parsed(&no_plugins),
        facts_version: penguindome_protocol::facts::FACTS_VERSION,
        pending_patches: fleet
            .pending_patches
            .get(&row.client_id)
            .copied()
            .unwrap_or(0),
        peer_seen_at: fleet.peer_seen_at(&row.client_id),
        last_listener: Some(&row.last_listener),
    };
    let verdicts = match Verdicts::current(row.verdicts.as_deref(), settings, now) {
        Some(v) => v,
        None => match store.get_client(&row.client_id).await? {
            Some(doc) => {
                let stored = Facts::of_client(&doc, facts.pending_patches, facts.peer_seen_at);
                verdicts::judge(settings, &stored, now)
            }
            None => return Ok(()),
        },
    };
    let cx = Context {
        now,
        hours: &settings.hours,
        not_reporting_after: settings.not_reporting_after,
        screenlock_max_delay: settings.screenlock_max_delay,
        deprecated_listeners: &settings.deprecated_listeners,
    };
    let findings: Vec<(&'static str, Finding)> = settings
        .checks
        .iter()
        .map(|cs| {
            let name = cs.check.name();
            let finding = if cs.check.decided_by_report() {
                verdicts.finding(name)
            } else {
                cs.check.evaluate(&facts, &cx)
            };
            (name, finding)
        })
        .collect();
    let as_of = row.submitted_at.or(Some(row.enrolled_at));
    record_findings(store, ledger, &row.client_id, findings, as_of).await?;
    for name in &settings.disabled {
        ledger.clear(&row.client_id, name);
    }
    Ok(())
}

/// Opens, refreshes or closes one client's issues by its findings.
async fn record_findings(
    store: &dyn AuditStore,
    ledger: &mut Ledger,
    client_id: &str,
    findings: Vec<(&'static str, Finding)>,
    as_of: Option<DateTime<Utc>>,
) -> Result<(), AuditError> {
    // Read only when a closed issue could matter (a failing check with no
    // open issue), and then once per client.
    let mut history: Option<Vec<Issue>> = None;
    for (name, finding) in findings {
        match finding {
            Finding::Raise(detail) => {
                if !ledger.is_open(client_id, name) && history.is_none() {
                    let filter = IssueFilter {
                        client_id: Some(client_id.to_string()),
                        open_only: false,
                    };
                    history = Some(store.issues(filter).await?);
                }
                let last_closed = latest_closed(history.as_deref().unwrap_or_default(), name);
                ledger.raise(client_id, name, detail, last_closed, as_of);
            }
            Finding::Clear => ledger.clear(client_id, name),
        }
    }
    Ok(())
}

/// The server's own issues: a person's close sticks until the data
/// changes (a new certificate file); those of listeners that are gone
/// close.
async fn apply_server_findings(
    store: &dyn AuditStore,
    ledger: &mut Ledger,
    server_findings: Vec<ServerFinding>,
) -> Result<(), AuditError> {
    let current: std::collections::HashSet<(String, String)> = server_findings
        .iter()
        .map(|f| (f.client_id.clone(), f.name.to_string()))
        .collect();
    let same_server = |c: &str, f: &ServerFinding| {
        f.client_id.rsplit_once('/').map(|(p, _)| p) == c.rsplit_once('/').map(|(p, _)| p)
    };
    let gone: Vec<(String, String)> = ledger
        .open
        .keys()
        .filter(|(c, n)| {
            server_findings
                .iter()
                .any(|f| f.name == n.as_str() && same_server(c, f))
                && !current.contains(&(c.clone(), n.clone()))
        })
        .cloned()
        .collect();
    for (c, n) in gone {
        ledger.clear(&c, &n);
    }
    for f in server_findings {
        let as_of = f.as_of;
        record_findings(
            store,
            ledger,
            &f.client_id,
            vec![(f.name, f.finding)],
            as_of,
        )
        .await?;
    }
    Ok(())
}

/// What people must hear about now, by host.
fn due(
    open: HashMap<(String, String), Issue>,
    fleet: &Fleet,
    settings: &Settings,
    now: DateTime<Utc>,
    opts: Options,
) -> Vec<Due> {
    let last_report = |id: &str| fleet.hosts.get(id).and_then(|h| h.submitted_at);
    let mut by_host: BTreeMap<(String, String), Vec<Issue>> = BTreeMap::new();
    for issue in open.into_values() {
        let params = fleet.params.get(issue.client_id.as_str());
        if !opts.full && quiet(&issue, params, last_report(&issue.client_id), settings, now) {
            continue;
        }
        let host = fleet
            .hosts
            .get(issue.client_id.as_str())
            .map(|h| h.hostname.clone())
            .unwrap_or_else(|| issue.client_id.clone());
        by_host
            .entry((host, issue.client_id.clone()))
            .or_default()
            .push(issue);
    }
    by_host
        .into_iter()
        .map(|((hostname, client_id), mut issues)| {
            issues.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then(a.name.cmp(&b.name)));
            Due {
                last_report_at: last_report(&client_id),
                user_email: fleet
                    .params
                    .get(client_id.as_str())
                    .and_then(|p| p.user_email.clone()),
                client_id,
                hostname,
                issues,
            }
        })
        .collect()
}

/// Whether an open issue waits: its host suspended, the issue snoozed,
/// in its grace, or told recently.
fn quiet(
    issue: &Issue,
    params: Option<&ClientParams>,
    last_report: Option<DateTime<Utc>>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> bool {
    let suspended = params
        .and_then(|p| p.suspended_at)
        .is_some_and(|s| last_report.is_none_or(|l| s >= l));
    let (grace, realert) = settings.timing(&issue.name);
    let in_grace = settings.hours.elapsed(issue.opened_at, now) < grace;
    // Slack: an hourly timer must not skip every other hour because this
    // run started a little earlier after the hour.
    let recently = issue
        .alerted_at
        .is_some_and(|t| (now - t).to_std().unwrap_or_default() + REALERT_SLACK < realert);
    suspended || issue.snoozed(now) || in_grace || recently
}

/// Records that the due issues were told at `now`, so they repeat only
/// after their re-alert time. Call it once they really were told.
pub async fn mark_alerted(
    store: &dyn AuditStore,
    due: &[Due],
    now: DateTime<Utc>,
) -> Result<(), AuditError> {
    let told: Vec<Issue> = due
        .iter()
        .flat_map(|d| d.issues.iter().cloned())
        .map(|mut i| {
            i.alerted_at = Some(now);
            i
        })
        .collect();
    if !told.is_empty() {
        store.put_issues(told).await?;
    }
    Ok(())
}

/// The most recently closed issue of a name, from one client's history.
fn latest_closed<'a>(history: &'a [Issue], name: &str) -> Option<&'a Issue> {
    history
        .iter()
        .filter(|i| i.name == name && i.closed_at.is_some())
        .max_by_key(|i| i.closed_at)
}

async fn read_params(store: &dyn AuditStore) -> Result<HashMap<String, ClientParams>, AuditError> {
    let mut out: HashMap<String, ClientParams> = HashMap::new();
    for p in store.parameters(None).await? {
        let entry = out.entry(p.client_id.clone()).or_default();
        match p.name.as_str() {
            USER_EMAIL => entry.user_email = p.value.as_str().map(str::to_string),
            USER_CLIENTS => {
                entry.user_clients = p
                    .value
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            SUSPENDED_AT => {
                entry.suspended_at = p
                    .value
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
