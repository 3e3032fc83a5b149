//! What every action subcommand shares: choosing target clients, queueing,
//! and showing where actions stand.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use penguindome_protocol::actions::{ActionState, Task};

use crate::audit::text::clean;
use crate::store::{ActionFilter, ActionRecord, AdminStore, NewAction};

/// The clients an action goes to: the named ones (ids or host names), or
/// every active client. Returns (client id, host name) pairs.
pub async fn targets(
    store: &dyn AdminStore,
    hosts: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let clients = store.list_clients().await?;
    let name_of: BTreeMap<&str, &str> = clients
        .iter()
        .map(|c| (c.client_id.as_str(), c.hostname.as_str()))
        .collect();
    if hosts.is_empty() {
        let active: Vec<_> = clients
            .iter()
            .filter(|c| c.revoked_at.is_none())
            .map(|c| (c.client_id.clone(), c.hostname.clone()))
            .collect();
        anyhow::ensure!(
            !active.is_empty(),
            "no active client has enrolled yet, so there is nobody to act on"
        );
        return Ok(active);
    }
    let mut out = Vec::new();
    for h in hosts {
        let id = store.resolve_client(h).await?;
        let name = name_of.get(id.as_str()).copied().unwrap_or(h.as_str());
        if !out.iter().any(|(c, _)| c == &id) {
            out.push((id, name.to_string()));
        }
    }
    Ok(out)
}

/// Queues `task` for `targets`; returns the new action's id.
pub async fn queue(
    store: &dyn AdminStore,
    task: &Task,
    summary: String,
    operator: &str,
    expires_in: std::time::Duration,
    targets: Vec<(String, String)>,
) -> anyhow::Result<String> {
    let created_at = now();
    let expires_at = created_at + chrono::Duration::from_std(expires_in)?;
    let id = penguindome_protocol::envelope::new_nonce();
    store
        .add_action(NewAction {
            id: id.clone(),
            kind: task.kind().to_string(),
            summary,
            task: serde_json::to_string(task)?,
            queued_by: operator.to_string(),
            created_at,
            expires_at,
            targets,
        })
        .await?;
    Ok(id)
}

/// Now, to the millisecond the stores keep.
pub fn now() -> DateTime<Utc> {
    penguindome_protocol::envelope::utc::truncate(Utc::now())
}

/// Actions of a kind, optionally one id.
pub async fn of_kind(
    store: &dyn AdminStore,
    kind: &str,
    id: Option<String>,
) -> anyhow::Result<Vec<ActionRecord>> {
    Ok(store
        .actions(ActionFilter {
            id,
            kind: Some(kind.to_string()),
            client_id: None,
        })
        .await?)
}

/// "3 succeeded, 1 refused": how many targets are in each state at `now`.
pub fn tally(a: &ActionRecord, now: DateTime<Utc>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for t in &a.targets {
        *counts
            .entry(t.state_at(a.expires_at, now).as_str())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True while the action may still run on some client.
pub fn is_open(a: &ActionRecord, now: DateTime<Utc>) -> bool {
    a.targets
        .iter()
        .any(|t| !t.state_at(a.expires_at, now).is_final())
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A table without borders.
pub fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t
}

/// One line per target: host, state, times and what the agent said.
pub fn target_table(a: &ActionRecord, now: DateTime<Utc>) -> Table {
    let mut t = table();
    t.set_header(["HOSTNAME", "CLIENT ID", "STATE", "UPDATED (UTC)", "DETAIL"]);
    for target in &a.targets {
        let state = target.state_at(a.expires_at, now);
        let updated = target
            .finished_at
            .or(target.started_at)
            .or(target.delivered_at)
            .map(|t| when(&t))
            .unwrap_or_else(|| "-".into());
        t.add_row([
            clean(&target.hostname),
            target.client_id.clone(),
            state.as_str().to_string(),
            updated,
            clean(target.detail.as_deref().unwrap_or("")),
        ]);
    }
    t
}

/// A client's actions for `clients show`: newest last.
pub fn client_rows(actions: &[ActionRecord], client_id: &str, now: DateTime<Utc>) -> Table {
    let mut t = table();
    t.set_header([
        "ACTION",
        "KIND",
        "WHAT",
        "QUEUED (UTC)",
        "BY",
        "STATE",
        "DETAIL",
    ]);
    for a in actions {
        let Some(target) = a.targets.iter().find(|t| t.client_id == client_id) else {
            continue;
        };
        t.add_row([
            a.id.clone(),
            a.kind.clone(),
            clean(&a.summary),
            when(&a.created_at),
            clean(&a.queued_by),
            target.state_at(a.expires_at, now).as_str().to_string(),
            clean(target.detail.as_deref().unwrap_or("")),
        ]);
    }
    t
}

/// The state of one client's copy of an action at `now`, for JSON.
pub fn client_state(a: &ActionRecord, client_id: &str, now: DateTime<Utc>) -> Option<ActionState> {
    a.targets
        .iter()
        .find(|t| t.client_id == client_id)
        .map(|t| t.state_at(a.expires_at, now))
}
