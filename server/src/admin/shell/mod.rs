//! `pdome-admin shell HOST`: a root shell on a client, through the
//! server's relay, sealed end to end. The request waits for the client's
//! next check-in (a countdown shows how long it may still wait); then the
//! terminal goes raw until the remote shell exits (its status becomes ours)
//! or `~.` ends the session.

mod cast;
mod escape;
pub mod log;
mod remote;
mod terminal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_protocol::shell::{
    Ephemeral, Frame, OpenShell, Opener, RelayEvent, Sealer, SessionKeys, ShellHello, Side,
    SignedText,
};
use penguindome_protocol::{Envelope, Freshness, PublicKey, paths};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::config::ServerConfig;
use escape::{Escapes, Typed};

/// The status pdome-admin exits with when the session ended without the
/// remote shell's own (as ssh does).
pub const NO_STATUS: i32 = 255;

/// `pdome-admin shell`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ShellArgs {
    /// Past sessions instead of a new one.
    #[command(subcommand)]
    pub command: Option<ShellCommand>,
    /// The client: a host name or client id.
    #[arg(required = true)]
    pub host: Option<String>,
    /// How long the request waits for the client to check in.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// The server's shell socket (default: `[shell] socket` of server.toml).
    #[arg(long, conflicts_with = "server")]
    pub socket: Option<PathBuf>,
    /// Reach a server on another host over HTTPS instead (its access rules
    /// must grant you the `shell` endpoint).
    #[arg(long, requires = "user")]
    pub server: Option<String>,
    /// Your user in the server's access rules (the password is asked).
    #[arg(long)]
    pub user: Option<String>,
    /// The certificate (PEM) the remote server's must chain to; default:
    /// the system's roots.
    #[arg(long, requires = "server")]
    pub ca: Option<PathBuf>,
}

/// `pdome-admin shell log`.
#[derive(Debug, clap::Subcommand)]
pub enum ShellCommand {
    /// A client's sessions; with --session, one replayed as asciicast v2
    /// (save it and run `asciinema play FILE`).
    Log {
        /// The client: a host name or client id.
        host: String,
        /// The session to replay.
        #[arg(long)]
        session: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// A file holding shares (repeat), for transcripts sealed to the
        /// secret-keeping key; `-` reads standard input.
        #[arg(long = "share")]
        shares: Vec<PathBuf>,
        /// Your OpenPGP secret key, for shares encrypted to you.
        #[arg(long)]
        identity: Option<PathBuf>,
    },
}

use crate::tls::Stream;

type Socket = WebSocketStream<Box<dyn Stream>>;

/// Runs a session; returns the status to exit with.
pub async fn run(config_dir: &Path, args: &ShellArgs) -> anyhow::Result<i32> {
    let mut socket = match (&args.server, &args.user) {
        (Some(url), Some(user)) => {
            let password =
                super::prompt::Prompter::stdio().secret(&format!("Password of {user} on {url}"))?;
            remote::connect(url, args.ca.as_deref(), user, &password).await?
        }
        _ => {
            let path = match &args.socket {
                Some(p) => p.clone(),
                None => ServerConfig::load(config_dir)?.shell_socket(),
            };
            connect(&path).await?
        }
    };
    let ephemeral = Ephemeral::new();
    let admin_key = ephemeral.public_b64();
    let (cols, rows) = terminal::size();
    let host = args.host.clone().context("name the client")?;
    let open = OpenShell {
        host,
        admin_key: admin_key.clone(),
        wait_secs: args.wait.as_secs().max(1),
        term: std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        cols,
        rows,
        operator: Some(super::account::operator()),
    };
    send_json(&mut socket, &open).await?;
    let queued = wait_queued(&mut socket).await?;
    let (hello, certificate) = wait_attached(&mut socket, &queued).await?;
    let agent_key = check_hello(&hello, &certificate, &queued, &admin_key)?;
    let keys = ephemeral
        .agree(Side::Admin, &agent_key, &queued.session_id)
        .context("cannot agree on a session key with the client")?;
    // Raw first, so nothing typed from here on is echoed locally.
    let raw = terminal::RawMode::enter()?;
    eprint!(
        "\rConnected to {}. `~.` at the start of a line ends the session.\x1b[K\r\n",
        queued.hostname
    );
    let (status, reason) = session(socket, keys).await;
    drop(raw);
    let reason = match status {
        Some(code) => format!("the remote shell exited with status {code}"),
        None => reason,
    };
    eprintln!("\rConnection to {} closed: {reason}.", queued.hostname);
    Ok(status.unwrap_or(NO_STATUS))
}

async fn connect(path: &Path) -> anyhow::Result<Socket> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the server's shell socket {}: is penguindome-server running on this \
             host, and are you root or in its [shell] socket_group?",
            path.display()
        )
    })?;
    let url = format!("ws://localhost{}", paths::SHELL_ADMIN);
    let stream: Box<dyn Stream> = Box::new(stream);
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .context("the server refused the shell connection")?;
    Ok(socket)
}

async fn send_json<T: serde::Serialize>(socket: &mut Socket, value: &T) -> anyhow::Result<()> {
    socket
        .send(Message::Text(serde_json::to_string(value)?.into()))
        .await
        .context("the server closed the shell connection")
}

/// The relay's next event, or an error saying why there is none.
async fn next_event(socket: &mut Socket) -> anyhow::Result<RelayEvent> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).context("the relay's event is malformed");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => bail!("the relay sent {other:?} before the session began"),
            Some(Err(e)) => return Err(e).context("the connection to the server broke"),
            None => bail!("the server closed the connection"),
        }
    }
}

/// What the relay says once the request is queued.
struct Queued {
    session_id: String,
    action_id: String,
    client_id: String,
    hostname: String,
    expires_at: DateTime<Utc>,
}

async fn wait_queued(socket: &mut Socket) -> anyhow::Result<Queued> {
    match next_event(socket).await? {
        RelayEvent::Queued {
            session_id,
            action_id,
            client_id,
            hostname,
            expires_at,
        } => Ok(Queued {
            session_id,
            action_id,
            client_id,
            hostname,
            expires_at,
        }),
        RelayEvent::Ended { reason } => bail!("{reason}"),
        RelayEvent::Attached { .. } => bail!("the relay attached a client before queueing"),
    }
}

/// Waits for the agent, showing how long the request may still wait.
async fn wait_attached(socket: &mut Socket, q: &Queued) -> anyhow::Result<(SignedText, String)> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let left = (q.expires_at - Utc::now()).num_seconds().max(0);
                eprint!(
                    "\rWaiting for {} ({}) to check in: {}:{:02} left\x1b[K",
                    q.hostname, q.client_id, left / 60, left % 60
                );
            }
            event = next_event(socket) => {
                eprint!("\r\x1b[K");
                return match event? {
                    RelayEvent::Attached { hello, certificate } => Ok((hello, certificate)),
                    RelayEvent::Ended { reason } => bail!("{reason}"),
                    RelayEvent::Queued { .. } => bail!("the relay queued the session twice"),
                };
            }
        }
    }
}

/// Checks the agent's hello: signed by the client's key, for this session
/// and this administrator's key. Returns the agent's key.
fn check_hello(
    hello: &SignedText,
    certificate: &str,
    q: &Queued,
    admin_key: &str,
) -> anyhow::Result<String> {
    let key = PublicKey::from_bytes(certificate.as_bytes())
        .context("the relay sent an unreadable client certificate")?;
    let envelope = Envelope::from_wire(
        hello.payload.as_bytes().to_vec(),
        Some(hello.signature.as_bytes()),
    )?;
    let signed = envelope
        .open::<ShellHello>(
            &key,
            &q.client_id,
            &Freshness::now(Duration::from_secs(900)),
        )
        .context("the client's hello does not verify")?;
    let body = signed.body;
    if body.session_id != q.session_id
        || body.action_id != q.action_id
        || body.admin_key != admin_key
    {
        bail!("the client's hello is for another session; refusing it");
    }
    Ok(body.agent_key)
}

/// Copies the terminal to the session and back until it ends; returns the
/// remote status, if the shell exited, and why it ended.
async fn session(socket: Socket, keys: SessionKeys) -> (Option<i32>, String) {
    let SessionKeys {
        mut sealer,
        mut opener,
        ..
    } = keys;
    let (mut tx, mut rx) = socket.split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut escapes = Escapes::default();
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    let mut buf = vec![0u8; 4096];
    let mut status = None;
    loop {
        tokio::select! {
            read = stdin.read(&mut buf) => {
                let typed = match read {
                    Ok(n) if n > 0 => escapes.filter(&buf[..n]),
                    _ => Typed::End(Vec::new()),
                };
                let (bytes, end) = match typed {
                    Typed::Send(b) => (b, false),
                    Typed::End(b) => (b, true),
                };
                if !bytes.is_empty() && send(&mut tx, &mut sealer, &Frame::Data(bytes)).await.is_err() {
                    return (status, "the server went away".into());
                }
                if end {
                    let _ = send(&mut tx, &mut sealer, &Frame::Close).await;
                    let _ = tx.close().await;
                    return (status, "ended with ~.".into());
                }
            }
            _ = next_signal(&mut resized) => {
                let (cols, rows) = terminal::size();
                let _ = send(&mut tx, &mut sealer, &Frame::Resize { cols, rows }).await;
            }
            message = rx.next() => match receive(message, &mut opener, &mut stdout).await {
                Received::More => {}
                Received::Status(code) => status = Some(code),
                Received::End(reason) => return (status, reason),
            },
        }
    }
}

async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn send(
    tx: &mut futures_util::stream::SplitSink<Socket, Message>,
    sealer: &mut Sealer,
    frame: &Frame,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    tx.send(Message::Binary(sealer.seal(frame).into())).await
}

/// What one message from the relay meant.
enum Received {
    More,
    Status(i32),
    End(String),
}

async fn receive(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    opener: &mut Opener,
    stdout: &mut tokio::io::Stdout,
) -> Received {
    match message {
        Some(Ok(Message::Binary(wire))) => match opener.open(&wire) {
            Ok(Frame::Data(d)) => {
                let _ = stdout.write_all(&d).await;
                let _ = stdout.flush().await;
                Received::More
            }
            Ok(Frame::Exit(code)) => Received::Status(code),
            Ok(Frame::Close) => Received::End("the client ended the session".into()),
            Ok(Frame::Resize { .. }) => Received::End("the client sent a window size".into()),
            Err(e) => Received::End(e.to_string()),
        },
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<RelayEvent>(t.as_str()) {
            Ok(RelayEvent::Ended { reason }) => Received::End(reason),
            _ => Received::End("the relay sent something unexpected".into()),
        },
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Received::More,
        Some(Ok(_)) | None => Received::End("the server closed the connection".into()),
        Some(Err(e)) => Received::End(format!("the connection to the server broke: {e}")),
    }
}
