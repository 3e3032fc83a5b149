//! Parsed client certificates kept in memory, keyed by signing fingerprint,
//! so that each request costs a signature check and not a certificate parse.
//! Revocation is not cached: the store checks it inside every write.
//! Fingerprints no client holds are remembered for a short while, so a
//! flood of requests naming one costs no database reads.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use penguindome_protocol::PublicKey;

use crate::store::{RequestStore, StoreError};

/// Most certificates kept; past it the cache starts over.
const CAPACITY: usize = 200_000;
/// Most unknown fingerprints remembered; past it that list starts over.
const UNKNOWN_CAPACITY: usize = 100_000;
/// How long a fingerprint stays unknown without asking the store again:
/// short, because another server may enroll it meanwhile.
const UNKNOWN_FOR: Duration = Duration::from_secs(30);

/// The cache.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, (String, PublicKey)>>,
    unknown: RwLock<HashMap<String, Instant>>,
}

impl KeyCache {
    /// Returns the client id and key for a fingerprint, loading it if needed.
    pub async fn get(
        &self,
        fingerprint: &str,
        store: &dyn RequestStore,
    ) -> Result<(String, PublicKey), StoreError> {
        if let Some(hit) = self.keys.read().expect("key cache lock").get(fingerprint) {
            return Ok(hit.clone());
        }
        if self.known_unknown(fingerprint) {
            return Err(StoreError::UnknownKey);
        }
        let Some(record) = store.find_key(fingerprint).await? else {
            self.remember_unknown(fingerprint);
            return Err(StoreError::UnknownKey);
        };
        if record.revoked_at.is_some() {
            return Err(StoreError::Revoked {
                client_id: record.client_id,
            });
        }
        let key = PublicKey::from_bytes(&record.certificate).map_err(|e| {
            StoreError::Backend(format!("stored certificate {fingerprint} is unusable: {e}"))
        })?;
        let entry = (record.client_id, key);
        let mut keys = self.keys.write().expect("key cache lock");
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(fingerprint.to_string(), entry.clone());
        Ok(entry)
    }
}

impl KeyCache {
    /// Whether `fingerprint` was unknown to the store a moment ago.
    fn known_unknown(&self, fingerprint: &str) -> bool {
        self.unknown
            .read()
            .expect("key cache lock")
            .get(fingerprint)
            .is_some_and(|since| since.elapsed() < UNKNOWN_FOR)
    }

    fn remember_unknown(&self, fingerprint: &str) {
        let mut unknown = self.unknown.write().expect("key cache lock");
        if unknown.len() >= UNKNOWN_CAPACITY {
            unknown.retain(|_, since| since.elapsed() < UNKNOWN_FOR);
            if unknown.len() >= UNKNOWN_CAPACITY {
                unknown.clear();
            }
        }
        unknown.insert(fingerprint.to_string(), Instant::now());
    }

    /// Forgets that `fingerprint` was unknown: this server just enrolled it.
    pub fn enrolled(&self, fingerprint: &str) {
        self.unknown
            .write()
            .expect("key cache lock")
            .remove(fingerprint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::enrollment;
    use crate::store::{RequestStore, sqlite::SqliteStore};
    use penguindome_protocol::SecretKey;

    #[tokio::test]
    async fn unknown_fingerprints_cost_one_read_until_enrolled_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let key = SecretKey::generate("cache test").unwrap().public();
        let fp = key.signing_fingerprint().to_string();
        let cache = KeyCache::default();
        let unknown = |r: Result<_, StoreError>| matches!(r, Err(StoreError::UnknownKey));
        assert!(unknown(cache.get(&fp, &store).await));

        // Enrolled behind this server's back (another server, say): the
        // cache still answers unknown, without asking the store.
        let mut e = enrollment("0123456789abcdef0123456789abcdef", &fp, "h");
        e.certificate = key.to_binary().unwrap();
        store.enroll(e).await.unwrap();
        assert!(unknown(cache.get(&fp, &store).await));

        // Enrolled through this server: known at once.
        cache.enrolled(&fp);
        let (client, _) = cache.get(&fp, &store).await.unwrap();
        assert_eq!(client, "0123456789abcdef0123456789abcdef");
    }
}
