//! Enrolling a key: a new machine, the same key again, or a re-enrollment
//! an administrator allowed.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::nonces::{NonceLog, consume_nonce};
use super::{backend_err, insert_changes, ts};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{EnrollOutcome, Enrollment, StoreError, StoreResult};

/// Enrolls a key (see [`RequestStore::enroll`](crate::store::RequestStore::enroll)).
pub(super) fn enroll(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    e: &Enrollment,
) -> StoreResult<EnrollOutcome> {
    if let Some(outcome) = enrolled_key(conn, nonces, e)? {
        return Ok(outcome);
    }
    let client: Option<(Option<String>, bool, String)> = conn
        .query_row(
            "SELECT revoked_at, reenroll_allowed, hostname FROM clients WHERE client_id = ?1",
            [&e.client_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(backend_err)?;
    let now = ts(&e.received_at);
    let mut changes = Vec::new();
    match client {
        Some((revoked, allowed, _)) => {
            if !allowed {
                if revoked.is_some() {
                    return Err(StoreError::Revoked {
                        client_id: e.client_id.clone(),
                    });
                }
                return Err(StoreError::AlreadyEnrolled {
                    client_id: e.client_id.clone(),
                });
            }
            spend_token(conn, e, &mut changes)?;
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            conn.execute(
                "UPDATE client_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
                params![e.client_id, now],
            )
            .map_err(backend_err)?;
            conn.execute(
                "UPDATE clients SET revoked_at = NULL, reenroll_allowed = 0, hostname = ?2, \
                 last_seen_at = ?3, last_address = ?4, last_listener = ?5 WHERE client_id = ?1",
                params![
                    e.client_id,
                    e.hostname,
                    now,
                    e.address.to_string(),
                    e.listener
                ],
            )
            .map_err(backend_err)?;
            changes.insert(
                0,
                Change {
                    field: "key".into(),
                    action: ChangeAction::Change,
                    old: None,
                    new: Some(Value::String(e.fingerprint.clone())),
                },
            );
        }
        None => {
            spend_token(conn, e, &mut changes)?;
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            conn.execute(
                "INSERT INTO clients (client_id, hostname, enrolled_at, first_seen_at, last_seen_at, \
                 last_address, last_listener) VALUES (?1, ?2, ?3, ?3, ?3, ?4, ?5)",
                params![e.client_id, e.hostname, now, e.address.to_string(), e.listener],
            )
            .map_err(backend_err)?;
            changes.insert(
                0,
                Change {
                    field: "key".into(),
                    action: ChangeAction::Add,
                    old: None,
                    new: Some(Value::String(e.fingerprint.clone())),
                },
            );
        }
    }
    conn.execute(
        "INSERT INTO client_keys (fingerprint, client_id, certificate, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![e.fingerprint, e.client_id, e.certificate, now],
    )
    .map_err(backend_err)?;
    insert_changes(
        conn,
        &e.client_id,
        &e.hostname,
        &changes,
        &e.received_at,
        None,
    )?;
    Ok(EnrollOutcome::Enrolled)
}

/// Spends the enrollment's token, if it presents one, and notes it for the
/// audit trail.
fn spend_token(conn: &Connection, e: &Enrollment, changes: &mut Vec<Change>) -> StoreResult<()> {
    if let Some(claim) = &e.token {
        super::tokens::spend(conn, claim, &e.received_at)?;
        changes.push(crate::store::tokens::enrolled_with(claim));
    }
    Ok(())
}

/// The answer for a key that is enrolled already (for this client: the
/// same enrollment again), if it is.
fn enrolled_key(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    e: &Enrollment,
) -> StoreResult<Option<EnrollOutcome>> {
    let existing_key: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT client_id, revoked_at FROM client_keys WHERE fingerprint = ?1",
            [&e.fingerprint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend_err)?;
    match existing_key {
        Some((client, None)) if client == e.client_id => {
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            Ok(Some(EnrollOutcome::AlreadyEnrolled))
        }
        Some((client, Some(_))) if client == e.client_id => {
            Err(StoreError::Revoked { client_id: client })
        }
        Some(_) => Err(StoreError::Invalid(
            "this key is already enrolled for another client; generate a new key".into(),
        )),
        None => Ok(None),
    }
}
