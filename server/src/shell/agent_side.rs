//! The agent's end: a fresh challenge, the agent's signed hello, and the
//! hand-over to the administrator waiting for it.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::Utc;
use penguindome_protocol::shell::{ShellAgentQuery, ShellChallenge, ShellHello, SignedText};
use penguindome_protocol::{Envelope, Freshness};

use super::{Arrived, MAX_MESSAGE};
use crate::http::AppState;

/// `GET /penguindome/v1/shell/agent`: upgrades, then authenticates, or
/// passes the connection on to the server of the site holding the session.
pub async fn agent(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ShellAgentQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| arrive(state, socket, query))
}

async fn arrive(state: Arc<AppState>, socket: WebSocket, query: ShellAgentQuery) {
    match state.shell.held_elsewhere(&query).await {
        Some(holder) => super::forward::pass_on(&state.shell, socket, &holder, &query).await,
        None => attach(state, socket).await,
    }
}

async fn attach(state: Arc<AppState>, mut socket: WebSocket) {
    let challenge = hex::encode({
        let mut b = [0u8; 32];
        penguindome_protocol::envelope::random_bytes(&mut b);
        b
    });
    let verified = async {
        let text = serde_json::to_string(&ShellChallenge {
            challenge: challenge.clone(),
        })
        .expect("challenges serialize");
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("cannot send the challenge: {e}"))?;
        let hello = read_hello(&mut socket).await?;
        let (client_id, certificate, body) = verify(&state, &hello, &challenge).await?;
        let hand_over = state
            .shell
            .take(
                &body.session_id,
                &client_id,
                &body.action_id,
                &body.admin_key,
            )
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((hand_over, hello, certificate, body))
    };
    match verified.await {
        Ok((hand_over, hello, certificate, body)) => {
            let session_id = body.session_id;
            log::info!(session_id:% = session_id; "shell session {session_id}: the agent attached");
            state.shell.unroute(&session_id).await;
            let arrived = Arrived {
                socket,
                hello,
                certificate,
                transcript_keys: body.transcript_keys,
            };
            if let Err(mut gone) = hand_over.send(arrived) {
                refuse(
                    &mut gone.socket,
                    "the administrator left before the client came",
                )
                .await;
            }
        }
        Err(why) => {
            log::warn!("a shell agent connection was refused: {why}");
            refuse(&mut socket, &why).await;
        }
    }
}

/// Reads the agent's signed hello, within the handshake time.
async fn read_hello(socket: &mut WebSocket) -> Result<SignedText, String> {
    super::read_first(socket, "the agent's hello").await
}

/// Checks the hello's signature by an enrolled, unrevoked client key over
/// this connection's challenge; returns the client, its armored
/// certificate and what it says.
async fn verify(
    state: &AppState,
    hello: &SignedText,
    challenge: &str,
) -> Result<(String, String, ShellHello), String> {
    let envelope = Envelope::from_wire(
        hello.payload.as_bytes().to_vec(),
        Some(hello.signature.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let fingerprint = envelope
        .issuer()
        .ok_or("the hello's signature names no key")?
        .to_string();
    let (client_id, key) = state
        .keys
        .get(&fingerprint, state.store.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let fresh = Freshness::at(Utc::now(), state.window);
    let signed = envelope
        .open::<ShellHello>(&key, &client_id, &fresh)
        .map_err(|e| e.to_string())?;
    if signed.in_reply_to.as_deref() != Some(challenge) {
        return Err("the hello answers another challenge (a replay)".into());
    }
    let certificate = key.to_armored().map_err(|e| e.to_string())?;
    Ok((client_id, certificate, signed.body))
}

/// Tells the agent why, and closes.
pub(super) async fn refuse(socket: &mut WebSocket, why: &str) {
    let reason = super::pump::close_reason(why);
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::POLICY,
            reason: reason.into(),
        })))
        .await;
}
