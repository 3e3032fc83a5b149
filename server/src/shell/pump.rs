//! Waiting for the agent and copying sealed frames between the two ends
//! until one leaves, the session idles or runs out, or the server stops.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use chrono::{DateTime, Utc};
use penguindome_protocol::shell::RelayEvent;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};

use super::transcript::Recorder;
use super::{Arrived, Relay};

/// How a session ended, for the administrator and the audit trail.
#[derive(Debug)]
pub struct Ended {
    /// For people.
    pub reason: String,
}

impl Ended {
    /// Ended for `reason`.
    pub fn new(reason: String) -> Self {
        Self { reason }
    }
}

/// Sends one event; false when the administrator is gone.
pub async fn send_event(socket: &mut WebSocket, event: &RelayEvent) -> bool {
    let text = serde_json::to_string(event).expect("events serialize");
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// Tells the administrator why the session ended, and closes.
pub async fn tell_admin(socket: &mut WebSocket, reason: &str) {
    let ended = RelayEvent::Ended {
        reason: reason.to_string(),
    };
    if send_event(socket, &ended).await {
        let _ = socket.send(Message::Close(None)).await;
    }
}

/// Waits for the agent until `expires_at`, while watching that the
/// administrator stays and the server keeps running.
pub async fn wait_for_agent(
    relay: &Relay,
    admin: &mut WebSocket,
    arrival: oneshot::Receiver<Arrived>,
    expires_at: DateTime<Utc>,
) -> Result<Arrived, Ended> {
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    let mut stopping = relay.stopping.subscribe();
    let mut keepalive = keepalive(Duration::from_secs(90));
    tokio::pin!(arrival);
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if !ping(admin).await {
                    return Err(Ended::new("the administrator left before the client came".into()));
                }
            }
            arrived = &mut arrival => {
                return arrived.map_err(|_| Ended::new("the relay dropped the session".into()));
            }
            () = tokio::time::sleep(left) => {
                return Err(Ended::new(format!(
                    "the client did not come within {}; the request is cancelled \
                     (is it online and its timer running?)",
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                )));
            }
            () = stopped(&mut stopping) => {
                return Err(Ended::new("the server is shutting down; try again once it is back".into()));
            }
            message = admin.recv() => match message {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return Err(Ended::new("the administrator left before the client came".into())),
            },
        }
    }
}

/// Copies frames both ways until the session ends; returns why, and what
/// passed.
pub async fn relay(relay: &Relay, admin: &mut WebSocket, arrived: Arrived) -> (Ended, Recorder) {
    let Arrived {
        socket: mut agent,
        hello,
        certificate,
        ..
    } = arrived;
    let mut recorder = Recorder::default();
    if !send_event(admin, &RelayEvent::Attached { hello, certificate }).await {
        close_agent(&mut agent, "the administrator left").await;
        return (Ended::new("the administrator left".into()), recorder);
    }
    let ended = copy(relay, admin, &mut agent, &mut recorder).await;
    close_agent(&mut agent, &ended.reason).await;
    (ended, recorder)
}

/// The copying loop itself.
async fn copy(
    relay: &Relay,
    admin: &mut WebSocket,
    agent: &mut WebSocket,
    recorder: &mut Recorder,
) -> Ended {
    let idle = relay.settings.idle_timeout;
    let deadline = Instant::now() + relay.settings.max_duration;
    let mut last = Instant::now();
    let mut stopping = relay.stopping.subscribe();
    let mut keepalive = keepalive(idle);
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if !ping(admin).await {
                    return Ended::new("the administrator's side could not be reached".into());
                }
                if !ping(agent).await {
                    return Ended::new("the client could not be reached".into());
                }
            }
            () = sleep_until(last + idle) => {
                return Ended::new(format!(
                    "the session was idle for {}",
                    humantime::format_duration(idle)
                ));
            }
            () = sleep_until(deadline) => {
                return Ended::new(format!(
                    "the session reached its maximum duration of {}",
                    humantime::format_duration(relay.settings.max_duration)
                ));
            }
            () = stopped(&mut stopping) => {
                return Ended::new("the server is shutting down".into());
            }
            message = admin.recv() => match forward(message, agent, recorder, 'i').await {
                Ok(true) => last = Instant::now(),
                Ok(false) => {}
                Err(why) => return Ended::new(format!("the administrator's side {why}")),
            },
            message = agent.recv() => match forward(message, admin, recorder, 'o').await {
                Ok(true) => last = Instant::now(),
                Ok(false) => {}
                Err(why) => return Ended::new(format!("the client {why}")),
            },
        }
    }
}

/// Pings both ends well within the idle timeout (at most every 30 s), so
/// that NATs and proxies keep a quiet session's connections; pings and
/// their answers are not activity.
fn keepalive(idle: Duration) -> tokio::time::Interval {
    let every = (idle / 3).min(Duration::from_secs(30));
    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Sends a ping; false when the peer is gone.
async fn ping(socket: &mut WebSocket) -> bool {
    socket.send(Message::Ping(Default::default())).await.is_ok()
}

/// Resolves once the server begins to stop.
pub(super) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Passes one sealed frame on (true: the session was active); pings and
/// pongs pass nothing; anything else ends the session.
async fn forward(
    message: Option<Result<Message, axum::Error>>,
    to: &mut WebSocket,
    recorder: &mut Recorder,
    dir: char,
) -> Result<bool, String> {
    match message {
        Some(Ok(Message::Binary(frame))) => {
            recorder.record(dir, &frame);
            to.send(Message::Binary(frame))
                .await
                .map(|()| true)
                .map_err(|_| "could not be reached".to_string())
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(false),
        Some(Ok(Message::Close(_))) | None => Err("closed the session".into()),
        Some(Ok(Message::Text(_))) => Err("sent an unexpected text message".into()),
        Some(Err(e)) => Err(format!("broke off ({e})")),
    }
}

/// Closes the agent's socket with the reason.
async fn close_agent(agent: &mut WebSocket, reason: &str) {
    let _ = agent
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: close_reason(reason).into(),
        })))
        .await;
}

/// A close frame's reason fits in 123 bytes.
pub fn close_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > 120 {
            break;
        }
        out.push(c);
    }
    out
}
