//! The read-only web view under `/web/`: the fleet at a glance, the client
//! table and pages, and the issues, for administrators and auditors.
//!
//! Everything is rendered on the server from maud templates (checked when
//! compiled, escaping every value), works without JavaScript, and loads
//! nothing from elsewhere: the style sheet is in the binary. Logins use the
//! server-wide users of access.toml; each page group is an access-rules
//! endpoint ([`PAGE_GROUPS`]), so `pdome-admin access grant` decides who
//! sees what.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::AppState;
use crate::store::Store;

mod client;
mod clients;
mod issues;
mod layout;
mod login;
pub mod memory_sessions;
mod overview;
pub mod session;
mod trend;

/// Where the web view lives.
pub const PREFIX: &str = "/web";
/// The overview and the issues list.
pub const FLEET: &str = "web_fleet";
/// The client table and each client's page (every collector's answer).
pub const CLIENTS: &str = "web_clients";
/// Every page group, each an access-rules endpoint.
pub const PAGE_GROUPS: [&str; 2] = [FLEET, CLIENTS];

/// Whether the listener a request came in on is HTTPS (itself, or behind
/// its trusted proxies): login cookies are then `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct SecureListener(pub bool);

/// What the pages read and who is logged in.
pub struct WebState {
    /// The whole store (pages read clients, issues and the audit trail).
    pub store: Arc<dyn Store>,
    /// Logins.
    pub sessions: Arc<dyn session::SessionStore>,
    /// Whether the view is served at all.
    pub enabled: bool,
}

impl WebState {
    /// The view as `[web]` configures it.
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<dyn session::SessionStore>,
        config: &crate::config::WebConfig,
    ) -> Self {
        Self {
            store,
            sessions,
            enabled: config.enabled,
        }
    }
}

/// The style sheet, served from the binary.
const STYLE: &str = include_str!("style.css");

/// The view's routes, to merge into the server's router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            PREFIX,
            get(|| async { axum::response::Redirect::to("/web/") }),
        )
        .route("/web/", get(overview::page))
        .route("/web/login", get(login::form).post(login::submit))
        .route("/web/logout", axum::routing::post(login::logout))
        .route("/web/clients", get(clients::page))
        .route("/web/clients/{id}", get(client::page))
        .route("/web/issues", get(issues::page))
        .route("/web/style.css", get(style))
        .layer(axum::middleware::from_fn(protect))
}

async fn style() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLE,
    )
        .into_response()
}

/// Headers every page carries: nothing from elsewhere, no framing, no
/// caching of what a login showed.
async fn protect(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}
