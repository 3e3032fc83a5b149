//! `POST /submit`: one collected report, answered only once it is durable.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use penguindome_protocol::wire::{Ack, Report};
use serde_json::value::RawValue;

use super::signed::Authenticated;
use super::{ApiFailure, AppState, json_response};
use crate::store::{Submission, SubmitOutcome, validate_report};

/// Handles a submission.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<Report<Box<RawValue>>>,
) -> Result<Response, ApiFailure> {
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
