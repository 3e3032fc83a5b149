//! Authentication of signed requests: find the key the signature names,
//! verify, check the sender, the clock window and the nonce's form.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use penguindome_protocol::{Envelope, Freshness, SIGNATURE_HEADER, Signed};
use serde::de::DeserializeOwned;

use super::{ApiFailure, AppState, RequestContext};
use crate::store::RequestMeta;

/// A verified request: who sent it and what it says.
pub struct Authenticated<T> {
    /// The facts the store records.
    pub meta: RequestMeta,
    /// The verified payload.
    pub signed: Signed<T>,
}

/// Verifies a signed request from an enrolled client.
pub async fn authenticate<T: DeserializeOwned>(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Authenticated<T>, ApiFailure> {
    let envelope = Envelope::from_wire(
        body.into(),
        headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
    )?;
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
        address: ctx.peer.ip().to_canonical(),
        listener: ctx.listener.to_string(),
    };
    Ok(Authenticated { meta, signed })
}
