//! `GET /health`: unauthenticated liveness and store health, for load
//! balancers and monitoring. It reveals nothing about clients.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{AppState, json_response};

/// Answers 200 when the store answers, 503 otherwise.
pub async fn handle(State(state): State<Arc<AppState>>) -> Response {
    match state.store.health().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"status": "ok", "store": state.store.backend()}),
        ),
        Err(e) => {
            log::warn!(endpoint = "health"; "store unhealthy: {e}");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unhealthy", "store": state.store.backend(), "error": "the store does not answer"}),
            )
        }
    }
}
