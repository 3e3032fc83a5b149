//! `POST /enroll`: a new client key, signed by itself, with an enrollment
//! token (or the deprecated site-wide credential).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use penguindome_protocol::Freshness;
use std::net::IpAddr;

use penguindome_protocol::token;
use penguindome_protocol::wire::{EnrollRequest, EnrollResponse, is_valid_client_id};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signed::Incoming;
use super::{ApiFailure, AppState, json_response};
use crate::store::{EnrollOutcome, Enrollment, TokenClaim};

/// Handles an enrollment.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Incoming {
        envelope,
        peer,
        listener,
    }: Incoming,
) -> Result<Response, ApiFailure> {
    let now = Utc::now();
    let fresh = Freshness::at(now, state.window);
    let (signed, key) = envelope.open_enrollment(&fresh)?;
    let req = &signed.body;
    if !is_valid_client_id(&req.machine_id) {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_machine_id",
            "machine_id must be 32 lower-case hex characters, as in /etc/machine-id",
        ));
    }
    if req.hostname.is_empty() || req.hostname.len() > 253 {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_hostname",
            "hostname must be 1 to 253 characters",
        ));
    }
    let token = authority(&state, req, peer.ip())?;
    let fingerprint = key.signing_fingerprint().to_string();
    let certificate = key.to_binary().map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("cannot store the key: {e}"),
        )
    })?;
    let outcome = state
        .store
        .enroll(Enrollment {
            client_id: req.machine_id.clone(),
            hostname: req.hostname.clone(),
            fingerprint: fingerprint.clone(),
            certificate,
            nonce: signed.nonce.clone(),
            nonce_expires_at: fresh.nonce_expiry(signed.issued_at),
            received_at: now,
            address: peer.ip().to_canonical(),
            listener: listener.to_string(),
            token: token.clone(),
        })
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll"; "enrollment refused: {e}");
        })?;
    state.keys.enrolled(&fingerprint);
    let status = match outcome {
        EnrollOutcome::Enrolled => "enrolled",
        EnrollOutcome::AlreadyEnrolled => "already-enrolled",
    };
    let token_id = token.as_ref().map_or("-", |t| t.id.as_str());
    log::info!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll", fingerprint:% = fingerprint, token:% = token_id; "client {status}");
    Ok(json_response(
        StatusCode::OK,
        &EnrollResponse {
            client_id: req.machine_id.clone(),
            fingerprint,
            status: status.into(),
        },
    ))
}

/// What lets this enrollment in: a token (checked and spent by the store,
/// with the enrollment) or the deprecated site-wide credential (checked
/// here).
fn authority(
    state: &AppState,
    req: &EnrollRequest,
    peer: IpAddr,
) -> Result<Option<TokenClaim>, ApiFailure> {
    if let Some(text) = &req.token {
        return token_claim(text).map(Some);
    }
    let presented: [u8; 32] = Sha256::digest(req.credential.as_bytes()).into();
    let accepted = state
        .credential_sha256
        .is_some_and(|want| bool::from(presented.ct_eq(&want)));
    if !accepted {
        log::warn!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll", address:% = peer; "enrollment refused: no token and no valid site credential");
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "bad_credential",
            "enrollment needs a token: run `penguindome-agent enroll URL TOKEN` with a token from `pdome-admin tokens create`",
        ));
    }
    log::warn!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll"; "enrollment with the deprecated site-wide credential");
    Ok(None)
}

/// Reads `pdt1.<id>.<secret>` (pins, if sent, are the agent's business).
fn token_claim(text: &str) -> Result<TokenClaim, ApiFailure> {
    let mut fields = text.split('.');
    let (Some(token::PREFIX), Some(id), Some(secret)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad_token());
    };
    if !token::is_valid_id(id) || secret.is_empty() || secret.len() > 64 {
        return Err(bad_token());
    }
    Ok(TokenClaim {
        id: id.to_string(),
        secret_sha256: hex::encode(token::secret_sha256(secret)),
    })
}

fn bad_token() -> ApiFailure {
    ApiFailure::new(
        StatusCode::BAD_REQUEST,
        "bad_token",
        "the enrollment token is damaged; copy the whole token `pdome-admin tokens create` printed",
    )
}
