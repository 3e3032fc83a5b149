//! `GET /metrics`: Prometheus text exposition, behind the `metrics` access
//! rules (`pdome-admin access`), like the repositories.
//!
//! Fleet counts come from the store; several scrapers (or a scrape every
//! few seconds) share one read per [`FLEET_FRESH`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::repo::authorize_by_rules;
use crate::store::{FleetStore, FleetSummary};

/// How long fleet counts are reused.
pub const FLEET_FRESH: Duration = Duration::from_secs(5);

/// The route, outside the API prefix, where Prometheus looks by default.
pub const PATH: &str = "/metrics";

/// The access-rules endpoint name.
pub const ENDPOINT: &str = "metrics";

/// The fleet counts last read, shared by concurrent scrapes.
pub struct FleetCache {
    store: Arc<dyn FleetStore>,
    last: tokio::sync::Mutex<Option<(Instant, FleetSummary)>>,
}

impl FleetCache {
    /// A cache over `store`, empty until the first scrape.
    pub fn new(store: Arc<dyn FleetStore>) -> Self {
        Self {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Recent counts, read again when older than [`FLEET_FRESH`]; none when
    /// the store does not answer (the scrape still shows the counters).
    pub(crate) async fn get(&self) -> Option<FleetSummary> {
        let mut last = self.last.lock().await;
        if let Some((at, summary)) = last.as_ref()
            && at.elapsed() < FLEET_FRESH
        {
            return Some(summary.clone());
        }
        match self.store.fleet_summary(chrono::Utc::now()).await {
            Ok(summary) => {
                *last = Some((Instant::now(), summary.clone()));
                Some(summary)
            }
            Err(e) => {
                log::warn!(endpoint = "metrics"; "cannot count the fleet: {e}");
                None
            }
        }
    }
}

/// Answers a scrape.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize_by_rules(&state, ENDPOINT, peer, &headers).await {
        return r;
    }
    let fleet = state.fleet.get().await;
    let release = state
        .repo
        .manifest()
        .await
        .inspect_err(|e| log::warn!(endpoint = "metrics"; "cannot read the release: {e}"))
        .ok()
        .flatten();
    let body = crate::metrics::global().render(fleet.as_ref(), release.as_ref());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
