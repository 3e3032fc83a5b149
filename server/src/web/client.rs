//! `/web/clients/{id}`: one client: identity, every collector's answer with
//! its evidence, its issues, its audit trail as a diff, and its actions.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};
use serde_json::Value;

use super::CLIENTS;
use super::layout::{ago, failure, forbidden, frame, respond, when};
use super::session::Viewer;
use crate::http::AppState;
use crate::store::{ActionFilter, AuditRecord, ClientDocument, Issue, IssueFilter};

/// Audit records shown, newest.
const TRAIL_SHOWN: usize = 200;

/// `GET /web/clients/{id}`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    if !state.access.grants(CLIENTS, &viewer.user) {
        return forbidden(&viewer.user, CLIENTS);
    }
    let store = &state.web.store;
    let doc = match store.get_client(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let body = html! { p { "No client has this id." } };
            return respond(
                StatusCode::NOT_FOUND,
                frame("No such client", Some(&viewer.user), body),
            );
        }
        Err(e) => return failure(&viewer.user, &format!("cannot read a client: {e}")),
    };
    let read = async {
        let issues = store
            .issues(IssueFilter {
                client_id: Some(id.clone()),
                open_only: false,
            })
            .await?;
        let trail = store.audit_trail(&id, TRAIL_SHOWN).await?;
        let actions = store
            .actions(ActionFilter {
                client_id: Some(id.clone()),
                ..Default::default()
            })
            .await?;
        Ok::<_, crate::store::StoreError>((issues, trail, actions))
    };
    let (issues, trail, actions) = match read.await {
        Ok(r) => r,
        Err(e) => return failure(&viewer.user, &format!("cannot read a client: {e}")),
    };
    let body = html! {
        (identity(&doc))
        h2 { "Issues" }
        (issue_table(&issues))
        h2 { "Collectors" }
        @for (name, value) in &doc.plugins {
            section.plugin id=(format!("plugin-{name}")) {
                h3 { (name) }
                (plugin(value))
            }
        }
        h2 { "Actions" }
        @if actions.is_empty() { p { "None." } } @else {
            table.actions {
                thead { tr { th { "Action" } th { "Queued by" } th { "State" } th { "Detail" } } }
                tbody {
                    @for a in &actions {
                        @for t in a.targets.iter().filter(|t| t.client_id == id) {
                            tr {
                                td { (a.kind) ": " (a.summary) }
                                td { (a.queued_by) ", " (when(&a.created_at)) }
                                td { (t.state.as_str()) }
                                td { (t.detail.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Audit trail" }
        (audit_trail(&trail))
    };
    respond(
        StatusCode::OK,
        frame(&doc.summary.hostname, Some(&viewer.user), body),
    )
}

fn identity(doc: &ClientDocument) -> Markup {
    let s = &doc.summary;
    let now = Utc::now();
    html! {
        dl.identity {
            dt { "Client id" } dd { code { (s.client_id) } }
            dt { "Last contact" } dd { (when(&s.last_seen_at)) " (" (ago(&s.last_seen_at, now)) "), from " (s.last_address) " on " (s.last_listener) }
            dt { "Enrolled" } dd { (when(&doc.enrolled_at)) }
            dt { "Latest report" } dd { @match &s.collected_at { Some(t) => (when(t)), None => "none yet" } }
            dt { "Agent" } dd { (doc.agent_version.as_deref().unwrap_or("unknown")) }
            @if let Some(r) = &s.revoked_at { dt { "Revoked" } dd.warn { (when(r)) } }
            dt { "Keys" } dd { @for k in &doc.keys { code { (k.fingerprint) } @if k.revoked_at.is_some() { " (revoked)" } br; } }
        }
    }
}

fn issue_table(issues: &[Issue]) -> Markup {
    html! {
        @if issues.is_empty() { p { "None." } } @else {
            table.issues {
                thead { tr { th { "Check" } th { "Detail" } th { "Opened" } th { "Closed" } } }
                tbody {
                    @for i in issues.iter().rev() {
                        tr.open[i.closed_at.is_none()] {
                            td { (i.name) }
                            td { (i.detail.as_deref().unwrap_or("")) }
                            td { (when(&i.opened_at)) }
                            td { @match &i.closed_at { Some(c) => { (when(c)) " by " (i.closed_by.as_deref().unwrap_or("?")) }, None => "open" } }
                        }
                    }
                }
            }
        }
    }
}

/// A collector's answer: its fields, evidence first and as a list.
fn plugin(value: &Value) -> Markup {
    let Some(fields) = value.as_object() else {
        return html! { pre { (pretty(value)) } };
    };
    html! {
        @if let Some(Value::Array(evidence)) = fields.get("evidence") {
            @if !evidence.is_empty() {
                ul.evidence { @for e in evidence { li { (e.as_str().map_or_else(|| e.to_string(), str::to_string)) } } }
            }
        }
        dl.fields {
            @for (k, v) in fields.iter().filter(|(k, _)| *k != "evidence") {
                dt { (k) }
                dd { @match v {
                    Value::String(s) => (s),
                    Value::Null => span.none { "none" },
                    Value::Bool(_) | Value::Number(_) => (v.to_string()),
                    _ => pre { (pretty(v)) },
                } }
            }
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn audit_trail(trail: &[AuditRecord]) -> Markup {
    html! {
        @if trail.is_empty() { p { "Nothing recorded yet." } } @else {
            table.trail {
                thead { tr { th { "When" } th { "Field" } th { "Change" } } }
                tbody {
                    @for r in trail.iter().rev() {
                        tr {
                            td { (when(&r.recorded_at)) }
                            td { code { (r.field) } }
                            td.diff {
                                @if let Some(old) = &r.old { del { (compact(old)) } }
                                @if let Some(new) = &r.new { ins { (compact(new)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
