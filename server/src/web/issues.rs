//! `/web/issues`: the issues list, open ones by default.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{failure, forbidden, frame, respond, when};
use super::overview::encode;
use super::session::Viewer;
use super::{CLIENTS, FLEET};
use crate::http::AppState;
use crate::store::IssueFilter;

/// Rows per page.
const PAGE_SIZE: usize = 100;

/// The list's query string.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    state: String,
    #[serde(default)]
    check: String,
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /web/issues`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(p): Query<Params>,
) -> Response {
    if !state.access.grants(FLEET, &viewer.user) {
        return forbidden(&viewer.user, FLEET);
    }
    let store = &state.web.store;
    let all = p.state == "all";
    let mut issues = match store
        .issues(IssueFilter {
            client_id: None,
            open_only: !all,
        })
        .await
    {
        Ok(i) => i,
        Err(e) => return failure(&viewer.user, &format!("cannot read issues: {e}")),
    };
    let check = p.check.trim();
    if !check.is_empty() {
        issues.retain(|i| i.name == check);
    }
    issues.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
    let total = issues.len();
    let current = p.page.unwrap_or(1).clamp(1, 1_000_000);
    let shown: Vec<_> = issues
        .into_iter()
        .skip((current - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .collect();
    let ids: Vec<String> = shown.iter().map(|i| i.client_id.clone()).collect();
    let hosts: HashMap<String, String> = match store.hostnames(ids).await {
        Ok(h) => h,
        Err(e) => return failure(&viewer.user, &format!("cannot read clients: {e}")),
    };
    let may_open = state.access.grants(CLIENTS, &viewer.user);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let link = |page: usize| {
        format!(
            "/web/issues?state={}&check={}&page={page}",
            encode(&p.state),
            encode(check)
        )
    };
    let body = html! {
        form.filters method="get" action="/web/issues" {
            label { "Show " select name="state" {
                option value="" selected[!all] { "open issues" }
                option value="all" selected[all] { "all issues" }
            } }
            label { "Check " input name="check" value=(check); }
            button type="submit" { "Show" }
        }
        p.count { (total) " issues" @if pages > 1 { " · page " (current) " of " (pages) } }
        table.issues {
            thead { tr { th { "Host" } th { "Check" } th { "Detail" } th { "Opened" } th { "State" } } }
            tbody {
                @for i in &shown {
                    @let host = hosts.get(&i.client_id).map_or(i.client_id.as_str(), String::as_str);
                    tr {
                        td {
                            @if may_open && hosts.contains_key(&i.client_id) {
                                a href=(format!("/web/clients/{}", encode(&i.client_id))) { (host) }
                            } @else { (host) }
                        }
                        td { (i.name) }
                        td { (i.detail.as_deref().unwrap_or("")) }
                        td { (when(&i.opened_at)) }
                        td { @match &i.closed_at { Some(c) => { "closed " (when(c)) }, None => "open" } }
                    }
                }
            }
        }
        nav.pages {
            @if current > 1 { a rel="prev" href=(link(current - 1)) { "← Previous" } }
            @if current < pages { a rel="next" href=(link(current + 1)) { "Next →" } }
        }
    };
    respond(StatusCode::OK, frame("Issues", Some(&viewer.user), body))
}
