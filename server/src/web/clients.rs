//! `/web/clients`: the client table, filtered, sorted and paged by the
//! store, so a page costs the same with 100 clients or 100,000. Every
//! filter is a plain GET form: links are shareable, no script needed.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::CLIENTS;
use super::layout::{ago, failure, forbidden, frame, respond};
use super::overview::encode;
use super::session::Viewer;
use crate::http::AppState;
use crate::store::{ClientQuery, ClientSort, ClientStatus, DistroFamily};

/// Rows per page.
pub const PAGE_SIZE: u64 = 50;
/// The last page number honoured (50 million rows in).
const MAX_PAGE: u64 = 1_000_000;

/// The table's query string; empty fields mean "any".
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    q: String,
    #[serde(default)]
    check: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<u64>,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Params {
    fn status(&self) -> Option<ClientStatus> {
        match self.status.as_str() {
            "reporting" => Some(ClientStatus::Reporting),
            "silent" => Some(ClientStatus::Silent),
            "revoked" => Some(ClientStatus::Revoked),
            _ => None,
        }
    }

    fn sort(&self) -> ClientSort {
        match self.sort.as_str() {
            "newest" => ClientSort::LastSeenNewest,
            "oldest" => ClientSort::LastSeenOldest,
            _ => ClientSort::Hostname,
        }
    }

    /// The page asked for, within what a store can skip to.
    fn page(&self) -> u64 {
        self.page.unwrap_or(1).clamp(1, MAX_PAGE)
    }

    fn query(&self) -> ClientQuery {
        ClientQuery {
            search: non_empty(&self.q),
            open_check: non_empty(&self.check),
            family: DistroFamily::parse(&self.family),
            status: self.status(),
            sort: self.sort(),
            offset: (self.page() - 1).saturating_mul(PAGE_SIZE),
            limit: PAGE_SIZE,
            now: Utc::now(),
        }
    }

    /// This query on another page.
    fn link(&self, page: u64) -> String {
        format!(
            "/web/clients?q={}&check={}&family={}&status={}&sort={}&page={page}",
            encode(&self.q),
            encode(&self.check),
            encode(&self.family),
            encode(&self.status),
            encode(&self.sort)
        )
    }
}

fn select(name: &str, current: &str, options: &[(&str, &str)]) -> Markup {
    html! {
        select name=(name) {
            @for (value, label) in options {
                option value=(value) selected[*value == current] { (label) }
            }
        }
    }
}

fn filters(p: &Params) -> Markup {
    html! {
        form.filters method="get" action="/web/clients" {
            label { "Host or id " input type="search" name="q" value=(p.q); }
            label { "Open issue " input name="check" value=(p.check) placeholder="check name"; }
            label { "Family " (select("family", &p.family, &[("", "any"), ("debian", "Debian"), ("fedora", "Fedora/RHEL"), ("arch", "Arch"), ("other", "other")])) }
            label { "Status " (select("status", &p.status, &[("", "any"), ("reporting", "reporting"), ("silent", "not reporting"), ("revoked", "revoked")])) }
            label { "Sort " (select("sort", &p.sort, &[("", "host name"), ("newest", "last contact, newest"), ("oldest", "last contact, oldest")])) }
            button type="submit" { "Show" }
        }
    }
}

/// `GET /web/clients`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Response {
    if !state.access.grants(CLIENTS, &viewer.user) {
        return forbidden(&viewer.user, CLIENTS);
    }
    let query = params.query();
    let now = query.now;
    let result = match state.web.store.client_page(query).await {
        Ok(r) => r,
        Err(e) => return failure(&viewer.user, &format!("cannot read clients: {e}")),
    };
    let pages = result.total.div_ceil(PAGE_SIZE).max(1);
    let current = params.page();
    let body = html! {
        (filters(&params))
        p.count { (result.total) " clients match" @if pages > 1 { " · page " (current) " of " (pages) } }
        table.clients {
            thead { tr { th { "Host" } th { "Family" } th { "Last contact" } th { "Open issues" } th { "State" } } }
            tbody {
                @for row in &result.rows {
                    tr {
                        td { a href=(format!("/web/clients/{}", encode(&row.client_id))) { (row.hostname) } }
                        td { (row.family.map_or("unknown", DistroFamily::as_str)) }
                        td title=(super::layout::when(&row.last_seen_at)) { (ago(&row.last_seen_at, now)) }
                        td { (row.open_issues) }
                        td { @if row.revoked_at.is_some() { "revoked" } @else { "enrolled" } }
                    }
                }
            }
        }
        nav.pages {
            @if current > 1 { a rel="prev" href=(params.link(current - 1)) { "← Previous" } }
            @if current < pages { a rel="next" href=(params.link(current + 1)) { "Next →" } }
        }
    };
    respond(StatusCode::OK, frame("Clients", Some(&viewer.user), body))
}
