//! The front door's bounds on what one peer or client may hold: requests in
//! flight per listener, signed requests per client key, and the time a
//! peer has to send a body. (Connections and header time are bounded where
//! connections are accepted, in `serve`.)

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::Semaphore;

use super::ApiFailure;

/// How long a refused peer is asked to wait before trying again.
const RETRY_AFTER_SECS: u64 = 30;

/// Requests one listener handles at once; past it, a request is refused
/// at once (queueing would only make every agent wait).
#[derive(Clone)]
pub struct RequestSlots {
    slots: Arc<Semaphore>,
    listener: Arc<str>,
    warned: Arc<Throttle>,
}

impl RequestSlots {
    /// `count` slots for the listener named `listener`.
    pub fn new(count: usize, listener: &str) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(count)),
            listener: listener.into(),
            warned: Arc::default(),
        }
    }
}

/// Middleware: runs the request in a free slot or answers 503.
pub async fn hold_slot(State(slots): State<RequestSlots>, req: Request, next: Next) -> Response {
    let Ok(_slot) = slots.slots.clone().try_acquire_owned() else {
        if slots.warned.ready() {
            log::warn!(
                "listener {:?} is at its limit of requests in flight ([limits] requests); \
                 refusing more with 503",
                slots.listener
            );
        }
        return busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "the server is handling as many requests as it may; retry later".into(),
        )
        .into_response();
    };
    next.run(req).await
}

/// A refusal that tells the peer when to come back.
fn busy(status: StatusCode, code: &'static str, message: String) -> ApiFailure {
    ApiFailure::new(status, code, message).retry_after(RETRY_AFTER_SECS)
}

/// Signed requests per client key and minute, in this server process.
pub struct ClientRate {
    limiter: DefaultKeyedRateLimiter<String>,
    per_minute: u32,
    warned: Throttle,
}

impl ClientRate {
    /// Allows `per_minute` requests a minute, all of them in a burst.
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            per_minute,
            warned: Throttle::default(),
        }
    }

    /// Spends one request of `fingerprint`'s budget, or says 429.
    pub fn check(&self, fingerprint: &str) -> Result<(), ApiFailure> {
        if self.limiter.check_key(&fingerprint.to_string()).is_ok() {
            return Ok(());
        }
        if self.warned.ready() {
            log::warn!(
                "client key {fingerprint} (and maybe others) exceeds {} requests a minute \
                 ([limits] client_requests_per_minute); refusing with 429",
                self.per_minute
            );
        }
        Err(busy(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this client made more than {} requests in a minute; retry later",
                self.per_minute
            ),
        ))
    }

    /// Forgets clients whose budget is whole again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Reads a body within the size limit and the time limit.
pub(crate) async fn read_within(
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Result<Bytes, axum::Error>, ApiFailure> {
    tokio::time::timeout(timeout, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| {
            ApiFailure::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs()
                ),
            )
        })
}

/// Most of a refused request's body read before answering: closing a
/// socket with unread data resets the connection, and the peer would see
/// the reset instead of the answer.
const DRAIN_LIMIT: usize = 1 << 20;

/// Reads and drops what a refused request sent (up to [`DRAIN_LIMIT`],
/// for at most a few seconds), so that it reads the refusal.
pub(crate) async fn drain(body: Body) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        axum::body::to_bytes(body, DRAIN_LIMIT),
    )
    .await;
}

/// Lets a warning through at most once a minute.
#[derive(Default)]
pub struct Throttle {
    last: AtomicI64,
}

impl Throttle {
    /// Whether a minute has passed since the last `true`.
    pub fn ready(&self) -> bool {
        let now = chrono::Utc::now().timestamp();
        let last = self.last.load(Ordering::Relaxed);
        now - last >= 60
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Accepts a connection only while its listener has fewer than `max`
/// open; past it the connection is closed at once, before any TLS work.
#[derive(Clone)]
pub struct ConnectionLimit<A> {
    inner: A,
    handle: axum_server::Handle<std::net::SocketAddr>,
    max: usize,
    listener: Arc<str>,
    warned: Arc<Throttle>,
}

impl<A> ConnectionLimit<A> {
    /// Wraps `inner` for the listener that `handle` controls.
    pub fn new(
        inner: A,
        handle: axum_server::Handle<std::net::SocketAddr>,
        max: usize,
        listener: &str,
    ) -> Self {
        Self {
            inner,
            handle,
            max,
            listener: listener.into(),
            warned: Arc::default(),
        }
    }
}

impl<I, S, A> axum_server::accept::Accept<I, S> for ConnectionLimit<A>
where
    A: axum_server::accept::Accept<I, S>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = futures_util::future::Either<
        A::Future,
        std::future::Ready<std::io::Result<(A::Stream, A::Service)>>,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // The count includes this connection.
        if self.handle.connection_count() <= self.max {
            return futures_util::future::Either::Left(self.inner.accept(stream, service));
        }
        if self.warned.ready() {
            log::warn!(
                "listener {:?} has {} connections open ([limits] connections); closing new ones",
                self.listener,
                self.max
            );
        }
        futures_util::future::Either::Right(std::future::ready(Err(std::io::Error::other(
            "too many connections",
        ))))
    }
}
