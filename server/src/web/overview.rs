//! `/web/`: the fleet at a glance.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use super::layout::{ago, failure, forbidden, frame, respond};
use super::session::Viewer;
use super::{CLIENTS, FLEET, trend};
use crate::http::AppState;
use crate::store::{ClientPage, ClientQuery, ClientSort, ClientStatus, FleetSummary};

/// Silent clients listed on the overview.
const SILENT_SHOWN: u64 = 10;

/// `GET /web/`.
pub async fn page(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    if !state.access.grants(FLEET, &viewer.user) {
        return forbidden(&viewer.user, FLEET);
    }
    let now = Utc::now();
    let store = &state.web.store;
    let Some(fleet) = state.fleet.get().await else {
        return failure(&viewer.user, "cannot count the fleet");
    };
    let spans = match store.issue_spans(now - Duration::days(trend::DAYS)).await {
        Ok(s) => s,
        Err(e) => return failure(&viewer.user, &format!("cannot read issues: {e}")),
    };
    let silent = match store
        .client_page(ClientQuery {
            search: None,
            open_check: None,
            family: None,
            status: Some(ClientStatus::Silent),
            sort: ClientSort::LastSeenOldest,
            offset: 0,
            limit: SILENT_SHOWN,
            now,
        })
        .await
    {
        Ok(p) => p,
        Err(e) => return failure(&viewer.user, &format!("cannot read clients: {e}")),
    };
    let checks: BTreeSet<String> = state
        .audit
        .load_full()
        .map(|s| {
            s.enabled_checks()
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(fleet.open_issues.keys().cloned())
        .collect();
    let may_list = state.access.grants(CLIENTS, &viewer.user);
    let seen_day = fleet
        .seen_within
        .iter()
        .find(|(w, _)| *w == "1d")
        .map_or(0, |(_, n)| *n);
    let body = html! {
        section.cards {
            div.card { span.n { (fleet.enrolled) } " clients" }
            div.card { span.n { (seen_day) } " reported in the last day" }
            div.card.warn { span.n { (fleet.enrolled.saturating_sub(seen_day)) } " not reporting" }
            div.card { span.n { (fleet.open_issues.values().sum::<u64>()) } " open issues" }
            div.card { span.n { (fleet.revoked) } " revoked" }
        }
        h2 { "Checks" }
        (checks_table(&checks, &fleet, may_list))
        h2 { "Open issues, last " (trend::DAYS) " days" }
        (trend::chart(&trend::daily_open(&spans, now)))
        h2 { "Not reporting" }
        (silent_table(&silent, may_list, now))
    };
    respond(
        StatusCode::OK,
        frame("Fleet overview", Some(&viewer.user), body),
    )
}

/// Each check: how many clients comply, and its open issues (a link to
/// those clients for users who may see them).
fn checks_table(checks: &BTreeSet<String>, fleet: &FleetSummary, may_list: bool) -> Markup {
    html! {
        table.checks {
            thead { tr { th { "Check" } th { "Compliant clients" } th { "Open issues" } } }
            tbody {
                @for check in checks {
                    @let open = fleet.open_issues.get(check).copied().unwrap_or(0);
                    tr {
                        td { (check) }
                        td { (fleet.enrolled.saturating_sub(open)) " of " (fleet.enrolled) }
                        td {
                            @if may_list && open > 0 {
                                a href=(format!("/web/clients?check={}", encode(check))) { (open) }
                            } @else { (open) }
                        }
                    }
                }
            }
        }
    }
}

/// The clients silent longest.
fn silent_table(silent: &ClientPage, may_list: bool, now: DateTime<Utc>) -> Markup {
    html! {
        @if silent.rows.is_empty() {
            p { "Every client reported in the last day." }
        } @else {
            table.silent {
                thead { tr { th { "Host" } th { "Last contact" } } }
                tbody {
                    @for row in &silent.rows {
                        tr {
                            td {
                                @if may_list {
                                    a href=(format!("/web/clients/{}", encode(&row.client_id))) { (row.hostname) }
                                } @else { (row.hostname) }
                            }
                            td { (ago(&row.last_seen_at, now)) }
                        }
                    }
                }
            }
            @if silent.total > SILENT_SHOWN && may_list {
                p { a href="/web/clients?status=silent&sort=oldest" { "All " (silent.total) " clients not reporting" } }
            }
        }
    }
}

/// Text for a URL's query or path.
pub fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
