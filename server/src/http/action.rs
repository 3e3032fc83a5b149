//! `POST /action_report`: where an action stands on the reporting client.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use penguindome_protocol::actions::ActionReport;
use penguindome_protocol::wire::Ack;

use super::signed::Authenticated;
use super::{ApiFailure, AppState, json_response};

/// Handles an action report.
pub async fn report(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<ActionReport>,
) -> Result<Response, ApiFailure> {
    let client_id = auth.meta.client_id.clone();
    let report = auth.signed.body;
    if !report.state.is_reportable() {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_data",
            format!(
                "an agent cannot report an action as {}",
                report.state.as_str()
            ),
        ));
    }
    let (action_id, action_state) = (report.action_id.clone(), report.state);
    state
        .store
        .report_action(auth.meta, report)
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, endpoint = "action_report", action_id:% = action_id; "action report refused: {e}");
        })?;
    log::info!(client_id:% = client_id, endpoint = "action_report", action_id:% = action_id; "action {action_id} {}", action_state.as_str());
    Ok(json_response(
        StatusCode::OK,
        &Ack {
            status: "ok".into(),
            problems: Vec::new(),
        },
    ))
}
