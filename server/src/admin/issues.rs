//! `pdome-admin issues`: the issues audit and what administrators do with
//! its issues (list, open, close, snooze, suspend).

use std::collections::{BTreeSet, HashSet};

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use comfy_table::{Table, presets::NOTHING};

use crate::audit::{self, Options, Settings, text};
use crate::config::ServerConfig;
use crate::store::{AuditStore, Issue, IssueFilter, Parameter};

/// `pdome-admin issues …`.
#[derive(Debug, clap::Subcommand)]
pub enum IssuesCommand {
    /// Run the checks on every client's latest report, open and close
    /// issues, and print those people must hear about now.
    Audit {
        /// Print every open issue: ignore grace periods, snoozes,
        /// suspensions and recent alerts (and record no alert).
        #[arg(long, conflicts_with = "notify")]
        full: bool,
        /// Tell people: mail the administrators (`[audit] email`) and, with
        /// `email_users`, each machine's user; record the alert so that it
        /// repeats only after the check's re-alert time. What the timer runs.
        #[arg(long)]
        notify: bool,
        /// JSON for scripts (opened, closed and due issues).
        #[arg(long)]
        json: bool,
    },
    /// List issues (open ones unless --closed).
    List {
        /// Only these hosts (client id or host name); repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Closed ones too.
        #[arg(long)]
        closed: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The checks, whether they run, and their grace and re-alert times.
    Checks,
    /// Open an issue by hand (the audit never closes names no check owns).
    Open {
        /// Client id or host name.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Issue name (letters, digits and '-').
        #[arg(long = "issue")]
        issue: String,
        /// What is wrong, for people.
        #[arg(long)]
        detail: Option<String>,
    },
    /// Close issues; a check that still fails reopens its issue at the
    /// client's next report.
    Close(Selection),
    /// Silence issues for a while (default one day).
    Snooze {
        #[command(flatten)]
        selection: Selection,
        /// Days to snooze.
        #[arg(long, conflicts_with = "hours")]
        days: Option<u32>,
        /// Hours to snooze.
        #[arg(long)]
        hours: Option<u32>,
    },
    /// End snoozes now.
    Unsnooze(Selection),
    /// Hide hosts from the audit's alerts until they next report.
    Suspend {
        /// Client ids or host names.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Show suspended hosts' issues again.
    Unsuspend {
        /// Client ids or host names.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
}

/// Which open issues a command acts on.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Only these hosts (client id or host name); repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only issues of these names; repeatable.
    #[arg(long = "issue")]
    issues: Vec<String>,
    /// Every open issue (needed when no --host or --issue is given).
    #[arg(long)]
    all: bool,
}

/// Who is acting, for `closed_by`.
fn admin_name() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "admin".into())
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn valid_issue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How long a command waits for another holder of the issues lease.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs an issues subcommand; prints to stdout. Commands that change
/// issues hold the issues lease while they run.
pub async fn run(
    config: &ServerConfig,
    store: &dyn AuditStore,
    cmd: IssuesCommand,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let settings = Settings::from_config(&config.audit)?.with_listeners(&config.listeners);
    if matches!(cmd, IssuesCommand::List { .. } | IssuesCommand::Checks) {
        return execute(config, &settings, store, cmd, now).await;
    }
    let lease = audit::IssuesLease::take(store, LEASE_WAIT).await?;
    let result = execute(config, &settings, store, cmd, now).await;
    lease.release(store).await;
    result
}

async fn execute(
    config: &ServerConfig,
    settings: &Settings,
    store: &dyn AuditStore,
    cmd: IssuesCommand,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    match cmd {
        IssuesCommand::Audit { full, notify, json } => {
            audit_issues(
                config,
                settings,
                store,
                now,
                AuditFlags { full, notify, json },
            )
            .await
        }
        IssuesCommand::List {
            hosts,
            closed,
            json,
        } => list(store, &hosts, closed, json, now).await,
        IssuesCommand::Checks => {
            print_checks(settings);
            Ok(())
        }
        IssuesCommand::Open {
            hosts,
            issue,
            detail,
        } => open(store, &hosts, &issue, detail, now).await,
        IssuesCommand::Close(sel) => close(store, &sel, now).await,
        IssuesCommand::Snooze {
            selection,
            days,
            hours,
        } => snooze(store, &selection, days, hours, now).await,
        IssuesCommand::Unsnooze(sel) => unsnooze(store, &sel, now).await,
        IssuesCommand::Suspend { hosts } => suspend(store, &hosts, true, now).await,
        IssuesCommand::Unsuspend { hosts } => suspend(store, &hosts, false, now).await,
    }
}

/// The flags of `issues audit`.
struct AuditFlags {
    full: bool,
    notify: bool,
    json: bool,
}

/// `issues audit`: runs the audit, prints what is due and, with
/// `--notify`, tells people and records the alerts.
async fn audit_issues(
    config: &ServerConfig,
    settings: &Settings,
    store: &dyn AuditStore,
    now: DateTime<Utc>,
    AuditFlags { full, notify, json }: AuditFlags,
) -> anyhow::Result<()> {
    let findings = audit::certificates::findings(config, now);
    let auditing = super::progress::spinner("auditing every client", json);
    let outcome = audit::run(store, settings, findings, now, Options { full }).await?;
    auditing.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", text::render(&outcome.due));
    }
    if notify && !outcome.due.is_empty() {
        let (told, failures) = tell(config, &outcome.due);
        let told: Vec<audit::Due> = outcome
            .due
            .into_iter()
            .filter(|d| told.contains(&d.client_id))
            .collect();
        audit::mark_alerted(store, &told, now).await?;
        if !failures.is_empty() {
            bail!(
                "{}; the issues of hosts nobody was told about are told again at the next run",
                failures.join("; ")
            );
        }
    }
    Ok(())
}

/// `issues list`.
async fn list(
    store: &dyn AuditStore,
    hosts: &[String],
    closed: bool,
    json: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let issues = issues_of(store, hosts, !closed).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&issues)?);
        return Ok(());
    }
    let names = hostnames(store).await?;
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["HOST", "ISSUE", "OPENED", "STATE", "DETAIL"]);
    for i in &issues {
        let host = names
            .get(&i.client_id)
            .cloned()
            .unwrap_or_else(|| i.client_id.clone());
        t.add_row([
            text::clean(&host),
            i.name.clone(),
            when(&i.opened_at),
            issue_state(i, now),
            text::clean(i.detail.as_deref().unwrap_or_default()),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// The issues of these hosts (of every host when none is named).
async fn issues_of(
    store: &dyn AuditStore,
    hosts: &[String],
    open_only: bool,
) -> anyhow::Result<Vec<Issue>> {
    let ids = resolve(store, hosts).await?;
    if ids.is_empty() {
        return Ok(store
            .issues(IssueFilter {
                client_id: None,
                open_only,
            })
            .await?);
    }
    let mut issues = Vec::new();
    for id in ids {
        issues.extend(
            store
                .issues(IssueFilter {
                    client_id: Some(id),
                    open_only,
                })
                .await?,
        );
    }
    Ok(issues)
}

/// Open, snoozed or closed, for the STATE column.
fn issue_state(i: &Issue, now: DateTime<Utc>) -> String {
    match (&i.closed_at, i.snoozed(now)) {
        (Some(c), _) => format!(
            "closed {} by {}",
            when(c),
            i.closed_by.as_deref().unwrap_or("?")
        ),
        (None, true) => format!(
            "snoozed until {}",
            i.unsnooze_at.as_ref().map(when).unwrap_or_default()
        ),
        (None, false) => "open".into(),
    }
}

/// `issues checks`.
fn print_checks(settings: &Settings) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["CHECK", "RUNS", "GRACE", "RE-ALERT", "RAISED WHEN"]);
    for c in audit::checks::all() {
        let on = settings.checks.iter().find(|s| s.check.name() == c.name());
        let (runs, grace, realert) = match on {
            Some(s) => (
                "yes".to_string(),
                grace_text(s.grace),
                humantime::format_duration(s.realert).to_string(),
            ),
            None => ("no".to_string(), "-".into(), "-".into()),
        };
        t.add_row([
            c.name().into(),
            runs,
            grace,
            realert,
            c.describe().to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "Business hours: {}; {} per day; not reporting after {} business time.",
        settings.hours.summary(),
        humantime::format_duration(settings.hours.day_length()),
        humantime::format_duration(settings.not_reporting_after)
    );
}

fn grace_text(grace: std::time::Duration) -> String {
    if grace.is_zero() {
        "none".to_string()
    } else {
        format!(
            "{} business",
            humantime::format_duration(grace)
                .to_string()
                .replace(' ', "")
        )
    }
}

/// `issues open`.
async fn open(
    store: &dyn AuditStore,
    hosts: &[String],
    issue: &str,
    detail: Option<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if !valid_issue_name(issue) {
        bail!("issue name {issue:?}: use lower-case letters, digits and '-'");
    }
    let mut writes = Vec::new();
    for id in resolve(store, hosts).await? {
        let open = store
            .issues(IssueFilter {
                client_id: Some(id.clone()),
                open_only: true,
            })
            .await?;
        if open.iter().any(|i| i.name == issue) {
            println!("{id}: {issue} is already open");
            continue;
        }
        writes.push(Issue::open(&id, issue, detail.clone(), now));
        println!("{id}: opened {issue}");
    }
    store.put_issues(writes).await?;
    Ok(())
}

/// `issues close`.
async fn close(store: &dyn AuditStore, sel: &Selection, now: DateTime<Utc>) -> anyhow::Result<()> {
    let who = admin_name();
    let chosen = select(store, sel).await?;
    let n = chosen.len();
    let writes = chosen
        .into_iter()
        .map(|mut i| {
            i.closed_at = Some(now);
            i.closed_by = Some(who.clone());
            i
        })
        .collect();
    store.put_issues(writes).await?;
    println!("closed {n} issue(s)");
    Ok(())
}

/// `issues snooze`.
async fn snooze(
    store: &dyn AuditStore,
    selection: &Selection,
    days: Option<u32>,
    hours: Option<u32>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let span = match (days, hours) {
        (_, Some(h)) => Duration::hours(h.into()),
        (Some(d), None) => Duration::days(d.into()),
        (None, None) => Duration::days(1),
    };
    let chosen = select(store, selection).await?;
    let n = chosen.len();
    let writes = chosen
        .into_iter()
        .map(|mut i| {
            i.snoozed_at = Some(now);
            i.unsnooze_at = Some(now + span);
            i
        })
        .collect();
    store.put_issues(writes).await?;
    println!("snoozed {n} issue(s) until {}", when(&(now + span)));
    Ok(())
}

/// `issues unsnooze`.
async fn unsnooze(
    store: &dyn AuditStore,
    sel: &Selection,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let chosen: Vec<Issue> = select(store, sel)
        .await?
        .into_iter()
        .filter(|i| i.snoozed(now))
        .collect();
    let n = chosen.len();
    let writes = chosen
        .into_iter()
        .map(|mut i| {
            i.unsnooze_at = Some(now);
            i.unsnoozed_at = Some(now);
            i
        })
        .collect();
    store.put_issues(writes).await?;
    println!("unsnoozed {n} issue(s)");
    Ok(())
}

/// Suspends (or with `on` false, unsuspends) hosts.
pub async fn suspend(
    store: &dyn AuditStore,
    hosts: &[String],
    on: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for id in resolve(store, hosts).await? {
        let value = if on {
            serde_json::Value::String(penguindome_protocol::envelope::utc::format(&now))
        } else {
            serde_json::Value::Null
        };
        store
            .put_parameter(Parameter {
                client_id: id.clone(),
                name: audit::SUSPENDED_AT.into(),
                value,
                updated_at: now,
            })
            .await?;
        if on {
            println!("{id}: suspended until its next report");
        } else {
            println!("{id}: unsuspended");
        }
    }
    Ok(())
}

/// Mails the due issues, each mail on its own. Returns the clients whose
/// issues were told (by the digest or their user's mail; with no mail set
/// up for them, by the journal, which has this run's output) and what
/// failed. Issues nobody was told about stay unmarked for the next run.
fn tell(config: &ServerConfig, due: &[audit::Due]) -> (HashSet<String>, Vec<String>) {
    let a = &config.audit;
    let mut failures = Vec::new();
    let user_mail = |d: &audit::Due| a.email_users && d.user_email.is_some();
    if a.email.is_none() && !due.iter().any(user_mail) {
        return (due.iter().map(|d| d.client_id.clone()).collect(), failures);
    }
    let mailer = match audit::mail::Mailer::from_config(a, &config.config_dir) {
        Ok(m) => m,
        Err(e) => return (HashSet::new(), vec![e.to_string()]),
    };
    let mut digest_sent = false;
    if let Some(to) = &a.email {
        let (subject, body) = text::admin_mail(due);
        match mailer.send(to, &subject, body) {
            Ok(()) => digest_sent = true,
            Err(e) => failures.push(e.to_string()),
        }
    }
    let mut told = HashSet::new();
    for host in due {
        let mut user_told = false;
        if let (true, Some(to)) = (a.email_users, &host.user_email) {
            let (subject, body) = text::user_mail(host);
            match mailer.send(to, &subject, body) {
                Ok(()) => user_told = true,
                Err(e) => failures.push(e.to_string()),
            }
        }
        let nobody_to_mail = a.email.is_none() && !user_mail(host);
        if digest_sent || user_told || nobody_to_mail {
            told.insert(host.client_id.clone());
        }
    }
    (told, failures)
}

async fn resolve(store: &dyn AuditStore, hosts: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    for h in hosts {
        // The server's own issues are addressed by their id.
        if h.starts_with("server:") {
            ids.insert(h.clone());
            continue;
        }
        ids.insert(store.resolve_client(h).await?);
    }
    Ok(ids.into_iter().collect())
}

async fn hostnames(
    store: &dyn AuditStore,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    Ok(store
        .list_clients()
        .await?
        .into_iter()
        .map(|c| (c.client_id, c.hostname))
        .collect())
}

/// The open issues a selection names.
async fn select(store: &dyn AuditStore, sel: &Selection) -> anyhow::Result<Vec<Issue>> {
    if sel.hosts.is_empty() && sel.issues.is_empty() && !sel.all {
        bail!("name --host or --issue, or give --all to act on every open issue");
    }
    let ids = resolve(store, &sel.hosts).await?;
    let open = store
        .issues(IssueFilter {
            client_id: None,
            open_only: true,
        })
        .await
        .context("cannot read the open issues")?;
    Ok(open
        .into_iter()
        .filter(|i| ids.is_empty() || ids.contains(&i.client_id))
        .filter(|i| sel.issues.is_empty() || sel.issues.contains(&i.name))
        .collect())
}
