//! Running the server: listeners, TLS, systemd notification, watchdog,
//! housekeeping and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use penguindome_protocol::SecretKey;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::ServerConfig;
use crate::http::{AppState, router};
use crate::keycache::KeyCache;
use crate::listeners::{Ended, Listeners};
use crate::store::{self, StoreBase};

/// Loads the server's signing key, refusing a key file others can read.
pub fn load_server_key(config: &ServerConfig) -> anyhow::Result<SecretKey> {
    crate::signing::load_key(&crate::signing::current_path(config))
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
        Ok(s) => Some(Arc::new(s.with_listeners(&config.listeners))),
        Err(e) => {
            log::error!("reports are not judged as they arrive: {e}");
            None
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let signing = crate::signing::SigningKeys::load(&config)?;
    let credential = config.shared_credential_sha256();
    let serving = store::open_for_serving(&config).await?;
    let store = serving.store.clone();
    serving.releases.poll().await;
    if let Err(e) = store.health().await {
        // A database server may come up after this one; requests get a 503
        // meanwhile and the monitor says when it answers.
        log::error!("the store does not answer yet: {e}");
    }
    let state = Arc::new(AppState {
        store: store.clone(),
        keys: KeyCache::default(),
        signing,
        window: config.server.request_window,
        max_body: config.server.max_body_bytes,
        body_timeout: config.limits.body_timeout,
        require_message_kinds: config.server.require_message_kinds,
        client_rate: crate::http::limits::ClientRate::new(config.limits.client_requests_per_minute),
        credential_sha256: credential,
        repo: serving.releases,
        access: crate::access_rules::AccessControl::load(
            config.config_path(std::path::Path::new(crate::access_rules::ACCESS_FILE)),
        )?,
        announced: crate::renewal::Announced::new(&config),
        audit: arc_swap::ArcSwapOption::new(audit_settings(&config)),
        shell: crate::shell::Relay::new(store.clone(), serving.shell_routes, &config),
        fleet: crate::http::metrics::FleetCache::new(store.clone()),
        web: crate::web::WebState::new(store.clone(), serving.sessions, &config.web),
    });
    // Caught before READY=1: a reload right after start must not kill us.
    let mut signals = Signals::catch()?;
    let mut listeners = Listeners::start(&config, &router(state.clone()))?;
    let shell_socket = start_shell_socket(&config, &state);
    log::info!(
        "PenguinDome server {} listening on {}, store {}",
        env!("CARGO_PKG_VERSION"),
        listeners.listening(),
        store.backend()
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("listening on {}", listeners.listening())),
    ]);

    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let release_watch = tokio::spawn(watch_releases(state.clone()));
    let apt_signing = tokio::spawn(keep_apt_release_valid(
        state.clone(),
        config.server.apt_valid_for,
    ));
    let listening = Listening::new(listeners.listening().into());
    let monitor = tokio::spawn(monitor(
        store.clone(),
        sd_notify::watchdog_enabled(),
        listening.clone(),
    ));
    let failure = wait_for_stop(&mut signals, &mut listeners, &state, &config, &listening).await?;
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    log::info!("shutting down: finishing requests in flight");
    state.shell.shut_down();
    state.shell.wait_until_ended(Duration::from_secs(3)).await;
    drop(shell_socket);
    listeners.shut_down(config.server.shutdown_grace).await;
    housekeeping.abort();
    release_watch.abort();
    apt_signing.abort();
    monitor.abort();
    store.close().await;
    log::info!("stopped");
    match failure {
        Stop::Signal => Ok(()),
        Stop::NoListener => bail!("no listener is left"),
        Stop::Listener(Ok(Ended {
            name,
            result: Ok(()),
            ..
        })) => bail!("listener {name:?} stopped unexpectedly"),
        Stop::Listener(Ok(Ended {
            name,
            result: Err(e),
            ..
        })) => bail!("listener {name:?} failed: {e}"),
        Stop::Listener(Err(e)) => bail!("a listener task failed: {e}"),
    }
}

/// Serves the administrators' shell socket; a server that cannot still
/// serves its clients, and says why shells are off.
fn start_shell_socket(
    config: &ServerConfig,
    state: &Arc<AppState>,
) -> Option<crate::shell::socket::ShellSocket> {
    let path = config.shell_socket();
    match crate::shell::socket::ShellSocket::start(
        &path,
        config.shell.socket_group.as_deref(),
        state.clone(),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("remote shells are unavailable from this host: {e:#}");
            None
        }
    }
}

/// Why the server stops.
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// A listener ended on its own.
    Listener(Result<Ended, tokio::task::JoinError>),
    /// Reloads left no listener running.
    NoListener,
}

/// What the listeners listen on, for the monitor's status line.
type Listening = Arc<std::sync::RwLock<String>>;

/// The signals the server acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot catch SIGHUP")?,
        })
    }
}

/// Serves until SIGTERM or SIGINT or a listener fails; SIGHUP reloads.
async fn wait_for_stop(
    signals: &mut Signals,
    listeners: &mut Listeners,
    state: &AppState,
    config: &ServerConfig,
    listening: &Listening,
) -> anyhow::Result<Stop> {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ok(Stop::Signal),
            _ = signals.int.recv() => return Ok(Stop::Signal),
            _ = signals.hup.recv() => {
                reload(listeners, state, config).await;
                if let Ok(mut l) = listening.write() {
                    *l = listeners.listening();
                }
            }
            done = listeners.next_failure() => {
                return Ok(done.map_or(Stop::NoListener, Stop::Listener));
            }
        }
    }
}

/// Re-reads server.toml: listeners, their certificates and the audit's
/// settings take effect; a file that does not load changes nothing.
async fn reload(listeners: &mut Listeners, state: &AppState, running: &ServerConfig) {
    notify(&[NotifyState::Reloading]);
    log::info!(
        "reloading {}",
        running
            .config_dir
            .join(crate::config::SERVER_CONFIG_FILE)
            .display()
    );
    let outcome = match ServerConfig::load(&running.config_dir) {
        Ok(new) => {
            warn_about_restart_only(running, &new);
            let applied = listeners.reload(&new).await;
            if applied.is_ok() {
                state.audit.store(audit_settings(&new));
                state.announced.set_listeners(&new);
            }
            applied
        }
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(problems) if problems.is_empty() => {
            log::info!("reloaded: listening on {}", listeners.listening())
        }
        Ok(problems) => log::error!(
            "reloaded: listening on {}; not applied: {}",
            listeners.listening(),
            problems.join("; ")
        ),
        Err(e) => log::error!("reload refused, nothing changed: {e:#}"),
    }
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("listening on {}", listeners.listening())),
    ]);
}

/// Says which changed settings a reload does not apply.
fn warn_about_restart_only(running: &ServerConfig, new: &ServerConfig) {
    let text = |c: &ServerConfig| {
        let mut c = c.clone();
        c.listeners.clear();
        c.audit = Default::default();
        toml::to_string(&c).unwrap_or_default()
    };
    if text(running) != text(new) {
        log::warn!(
            "server.toml changed outside [[listener]] and [audit]; those changes take effect              at the next `systemctl restart penguindome-server`"
        );
    }
}

/// Every two seconds, reads which release is current (update answers name
/// it; the repositories themselves are always read from the current one).
async fn watch_releases(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        state.repo.poll().await;
    }
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

/// Signs the current apt Release anew before it expires, checking eight
/// times per validity period (at most hourly).
async fn keep_apt_release_valid(state: Arc<AppState>, valid_for: Duration) {
    let every = (valid_for / 8).clamp(Duration::from_millis(500), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let key = state.signing.get();
        match state.repo.refresh_apt(&key.key, chrono::Utc::now()).await {
            Ok(true) => {
                log::info!("signed the apt Release anew (valid for another {valid_for:?})")
            }
            Ok(false) => {}
            Err(e) => log::error!("cannot sign the apt Release anew: {e}"),
        }
    }
}

/// Watches the store and says how it is: a log line and an sd-notify STATUS
/// at each change. The systemd watchdog (when the unit asks for it) is
/// pinged while this process is responsive and its own part of the store
/// works: an unreachable database is not a reason to restart (a restart
/// would not bring it back, and requests meanwhile get a clear 503 while
/// the driver reconnects), but a broken embedded writer is.
async fn monitor(store: Arc<dyn StoreBase>, watchdog: Option<Duration>, listening: Listening) {
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
                    "listening on {}; store healthy",
                    listening.read().map(|l| l.clone()).unwrap_or_default()
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
