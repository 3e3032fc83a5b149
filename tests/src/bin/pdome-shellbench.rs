//! pdome-shellbench: the remote shell relay under load. Simulated agents
//! (enrolled clients that sign the relay's challenge and echo what they
//! are sent, sealed) meet simulated administrators on the server's Unix
//! socket; it prints the keystroke round trip through the relay (seal,
//! relay, open, echo, seal, relay, open) and how many sessions it held.
//! The server's memory is read by scripts/bench while they are open.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_agent::shell::connect;
use penguindome_agent::transport::Transport;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::shell::{
    Ephemeral, Frame, OpenShell, Opener, RelayEvent, Sealer, SessionKeys, ShellHello, Side,
};
use penguindome_protocol::wire::paths;
use penguindome_tests::SimClient;
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// The site's agent.toml (server URL, pinned certificate, credential).
    #[arg(long)]
    agent_config: PathBuf,
    /// The server's shell socket.
    #[arg(long)]
    socket: PathBuf,
    /// Sessions held open at once.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Keystrokes timed on the first session.
    #[arg(long, default_value_t = 2000)]
    keystrokes: usize,
    /// Seconds to hold every session open at the end (for memory readings).
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
}

type Admin = WebSocketStream<UnixStream>;

/// One open session seen from the administrator's side.
struct Session {
    admin: Admin,
    sealer: Sealer,
    opener: Opener,
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = AgentConfig::load(&args.agent_config)?;
    let transport = Transport::new(&config)?;
    let clients: Vec<SimClient> = (0..args.sessions)
        .map(|i| SimClient::enroll(&config, &transport, &format!("shell-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let mut sessions = Vec::new();
    let started = Instant::now();
    for client in clients {
        sessions.push(open(&args, &config, client).await?);
    }
    println!(
        "{} sessions opened in {:.2} s",
        sessions.len(),
        started.elapsed().as_secs_f64()
    );
    let mut times = round_trips(&mut sessions[0], args.keystrokes).await?;
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "keystroke round trip through the relay ({} keystrokes): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        times.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
    for s in &mut sessions[1..] {
        round_trips(s, 10).await?;
    }
    println!("holding {} sessions open", sessions.len());
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    for mut s in sessions {
        let _ = s
            .admin
            .send(Message::Binary(s.sealer.seal(&Frame::Close).into()))
            .await;
        let _ = s.agent.await;
    }
    Ok(())
}

/// Opens a session for `client`, with a simulated agent on the other end.
async fn open(args: &Args, config: &AgentConfig, client: SimClient) -> anyhow::Result<Session> {
    let stream = UnixStream::connect(&args.socket)
        .await
        .context("the shell socket")?;
    let (mut admin, _) =
        tokio_tungstenite::client_async(format!("ws://localhost{}", paths::SHELL_ADMIN), stream)
            .await?;
    let ephemeral = Ephemeral::new();
    let admin_key = ephemeral.public_b64();
    let request = OpenShell {
        host: client.id.clone(),
        admin_key: admin_key.clone(),
        wait_secs: 60,
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        operator: Some("bench".into()),
    };
    admin
        .send(Message::Text(serde_json::to_string(&request)?.into()))
        .await?;
    let RelayEvent::Queued {
        session_id,
        action_id,
        ..
    } = event(&mut admin).await?
    else {
        bail!("the relay did not queue the session");
    };
    let agent = tokio::spawn(echo_agent(
        config.clone(),
        client,
        ShellHello {
            session_id: session_id.clone(),
            action_id,
            admin_key,
            agent_key: String::new(),
            transcript_keys: String::new(),
        },
    ));
    let RelayEvent::Attached { hello, .. } = event(&mut admin).await? else {
        bail!("the agent did not attach");
    };
    let body: serde_json::Value = serde_json::from_str(&hello.payload)?;
    let agent_key = body["body"]["agent_key"].as_str().context("no agent key")?;
    let SessionKeys { sealer, opener, .. } =
        ephemeral.agree(Side::Admin, agent_key, &session_id)?;
    Ok(Session {
        admin,
        sealer,
        opener,
        agent,
    })
}

async fn event(admin: &mut Admin) -> anyhow::Result<RelayEvent> {
    match admin.next().await {
        Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(t.as_str())?),
        other => bail!("the relay said {other:?}"),
    }
}

/// Sends `n` one-byte keystrokes, each after the previous one's echo.
async fn round_trips(s: &mut Session, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let key = vec![b'a' + (i % 26) as u8];
        let start = Instant::now();
        s.admin
            .send(Message::Binary(
                s.sealer.seal(&Frame::Data(key.clone())).into(),
            ))
            .await?;
        match s.admin.next().await {
            Some(Ok(Message::Binary(wire))) => {
                let echoed = s.opener.open(&wire)?;
                anyhow::ensure!(echoed == Frame::Data(key), "the echo differs");
            }
            other => bail!("no echo: {other:?}"),
        }
        times.push(start.elapsed());
    }
    Ok(times)
}

/// An agent that authenticates like the real one and echoes every byte.
async fn echo_agent(
    config: AgentConfig,
    client: SimClient,
    mut hello: ShellHello,
) -> anyhow::Result<()> {
    let ephemeral = Ephemeral::new();
    hello.agent_key = ephemeral.public_b64();
    let SessionKeys {
        mut sealer,
        mut opener,
        ..
    } = ephemeral.agree(Side::Agent, &hello.admin_key, &hello.session_id)?;
    let mut socket = connect::connect(&config, &client.key, &client.id, &hello).await?;
    while let Some(message) = socket.next().await {
        let Message::Binary(wire) = message? else {
            break;
        };
        match opener.open(&wire)? {
            Frame::Data(d) => {
                socket
                    .send(Message::Binary(sealer.seal(&Frame::Data(d)).into()))
                    .await?
            }
            Frame::Close => break,
            _ => {}
        }
    }
    Ok(())
}
