//! HTTP endpoints under `/penguindome/v1/`, one module per group.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use penguindome_protocol::wire::{ApiError, paths};
use penguindome_protocol::{EnvelopeError, SignatureError};

use crate::keycache::KeyCache;
use crate::store::{RequestStore, StoreError};

mod action;
mod bootstrap;
mod download;
mod enroll;
mod forwarded;
mod health;
pub mod limits;
pub mod metrics;
mod repo;
mod repo_credential;
mod signed;
mod submit;
mod update;

pub use forwarded::{TrustedProxies, layer as forwarded_layer};

/// Shared state of every handler.
pub struct AppState {
    /// The database.
    pub store: Arc<dyn RequestStore>,
    /// Parsed client certificates.
    pub keys: KeyCache,
    /// The server's signing key and the certifications leading to it.
    pub signing: crate::signing::SigningKeys,
    /// Accepted clock distance of requests.
    pub window: Duration,
    /// Largest body accepted.
    pub max_body: usize,
    /// Time a peer has to send a body.
    pub body_timeout: Duration,
    /// Whether requests must name their kind of message.
    pub require_message_kinds: bool,
    /// Signed requests per client key and minute.
    pub client_rate: limits::ClientRate,
    /// SHA-256 of the enrollment credential.
    pub credential_sha256: Option<[u8; 32]>,
    /// The published package repositories.
    pub repo: std::sync::Arc<dyn crate::release::source::ReleaseSource>,
    /// Who may fetch repositories and releases.
    pub access: crate::access_rules::AccessControl,
    /// The issues audit's settings, to judge reports as they arrive; none
    /// when `[audit]` is unusable (the periodic audit then judges them).
    /// Self-signed certificates announced to agents in `/update`.
    pub announced: crate::renewal::Announced,
    /// Swapped whole on reload.
    pub audit: arc_swap::ArcSwapOption<crate::audit::Settings>,
    /// The remote shell relay.
    pub shell: crate::shell::Relay,
    /// Fleet counts for `/metrics` and the web view.
    pub fleet: metrics::FleetCache,
    /// The web view.
    pub web: crate::web::WebState,
}

/// Name of the listener a request arrived on.
#[derive(Clone)]
pub struct ListenerName(pub Arc<str>);

/// A failed request: HTTP status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds the peer should wait before trying again.
    retry_after: Option<u64>,
}

impl ApiFailure {
    /// A failure with an explicit status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Asks the peer to wait `secs` seconds before trying again.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        crate::metrics::global().refusal(self.code);
        let mut response = json_response(
            self.status,
            &ApiError {
                code: self.code.into(),
                error: self.message,
            },
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<EnvelopeError> for ApiFailure {
    fn from(e: EnvelopeError) -> Self {
        use EnvelopeError as E;
        let (status, code) = match &e {
            E::MissingSignature => (StatusCode::UNAUTHORIZED, "missing_signature"),
            E::SignatureEncoding => (StatusCode::BAD_REQUEST, "bad_signature_encoding"),
            E::Signature(SignatureError::Malformed) => {
                (StatusCode::BAD_REQUEST, "bad_signature_encoding")
            }
            E::Signature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            E::Payload(_) => (StatusCode::BAD_REQUEST, "malformed_payload"),
            E::SenderMismatch { .. } => (StatusCode::UNAUTHORIZED, "sender_mismatch"),
            E::Stale { .. } => (StatusCode::UNAUTHORIZED, "stale_request"),
            E::BadNonce => (StatusCode::BAD_REQUEST, "bad_nonce"),
            E::NotOurReply { .. } => (StatusCode::BAD_REQUEST, "bad_reply"),
            E::WrongKind { .. } => (StatusCode::BAD_REQUEST, "wrong_message_kind"),
            E::Key(_) => (StatusCode::BAD_REQUEST, "bad_key"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        use StoreError as E;
        let (status, code) = match &e {
            E::Replay => (StatusCode::CONFLICT, "replayed_request"),
            E::UnknownKey => (StatusCode::UNAUTHORIZED, "unknown_key"),
            E::Revoked { .. } => (StatusCode::FORBIDDEN, "revoked"),
            E::AlreadyEnrolled { .. } => (StatusCode::CONFLICT, "already_enrolled"),
            E::TokenRefused(_) => (StatusCode::FORBIDDEN, "bad_token"),
            E::NoSuchAction { .. } => (StatusCode::NOT_FOUND, "no_such_action"),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_data"),
            E::NoSuchClient(_) | E::Ambiguous { .. } => (StatusCode::NOT_FOUND, "no_such_client"),
            E::Backend(_) | E::Closed | E::Broken(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            log::error!("store failure: {e}");
            return Self::new(
                status,
                code,
                "the server cannot store data right now; the request was not stored, retry later",
            );
        }
        Self::new(status, code, e.to_string())
    }
}

/// Serializes `body` as a JSON response.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => {
            log::error!("cannot serialize a response: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Reads the body up to the configured size, within the configured time.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Bytes, ApiFailure> {
    let max = state.max_body;
    let too_large = || {
        ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the server's limit of {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    limits::read_within(body, max, state.body_timeout)
        .await?
        .map_err(|e| {
            let limited = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if limited {
                too_large()
            } else {
                ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("cannot read the request body: {e}"),
                )
            }
        })
}

async fn not_found() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the API lives under /penguindome/v1/",
    )
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// The router for all endpoints (without the per-listener name layer).
pub fn router(state: Arc<AppState>) -> Router {
    let web = if state.web.enabled {
        crate::web::router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(web)
        .route(paths::ENROLL, post(enroll::handle))
        .route(paths::SUBMIT, post(submit::handle))
        .route(paths::UPDATE, post(update::handle))
        .route(paths::ACTION_REPORT, post(action::report))
        .route(paths::REPO_CREDENTIAL, post(repo_credential::handle))
        .route(paths::BOOTSTRAP, get(bootstrap::handle))
        .route(paths::HEALTH, get(health::handle))
        .route(&format!("{}/{{*path}}", paths::REPO), get(repo::handle))
        .route(paths::DOWNLOAD_RELEASE, get(download::handle))
        .route(paths::SHELL_AGENT, get(crate::shell::agent))
        .route(paths::SHELL_ADMIN, get(crate::shell::admin_remote))
        .route(metrics::PATH, get(metrics::handle))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::metrics::record_requests))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            log::error!("a request handler panicked; this is a bug");
            ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed to handle this request",
            )
            .into_response()
        }))
        .with_state(state)
}
