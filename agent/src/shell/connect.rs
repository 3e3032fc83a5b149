//! Reaching the relay: TLS the way the agent's HTTP client trusts the
//! server (the pinned certificate, or the platform's verifier), a
//! WebSocket upgrade, and the signed hello over the relay's challenge.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::shell::{ShellAgentQuery, ShellChallenge, ShellHello, SignedText};
use penguindome_protocol::{Envelope, SecretKey, paths};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Either transport under the WebSocket.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The agent's open, authenticated socket on the relay.
pub type Socket = WebSocketStream<Box<dyn Stream>>;

/// Connects to the relay and proves who this client is.
pub async fn connect(
    config: &AgentConfig,
    key: &SecretKey,
    machine_id: &str,
    hello: &ShellHello,
) -> anyhow::Result<Socket> {
    let mut socket = open(config, Some(&hello.session_id)).await?;
    let challenge = read_challenge(&mut socket).await?;
    let signed = sign_hello(key, machine_id, &challenge, hello)?;
    socket
        .send(Message::Text(serde_json::to_string(&signed)?.into()))
        .await
        .context("cannot send the hello")?;
    Ok(socket)
}

/// Opens the WebSocket to the relay, authenticating nothing yet. The
/// session's id in the query lets any server of the site route the
/// connection to the one holding the session.
pub async fn open(config: &AgentConfig, session_id: Option<&str>) -> anyhow::Result<Socket> {
    let mut url = url::Url::parse(&format!("{}{}", config.base_url(), paths::SHELL_AGENT))
        .context("the server URL in agent.toml is not a URL")?;
    if let Some(id) = session_id {
        url.set_query(Some(&ShellAgentQuery::for_session(id).to_query()));
    }
    let stream = transport(config, &url).await?;
    let mut ws_url = url.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| anyhow::anyhow!("cannot make a WebSocket URL of {url}"))?;
    let limits = WebSocketConfig::default()
        .max_message_size(Some(penguindome_protocol::shell::MAX_FRAME + 1024));
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(ws_url.as_str(), stream, Some(limits))
            .await
            .with_context(|| format!("the relay at {url} refused the WebSocket"))?;
    Ok(socket)
}

/// The hello over `challenge`, signed with the client key.
pub fn sign_hello(
    key: &SecretKey,
    machine_id: &str,
    challenge: &str,
    hello: &ShellHello,
) -> anyhow::Result<SignedText> {
    let envelope = Envelope::seal(key, machine_id, Some(challenge), hello)?;
    Ok(SignedText {
        payload: String::from_utf8(envelope.payload().to_vec())
            .context("the hello is not UTF-8")?,
        signature: envelope.signature_header(),
    })
}

/// Reads the relay's challenge (or why it refused).
pub async fn read_challenge(socket: &mut Socket) -> anyhow::Result<String> {
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), socket.next())
        .await
        .context("the relay sent no challenge")?;
    match first {
        Some(Ok(Message::Text(t))) => {
            let c: ShellChallenge =
                serde_json::from_str(t.as_str()).context("the relay's challenge is malformed")?;
            Ok(c.challenge)
        }
        Some(Ok(Message::Close(Some(f)))) => bail!("the relay refused: {}", f.reason),
        Some(Ok(other)) => bail!("the relay opened with {other:?}, not a challenge"),
        Some(Err(e)) => Err(e).context("cannot read the relay's challenge"),
        None => bail!("the relay closed before its challenge"),
    }
}

/// TCP, and TLS unless the site allows plain HTTP and uses it.
async fn transport(config: &AgentConfig, url: &url::Url) -> anyhow::Result<Box<dyn Stream>> {
    let host = url.host_str().context("the server URL has no host")?;
    let port = url
        .port_or_known_default()
        .context("the server URL has no port")?;
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot reach {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    match url.scheme() {
        "http" if config.allow_plain_http => Ok(Box::new(tcp)),
        "http" => bail!("the server URL is plain HTTP and agent.toml does not allow it"),
        _ => {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .context("the server's host name is not valid for TLS")?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(config)?))
                .connect(name, tcp)
                .await
                .with_context(|| format!("the TLS handshake with {host} failed"))?;
            Ok(Box::new(tls))
        }
    }
}

/// Trusts what agent.toml pins, or the platform's roots.
fn tls_config(config: &AgentConfig) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match &config.ca_certificate {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject as _;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.context("ca_certificate in agent.toml is not PEM")?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(rustls_platform_verifier::Verifier::new(
                provider,
            )?))
            .with_no_client_auth(),
    };
    Ok(config)
}
