//! Passing an agent's connection on to the server of the site that holds
//! its session: a WebSocket to the holder's `[shell] peer_url`, and every
//! message copied both ways, unread, until either side closes or this
//! server stops. The holder challenges and checks the agent as if it had
//! come straight to it, and the frames are sealed between the agent and
//! the administrator, so this hop needs to be trusted with nothing.

use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_protocol::paths;
use penguindome_protocol::shell::ShellAgentQuery;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self as tg};

use super::{MAX_MESSAGE, Relay};
use crate::tls::Stream;

/// Longest the holder may take to answer each step of the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection to the server holding the session.
type Holder = WebSocketStream<Box<dyn Stream>>;

/// Connects `socket` (an agent's) to the server at `holder`, which waits
/// for the session `query` names.
pub(super) async fn pass_on(
    relay: &Relay,
    mut socket: WebSocket,
    holder: &str,
    query: &ShellAgentQuery,
) {
    let session = query.session.clone().unwrap_or_default();
    let Some(_slot) = relay.slot() else {
        let why = "this server holds its maximum of shell sessions; try again later";
        super::agent_side::refuse(&mut socket, why).await;
        return;
    };
    match connect(relay, holder, &session).await {
        Ok(upstream) => {
            log::info!(session_id:% = session; "shell session {session}: the agent is passed on to {holder}");
            splice(relay, socket, upstream).await;
        }
        Err(e) => {
            log::warn!("cannot pass shell session {session}'s agent on to {holder}: {e:#}");
            let why = "the server holding the session cannot be reached";
            super::agent_side::refuse(&mut socket, why).await;
        }
    }
}

/// Opens the WebSocket to the holder's agent endpoint, marked as passed on.
async fn connect(relay: &Relay, holder: &str, session: &str) -> anyhow::Result<Holder> {
    let base = url::Url::parse(holder).with_context(|| format!("{holder:?} is not a URL"))?;
    let tls = || relay.peer_tls();
    let stream = crate::tls::connect(&base, tls, CONNECT_TIMEOUT, "[shell] peer_ca_file").await?;
    let secure = base.scheme() == "https";
    let scheme = if secure { "wss" } else { "ws" };
    let mut url = base.join(paths::SHELL_AGENT)?;
    let query = ShellAgentQuery {
        session: Some(session.to_string()),
        relayed: true,
    };
    url.set_query(Some(&query.to_query()));
    url.set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("cannot make a WebSocket URL of {holder}"))?;
    let limits = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
    let handshake = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(limits));
    let (socket, _) = timeout(CONNECT_TIMEOUT, handshake)
        .await
        .context("the WebSocket handshake timed out")?
        .context("the holder refused the WebSocket")?;
    Ok(socket)
}

/// Copies messages both ways until either side closes or breaks off, or
/// the server stops.
async fn splice(relay: &Relay, mut agent: WebSocket, mut holder: Holder) {
    let mut stopping = relay.stopping.subscribe();
    loop {
        tokio::select! {
            () = super::pump::stopped(&mut stopping) => {
                let _ = holder.close(None).await;
                let why = "the server is shutting down";
                super::agent_side::refuse(&mut agent, why).await;
                return;
            }
            message = agent.recv() => {
                let Some(Ok(message)) = message else {
                    let _ = holder.close(None).await;
                    return;
                };
                let last = matches!(message, ws::Message::Close(_));
                if holder.send(to_holder(message)).await.is_err() || last {
                    return;
                }
            }
            message = holder.next() => {
                let Some(Ok(message)) = message else {
                    let _ = agent.send(ws::Message::Close(None)).await;
                    return;
                };
                let last = matches!(message, tg::Message::Close(_));
                let Some(message) = to_agent(message) else {
                    continue;
                };
                if agent.send(message).await.is_err() || last {
                    return;
                }
            }
        }
    }
}

/// An agent's message as the holder's connection sends it.
fn to_holder(message: ws::Message) -> tg::Message {
    match message {
        ws::Message::Text(t) => tg::Message::Text(t.as_str().into()),
        ws::Message::Binary(b) => tg::Message::Binary(b),
        ws::Message::Ping(b) => tg::Message::Ping(b),
        ws::Message::Pong(b) => tg::Message::Pong(b),
        ws::Message::Close(frame) => tg::Message::Close(frame.map(|f| tg::protocol::CloseFrame {
            code: CloseCode::from(f.code),
            reason: f.reason.as_str().into(),
        })),
    }
}

/// The holder's message as the agent's connection sends it (raw frames
/// never surface here).
fn to_agent(message: tg::Message) -> Option<ws::Message> {
    Some(match message {
        tg::Message::Text(t) => ws::Message::Text(t.as_str().into()),
        tg::Message::Binary(b) => ws::Message::Binary(b),
        tg::Message::Ping(b) => ws::Message::Ping(b),
        tg::Message::Pong(b) => ws::Message::Pong(b),
        tg::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        tg::Message::Frame(_) => return None,
    })
}
