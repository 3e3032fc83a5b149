//! Logins: a random 256-bit token in an HttpOnly, SameSite=Strict cookie;
//! the server keeps only its SHA-256, with the user and two clocks (the
//! login's age and its last use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::http::AppState;

/// Logins kept at most; past it the least recently used one ends.
const MAX_SESSIONS: usize = 10_000;
/// The cookie on HTTPS listeners: the `__Host-` prefix makes browsers
/// refuse it unless Secure, for the whole host and set by it alone.
const SECURE_COOKIE: &str = "__Host-pd_session";
/// The cookie on plain HTTP listeners (loopback, tests).
const PLAIN_COOKIE: &str = "pd_session";

struct Session {
    user: String,
    created: Instant,
    used: Instant,
}

/// The logins of this server process.
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    lifetime: Duration,
    idle: Duration,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// No logins yet; each lasts at most `lifetime`, and `idle` unused.
    pub fn new(lifetime: Duration, idle: Duration) -> Self {
        Self {
            by_digest: Mutex::new(HashMap::new()),
            lifetime,
            idle,
        }
    }

    /// How long a login lasts at most (the cookie's Max-Age).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.created) < self.lifetime && now.duration_since(s.used) < self.idle
    }

    /// Starts a login for `user`; returns the token for the cookie.
    pub fn create(&self, user: &str) -> String {
        let mut raw = [0u8; 32];
        penguindome_protocol::envelope::random_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = Instant::now();
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| self.live(s, now));
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k)
        {
            all.remove(&oldest);
        }
        all.insert(
            digest(&token),
            Session {
                user: user.to_string(),
                created: now,
                used: now,
            },
        );
        token
    }

    /// The user of a live login, which counts as a use.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(token);
        let live = all.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            all.remove(&key);
            return None;
        }
        let s = all.get_mut(&key)?;
        s.used = now;
        Some(s.user.clone())
    }

    /// Ends a login.
    pub fn end(&self, token: &str) {
        let mut all = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(&digest(token));
    }
}

/// The `Set-Cookie` value that hands out `token` (or, empty, removes it).
pub fn cookie(token: &str, secure: bool, max_age: Duration) -> HeaderValue {
    let text = if secure {
        format!(
            "{SECURE_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            max_age.as_secs()
        )
    } else {
        format!(
            "{PLAIN_COOKIE}={token}; Path=/web; HttpOnly; SameSite=Strict; Max-Age={}",
            max_age.as_secs()
        )
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The login token a request carries, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| {
            (*name == SECURE_COOKIE || *name == PLAIN_COOKIE)
                && value.len() == 64
                && value.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|(_, value)| value.to_string())
}

/// The logged-in user of a request; without a live login the request is
/// sent to the login page, which brings it back afterwards.
pub struct Viewer {
    /// The user name.
    pub user: String,
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(user) = token(&parts.headers).and_then(|t| state.web.sessions.user(&t)) {
            return Ok(Viewer { user });
        }
        let here = parts
            .uri
            .path_and_query()
            .map_or("/web/", |p| p.as_str())
            .to_string();
        let next = url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>();
        Err(Redirect::to(&format!("/web/login?next={next}")).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_ends_when_idle_or_old_or_ended() {
        let s = Sessions::new(Duration::from_secs(3600), Duration::from_millis(50));
        let t = s.create("alice");
        assert_eq!(s.user(&t).as_deref(), Some("alice"));
        assert_eq!(s.user("0".repeat(64).as_str()), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.user(&t), None, "idle too long");
        let old = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let t = old.create("bob");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(old.user(&t), None, "too old");
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let t = s.create("carol");
        s.end(&t);
        assert_eq!(s.user(&t), None, "logged out");
    }

    #[test]
    fn the_token_is_read_from_either_cookie_and_nothing_else() {
        let t = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; __Host-pd_session={t}")).unwrap(),
        );
        assert_eq!(token(&h), Some(t.clone()));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("pd_session=<script>"),
        );
        assert_eq!(token(&h), None);
    }
}
