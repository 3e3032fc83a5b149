//! `POST /repo_credential`: a new repository password for the signing
//! client. The server keeps only its SHA-256; the previous one stops
//! working in the same write.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use penguindome_protocol::wire::{RepoCredential, RepoCredentialRequest};
use sha2::{Digest, Sha256};

use super::signed::Authenticated;
use super::{ApiFailure, AppState, json_response};

/// Handles a request for a new repository credential.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<RepoCredentialRequest>,
) -> Result<Response, ApiFailure> {
    let client_id = auth.meta.client_id.clone();
    let mut raw = [0u8; 32];
    penguindome_protocol::envelope::random_bytes(&mut raw);
    let password = URL_SAFE_NO_PAD.encode(raw);
    let sha256 = hex::encode(Sha256::digest(password.as_bytes()));
    state
        .store
        .set_repo_credential(auth.meta, sha256)
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, endpoint = "repo_credential"; "repository credential refused: {e}");
        })?;
    log::info!(client_id:% = client_id, hostname:% = auth.signed.body.hostname, endpoint = "repo_credential"; "new repository credential issued");
    Ok(json_response(
        StatusCode::OK,
        &RepoCredential {
            user: client_id,
            password,
        },
    ))
}
