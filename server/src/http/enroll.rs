//! `POST /enroll`: a new client key, signed by itself, with the site's
//! enrollment credential.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use penguindome_protocol::Freshness;
use penguindome_protocol::wire::{EnrollResponse, is_valid_client_id};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signed::Incoming;
use super::{ApiFailure, AppState, json_response};
use crate::store::{EnrollOutcome, Enrollment};

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
    let presented: [u8; 32] = Sha256::digest(req.credential.as_bytes()).into();
    if !bool::from(presented.ct_eq(&state.credential_sha256)) {
        log::warn!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll", address:% = peer.ip(); "enrollment refused: wrong credential");
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "bad_credential",
            "the enrollment credential is wrong; install the site's current agent.toml",
        ));
    }
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
    log::info!(client_id:% = req.machine_id, hostname:% = req.hostname, endpoint = "enroll", fingerprint:% = fingerprint; "client {status}");
    Ok(json_response(
        StatusCode::OK,
        &EnrollResponse {
            client_id: req.machine_id.clone(),
            fingerprint,
            status: status.into(),
        },
    ))
}
