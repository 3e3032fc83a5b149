//! Logins: a random 256-bit token in an HttpOnly, SameSite=Strict cookie;
//! the server keeps only its SHA-256, with the user and two clocks (the
//! login's age and its last use).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::http::AppState;
use crate::store::StoreResult;
/// The cookie on HTTPS listeners: the `__Host-` prefix makes browsers
/// refuse it unless Secure, for the whole host and set by it alone.
const SECURE_COOKIE: &str = "__Host-pd_session";
/// The cookie on plain HTTP listeners (loopback, tests).
const PLAIN_COOKIE: &str = "pd_session";

/// Where logins are kept: in this process (one server), or in the
/// database every server of the site shares (a login made through one
/// server is good on all of them, and a logout ends it on all).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// How long a login lasts at most (the cookie's Max-Age).
    fn lifetime(&self) -> Duration;

    /// Starts a login for `user`; returns the token for the cookie.
    async fn create(&self, user: &str) -> StoreResult<String>;

    /// The user of a live login, which counts as a use.
    async fn user(&self, token: &str) -> StoreResult<Option<String>>;

    /// Ends a login.
    async fn end(&self, token: &str) -> StoreResult<()>;
}

/// A new login token: 256 random bits, in hex.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    penguindome_protocol::envelope::random_bytes(&mut raw);
    hex::encode(raw)
}

/// What the server keeps of a token: its SHA-256.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
        if let Some(t) = token(&parts.headers) {
            match state.web.sessions.user(&t).await {
                Ok(Some(user)) => return Ok(Viewer { user }),
                Ok(None) => {}
                Err(e) => return Err(unavailable(&e)),
            }
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

/// The answer when logins cannot be read (the database is away).
pub fn unavailable(e: &crate::store::StoreError) -> Response {
    log::error!(endpoint = "web"; "cannot read the logins: {e}");
    let mut r = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "The store of logins does not answer; try again in a moment.\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Checks any [`SessionStore`]: logins end when idle, old or ended, and
/// another token never opens one.
#[cfg(test)]
pub(crate) async fn conformance(make: impl Fn(Duration, Duration) -> Arc<dyn SessionStore>) {
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(3600);
    let s = make(long, short);
    let t = s.create("alice").await.unwrap();
    assert_eq!(s.user(&t).await.unwrap().as_deref(), Some("alice"));
    assert_eq!(s.user(&"0".repeat(64)).await.unwrap(), None);
    tokio::time::sleep(short * 2).await;
    assert_eq!(s.user(&t).await.unwrap(), None, "idle too long");
    let old = make(short, long);
    let t = old.create("bob").await.unwrap();
    tokio::time::sleep(short * 2).await;
    assert_eq!(old.user(&t).await.unwrap(), None, "too old");
    let s = make(long, long);
    let t = s.create("carol").await.unwrap();
    let other = s.create("dave").await.unwrap();
    s.end(&t).await.unwrap();
    assert_eq!(s.user(&t).await.unwrap(), None, "logged out");
    assert_eq!(s.user(&other).await.unwrap().as_deref(), Some("dave"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logins_in_memory_end_when_idle_or_old_or_ended() {
        conformance(|lifetime, idle| {
            Arc::new(crate::web::memory_sessions::MemorySessions::new(
                lifetime, idle,
            ))
        })
        .await;
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
