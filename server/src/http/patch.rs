//! `POST /acknowledge_patch`: the client applied a patch.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use penguindome_protocol::wire::{Ack, AcknowledgePatch};

use super::signed::authenticate;
use super::{ApiFailure, AppState, ListenerName, RequestContext, json_response, read_body};

/// Handles a patch acknowledgement.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ListenerName(listener)): Extension<ListenerName>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    let ctx = RequestContext { peer, listener };
    let body = read_body(body, &headers, state.max_body).await?;
    let auth = authenticate::<AcknowledgePatch>(&state, &ctx, &headers, body).await?;
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
        },
    ))
}
