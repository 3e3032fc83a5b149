//! Reaching a server's relay over HTTPS, for administrators off the server
//! host: TLS trusting the given certificate (or the system's roots), and
//! HTTP Basic credentials the server checks against its access rules for
//! the `shell` endpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use penguindome_protocol::paths;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Socket;

/// Longest each step of reaching the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `url`'s relay as `user` with `password`.
pub async fn connect(
    url: &str,
    ca: Option<&Path>,
    user: &str,
    password: &str,
) -> anyhow::Result<Socket> {
    let base = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if base.scheme() != "https" {
        bail!("remote shells go over https:// only; {url} is not");
    }
    let tls = || Ok(Arc::new(crate::tls::client_config(ca)?));
    let stream = crate::tls::connect(&base, tls, CONNECT_TIMEOUT, "is --ca right").await?;
    let mut ws_url = base.join(paths::SHELL_ADMIN)?;
    ws_url
        .set_scheme("wss")
        .map_err(|()| anyhow::anyhow!("cannot make a WebSocket URL of {url}"))?;
    let mut request = ws_url.as_str().into_client_request()?;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Basic {credentials}"))?,
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let message = serde_json::from_str::<penguindome_protocol::wire::ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| body.to_string());
            bail!(
                "the server refused the shell ({}): {message}",
                response.status()
            )
        }
        Err(e) => Err(e).context("the server refused the shell connection"),
    }
}
