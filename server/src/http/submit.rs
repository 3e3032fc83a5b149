//! `POST /submit`: one collected report, answered only once it is durable.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use penguindome_protocol::wire::{Ack, Report};
use serde_json::value::RawValue;

use super::signed::authenticate;
use super::{ApiFailure, AppState, ListenerName, RequestContext, json_response, read_body};
use crate::store::{Submission, SubmitOutcome, validate_report};

/// Handles a submission.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ListenerName(listener)): Extension<ListenerName>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    let ctx = RequestContext { peer, listener };
    let body = read_body(body, &headers, state.max_body).await?;
    let auth = authenticate::<Report<Box<RawValue>>>(&state, &ctx, &headers, body).await?;
    let report = auth.signed.body;
    validate_report(&report)?;
    let client_id = auth.meta.client_id.clone();
    let hostname = report.hostname.clone();
    let outcome = state
        .store
        .submit(Submission::new(auth.meta, report))
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit"; "submission refused: {e}");
        })?;
    let status = match outcome {
        SubmitOutcome::Stored { changes } => {
            log::trace!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit", changes = changes; "report stored");
            "ok"
        }
        SubmitOutcome::Duplicate => {
            log::info!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit"; "report already stored");
            "duplicate"
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &Ack {
            status: status.into(),
        },
    ))
}
