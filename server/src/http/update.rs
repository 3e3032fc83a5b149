//! `POST /update`: what the client should act on, signed by the server and
//! bound to the request's nonce.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use penguindome_protocol::wire::{UpdateRequest, UpdateResponse};
use penguindome_protocol::{Envelope, SERVER_SENDER, SIGNATURE_HEADER};

use super::signed::Authenticated;
use super::{ApiFailure, AppState};

/// Handles an update request.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<UpdateRequest>,
) -> Result<Response, ApiFailure> {
    let client_id = auth.meta.client_id.clone();
    let nonce = auth.signed.nonce.clone();
    let delivered = state
        .store
        .deliver_actions(auth.meta, Utc::now())
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, hostname:% = auth.signed.body.hostname, endpoint = "update"; "update refused: {e}");
        })?;
    let actions = delivered
        .actions
        .iter()
        .map(|d| d.seal_for(&client_id))
        .collect::<Result<Vec<_>, _>>()?;
    if !actions.is_empty() {
        log::info!(client_id:% = client_id, endpoint = "update"; "handing out {} actions", actions.len());
    }
    let signing = state.signing.get();
    let answer = UpdateResponse {
        status: if actions.is_empty() {
            "current"
        } else {
            "actions"
        }
        .into(),
        server_time: Utc::now(),
        actions,
        latest_release: state.repo.latest_serial(),
        needs_repo_credential: delivered.needs_repo_credential,
        server_certificates: state.announced.certificates().to_vec(),
        server_keys: signing.chain.clone(),
        sealing: signing.sealing.clone(),
    };
    let sealed =
        Envelope::seal(&signing.key, SERVER_SENDER, Some(&nonce), &answer).map_err(|e| {
            log::error!("cannot sign an update response: {e}");
            ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing_failed",
                "the server cannot sign its answer",
            )
        })?;
    log::debug!(client_id:% = client_id, hostname:% = auth.signed.body.hostname, endpoint = "update"; "update answered");
    let sig =
        HeaderValue::from_str(&sealed.signature_header()).expect("base64 is a valid header value");
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::HeaderName::from_static(SIGNATURE_HEADER), sig),
        ],
        sealed.into_payload(),
    )
        .into_response())
}
