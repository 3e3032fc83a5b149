//! Extractors for signed requests. [`Incoming`] parses the signature header
//! and reads the body within the size and time limits; [`Authenticated`]
//! first finds the enrolled key the signature names, so an unknown or
//! revoked signer is refused before its body is read, then verifies sender,
//! signature, clock window and nonce form, and spends one request of the
//! client's rate. Handlers take them as arguments.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::Utc;
use penguindome_protocol::wire::Message;
use penguindome_protocol::{
    Envelope, Freshness, PublicKey, SIGNATURE_HEADER, Signed, WireSignature,
};
use serde::de::DeserializeOwned;

use super::{ApiFailure, AppState, ListenerName, limits, read_body};
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
        let (peer, listener) = origin(&parts)?;
        let signature = match WireSignature::from_header(header(&parts)) {
            Ok(s) => s,
            Err(e) => return Err(refuse(body, e.into()).await),
        };
        let body = read_body(body, &parts.headers, state).await?;
        Ok(Self {
            envelope: signature.with_payload(body.into()),
            peer,
            listener,
        })
    }
}

/// The signature header's value.
fn header(parts: &Parts) -> Option<&[u8]> {
    parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes())
}

/// The peer's address and the listener's name.
fn origin(parts: &Parts) -> Result<(SocketAddr, Arc<str>), ApiFailure> {
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
    Ok((peer, listener))
}

/// Refuses a request without reading all it sends (see [`limits::drain`]).
async fn refuse(body: Body, failure: ApiFailure) -> ApiFailure {
    limits::drain(body).await;
    failure
}

/// A request signed without naming its kind of message, where the site
/// requires one.
fn unbound() -> ApiFailure {
    ApiFailure::new(
        StatusCode::BAD_REQUEST,
        "unbound_signature",
        "the request's signature does not name its kind of message, and this server \
         requires it ([server] require_message_kinds); upgrade the agent",
    )
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

impl<T: DeserializeOwned + Message> FromRequest<Arc<AppState>> for Authenticated<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiFailure> {
        let (parts, body) = req.into_parts();
        let (peer, listener) = origin(&parts)?;
        let (signature, fingerprint, client_id, key) = match signer(&parts, state).await {
            Ok(found) => found,
            Err(failure) => return Err(refuse(body, failure).await),
        };
        let body = read_body(body, &parts.headers, state).await?;
        let envelope = signature.with_payload(body.into());
        let now = Utc::now();
        let fresh = Freshness::at(now, state.window);
        let signed = envelope.open::<T>(&key, &client_id, &fresh)?;
        if signed.kind.is_none() && state.require_message_kinds {
            return Err(unbound());
        }
        // Only a verified request spends the client's budget: anyone can
        // claim a fingerprint, and must not exhaust another client's.
        state.client_rate.check(&fingerprint)?;
        let meta = RequestMeta {
            client_id,
            fingerprint,
            nonce_expires_at: fresh.nonce_expiry(signed.issued_at),
            nonce: signed.nonce.clone(),
            received_at: now,
            address: peer.ip().to_canonical(),
            listener: listener.to_string(),
        };
        Ok(Self { meta, signed })
    }
}

/// The signature header and the enrolled key it names: fingerprint,
/// client id and key.
async fn signer(
    parts: &Parts,
    state: &AppState,
) -> Result<(WireSignature, String, String, PublicKey), ApiFailure> {
    let signature = WireSignature::from_header(header(parts))?;
    let fingerprint = signature
        .issuer()
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the signature does not name the key that made it",
            )
        })?
        .to_string();
    let (client_id, key) = state.keys.get(&fingerprint, state.store.as_ref()).await?;
    Ok((signature, fingerprint, client_id, key))
}
