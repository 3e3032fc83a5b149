//! Parsed client certificates kept in memory, keyed by signing fingerprint,
//! so that each request costs a signature check and not a certificate parse.
//! Revocation is not cached: the store checks it inside every write.

use std::collections::HashMap;
use std::sync::RwLock;

use penguindome_protocol::PublicKey;

use crate::store::{RequestStore, StoreError};

/// Most certificates kept; past it the cache starts over.
const CAPACITY: usize = 200_000;

/// The cache.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, (String, PublicKey)>>,
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
        let record = store
            .find_key(fingerprint)
            .await?
            .ok_or(StoreError::UnknownKey)?;
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
