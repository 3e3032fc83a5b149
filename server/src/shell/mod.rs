//! The remote shell relay. An administrator's side (pdome-admin, through
//! the Unix socket or, where access rules allow, over HTTPS) asks for a
//! shell on one client; the relay queues a signed `shell` action for it and
//! waits. The agent picks the action up on its next run, connects to
//! [`paths::SHELL_AGENT`](penguindome_protocol::paths::SHELL_AGENT), signs
//! a fresh challenge with its client key, and is handed to the waiting
//! administrator. From then on the relay only copies sealed frames both
//! ways: it cannot read them, and it ends the session on idleness, its
//! maximum duration, either side leaving, or the server stopping.
//!
//! Behind a balancer the agent may reach another server of the site than
//! the one the administrator waits on; that server finds the holder in
//! [`routes`] and passes the agent's connection on to it unread.

mod admin_side;
mod agent_side;
mod forward;
mod pump;
pub mod routes;
pub mod socket;
pub mod transcript;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::WebSocket;
use penguindome_protocol::shell::SignedText;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

pub use admin_side::{admin_remote, admin_unix};
pub use agent_side::agent;

use crate::config::ShellConfig;
use crate::store::Store;
use routes::ShellRoutes;

/// Longest a peer may take to say its first word on a fresh socket.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest WebSocket message either side may send.
const MAX_MESSAGE: usize = penguindome_protocol::shell::MAX_FRAME + 1024;

/// The endpoint name access rules use for remote shells.
pub const ENDPOINT: &str = "shell";

/// Sessions waiting for their agent, and the bounds every session keeps.
pub struct Relay {
    store: Arc<dyn Store>,
    settings: ShellConfig,
    /// Where transcripts go, one directory per client.
    transcripts: std::path::PathBuf,
    /// The server's transcript certificate; none when it could not be
    /// made (shells are refused then: no session goes unrecorded).
    own_certificate: Option<String>,
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Where the site's servers look up who holds a session.
    routes: Arc<dyn ShellRoutes>,
    /// The certificate https:// peers are checked against (`[shell]
    /// peer_ca_file`); none: the system's roots.
    peer_ca: Option<std::path::PathBuf>,
    /// TLS for passing agents on to https:// peers, built at the first
    /// such pass (most servers never make one).
    peer_tls: OnceLock<Arc<rustls::ClientConfig>>,
    slots: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

/// A session queued for its client.
struct Waiting {
    client_id: String,
    action_id: String,
    admin_key: String,
    hand_over: oneshot::Sender<Arrived>,
}

/// An agent that proved who it is, handed to the administrator's task.
struct Arrived {
    socket: WebSocket,
    hello: SignedText,
    certificate: String,
    /// The session's keys as the agent sealed them.
    transcript_keys: String,
}

/// Why an agent was not handed over.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AttachError {
    /// No session has this id (never opened, used, or lapsed).
    #[error("no shell session {0} is waiting (never opened, already used, or lapsed)")]
    Unknown(String),
    /// The session is another client's, or the hello does not match it.
    #[error("shell session {0} was not opened for this client")]
    NotYours(String),
}

/// Reads a peer's first message, JSON in a text message, within the
/// handshake time; `what` names it in errors.
async fn read_first<T: serde::de::DeserializeOwned>(
    socket: &mut WebSocket,
    what: &str,
) -> Result<T, String> {
    let message = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.recv())
        .await
        .map_err(|_| format!("{what} did not arrive in time"))?
        .ok_or_else(|| format!("the peer left before {what}"))?
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    let axum::extract::ws::Message::Text(text) = message else {
        return Err(format!("{what} is not a text message"));
    };
    serde_json::from_str(text.as_str()).map_err(|e| format!("{what} is malformed: {e}"))
}

impl Relay {
    /// A relay over `store` with the configuration's `[shell]` settings,
    /// finding sessions other servers hold through `routes`.
    pub fn new(
        store: Arc<dyn Store>,
        routes: Arc<dyn ShellRoutes>,
        config: &crate::config::ServerConfig,
    ) -> Self {
        let settings = config.shell.clone();
        let slots = Arc::new(Semaphore::new(settings.max_sessions));
        let own_certificate = transcript::own_certificate(config)
            .inspect_err(|e| {
                log::error!("remote shells are off: no transcript key can be made: {e:#}")
            })
            .ok();
        let peer_ca = settings
            .peer_ca_file
            .as_deref()
            .map(|p| config.config_path(p));
        Self {
            store,
            routes,
            peer_ca,
            peer_tls: OnceLock::new(),
            settings,
            transcripts: config.data_path(std::path::Path::new("transcripts")),
            own_certificate,
            waiting: Mutex::new(HashMap::new()),
            slots,
            stopping: watch::channel(false).0,
        }
    }

    /// The TLS client configuration for https:// peers, built once; a
    /// failure is returned each time (and nothing is cached), so a fixed
    /// certificate file takes effect at the next pass.
    fn peer_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        if let Some(config) = self.peer_tls.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(crate::tls::client_config(self.peer_ca.as_deref())?);
        Ok(self.peer_tls.get_or_init(|| config).clone())
    }

    /// Ends every session with a message saying the server stops.
    pub fn shut_down(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits (at most `limit`) until every session has ended.
    pub async fn wait_until_ended(&self, limit: std::time::Duration) {
        let all = u32::try_from(self.settings.max_sessions).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, self.slots.acquire_many(all)).await;
    }

    /// One session's slot, or None when the server holds its maximum.
    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a waiting session for the agent that proved to be `client_id`.
    fn take(
        &self,
        session_id: &str,
        client_id: &str,
        action_id: &str,
        admin_key: &str,
    ) -> Result<oneshot::Sender<Arrived>, AttachError> {
        let mut waiting = self.lock();
        let w = waiting
            .get(session_id)
            .ok_or_else(|| AttachError::Unknown(session_id.to_string()))?;
        if w.client_id != client_id || w.action_id != action_id || w.admin_key != admin_key {
            return Err(AttachError::NotYours(session_id.to_string()));
        }
        Ok(waiting
            .remove(session_id)
            .expect("present under the lock")
            .hand_over)
    }

    /// Queues `session_id` here and, behind a balancer, tells the other
    /// servers it waits here until `until`.
    async fn hold(
        &self,
        session_id: &str,
        waiting: Waiting,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        self.lock().insert(session_id.to_string(), waiting);
        let Some(me) = &self.settings.peer_url else {
            return Ok(());
        };
        if let Err(e) = self.routes.hold(session_id, me, until).await {
            self.lock().remove(session_id);
            return Err(format!(
                "cannot tell the site's other servers where the session waits: {e}"
            ));
        }
        Ok(())
    }

    /// Forgets a session that no agent will attach to.
    async fn forget(&self, session_id: &str) {
        self.lock().remove(session_id);
        self.unroute(session_id).await;
    }

    /// Stops sending other servers' agents here for `session_id`.
    async fn unroute(&self, session_id: &str) {
        if self.settings.peer_url.is_none() {
            return;
        }
        if let Err(e) = self.routes.release(session_id).await {
            // The route lapses at the end of the wait anyway.
            log::warn!("cannot forget the route of shell session {session_id}: {e}");
        }
    }

    /// The URL of another server holding the session an agent's
    /// connection asks for; none when it is held here, unknown, or the
    /// connection was passed on already.
    async fn held_elsewhere(
        &self,
        query: &penguindome_protocol::shell::ShellAgentQuery,
    ) -> Option<String> {
        if query.relayed {
            return None;
        }
        let id = query
            .session
            .as_deref()
            .filter(|id| penguindome_protocol::shell::ShellAgentQuery::is_session_id(id))?;
        if self.lock().contains_key(id) {
            return None;
        }
        match self.routes.holder(id).await {
            Ok(holder) => holder.filter(|h| Some(h) != self.settings.peer_url.as_ref()),
            Err(e) => {
                log::warn!("cannot look up which server holds shell session {id}: {e}");
                None
            }
        }
    }
}
