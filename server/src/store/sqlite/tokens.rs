//! Enrollment tokens and each client's repository credential.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{backend_err, parse_opt_ts, parse_ts, ts};
use crate::store::tokens::unknown_token;
use crate::store::{NewToken, StoreResult, TokenClaim, TokenRecord};

const COLUMNS: &str = "token_id, secret_sha256, label, max_uses, uses, expires_at, created_at, \
                       created_by, revoked_at, last_used_at";

fn record(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        secret_sha256: r.get(1)?,
        label: r.get(2)?,
        max_uses: r.get(3)?,
        uses: r.get(4)?,
        expires_at: parse_ts(&r.get::<_, String>(5)?)?,
        created_at: parse_ts(&r.get::<_, String>(6)?)?,
        created_by: r.get(7)?,
        revoked_at: parse_opt_ts(r.get(8)?)?,
        last_used_at: parse_opt_ts(r.get(9)?)?,
    })
}

/// One token, if the store has it.
pub(super) fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM enrollment_tokens WHERE token_id = ?1"
    ))?
    .query_row([id], record)
    .optional()
}

/// Every token, newest first.
pub(super) fn list(conn: &Connection) -> rusqlite::Result<Vec<TokenRecord>> {
    conn.prepare(&format!(
        "SELECT {COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC, token_id"
    ))?
    .query_map([], record)?
    .collect()
}

/// One page of tokens by id, after `after`, for a copy.
pub(super) fn page(
    conn: &Connection,
    after: &str,
    limit: i64,
) -> rusqlite::Result<Vec<TokenRecord>> {
    conn.prepare(&format!(
        "SELECT {COLUMNS} FROM enrollment_tokens WHERE token_id > ?1 ORDER BY token_id LIMIT ?2"
    ))?
    .query_map(params![after, limit], record)?
    .collect()
}

/// Writes a token copied from another store, as it stands there.
pub(super) fn import(conn: &Connection, t: &TokenRecord) -> StoreResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO enrollment_tokens (token_id, secret_sha256, label, max_uses, uses, \
         expires_at, created_at, created_by, revoked_at, last_used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            t.id,
            t.secret_sha256,
            t.label,
            t.max_uses,
            t.uses,
            ts(&t.expires_at),
            ts(&t.created_at),
            t.created_by,
            t.revoked_at.as_ref().map(ts),
            t.last_used_at.as_ref().map(ts)
        ],
    )
    .map_err(backend_err)?;
    Ok(())
}

/// Stores a new token.
pub(super) fn add(conn: &Connection, t: &NewToken) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO enrollment_tokens (token_id, secret_sha256, label, max_uses, expires_at, \
         created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            t.id,
            t.secret_sha256,
            t.label,
            t.max_uses,
            ts(&t.expires_at),
            ts(&t.created_at),
            t.created_by
        ],
    )
    .map_err(backend_err)?;
    Ok(())
}

/// Revokes a token; false when there is no such token or it was revoked.
pub(super) fn revoke(conn: &Connection, id: &str, at: &DateTime<Utc>) -> StoreResult<bool> {
    let n = conn
        .execute(
            "UPDATE enrollment_tokens SET revoked_at = ?2 WHERE token_id = ?1 AND revoked_at IS NULL",
            params![id, ts(at)],
        )
        .map_err(backend_err)?;
    Ok(n == 1)
}

/// Spends one use of the token an enrollment presents, or says why not.
/// Runs inside the enrollment's savepoint: a failed enrollment spends nothing.
pub(super) fn spend(conn: &Connection, claim: &TokenClaim, now: &DateTime<Utc>) -> StoreResult<()> {
    let token = find(conn, &claim.id)
        .map_err(backend_err)?
        .ok_or_else(|| unknown_token(&claim.id))?;
    if let Some(refusal) = token.refusal(&claim.secret_sha256, *now) {
        return Err(refusal);
    }
    conn.execute(
        "UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = ?2 WHERE token_id = ?1",
        params![claim.id, ts(now)],
    )
    .map_err(backend_err)?;
    Ok(())
}

/// The SHA-256 (hex) of a client's repository password, unless it has none
/// or is revoked.
pub(super) fn repo_credential(
    conn: &Connection,
    client_id: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT repo_credential_sha256 FROM clients WHERE client_id = ?1 AND revoked_at IS NULL",
    )?
    .query_row([client_id], |r| r.get::<_, Option<String>>(0))
    .optional()
    .map(Option::flatten)
}

/// Replaces a client's repository password hash.
pub(super) fn set_repo_credential(
    conn: &Connection,
    client_id: &str,
    sha256: &str,
) -> StoreResult<()> {
    conn.execute(
        "UPDATE clients SET repo_credential_sha256 = ?2 WHERE client_id = ?1",
        params![client_id, sha256],
    )
    .map_err(backend_err)?;
    Ok(())
}

/// Forgets the repository passwords of these clients; how many had one.
pub(super) fn clear_repo_credentials(conn: &Connection, client_ids: &[String]) -> StoreResult<u64> {
    let mut n = 0;
    let mut st = conn
        .prepare_cached(
            "UPDATE clients SET repo_credential_sha256 = NULL \
             WHERE client_id = ?1 AND repo_credential_sha256 IS NOT NULL",
        )
        .map_err(backend_err)?;
    for id in client_ids {
        n += st.execute([id]).map_err(backend_err)? as u64;
    }
    Ok(n)
}
