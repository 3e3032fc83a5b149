//! Actions: queueing (administration), handing out and reports (the
//! request path), listing and cancelling, copying between stores.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::{ActionReport, ActionState};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::nonces::NonceLog;
use super::request::touch;
use super::{backend_err, insert_changes, parse_opt_ts, parse_ts, ts};
use crate::store::actions::{audit_field, state_change};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{
    ActionFilter, ActionRecord, Delivery, NewAction, RequestMeta, StoreError, StoreResult,
    TargetRecord,
};

/// Queues an action and records it in each client's audit trail.
pub(super) fn add(conn: &Connection, a: &NewAction) -> StoreResult<()> {
    insert_action(
        conn,
        &a.id,
        &a.kind,
        &a.summary,
        &a.task,
        &a.queued_by,
        &a.created_at,
        &a.expires_at,
    )?;
    let mut target = conn
        .prepare_cached(
            "INSERT INTO action_targets (action_id, client_id, hostname, state) VALUES (?1, ?2, ?3, 'queued')",
        )
        .map_err(backend_err)?;
    let queued = json!({"kind": a.kind, "summary": a.summary, "queued_by": a.queued_by,
        "expires_at": ts(&a.expires_at), "state": "queued"});
    for (client_id, hostname) in &a.targets {
        target
            .execute(params![a.id, client_id, hostname])
            .map_err(backend_err)?;
        let change = Change {
            field: audit_field(&a.id),
            action: ChangeAction::Add,
            old: None,
            new: Some(queued.clone()),
        };
        insert_changes(conn, client_id, hostname, &[change], &a.created_at, None)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_action(
    conn: &Connection,
    id: &str,
    kind: &str,
    summary: &str,
    task: &str,
    queued_by: &str,
    created_at: &DateTime<Utc>,
    expires_at: &DateTime<Utc>,
) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO actions (id, kind, summary, task, queued_by, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            kind,
            summary,
            task,
            queued_by,
            ts(created_at),
            ts(expires_at)
        ],
    )
    .map_err(backend_err)?;
    Ok(())
}

/// Marks a client's queued, unexpired actions delivered and returns every
/// delivered one.
pub(super) fn deliver(
    conn: &Connection,
    client_id: &str,
    now: &DateTime<Utc>,
) -> StoreResult<Vec<Delivery>> {
    let now_s = ts(now);
    conn.prepare_cached(
        "UPDATE action_targets SET state = 'delivered', delivered_at = ?2 \
         WHERE client_id = ?1 AND state = 'queued' \
           AND action_id IN (SELECT id FROM actions WHERE expires_at > ?2)",
    )
    .and_then(|mut s| s.execute(params![client_id, now_s]))
    .map_err(backend_err)?;
    let mut st = conn
        .prepare_cached(
            "SELECT a.id, a.queued_by, a.created_at, a.expires_at, a.task \
             FROM action_targets t JOIN actions a ON a.id = t.action_id \
             WHERE t.client_id = ?1 AND t.state = 'delivered' AND a.expires_at > ?2 \
             ORDER BY a.created_at, a.id",
        )
        .map_err(backend_err)?;
    let rows = st
        .query_map(params![client_id, now_s], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                queued_by: r.get(1)?,
                created_at: parse_ts(&r.get::<_, String>(2)?)?,
                expires_at: parse_ts(&r.get::<_, String>(3)?)?,
                task: r.get(4)?,
            })
        })
        .map_err(backend_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend_err)
}

/// Stores an agent's report on an action.
pub(super) fn report(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    meta: &RequestMeta,
    report: &ActionReport,
) -> StoreResult<()> {
    // Key, nonce and contact, as every request without data.
    touch(conn, nonces, meta)?;
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT state, hostname FROM action_targets WHERE action_id = ?1 AND client_id = ?2",
            params![report.action_id, meta.client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend_err)?;
    let Some((stored, hostname)) = row else {
        return Err(StoreError::NoSuchAction {
            action_id: report.action_id.clone(),
        });
    };
    let stored = ActionState::parse(&stored).unwrap_or(ActionState::Queued);
    if stored.is_final() || !report.state.is_reportable() || stored == report.state {
        // Already settled (or a repeat): the first final word stands.
        return Ok(());
    }
    let at = ts(&report.at);
    let (started, finished) = if report.state == ActionState::Started {
        (Some(at), None)
    } else {
        let ran_from = report.output.as_ref().map(|o| ts(&o.started_at));
        (ran_from, Some(at))
    };
    let output = report
        .output
        .as_ref()
        .map(|o| serde_json::to_string(o).expect("outputs serialize"));
    conn.execute(
        "UPDATE action_targets SET state = ?3, detail = ?4, \
           started_at = coalesce(started_at, ?5), finished_at = coalesce(?6, finished_at), \
           delivered_at = coalesce(delivered_at, ?7), output = coalesce(?8, output) \
         WHERE action_id = ?1 AND client_id = ?2",
        params![
            report.action_id,
            meta.client_id,
            report.state.as_str(),
            report.detail,
            started,
            finished,
            ts(&meta.received_at),
            output,
        ],
    )
    .map_err(backend_err)?;
    let change = state_change(
        &report.action_id,
        stored,
        report.state,
        report.detail.as_deref(),
    );
    insert_changes(
        conn,
        &meta.client_id,
        &hostname,
        &[change],
        &meta.received_at,
        None,
    )
}

/// Cancels an action where it is still queued.
pub(super) fn cancel(
    conn: &Connection,
    id: &str,
    by: &str,
    at: &DateTime<Utc>,
) -> StoreResult<Vec<String>> {
    let exists: bool = conn
        .query_row("SELECT 1 FROM actions WHERE id = ?1", [id], |_| Ok(true))
        .optional()
        .map_err(backend_err)?
        .unwrap_or(false);
    if !exists {
        return Err(StoreError::Invalid(format!(
            "no action has id {id}; `pdome-admin patch list` shows them"
        )));
    }
    let mut st = conn
        .prepare(
            "UPDATE action_targets SET state = 'cancelled', finished_at = ?2, detail = ?3 \
             WHERE action_id = ?1 AND state = 'queued' RETURNING client_id, hostname",
        )
        .map_err(backend_err)?;
    let detail = format!("cancelled by {by}");
    let cancelled: Vec<(String, String)> = st
        .query_map(params![id, ts(at), detail], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(backend_err)?;
    for (client_id, hostname) in &cancelled {
        let change = state_change(
            id,
            ActionState::Queued,
            ActionState::Cancelled,
            Some(&detail),
        );
        insert_changes(conn, client_id, hostname, &[change], at, None)?;
    }
    Ok(cancelled.into_iter().map(|(c, _)| c).collect())
}

/// Actions matching a filter, oldest first.
pub(super) fn list(c: &Connection, filter: &ActionFilter) -> rusqlite::Result<Vec<ActionRecord>> {
    let mut st = c.prepare(
        "SELECT id, kind, summary, task, queued_by, created_at, expires_at FROM actions \
         WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR kind = ?2) \
           AND (?3 IS NULL OR id IN (SELECT action_id FROM action_targets WHERE client_id = ?3)) \
         ORDER BY created_at, id",
    )?;
    let mut actions = st
        .query_map(params![filter.id, filter.kind, filter.client_id], |r| {
            Ok(ActionRecord {
                id: r.get(0)?,
                kind: r.get(1)?,
                summary: r.get(2)?,
                task: r.get(3)?,
                queued_by: r.get(4)?,
                created_at: parse_ts(&r.get::<_, String>(5)?)?,
                expires_at: parse_ts(&r.get::<_, String>(6)?)?,
                targets: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for a in &mut actions {
        a.targets = targets(c, &a.id)?;
    }
    Ok(actions)
}

fn targets(c: &Connection, id: &str) -> rusqlite::Result<Vec<TargetRecord>> {
    let mut st = c.prepare_cached(
        "SELECT client_id, hostname, state, delivered_at, started_at, finished_at, detail, output \
         FROM action_targets WHERE action_id = ?1 ORDER BY client_id",
    )?;
    st.query_map([id], |r| {
        let state: String = r.get(2)?;
        Ok(TargetRecord {
            client_id: r.get(0)?,
            hostname: r.get(1)?,
            state: ActionState::parse(&state).unwrap_or(ActionState::Queued),
            delivered_at: parse_opt_ts(r.get(3)?)?,
            started_at: parse_opt_ts(r.get(4)?)?,
            finished_at: parse_opt_ts(r.get(5)?)?,
            detail: r.get(6)?,
            output: r
                .get::<_, Option<String>>(7)?
                .and_then(|o| serde_json::from_str(&o).ok()),
        })
    })?
    .collect()
}

/// Unfinished, unexpired patches per client.
pub(super) fn pending_patch_counts(
    c: &Connection,
    now: &DateTime<Utc>,
) -> rusqlite::Result<HashMap<String, usize>> {
    let mut st = c.prepare(
        "SELECT t.client_id, count(*) FROM action_targets t JOIN actions a ON a.id = t.action_id \
         WHERE a.kind = 'patch' AND t.state IN ('queued', 'delivered', 'started') \
           AND a.expires_at > ?1 GROUP BY t.client_id",
    )?;
    st.query_map([ts(now)], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
        .collect()
}

/// Writes an action copied from another store.
pub(super) fn import(conn: &Connection, a: &ActionRecord) -> StoreResult<()> {
    insert_action(
        conn,
        &a.id,
        &a.kind,
        &a.summary,
        &a.task,
        &a.queued_by,
        &a.created_at,
        &a.expires_at,
    )?;
    for t in &a.targets {
        conn.execute(
            "INSERT INTO action_targets (action_id, client_id, hostname, state, delivered_at, \
               started_at, finished_at, detail, output) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                a.id,
                t.client_id,
                t.hostname,
                t.state.as_str(),
                t.delivered_at.as_ref().map(ts),
                t.started_at.as_ref().map(ts),
                t.finished_at.as_ref().map(ts),
                t.detail,
                t.output.as_ref().map(|o| serde_json::to_string(o).expect("outputs serialize")),
            ],
        )
        .map_err(backend_err)?;
    }
    Ok(())
}

/// A page of actions for export, after the id `after`.
pub(super) fn export(
    c: &Connection,
    after: &str,
    limit: i64,
) -> rusqlite::Result<Vec<(String, ActionRecord)>> {
    let ids: Vec<String> = c
        .prepare("SELECT id FROM actions WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(params![after, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let filter = ActionFilter {
            id: Some(id.clone()),
            ..Default::default()
        };
        out.extend(list(c, &filter)?.into_iter().map(|a| (id.clone(), a)));
    }
    Ok(out)
}
