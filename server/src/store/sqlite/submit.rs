//! Storing a report: plugin outputs compared by digest, audit records for
//! what changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::nonces::{NonceLog, consume_nonce};
use super::request::mark_seen;
use super::{backend_err, insert_changes, parse_opt_ts, ts};
use crate::store::diff::{Change, ChangeAction, diff};
use crate::store::{
    RequestMeta, StoreError, StoreResult, Submission, SubmitOutcome, validate_report,
};

/// Plugin digests packed into one column of the client's row: for each
/// plugin, one length byte, the name, then the 16-byte digest.
pub(super) fn pack_digests(digests: &BTreeMap<String, [u8; 16]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(digests.len() * 40);
    for (name, digest) in digests {
        // Plugin names are at most 64 bytes (validate_report).
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(digest);
    }
    out
}

pub(super) fn unpack_digests(mut bytes: &[u8]) -> BTreeMap<String, [u8; 16]> {
    let mut out = BTreeMap::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = len as usize;
        if rest.len() < len + 16 {
            break;
        }
        let name = String::from_utf8_lossy(&rest[..len]).into_owned();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&rest[len..len + 16]);
        out.insert(name, digest);
        bytes = &rest[len + 16..];
    }
    out
}

/// What a submission needs to know about its client, read in one query.
struct ClientState {
    hostname: String,
    collected_at: Option<DateTime<Utc>>,
    last_report_id: Option<String>,
    digests: BTreeMap<String, [u8; 16]>,
}

/// Checks the key (as [`check_key`] does) and reads the client's state.
fn key_and_client(conn: &Connection, meta: &RequestMeta) -> StoreResult<ClientState> {
    type Row = (
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT k.client_id, k.revoked_at, c.hostname, c.collected_at, c.last_report_id, c.plugin_digests \
             FROM client_keys k JOIN clients c ON c.client_id = k.client_id WHERE k.fingerprint = ?1",
        )
        .and_then(|mut st| {
            st.query_row([&meta.fingerprint], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(backend_err)?;
    match row {
        None => Err(StoreError::UnknownKey),
        Some((client, ..)) if client != meta.client_id => Err(StoreError::UnknownKey),
        Some((client_id, Some(_), ..)) => Err(StoreError::Revoked { client_id }),
        Some((_, None, hostname, collected, last_report_id, digests)) => Ok(ClientState {
            hostname,
            collected_at: parse_opt_ts(collected).map_err(backend_err)?,
            last_report_id,
            digests: digests.as_deref().map(unpack_digests).unwrap_or_default(),
        }),
    }
}

/// Stores a report and its audit records, unless it is a duplicate.
pub(super) fn submit(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    s: &Submission,
) -> StoreResult<SubmitOutcome> {
    let meta = &s.meta;
    let report = &s.report;
    validate_report(report)?;
    let state = key_and_client(conn, meta)?;
    consume_nonce(
        conn,
        nonces,
        &meta.client_id,
        &meta.nonce,
        &meta.nonce_expires_at,
    )?;

    // A re-delivery (the agent crashed before deleting its spool file) or a
    // report older than the stored one changes nothing. A new report
    // collected in the same millisecond is not older: an agent's reports
    // arrive one after another.
    if state.last_report_id.as_deref() == Some(report.report_id.as_str())
        || state.collected_at.is_some_and(|c| c > report.collected_at)
    {
        mark_seen(conn, meta)?;
        return Ok(SubmitOutcome::Duplicate);
    }

    let mut changes: Vec<Change> = s.clock_change().into_iter().collect();
    let renamed = state.hostname != report.hostname;
    if renamed {
        changes.push(Change {
            field: "hostname".into(),
            action: ChangeAction::Change,
            old: Some(Value::String(state.hostname.clone())),
            new: Some(Value::String(report.hostname.clone())),
        });
    }
    let now = ts(&meta.received_at);
    let mut old_digests = state.digests;
    upsert_plugins(conn, s, &now, &mut old_digests, &mut changes)?;
    delete_plugins(conn, &meta.client_id, &old_digests, &mut changes)?;
    insert_changes(
        conn,
        &meta.client_id,
        &report.hostname,
        &changes,
        &meta.received_at,
        Some(&report.collected_at),
    )?;
    if renamed {
        // Only a rename touches the host name index.
        conn.prepare_cached("UPDATE clients SET hostname = ?2 WHERE client_id = ?1")
            .and_then(|mut st| st.execute(params![meta.client_id, report.hostname]))
            .map_err(backend_err)?;
    }
    conn.prepare_cached(
        "UPDATE clients SET last_seen_at = ?2, last_address = ?3, last_listener = ?4, collected_at = ?5, \
         submitted_at = ?2, last_report_id = ?6, agent_version = ?7, plugin_digests = ?8, \
         facts_version = ?9, verdicts = ?10 WHERE client_id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            meta.client_id,
            now,
            meta.address.to_string(),
            meta.listener,
            ts(&report.collected_at),
            report.report_id,
            report.agent_version,
            pack_digests(&s.digests),
            report.facts_version,
            s.verdicts,
        ])
    })
    .map_err(backend_err)?;
    Ok(SubmitOutcome::Stored {
        changes: changes.len(),
    })
}

/// Stores the plugins whose digest changed, diffing each against its stored
/// text; removes from `old_digests` every plugin the report has.
fn upsert_plugins(
    conn: &Connection,
    s: &Submission,
    now: &str,
    old_digests: &mut BTreeMap<String, [u8; 16]>,
    changes: &mut Vec<Change>,
) -> StoreResult<()> {
    let client_id = &s.meta.client_id;
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO plugins (client_id, name, data, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (client_id, name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .map_err(backend_err)?;
    for (name, raw) in &s.report.plugins {
        let digest = s.digests.get(name).ok_or_else(|| {
            StoreError::Invalid(format!(
                "plugin {name} has no digest; build submissions with Submission::new"
            ))
        })?;
        // Compare digests; read a stored text back only to diff a change.
        let old = match old_digests.remove(name) {
            Some(d) if d == *digest => continue,
            Some(_) => stored_plugin(conn, client_id, name)?,
            None => None,
        };
        let text = raw.get();
        let new_value: Value = serde_json::from_str(text)
            .map_err(|e| StoreError::Invalid(format!("plugin {name}: {e}")))?;
        diff(
            &format!("plugins.{name}"),
            old.as_ref(),
            Some(&new_value),
            changes,
        );
        upsert
            .execute(params![client_id, name, text, now])
            .map_err(backend_err)?;
    }
    Ok(())
}

/// Deletes the stored plugins a report no longer has.
fn delete_plugins(
    conn: &Connection,
    client_id: &str,
    gone: &BTreeMap<String, [u8; 16]>,
    changes: &mut Vec<Change>,
) -> StoreResult<()> {
    if gone.is_empty() {
        return Ok(());
    }
    let mut delete = conn
        .prepare_cached("DELETE FROM plugins WHERE client_id = ?1 AND name = ?2")
        .map_err(backend_err)?;
    for name in gone.keys() {
        let old = stored_plugin(conn, client_id, name)?;
        diff(&format!("plugins.{name}"), old.as_ref(), None, changes);
        delete
            .execute(params![client_id, name])
            .map_err(backend_err)?;
    }
    Ok(())
}

/// A plugin's stored output.
fn stored_plugin(conn: &Connection, client_id: &str, name: &str) -> StoreResult<Option<Value>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT data FROM plugins WHERE client_id = ?1 AND name = ?2")
        .and_then(|mut st| {
            st.query_row(params![client_id, name], |r| r.get(0))
                .optional()
        })
        .map_err(backend_err)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}
