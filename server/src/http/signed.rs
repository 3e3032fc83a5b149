//! Extractors for signed requests. [`Incoming`] reads the body within the
//! size limit and parses the signature header; [`Authenticated`] also finds
//! the enrolled key the signature names and verifies sender, signature,
//! clock window and nonce form. Handlers take them as arguments.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::StatusCode;
use chrono::Utc;
use penguindome_protocol::{Envelope, Freshness, SIGNATURE_HEADER, Signed};
use serde::de::DeserializeOwned;

use super::{ApiFailure, AppState, ListenerName, read_body};
use crate::store::RequestMeta;

/// A received envelope, not yet verified, and where it came from.
pub struct Incoming {
    /// Payload and parsed signature.
    pub envelope: Envelope,
    /// Peer address.
    pub peer: SocketAddr,
    /// Listener name.
    pub listener: Arc<str>,
}

impl FromRequest<Arc<AppState>> for Incoming {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiFailure> {
        let (parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| internal("the peer address is missing"))?;
        let listener = parts
            .extensions
            .get::<ListenerName>()
            .map(|l| l.0.clone())
            .ok_or_else(|| internal("the listener name is missing"))?;
        let body = read_body(body, &parts.headers, state.max_body).await?;
        let envelope = Envelope::from_wire(
            body.into(),
            parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
        )?;
        Ok(Self {
            envelope,
            peer,
            listener,
        })
    }
}

fn internal(what: &str) -> ApiFailure {
    log::error!("{what}: the router is misconfigured");
    ApiFailure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the server failed to handle this request",
    )
}

/// A verified request from an enrolled client: who sent it and what it says.
pub struct Authenticated<T> {
    /// The facts the store records.
    pub meta: RequestMeta,
    /// The verified payload.
    pub signed: Signed<T>,
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Authenticated<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiFailure> {
        let incoming = Incoming::from_request(req, state).await?;
        let envelope = &incoming.envelope;
        let fingerprint = envelope.issuer().ok_or_else(|| {
            ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the signature does not name the key that made it",
            )
        })?;
        let (client_id, key) = state.keys.get(fingerprint, state.store.as_ref()).await?;
        let now = Utc::now();
        let fresh = Freshness::at(now, state.window);
        let signed = envelope.open::<T>(&key, &client_id, &fresh)?;
        let meta = RequestMeta {
            client_id,
            fingerprint: fingerprint.to_string(),
            nonce_expires_at: fresh.nonce_expiry(signed.issued_at),
            nonce: signed.nonce.clone(),
            received_at: now,
            address: incoming.peer.ip().to_canonical(),
            listener: incoming.listener.to_string(),
        };
        Ok(Self { meta, signed })
    }
}
