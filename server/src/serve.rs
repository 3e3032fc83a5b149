//! Running the server: listeners, TLS, systemd notification, watchdog,
//! housekeeping and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Extension;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use penguindome_protocol::SecretKey;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::config::{ListenerConfig, ServerConfig};
use crate::http::limits::{ConnectionLimit, RequestSlots, hold_slot};
use crate::http::{AppState, ListenerName, router};
use crate::keycache::KeyCache;
use crate::store::{self, StoreBase};

/// Loads the server's signing key, refusing a key file others can read.
pub fn load_server_key(config: &ServerConfig) -> anyhow::Result<SecretKey> {
    let path = config.config_path(&config.server.signing_key);
    let bytes = crate::secrets::read_secret(&path)?;
    SecretKey::from_bytes(&bytes)
        .with_context(|| format!("{} is not the server's OpenPGP key", path.display()))
}

fn notify(states: &[NotifyState]) {
    // Outside systemd there is no socket; that is not an error.
    let _ = sd_notify::notify(states);
}

/// The audit's settings for judging reports as they arrive. A bad
/// `[audit]` does not stop the server: reports are then judged by the
/// periodic audit, which says what is wrong with the settings.
fn audit_settings(config: &ServerConfig) -> Option<Arc<crate::audit::Settings>> {
    match crate::audit::Settings::from_config(&config.audit) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            log::error!("reports are not judged as they arrive: {e}");
            None
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let server_key = load_server_key(&config)?;
    let credential = config.shared_credential_sha256();
    let store = store::open(&config).await?;
    if let Err(e) = store.health().await {
        // A database server may come up after this one; requests get a 503
        // meanwhile and the monitor says when it answers.
        log::error!("the store does not answer yet: {e}");
    }
    let state = Arc::new(AppState {
        store: store.clone(),
        keys: KeyCache::default(),
        server_key,
        window: config.server.request_window,
        max_body: config.server.max_body_bytes,
        body_timeout: config.limits.body_timeout,
        require_message_kinds: config.server.require_message_kinds,
        client_rate: crate::http::limits::ClientRate::new(config.limits.client_requests_per_minute),
        credential_sha256: credential,
        repo: crate::release::publish::Repository::new(config.server.data_dir.join("repo")),
        access: crate::access_rules::AccessControl::load(
            config.config_path(std::path::Path::new(crate::access_rules::ACCESS_FILE)),
        )?,
        audit: audit_settings(&config),
    });
    let mut listeners = Listeners::start(&config, &router(state.clone()))?;
    log::info!(
        "PenguinDome server {} listening on {}, store {}",
        env!("CARGO_PKG_VERSION"),
        listeners.listening,
        store.backend()
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("listening on {}", listeners.listening)),
    ]);

    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let monitor = tokio::spawn(monitor(
        store.clone(),
        sd_notify::watchdog_enabled(),
        listeners.listening.clone(),
    ));
    let failure = listeners.wait_for_stop().await?;
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    log::info!("shutting down: finishing requests in flight");
    listeners.shut_down(config.server.shutdown_grace).await;
    housekeeping.abort();
    monitor.abort();
    store.close().await;
    log::info!("stopped");
    match failure {
        None => Ok(()),
        Some(Ok(Ok(()))) => bail!("a listener stopped unexpectedly"),
        Some(Ok(Err(e))) => bail!("a listener failed: {e}"),
        Some(Err(e)) => bail!("a listener task failed: {e}"),
    }
}

/// How a listener's task ended.
type ListenerEnd = Result<std::io::Result<()>, tokio::task::JoinError>;

/// The running listeners.
struct Listeners {
    servers: JoinSet<std::io::Result<()>>,
    handles: Vec<axum_server::Handle<SocketAddr>>,
    /// What they listen on, for logs and sd-notify.
    listening: String,
}

impl Listeners {
    /// Binds and starts every configured listener.
    fn start(config: &ServerConfig, app: &axum::Router) -> anyhow::Result<Self> {
        let mut servers = JoinSet::new();
        let mut handles = Vec::new();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let handle = axum_server::Handle::new();
            let scheme = serve_listener(config, l, app, &handle, &mut servers)?;
            bound.push(format!("{scheme}://{} ({})", l.address, l.name));
            handles.push(handle);
        }
        Ok(Self {
            servers,
            handles,
            listening: bound.join(", "),
        })
    }

    /// Waits for SIGTERM or SIGINT (`None`) or for a listener to stop.
    async fn wait_for_stop(&mut self) -> anyhow::Result<Option<ListenerEnd>> {
        let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        Ok(tokio::select! {
            _ = term.recv() => None,
            _ = int.recv() => None,
            done = self.servers.join_next() => done,
        })
    }

    /// Lets requests in flight finish, for at most `grace`.
    async fn shut_down(&mut self, grace: Duration) {
        for h in &self.handles {
            h.graceful_shutdown(Some(grace));
        }
        while self.servers.join_next().await.is_some() {}
    }
}

/// Binds one listener and starts serving `app` on it; returns its scheme.
fn serve_listener(
    config: &ServerConfig,
    l: &ListenerConfig,
    app: &axum::Router,
    handle: &axum_server::Handle<SocketAddr>,
    servers: &mut JoinSet<std::io::Result<()>>,
) -> anyhow::Result<&'static str> {
    let listener = std::net::TcpListener::bind(l.address).with_context(|| {
        format!(
            "listener {:?} cannot listen on {}; is another process using the port, \
             or does a port below 1024 need CAP_NET_BIND_SERVICE?",
            l.name, l.address
        )
    })?;
    let svc = listener_app(config, l, app).into_make_service_with_connect_info::<SocketAddr>();
    let max = config.limits.connections;
    let Some(tls) = &l.tls else {
        if !l.address.ip().is_loopback() {
            log::warn!(
                "listener {:?} on {} is plain HTTP on a non-loopback address",
                l.name,
                l.address
            );
        }
        let acceptor = ConnectionLimit::new(NoDelayAcceptor::new(), handle.clone(), max, &l.name);
        let server = axum_server::from_tcp(listener)?
            .acceptor(acceptor)
            .handle(handle.clone());
        let server = bound_header_time(server, config);
        servers.spawn(server.serve(svc));
        return Ok("http");
    };
    let tls_config = crate::tls::server_config(
        &config.config_path(&tls.certificate),
        &config.config_path(&tls.key),
    )
    .with_context(|| format!("TLS for listener {:?}", l.name))?;
    // Without TCP_NODELAY a reply's last small segment waits for the
    // agent's delayed ACK: about 40 ms per request on loopback.
    let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(Arc::new(tls_config)))
        .handshake_timeout(config.limits.header_timeout)
        .acceptor(NoDelayAcceptor::new());
    let acceptor = ConnectionLimit::new(acceptor, handle.clone(), max, &l.name);
    let server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle.clone());
    let server = bound_header_time(server, config);
    servers.spawn(server.serve(svc));
    Ok("https")
}

/// Closes a connection whose peer takes longer than `[limits]
/// header_timeout` to send its first request (hyper's header timeout
/// starts only after protocol detection) or a later request's headers, or
/// stays idle that long between requests.
fn bound_header_time<A>(
    mut server: axum_server::Server<SocketAddr, A>,
    config: &ServerConfig,
) -> axum_server::Server<SocketAddr, A> {
    server
        .http_builder()
        .http1()
        .header_read_timeout(config.limits.header_timeout);
    server.first_request_timeout(config.limits.header_timeout)
}

/// The app as one listener serves it: named, with its own bound on
/// requests in flight, and believing X-Forwarded-For from its trusted
/// proxies.
fn listener_app(config: &ServerConfig, l: &ListenerConfig, app: &axum::Router) -> axum::Router {
    let slots = RequestSlots::new(config.limits.requests, &l.name);
    let app = app
        .clone()
        .layer(Extension(ListenerName(l.name.as_str().into())))
        .layer(axum::middleware::from_fn_with_state(slots, hold_slot));
    if l.trusted_proxies.is_empty() {
        return app;
    }
    for net in &l.trusted_proxies {
        let broad = match net {
            ipnet::IpNet::V4(n) => n.prefix_len() < 8,
            ipnet::IpNet::V6(n) => n.prefix_len() < 32,
        };
        if broad {
            log::warn!(
                "listener {:?} believes X-Forwarded-For from all of {net}: any client \
                 there can claim any address; list only the reverse proxies",
                l.name
            );
        }
    }
    app.layer(axum::middleware::from_fn_with_state(
        crate::http::TrustedProxies::new(&l.trusted_proxies),
        crate::http::forwarded_layer,
    ))
}

/// Once a minute, forgets nonces whose window has passed and clients whose
/// request budget is whole.
async fn housekeeping(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        state.client_rate.forget_idle();
        match state.store.prune_nonces(chrono::Utc::now()).await {
            Ok(n) if n > 0 => log::debug!("forgot {n} expired nonces"),
            Ok(_) => {}
            Err(e) => log::warn!("cannot prune nonces: {e}"),
        }
    }
}

/// Watches the store and says how it is: a log line and an sd-notify STATUS
/// at each change. The systemd watchdog (when the unit asks for it) is
/// pinged while this process is responsive and its own part of the store
/// works: an unreachable database is not a reason to restart (a restart
/// would not bring it back, and requests meanwhile get a clear 503 while
/// the driver reconnects), but a broken embedded writer is.
async fn monitor(store: Arc<dyn StoreBase>, watchdog: Option<Duration>, listening: String) {
    let every = watchdog
        .map(|w| w / 2)
        .unwrap_or(MONITOR_EVERY)
        .min(MONITOR_EVERY);
    let mut tick = tokio::time::interval(every);
    let mut healthy = true;
    loop {
        tick.tick().await;
        let mut broken = false;
        let state = match tokio::time::timeout(MONITOR_EVERY, store.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                broken = matches!(e, crate::store::StoreError::Broken(_));
                Err(e.to_string())
            }
            Err(_) => Err(format!(
                "the {} store did not answer within {} s",
                store.backend(),
                MONITOR_EVERY.as_secs()
            )),
        };
        match (&state, healthy) {
            (Ok(()), false) => {
                log::info!("the {} store answers again", store.backend());
                notify(&[NotifyState::Status(&format!(
                    "listening on {listening}; store healthy"
                ))]);
                healthy = true;
            }
            (Err(e), true) => {
                log::error!("the store is unhealthy, requests get 503 until it recovers: {e}");
                notify(&[NotifyState::Status(&format!("store unhealthy: {e}"))]);
                healthy = false;
            }
            _ => {}
        }
        if watchdog.is_some() && !broken {
            notify(&[NotifyState::Watchdog]);
        }
    }
}

/// How often the store's health is checked (at most).
const MONITOR_EVERY: Duration = Duration::from_secs(5);
