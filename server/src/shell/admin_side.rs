//! The administrator's end: open a session for one client, queue its
//! signed action, wait for the agent, then relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use penguindome_protocol::actions::Task;
use penguindome_protocol::shell::{OpenShell, RelayEvent, ShellTask, is_valid_key};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::pump::{self, Ended};
use super::socket::UnixPeer;
use super::{Arrived, ENDPOINT, MAX_MESSAGE, Relay, Waiting, transcript};
use crate::access_rules::{Decision, parse_basic};
use crate::http::{ApiFailure, AppState};
use crate::store::NewAction;

/// Longest an administrator may wait for a client.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `GET /penguindome/v1/shell/admin` on the Unix socket: the peer's Unix
/// user is the operator.
pub async fn admin_unix(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<UnixPeer>,
    ws: WebSocketUpgrade,
) -> Response {
    let operator = peer.user_name();
    upgrade(state, ws, operator)
}

/// `GET /penguindome/v1/shell/admin` over HTTP(S): only where access rules
/// for the `shell` endpoint exist and let this peer in.
pub async fn admin_remote(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.access.has_rules(ENDPOINT) {
        return ApiFailure::new(
            StatusCode::FORBIDDEN,
            "remote_shell_off",
            "remote shells are off on this server: no access rules exist for the `shell` \
             endpoint; use pdome-admin on the server host, or add rules with \
             `pdome-admin access`",
        )
        .into_response();
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    // A root shell on a client is never granted to an address alone, nor
    // to the repository user whose password every site package carries.
    let basic = basic.filter(|(user, _)| user != crate::admin::access::AGENT_REPO_USER);
    let Some((user, password)) = basic else {
        return ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "remote shells need a user and password; see `pdome-admin access grant shell`",
        )
        .into_response();
    };
    let operator = format!("{user} (remote, {})", peer.ip());
    match state
        .access
        .check(ENDPOINT, peer.ip(), Some((user, password)))
        .await
    {
        Decision::Allow => upgrade(state, ws, operator),
        Decision::Busy => ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many password checks are waiting; try again shortly",
        )
        .retry_after(5)
        .into_response(),
        Decision::Challenge => ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this address and these credentials may not open shells; see `pdome-admin access`",
        )
        .into_response(),
    }
}

fn upgrade(state: Arc<AppState>, ws: WebSocketUpgrade, operator: String) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(state, socket, operator))
}

/// One administrator's session, start to end.
async fn serve(state: Arc<AppState>, mut socket: WebSocket, operator: String) {
    let relay = &state.shell;
    // Sealed to the site's secret-keeping key when it has one.
    let transcript_to = match &state.signing.get().sealing {
        Some(policy) => Some(policy.public_key.clone()),
        None => relay.own_certificate.clone(),
    };
    let Some(transcript_to) = transcript_to else {
        let why = "this server cannot record transcripts (see its log), so it opens no shells";
        pump::tell_admin(&mut socket, why).await;
        return;
    };
    let ended = match open(relay, &mut socket, operator, transcript_to).await {
        Ok((opened, operator)) => run(relay, &mut socket, opened, &operator).await,
        Err(reason) => Ended::new(reason),
    };
    pump::tell_admin(&mut socket, &ended.reason).await;
}

/// A session queued for its client.
struct Opened {
    session_id: String,
    action_id: String,
    client_id: String,
    hostname: String,
    expires_at: DateTime<Utc>,
    term: String,
    cols: u16,
    rows: u16,
    arrival: oneshot::Receiver<Arrived>,
    _slot: OwnedSemaphorePermit,
}

/// Reads the request, takes a slot, queues the action; says who asked.
async fn open(
    relay: &Relay,
    socket: &mut WebSocket,
    verified: String,
    transcript_to: String,
) -> Result<(Opened, String), String> {
    let request = read_open(socket).await?;
    let operator = match request.operator.as_deref() {
        Some(named) if verified == "root" && named != "root" => format!("{named} as root"),
        _ => verified,
    };
    let operator = operator.as_str();
    let slot = relay.slot().ok_or_else(|| {
        format!(
            "the server has {} shell sessions open or waiting, its limit ([shell] max_sessions); \
             try again later",
            relay.settings.max_sessions
        )
    })?;
    let client_id = relay
        .store
        .resolve_client(&request.host)
        .await
        .map_err(|e| e.to_string())?;
    let hostname = relay
        .store
        .get_client(&client_id)
        .await
        .map_err(|e| e.to_string())?
        .map(|c| c.summary.hostname)
        .unwrap_or_default();
    let wait = Duration::from_secs(request.wait_secs).clamp(Duration::from_secs(1), MAX_WAIT);
    let created_at = penguindome_protocol::envelope::utc::truncate(Utc::now());
    let expires_at = created_at + chrono::Duration::from_std(wait).expect("bounded wait");
    let session_id = penguindome_protocol::envelope::new_nonce();
    let action_id = penguindome_protocol::envelope::new_nonce();
    let task = Task::Shell(ShellTask {
        session_id: session_id.clone(),
        admin_key: request.admin_key.clone(),
        command: relay.settings.command.clone(),
        term: request.term.clone(),
        cols: request.cols,
        rows: request.rows,
        idle_timeout_secs: relay.settings.idle_timeout.as_secs(),
        max_duration_secs: relay.settings.max_duration.as_secs(),
        transcript_to,
    });
    let (hand_over, arrival) = oneshot::channel();
    let waiting = Waiting {
        client_id: client_id.clone(),
        action_id: action_id.clone(),
        admin_key: request.admin_key,
        hand_over,
    };
    relay.hold(&session_id, waiting, expires_at).await?;
    let queued = relay
        .store
        .add_action(NewAction {
            id: action_id.clone(),
            kind: "shell".into(),
            summary: format!("shell for {operator}"),
            task: serde_json::to_string(&task).expect("tasks serialize"),
            queued_by: operator.to_string(),
            created_at,
            expires_at,
            targets: vec![(client_id.clone(), hostname.clone())],
        })
        .await;
    if let Err(e) = queued {
        relay.forget(&session_id).await;
        return Err(format!("cannot queue the shell request: {e}"));
    }
    let opened = Opened {
        session_id,
        action_id,
        client_id,
        hostname,
        expires_at,
        term: request.term,
        cols: request.cols,
        rows: request.rows,
        arrival,
        _slot: slot,
    };
    Ok((opened, operator.to_string()))
}

/// Reads and checks the administrator's request.
async fn read_open(socket: &mut WebSocket) -> Result<OpenShell, String> {
    let request: OpenShell = super::read_first(socket, "the shell request").await?;
    if !is_valid_key(&request.admin_key) {
        return Err("the shell request's key is not 32 bytes of base64".into());
    }
    if request.term.len() > 64 || !request.term.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the shell request's TERM is not a plain terminal name".into());
    }
    Ok(request)
}

/// Tells the administrator the session is queued, waits for the agent,
/// relays, and records the session on the client's audit trail.
async fn run(relay: &Relay, socket: &mut WebSocket, opened: Opened, operator: &str) -> Ended {
    let queued = RelayEvent::Queued {
        session_id: opened.session_id.clone(),
        action_id: opened.action_id.clone(),
        client_id: opened.client_id.clone(),
        hostname: opened.hostname.clone(),
        expires_at: opened.expires_at,
    };
    if !pump::send_event(socket, &queued).await {
        relay.forget(&opened.session_id).await;
        cancel(relay, &opened.action_id, operator).await;
        return Ended::new("the administrator left".into());
    }
    let agent = match pump::wait_for_agent(relay, socket, opened.arrival, opened.expires_at).await {
        Ok(agent) => agent,
        Err(ended) => {
            relay.forget(&opened.session_id).await;
            cancel(relay, &opened.action_id, operator).await;
            return ended;
        }
    };
    let started = Utc::now();
    let opened_record = serde_json::json!({
        "event": "opened",
        "by": operator,
        "session_id": opened.session_id,
        "action_id": opened.action_id,
        "at": started.to_rfc3339(),
    });
    note(relay, &opened.client_id, &opened.hostname, opened_record).await;
    let keys = agent.transcript_keys.clone();
    let (ended, recorder) = pump::relay(relay, socket, agent).await;
    let (frames, dropped_bytes) = recorder.finish();
    let transcript = transcript::Transcript {
        session_id: opened.session_id.clone(),
        client_id: opened.client_id.clone(),
        hostname: opened.hostname.clone(),
        operator: operator.to_string(),
        started_at: started,
        ended_at: Utc::now(),
        ended_because: ended.reason.clone(),
        term: opened.term.clone(),
        cols: opened.cols,
        rows: opened.rows,
        keys,
        frames,
        dropped_bytes,
    };
    let dir = relay.transcripts.join(&opened.client_id);
    let saved = tokio::task::spawn_blocking(move || transcript::save(&dir, &transcript)).await;
    let transcript_file = match saved {
        Ok(Ok(path)) => Some(path.display().to_string()),
        Ok(Err(e)) => {
            log::error!(
                "cannot keep the transcript of shell session {}: {e:#}",
                opened.session_id
            );
            None
        }
        Err(e) => {
            log::error!(
                "the transcript writer of shell session {} failed: {e}",
                opened.session_id
            );
            None
        }
    };
    let record = serde_json::json!({
        "event": "closed",
        "by": operator,
        "session_id": opened.session_id,
        "action_id": opened.action_id,
        "started_at": started.to_rfc3339(),
        "ended_at": Utc::now().to_rfc3339(),
        "seconds": (Utc::now() - started).num_seconds(),
        "ended_because": ended.reason,
        "transcript": transcript_file,
    });
    note(relay, &opened.client_id, &opened.hostname, record).await;
    ended
}

/// Cancels a shell action no agent will use.
async fn cancel(relay: &Relay, action_id: &str, operator: &str) {
    if let Err(e) = relay
        .store
        .cancel_action(action_id, operator, Utc::now())
        .await
    {
        log::warn!("cannot cancel the lapsed shell action {action_id}: {e}");
    }
}

/// Appends the session to the client's audit trail.
async fn note(relay: &Relay, client_id: &str, hostname: &str, record: serde_json::Value) {
    let change = crate::store::Change {
        field: "shell.session".into(),
        action: crate::store::ChangeAction::Add,
        old: None,
        new: Some(record),
    };
    if let Err(e) = relay
        .store
        .note_on_audit_trail(client_id, hostname, change, Utc::now())
        .await
    {
        log::error!("cannot record a shell session on the audit trail of {client_id}: {e}");
    }
}
