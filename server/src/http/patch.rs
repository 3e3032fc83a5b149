//! `POST /acknowledge_patch`: the client applied a patch.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use penguindome_protocol::wire::{Ack, AcknowledgePatch};

use super::signed::Authenticated;
use super::{ApiFailure, AppState, json_response};

/// Handles a patch acknowledgement.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<AcknowledgePatch>,
) -> Result<Response, ApiFailure> {
    let client_id = auth.meta.client_id.clone();
    let patch_id = auth.signed.body.patch_id;
    state
        .store
        .acknowledge_patch(auth.meta, &patch_id)
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, endpoint = "acknowledge_patch"; "acknowledgement refused: {e}");
        })?;
    log::info!(client_id:% = client_id, endpoint = "acknowledge_patch", patch_id:% = patch_id; "patch acknowledged");
    Ok(json_response(
        StatusCode::OK,
        &Ack {
            status: "ok".into(),
            problems: Vec::new(),
        },
    ))
}
