//! The running listeners: bound from server.toml at start, and brought in
//! line with it again on SIGHUP. A listener whose address, scheme or
//! trusted proxies changed is replaced (the old one stops accepting and
//! finishes its requests); one whose certificate changed swaps it in place;
//! the others are not touched, nor are their connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Extension;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::task::JoinSet;

use crate::config::{ListenerConfig, ServerConfig};
use crate::http::ListenerName;
use crate::http::limits::{ConnectionLimit, RequestSlots, hold_slot};

/// How a listener's task ended: which one, and how.
pub struct Ended {
    /// The listener's name.
    pub name: String,
    generation: u64,
    /// What its server returned.
    pub result: std::io::Result<()>,
}

/// One listener that is serving.
struct Running {
    config: ListenerConfig,
    handle: Handle<SocketAddr>,
    /// Its TLS configuration, which a reload can swap in place.
    tls: Option<RustlsConfig>,
    generation: u64,
}

/// The listeners of one server process.
pub struct Listeners {
    /// Server-wide settings the listeners use (limits, paths); a reload
    /// takes only `[[listener]]` from the file.
    base: ServerConfig,
    app: axum::Router,
    servers: JoinSet<Ended>,
    running: BTreeMap<String, Running>,
    /// Removed or replaced listeners, finishing their requests.
    retiring: Vec<Handle<SocketAddr>>,
    next_generation: u64,
}

impl Listeners {
    /// Binds and starts every configured listener.
    pub fn start(config: &ServerConfig, app: &axum::Router) -> anyhow::Result<Self> {
        let mut this = Self {
            base: config.clone(),
            app: app.clone(),
            servers: JoinSet::new(),
            running: BTreeMap::new(),
            retiring: Vec::new(),
            next_generation: 0,
        };
        for l in &config.listeners {
            let std_listener = bind(l)?;
            this.serve(l.clone(), std_listener)?;
        }
        Ok(this)
    }

    /// What they listen on, for logs and sd-notify.
    pub fn listening(&self) -> String {
        let all: Vec<String> = self
            .running
            .values()
            .map(|r| {
                let scheme = if r.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{} ({})", r.config.address, r.config.name)
            })
            .collect();
        all.join(", ")
    }

    /// The next listener task to end on its own (not one retired by a
    /// reload); `None` once none is left.
    pub async fn next_failure(&mut self) -> Option<Result<Ended, tokio::task::JoinError>> {
        loop {
            match self.servers.join_next().await? {
                Ok(e) if !self.is_current(&e) => continue,
                other => return Some(other),
            }
        }
    }

    fn is_current(&self, e: &Ended) -> bool {
        self.running
            .get(&e.name)
            .is_some_and(|r| r.generation == e.generation)
    }

    /// Lets requests in flight finish on every listener, for at most `grace`.
    pub async fn shut_down(&mut self, grace: Duration) {
        for h in self
            .running
            .values()
            .map(|r| &r.handle)
            .chain(&self.retiring)
        {
            h.graceful_shutdown(Some(grace));
        }
        while self.servers.join_next().await.is_some() {}
    }

    /// Brings the listeners in line with `new`'s `[[listener]]` tables.
    /// Every certificate is checked first: a bad one changes nothing (an
    /// error). Otherwise returns what failed, listener by listener; a
    /// listener that cannot move to a new address keeps serving the old.
    pub async fn reload(&mut self, new: &ServerConfig) -> anyhow::Result<Vec<String>> {
        let mut tls = BTreeMap::new();
        for l in new.listeners.iter().filter(|l| l.tls.is_some()) {
            tls.insert(l.name.clone(), tls_config(&self.base, l)?);
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !new.listeners.iter().any(|l| &l.name == *n))
            .cloned()
            .collect();
        for name in gone {
            self.retire(&name);
            log::info!("listener {name:?} removed: it finishes its requests and closes");
        }
        let mut problems = Vec::new();
        for l in &new.listeners {
            let fresh = tls.remove(&l.name);
            if let Err(e) = self.apply(l, fresh).await {
                problems.push(format!("listener {:?}: {e:#}", l.name));
            }
        }
        Ok(problems)
    }

    /// Applies one listener's configuration.
    async fn apply(
        &mut self,
        l: &ListenerConfig,
        fresh: Option<rustls::ServerConfig>,
    ) -> anyhow::Result<()> {
        let Some(r) = self.running.get_mut(&l.name) else {
            // Its address may belong to a listener this reload just retired.
            let std_listener = bind_when_free(l).await?;
            log::info!("listener {:?} added on {}", l.name, l.address);
            return self.serve_with(l.clone(), std_listener, fresh);
        };
        if needs_new_socket(&r.config, l) {
            let moves = r.config.address != l.address;
            let std_listener = if moves {
                // Bound before the old one closes: if it fails, the old
                // listener keeps serving.
                let s = bind(l)?;
                self.retire(&l.name);
                s
            } else {
                self.retire(&l.name);
                bind_when_free(l).await?
            };
            log::info!("listener {:?} replaced: now {}", l.name, l.address);
            return self.serve_with(l.clone(), std_listener, fresh);
        }
        if let (Some(acceptor), Some(fresh)) = (&r.tls, fresh) {
            // New connections get the certificate now on disk; open ones
            // keep theirs.
            acceptor.reload_from_config(Arc::new(fresh));
        }
        if r.config != *l {
            log::info!("listener {:?} updated in place", l.name);
        }
        r.config = l.clone();
        Ok(())
    }

    /// Stops `name` accepting; its open requests finish within the grace.
    fn retire(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            r.handle
                .graceful_shutdown(Some(self.base.server.shutdown_grace));
            self.retiring.push(r.handle);
        }
    }

    fn serve(&mut self, l: ListenerConfig, socket: std::net::TcpListener) -> anyhow::Result<()> {
        let tls = match &l.tls {
            Some(_) => Some(tls_config(&self.base, &l)?),
            None => None,
        };
        self.serve_with(l, socket, tls)
    }

    /// Starts serving the app on a bound socket.
    fn serve_with(
        &mut self,
        l: ListenerConfig,
        socket: std::net::TcpListener,
        tls: Option<rustls::ServerConfig>,
    ) -> anyhow::Result<()> {
        let config = &self.base;
        let handle = Handle::new();
        let svc =
            listener_app(config, &l, &self.app).into_make_service_with_connect_info::<SocketAddr>();
        let max = config.limits.connections;
        let generation = self.next_generation;
        self.next_generation += 1;
        let name = l.name.clone();
        let end = move |result| Ended {
            name,
            generation,
            result,
        };
        let rustls = match tls {
            None => {
                warn_if_plain_in_public(&l);
                let acceptor =
                    ConnectionLimit::new(NoDelayAcceptor::new(), handle.clone(), max, &l.name);
                let server = axum_server::from_tcp(socket)?
                    .acceptor(acceptor)
                    .handle(handle.clone());
                let server = bound_header_time(server, config);
                self.servers
                    .spawn(async move { end(server.serve(svc).await) });
                None
            }
            Some(tls) => {
                let rustls = RustlsConfig::from_config(Arc::new(tls));
                // Without TCP_NODELAY a reply's last small segment waits
                // for the agent's delayed ACK: about 40 ms per request on
                // loopback.
                let acceptor = RustlsAcceptor::new(rustls.clone())
                    .handshake_timeout(config.limits.header_timeout)
                    .acceptor(NoDelayAcceptor::new());
                let acceptor = ConnectionLimit::new(acceptor, handle.clone(), max, &l.name);
                let server = axum_server::from_tcp(socket)?
                    .acceptor(acceptor)
                    .handle(handle.clone());
                let server = bound_header_time(server, config);
                self.servers
                    .spawn(async move { end(server.serve(svc).await) });
                Some(rustls)
            }
        };
        self.running.insert(
            l.name.clone(),
            Running {
                config: l,
                handle,
                tls: rustls,
                generation,
            },
        );
        Ok(())
    }
}

/// A listener needs a new socket (and a new app) when anything but its
/// certificate files or deprecation changed.
fn needs_new_socket(old: &ListenerConfig, new: &ListenerConfig) -> bool {
    old.address != new.address
        || old.tls.is_some() != new.tls.is_some()
        || old.trusted_proxies != new.trusted_proxies
}

fn bind(l: &ListenerConfig) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(l.address).with_context(|| {
        format!(
            "listener {:?} cannot listen on {}; is another process using the port, \
             or does a port below 1024 need CAP_NET_BIND_SERVICE?",
            l.name, l.address
        )
    })
}

/// Binds `l` while a retired listener on the same address may still be
/// closing its socket: retries for a few seconds.
async fn bind_when_free(l: &ListenerConfig) -> anyhow::Result<std::net::TcpListener> {
    let mut tries = 0;
    loop {
        match bind(l) {
            Ok(s) => return Ok(s),
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn tls_config(config: &ServerConfig, l: &ListenerConfig) -> anyhow::Result<rustls::ServerConfig> {
    let tls = l.tls.as_ref().expect("a TLS listener");
    crate::tls::server_config(
        &config.config_path(&tls.certificate),
        &config.config_path(&tls.key),
    )
    .with_context(|| format!("TLS for listener {:?}", l.name))
}

fn warn_if_plain_in_public(l: &ListenerConfig) {
    if !l.address.ip().is_loopback() {
        log::warn!(
            "listener {:?} on {} is plain HTTP on a non-loopback address",
            l.name,
            l.address
        );
    }
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
        .layer(Extension(crate::web::SecureListener(
            l.tls.is_some() || !l.trusted_proxies.is_empty(),
        )))
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
