//! `POST /submit`: one collected report, answered only once it is durable.
//! The audit's report checks judge it on arrival: their verdicts are
//! stored with it, and the failing ones go back to the agent.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use penguindome_protocol::wire::{Ack, Problem, Report};
use serde_json::value::RawValue;

use super::signed::Authenticated;
use super::{ApiFailure, AppState, json_response};
use crate::audit::checks::Facts;
use crate::audit::verdicts::{self, Verdicts};
use crate::store::{Submission, SubmitOutcome, validate_report};

/// Handles a submission.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    auth: Authenticated<Report<Box<RawValue>>>,
) -> Result<Response, ApiFailure> {
    let mut report = auth.signed.body;
    validate_report(&report)?;
    let client_id = auth.meta.client_id.clone();
    seal_what_came_in_the_clear(&state, &mut report, &client_id)?;
    let hostname = report.hostname.clone();
    let verdicts = judge(&state, &report, auth.meta.received_at);
    let mut submission = Submission::new(auth.meta, report);
    if let Some(v) = &verdicts {
        submission = submission.with_verdicts(v.to_text());
    }
    let outcome = state
        .store
        .submit(submission)
        .await
        .inspect_err(|e| {
            log::warn!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit"; "submission refused: {e}");
        })?;
    crate::metrics::global().report(matches!(outcome, SubmitOutcome::Stored { .. }));
    let (status, problems) = match outcome {
        SubmitOutcome::Stored { changes } => {
            log::trace!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit", changes = changes; "report stored");
            ("ok", problems(&state, verdicts.as_ref()))
        }
        // Verdicts on an older report would mislead: the stored one stands.
        SubmitOutcome::Duplicate => {
            log::info!(client_id:% = client_id, hostname:% = hostname, endpoint = "submit"; "report already stored");
            ("duplicate", Vec::new())
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &Ack {
            status: status.into(),
            problems,
        },
    ))
}

/// Seals selected fields a client sent in the clear (it had not learned the
/// site's policy when it collected, or is older than sealing), before
/// anything is judged or stored.
fn seal_what_came_in_the_clear(
    state: &AppState,
    report: &mut Report<Box<RawValue>>,
    client_id: &str,
) -> Result<(), ApiFailure> {
    let signing = state.signing.get();
    let Some(resealer) = &signing.resealer else {
        return Ok(());
    };
    let failed = |e: String| {
        log::error!(client_id:% = client_id, endpoint = "submit"; "cannot seal a report: {e}");
        ApiFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "sealing_failed",
            "the server cannot seal the report's selected fields; it keeps the report",
        )
    };
    let mut sealed = 0;
    for (name, raw) in &mut report.plugins {
        if !resealer.covers(name) {
            continue;
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
            continue;
        };
        if resealer
            .apply(&format!("plugins.{name}"), &mut v)
            .map_err(|e| failed(e.to_string()))?
        {
            *raw = RawValue::from_string(v.to_string()).map_err(|e| failed(e.to_string()))?;
            sealed += 1;
        }
    }
    if sealed > 0 {
        log::info!(client_id:% = client_id, endpoint = "submit"; "sealed {sealed} plugin outputs the client sent in the clear");
    }
    Ok(())
}

/// The report checks' verdicts, when the server has audit settings.
fn judge(
    state: &AppState,
    report: &Report<Box<RawValue>>,
    received_at: chrono::DateTime<chrono::Utc>,
) -> Option<Verdicts> {
    let settings = state.audit.load_full()?;
    let facts = Facts::of_report(report, received_at);
    Some(verdicts::judge(&settings, &facts, received_at))
}

/// The failing checks the site runs (disabled ones are not its rules).
fn problems(state: &AppState, verdicts: Option<&Verdicts>) -> Vec<Problem> {
    let Some(settings) = state.audit.load_full() else {
        return Vec::new();
    };
    verdicts
        .map(|v| {
            v.raised()
                .filter(|(check, _)| settings.is_enabled(check))
                .map(|(check, detail)| Problem {
                    check: check.to_string(),
                    detail: detail.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}
