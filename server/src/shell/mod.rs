//! The remote shell relay. An administrator's side (pdome-admin, through
//! the Unix socket or, where access rules allow, over HTTPS) asks for a
//! shell on one client; the relay queues a signed `shell` action for it and
//! waits. The agent picks the action up on its next run, connects to
//! [`paths::SHELL_AGENT`](penguindome_protocol::paths::SHELL_AGENT), signs
//! a fresh challenge with its client key, and is handed to the waiting
//! administrator. From then on the relay only copies sealed frames both
//! ways: it cannot read them, and it ends the session on idleness, its
//! maximum duration, either side leaving, or the server stopping.

mod admin_side;
mod agent_side;
mod pump;
pub mod socket;
pub mod transcript;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::WebSocket;
use penguindome_protocol::shell::SignedText;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

pub use admin_side::{admin_remote, admin_unix};
pub use agent_side::agent;

use crate::config::ShellConfig;
use crate::store::Store;

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
    /// A relay over `store` with the configuration's `[shell]` settings.
    pub fn new(store: Arc<dyn Store>, config: &crate::config::ServerConfig) -> Self {
        let settings = config.shell.clone();
        let slots = Arc::new(Semaphore::new(settings.max_sessions));
        let own_certificate = transcript::own_certificate(config)
            .inspect_err(|e| {
                log::error!("remote shells are off: no transcript key can be made: {e:#}")
            })
            .ok();
        Self {
            store,
            settings,
            transcripts: config.data_path(std::path::Path::new("transcripts")),
            own_certificate,
            waiting: Mutex::new(HashMap::new()),
            slots,
            stopping: watch::channel(false).0,
        }
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

    /// Forgets a session that no agent will attach to.
    fn forget(&self, session_id: &str) {
        self.lock().remove(session_id);
    }
}
