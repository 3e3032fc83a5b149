//! Logins kept in this server process (the embedded store: one server).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::session::{SessionStore, digest, new_token};
use crate::store::StoreResult;

/// Logins kept at most; past it the least recently used one ends.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    created: Instant,
    used: Instant,
}

/// The logins of this server process.
pub struct MemorySessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    lifetime: Duration,
    idle: Duration,
}

impl MemorySessions {
    /// No logins yet; each lasts at most `lifetime`, and `idle` unused.
    pub fn new(lifetime: Duration, idle: Duration) -> Self {
        Self {
            by_digest: Mutex::new(HashMap::new()),
            lifetime,
            idle,
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.created) < self.lifetime && now.duration_since(s.used) < self.idle
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    fn lifetime(&self) -> Duration {
        self.lifetime
    }

    async fn create(&self, user: &str) -> StoreResult<String> {
        let token = new_token();
        let now = Instant::now();
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| self.live(s, now));
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k)
        {
            all.remove(&oldest);
        }
        let session = Session {
            user: user.to_string(),
            created: now,
            used: now,
        };
        all.insert(digest(&token), session);
        Ok(token)
    }

    async fn user(&self, token: &str) -> StoreResult<Option<String>> {
        let now = Instant::now();
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(token);
        let live = all.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            all.remove(&key);
            return Ok(None);
        }
        Ok(all.get_mut(&key).map(|s| {
            s.used = now;
            s.user.clone()
        }))
    }

    async fn end(&self, token: &str) -> StoreResult<()> {
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(&digest(token));
        Ok(())
    }
}
