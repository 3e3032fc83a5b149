//! The request path: key lookups, contacts and nonce housekeeping.
//! Enrollment, submission and actions have their own files.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use penguindome_protocol::actions::ActionReport;
use rusqlite::{Connection, OptionalExtension, params};

use super::nonces::{NonceLog, Nonces, consume_nonce};
use super::writer::{Job, write_job};
use super::{SqliteStore, backend_err, parse_opt_ts, ts};
use crate::store::{
    Delivered, EnrollOutcome, Enrollment, KeyRecord, RequestMeta, RequestStore, StoreError,
    StoreResult, Submission, SubmitOutcome, TokenRecord,
};

/// Refuses unknown and revoked keys; the check runs inside the write, so a
/// revocation committed by pdome-admin applies to the very next request.
pub(super) fn check_key(conn: &Connection, meta: &RequestMeta) -> StoreResult<()> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT client_id, revoked_at FROM client_keys WHERE fingerprint = ?1")
        .and_then(|mut s| {
            s.query_row([&meta.fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(backend_err)?;
    match row {
        None => Err(StoreError::UnknownKey),
        Some((client, _)) if client != meta.client_id => Err(StoreError::UnknownKey),
        Some((client_id, Some(_))) => Err(StoreError::Revoked { client_id }),
        Some(_) => Ok(()),
    }
}

/// Records the request as the client's latest contact.
pub(super) fn mark_seen(conn: &Connection, meta: &RequestMeta) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE clients SET last_seen_at = ?2, last_address = ?3, last_listener = ?4 \
         WHERE client_id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            meta.client_id,
            ts(&meta.received_at),
            meta.address.to_string(),
            meta.listener
        ])
    })
    .map_err(backend_err)?;
    Ok(())
}

/// A request that carries no data: key, nonce, contact.
pub(super) fn touch(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    meta: &RequestMeta,
) -> StoreResult<()> {
    check_key(conn, meta)?;
    consume_nonce(
        conn,
        nonces,
        &meta.client_id,
        &meta.nonce,
        &meta.nonce_expires_at,
    )?;
    mark_seen(conn, meta)
}

/// Forgets expired nonces, in memory and on disk.
pub(super) fn prune(
    conn: &Connection,
    nonces: &mut Nonces,
    now: &DateTime<Utc>,
) -> StoreResult<u64> {
    let now = now.timestamp();
    nonces.forget_expired(now);
    conn.execute("DELETE FROM nonces WHERE expires_at < ?1", [now])
        .map(|n| n as u64)
        .map_err(backend_err)
}

#[async_trait]
impl RequestStore for SqliteStore {
    async fn find_key(&self, fingerprint: &str) -> StoreResult<Option<KeyRecord>> {
        let fp = fingerprint.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT client_id, certificate, revoked_at FROM client_keys WHERE fingerprint = ?1",
            )?
            .query_row([fp], |r| {
                Ok(KeyRecord {
                    client_id: r.get(0)?,
                    certificate: r.get(1)?,
                    revoked_at: parse_opt_ts(r.get(2)?)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn enroll(&self, e: Enrollment) -> StoreResult<EnrollOutcome> {
        self.call(|r| Job::Enroll(e, r)).await
    }

    async fn touch(&self, meta: RequestMeta) -> StoreResult<()> {
        self.call(|r| Job::Touch(meta, r)).await
    }

    async fn submit(&self, s: Submission) -> StoreResult<SubmitOutcome> {
        self.call(|r| Job::Submit(Box::new(s), r)).await
    }

    async fn deliver_actions(
        &self,
        meta: RequestMeta,
        now: DateTime<Utc>,
    ) -> StoreResult<Delivered> {
        self.call(|r| Job::Deliver(meta, now, r)).await
    }

    async fn report_action(&self, meta: RequestMeta, report: ActionReport) -> StoreResult<()> {
        self.call(|r| Job::ReportAction(meta, report, r)).await
    }

    async fn prune_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.call(|r| Job::PruneNonces(now, r)).await
    }

    async fn find_token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let id = id.to_string();
        self.read(move |c| super::tokens::find(c, &id)).await
    }

    async fn repo_credential(&self, client_id: &str) -> StoreResult<Option<String>> {
        let id = client_id.to_string();
        self.read(move |c| super::tokens::repo_credential(c, &id))
            .await
    }

    async fn set_repo_credential(&self, meta: RequestMeta, sha256: String) -> StoreResult<()> {
        self.call(|r| {
            write_job(r, move |c, n| {
                touch(c, n, &meta)?;
                super::tokens::set_repo_credential(c, &meta.client_id, &sha256)
            })
        })
        .await
    }
}
