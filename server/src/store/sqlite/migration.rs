//! Migration: counting, importing and clearing every kind of record;
//! exporting is in `export`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::DateTime;
use rusqlite::{Connection, params};

use super::admin::put_parameter;
use super::audit::put_issues;
use super::export;
use super::nonces::{NonceLog, Nonces, consume_nonce};
use super::submit::pack_digests;
use super::writer::Job;
use super::{SqliteStore, backend_err, ts};
use crate::store::{Kind, MigrationStore, Record, StoreError, StoreResult, plugin_digest};

/// Writes records copied from another store.
pub(super) fn import(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    records: &[Record],
) -> StoreResult<()> {
    for r in records {
        match r {
            Record::Client { .. } => import_client(conn, r)?,
            Record::Key { .. } => import_key(conn, r)?,
            Record::Audit { .. } => import_audit(conn, r)?,
            Record::Nonce {
                client_id,
                nonce,
                expires_at,
            } => {
                let expires =
                    DateTime::from_timestamp(*expires_at, 0).unwrap_or(DateTime::UNIX_EPOCH);
                consume_nonce(conn, nonces, client_id, nonce, &expires)?;
            }
            Record::Issue(issue) => put_issues(conn, std::slice::from_ref(issue))?,
            Record::Parameter(p) => put_parameter(conn, p)?,
            Record::Action(a) => super::actions::import(conn, a)?,
            Record::Token(t) => super::tokens::import(conn, t)?,
        }
    }
    Ok(())
}

fn import_client(conn: &Connection, r: &Record) -> StoreResult<()> {
    let Record::Client {
        client_id,
        hostname,
        enrolled_at,
        first_seen_at,
        last_seen_at,
        last_address,
        last_listener,
        collected_at,
        submitted_at,
        last_report_id,
        agent_version,
        facts_version,
        revoked_at,
        reenroll_allowed,
        plugins,
        repo_credential_sha256,
    } = r
    else {
        unreachable!("import hands clients only");
    };
    let digests: BTreeMap<String, [u8; 16]> = plugins
        .iter()
        .map(|(n, t)| (n.clone(), plugin_digest(t)))
        .collect();
    conn.execute(
        "INSERT INTO clients (client_id, hostname, enrolled_at, first_seen_at, last_seen_at, last_address, \
         last_listener, collected_at, submitted_at, last_report_id, agent_version, plugin_digests, \
         revoked_at, reenroll_allowed, facts_version, repo_credential_sha256) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            client_id, hostname, ts(enrolled_at), ts(first_seen_at), ts(last_seen_at), last_address,
            last_listener, collected_at.as_ref().map(ts), submitted_at.as_ref().map(ts), last_report_id,
            agent_version, pack_digests(&digests), revoked_at.as_ref().map(ts), reenroll_allowed,
            facts_version, repo_credential_sha256,
        ],
    )
    .map_err(backend_err)?;
    let updated = ts(submitted_at.as_ref().unwrap_or(last_seen_at));
    for (name, text) in plugins {
        conn.execute(
            "INSERT INTO plugins (client_id, name, data, updated_at) VALUES (?1, ?2, ?3, ?4)",
            params![client_id, name, text, updated],
        )
        .map_err(backend_err)?;
    }
    Ok(())
}

fn import_key(conn: &Connection, r: &Record) -> StoreResult<()> {
    let Record::Key {
        fingerprint,
        client_id,
        certificate,
        created_at,
        revoked_at,
    } = r
    else {
        unreachable!("import hands keys only");
    };
    let cert = base64::engine::general_purpose::STANDARD
        .decode(certificate)
        .map_err(|e| {
            StoreError::Invalid(format!("key {fingerprint}: certificate is not base64: {e}"))
        })?;
    conn.execute(
        "INSERT INTO client_keys (fingerprint, client_id, certificate, created_at, revoked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            fingerprint,
            client_id,
            cert,
            ts(created_at),
            revoked_at.as_ref().map(ts)
        ],
    )
    .map_err(backend_err)?;
    Ok(())
}

fn import_audit(conn: &Connection, r: &Record) -> StoreResult<()> {
    let Record::Audit {
        client_id,
        hostname,
        field,
        action,
        old,
        new,
        recorded_at,
        n,
        collected_at,
    } = r
    else {
        unreachable!("import hands audit records only");
    };
    conn.prepare_cached(
        "INSERT INTO audit_trail (client_id, hostname, field, action, old, new, recorded_at, n, collected_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            client_id, hostname, field, action.as_str(), old, new, ts(recorded_at), n,
            collected_at.as_ref().map(ts),
        ])
    })
    .map_err(backend_err)?;
    Ok(())
}

/// Empties every table (a migration target with --force).
pub(super) fn clear(conn: &Connection, nonces: &mut Nonces) -> StoreResult<()> {
    conn.execute_batch(
        "DELETE FROM enrollment_tokens; DELETE FROM issues; DELETE FROM client_parameters; \
         DELETE FROM action_targets; DELETE FROM actions; DELETE FROM nonces; DELETE FROM audit_trail; \
         DELETE FROM plugins; DELETE FROM client_keys; DELETE FROM clients;",
    )
    .map_err(backend_err)?;
    nonces.forget_all();
    Ok(())
}

/// The table that holds a kind of record.
fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Clients => "clients",
        Kind::Keys => "client_keys",
        Kind::Audit => "audit_trail",
        Kind::Nonces => "nonces",
        Kind::Actions => "actions",
        Kind::Issues => "issues",
        Kind::Parameters => "client_parameters",
        Kind::Tokens => "enrollment_tokens",
    }
}

#[async_trait]
impl MigrationStore for SqliteStore {
    async fn count(&self, kind: Kind) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM {}", table(kind));
        self.read(move |c| {
            c.query_row(&sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn export(
        &self,
        kind: Kind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Record)>> {
        self.read(move |c| export::export(c, kind, after, limit))
            .await
    }

    async fn import(&self, records: Vec<Record>) -> StoreResult<()> {
        self.call(|r| Job::Import(records, r)).await
    }

    async fn clear(&self) -> StoreResult<()> {
        self.call(Job::Clear).await
    }
}
