//! Prometheus metrics: what this server process counts as it works, plus
//! the fleet's state, read from the store when `/metrics` is scraped.
//!
//! The counters are process-wide (one registry per process), so the store
//! writers, the HTTP layer and the handlers record without passing a handle
//! around; with several servers, Prometheus sums their scrapes.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::release::publish::Manifest;
use crate::store::FleetSummary;

/// Seconds: from a fast answer to a slow store.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Requests per store commit.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabel {
    within: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS)
}

/// Every metric of the process, and the registry that names them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<EndpointLabel>,
    refusals: Family<CodeLabel, Counter>,
    reports: Family<OutcomeLabel, Counter>,
    store_commit: Histograms<BackendLabel>,
    store_batch: Histograms<BackendLabel>,
    clients: Family<StateLabel, Gauge>,
    clients_seen: Family<WithinLabel, Gauge>,
    open_issues: Family<CheckLabel, Gauge>,
    release_serial: Gauge,
    release_published: FloatGauge,
    release_seconds: FloatGauge,
    /// One render at a time: each sets the gauges, then encodes.
    rendering: std::sync::Mutex<()>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::with_prefix("penguindome"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            refusals: Family::default(),
            reports: Family::default(),
            store_commit: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            store_batch: Family::new_with_constructor(batch_histogram as fn() -> Histogram),
            clients: Family::default(),
            clients_seen: Family::default(),
            open_issues: Family::default(),
            release_serial: Gauge::default(),
            release_published: FloatGauge::default(),
            release_seconds: FloatGauge::default(),
            rendering: std::sync::Mutex::new(()),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            self.latency.clone(),
        );
        r.register(
            "refusals",
            "Requests refused, by the error code sent (a refused submission stays in the agent's spool)",
            self.refusals.clone(),
        );
        r.register(
            "reports",
            "Reports submitted, by outcome: stored, or duplicate (already stored or older)",
            self.reports.clone(),
        );
        r.register(
            "store_commit_duration_seconds",
            "Time of one store write batch, by backend",
            self.store_commit.clone(),
        );
        r.register(
            "store_batch_size",
            "Requests written by one store batch, by backend",
            self.store_batch.clone(),
        );
        r.register(
            "clients",
            "Clients by state (enrolled or revoked)",
            self.clients.clone(),
        );
        r.register(
            "clients_seen",
            "Enrolled clients whose last contact is within the window",
            self.clients_seen.clone(),
        );
        r.register(
            "open_issues",
            "Open issues by check",
            self.open_issues.clone(),
        );
        r.register(
            "release_serial",
            "Number of the release the repositories serve (0: none)",
            self.release_serial.clone(),
        );
        r.register(
            "release_published_timestamp_seconds",
            "When the current release was published (Unix time)",
            self.release_published.clone(),
        );
        r.register(
            "release_publish_duration_seconds",
            "How long `pdome-admin release` took to build and publish the current release",
            self.release_seconds.clone(),
        );
        self
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: &str, status: u16, took: Duration) {
        let endpoint = endpoint.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabel { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Counts a refusal by its stable error code.
    pub fn refusal(&self, code: &'static str) {
        self.refusals.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts a submitted report: stored, or a duplicate.
    pub fn report(&self, stored: bool) {
        let outcome = if stored { "stored" } else { "duplicate" };
        self.reports.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Records one store write batch: how many requests, how long.
    pub fn store_batch(&self, backend: &'static str, requests: usize, took: Duration) {
        let label = BackendLabel { backend };
        self.store_batch
            .get_or_create(&label)
            .observe(requests as f64);
        self.store_commit
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the fleet and release gauges set from
    /// `fleet` and `release` (absent: left out).
    pub fn render(&self, fleet: Option<&FleetSummary>, release: Option<&Manifest>) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.set_fleet(fleet);
        self.set_release(release);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn set_fleet(&self, fleet: Option<&FleetSummary>) {
        self.clients.clear();
        self.clients_seen.clear();
        self.open_issues.clear();
        let Some(f) = fleet else { return };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [("enrolled", f.enrolled), ("revoked", f.revoked)] {
            self.clients
                .get_or_create(&StateLabel { state })
                .set(count(n));
        }
        for (within, n) in &f.seen_within {
            self.clients_seen
                .get_or_create(&WithinLabel { within })
                .set(count(*n));
        }
        for (check, n) in &f.open_issues {
            self.open_issues
                .get_or_create(&CheckLabel {
                    check: check.clone(),
                })
                .set(count(*n));
        }
    }

    fn set_release(&self, release: Option<&Manifest>) {
        let serial = release.map_or(0, |m| i64::try_from(m.serial).unwrap_or(i64::MAX));
        self.release_serial.set(serial);
        let published = release.map_or(0.0, |m| m.published_at.timestamp_millis() as f64 / 1e3);
        self.release_published.set(published);
        let took = release
            .and_then(|m| Some((m.published_at - m.started_at?).as_seconds_f64()))
            .unwrap_or(0.0);
        self.release_seconds.set(took);
    }
}

/// Middleware: counts every request by its route (not its path, so that
/// labels stay few) and status, and times it.
pub async fn record_requests(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    global().request(&endpoint, response.status().as_u16(), started.elapsed());
    response
}
