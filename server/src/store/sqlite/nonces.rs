//! The seen nonces: in the writer's memory, and in an append-only table it
//! reloads at start, so that a replay is refused after a restart too and
//! recording a nonce appends to one page instead of inserting into a
//! random one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::backend_err;
use crate::store::{StoreError, StoreResult};

/// Nonces seen within their window, keyed by a digest of client and nonce.
pub(super) struct Nonces {
    seen: HashMap<u128, i64>,
}

impl Nonces {
    fn key(client_id: &str, nonce: &str) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(client_id.as_bytes());
        h.update(b":");
        h.update(nonce.as_bytes());
        h.digest128()
    }

    /// Reads the nonces still within their window at `now` (Unix seconds).
    pub(super) fn load(conn: &Connection, now: i64) -> StoreResult<Self> {
        let mut seen = HashMap::new();
        let mut st = conn
            .prepare("SELECT client_id, nonce, expires_at FROM nonces WHERE expires_at >= ?1")
            .map_err(backend_err)?;
        let rows = st
            .query_map([now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend_err)?;
        for row in rows {
            let (client, nonce, expires) = row.map_err(backend_err)?;
            seen.insert(Self::key(&client, &nonce), expires);
        }
        Ok(Self { seen })
    }

    /// Forgets the nonces whose window ended before `now` (Unix seconds).
    pub(super) fn forget_expired(&mut self, now: i64) {
        self.seen.retain(|_, expires| *expires >= now);
    }

    /// Forgets these nonces (their batch's commit failed).
    pub(super) fn forget(&mut self, keys: &[u128]) {
        for k in keys {
            self.seen.remove(k);
        }
    }

    /// Forgets every nonce.
    pub(super) fn forget_all(&mut self) {
        self.seen.clear();
    }
}

/// The seen nonces and the ones this batch added (forgotten again if the
/// batch's commit fails).
pub(super) struct NonceLog<'a> {
    pub(super) nonces: &'a mut Nonces,
    pub(super) added: &'a mut Vec<u128>,
}

/// Refuses a nonce seen before and records it, in memory and in the log.
pub(super) fn consume_nonce(
    conn: &Connection,
    log: &mut NonceLog<'_>,
    client_id: &str,
    nonce: &str,
    expires: &DateTime<Utc>,
) -> StoreResult<()> {
    let key = Nonces::key(client_id, nonce);
    if log.nonces.seen.contains_key(&key) {
        return Err(StoreError::Replay);
    }
    conn.prepare_cached("INSERT INTO nonces (client_id, nonce, expires_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![client_id, nonce, expires.timestamp()]))
        .map_err(backend_err)?;
    log.nonces.seen.insert(key, expires.timestamp());
    log.added.push(key);
    Ok(())
}
