//! HTTPS to the server: the site's pinned certificate (or the system's
//! roots), timeouts, and signed request bodies.

use std::sync::Arc;

use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::wire::ApiError;
use penguindome_protocol::{Envelope, SIGNATURE_HEADER};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Largest response body read.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// No answer: DNS, connection, TLS or timeout.
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server's certificate does not chain to the pinned one (or the
    /// system's roots): an interception, or a broken certificate rollout.
    #[error(
        "refused the certificate of {url}: {message}; someone may be intercepting this \
         machine's traffic, or the server's certificate changed without agent.toml's \
         ca_certificate following it"
    )]
    Untrusted {
        /// The URL tried.
        url: String,
        /// What was wrong with the certificate.
        message: String,
    },
}

/// The certificate error behind a failed request, if that is what it was.
fn refused_certificate(e: &ureq::Error) -> Option<String> {
    // ureq hands handshake failures over as its Io variant (rustls says
    // no through the stream) or as Rustls, without naming them as sources.
    let start: &(dyn std::error::Error + 'static) = match e {
        ureq::Error::Io(io) => io,
        ureq::Error::Rustls(tls) => tls,
        other => other,
    };
    let mut current = Some(start);
    while let Some(err) = current {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(c)) = tls {
            return Some(format!("invalid peer certificate: {c:?}"));
        }
        current = err.source();
    }
    None
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The signature header, if any.
    pub signature: Option<Vec<u8>>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The server's error code and message, when the body is an API error.
    pub fn api_error(&self) -> Option<ApiError> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A one-line description of a failed reply.
    pub fn describe(&self) -> String {
        match self.api_error() {
            Some(e) => format!("HTTP {} {}: {}", self.status, e.code, e.error),
            None => format!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        }
    }
}

/// The HTTP client.
pub struct Transport {
    agent: ureq::Agent,
    base: String,
}

impl Transport {
    /// Builds a client for the configured server.
    pub fn new(config: &AgentConfig) -> Result<Self, TransportError> {
        let roots = match &config.ca_certificate {
            Some(pem) => {
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem.as_bytes())
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        TransportError::Config(format!(
                            "ca_certificate in agent.toml is not PEM: {e}"
                        ))
                    })?;
                if certs.is_empty() {
                    return Err(TransportError::Config(
                        "ca_certificate in agent.toml holds no certificate".into(),
                    ));
                }
                RootCerts::Specific(Arc::new(certs))
            }
            None => RootCerts::PlatformVerifier,
        };
        let agent = ureq::Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .https_only(!config.allow_plain_http)
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .user_agent(format!("penguindome-agent/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            base: config.base_url().to_string(),
        })
    }

    /// Posts a signed envelope to `path` and reads the answer.
    pub fn post(&self, path: &str, envelope: &Envelope) -> Result<Reply, TransportError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, envelope.signature_header())
            .send(envelope.payload());
        Self::read(&url, response)
    }

    /// Sends an unauthenticated GET (health, downloads).
    pub fn get(&self, path: &str) -> Result<Reply, TransportError> {
        let url = format!("{}{path}", self.base);
        let response = self.agent.get(&url).call();
        Self::read(&url, response)
    }

    fn read(
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, TransportError> {
        let unreachable = |e: ureq::Error| match refused_certificate(&e) {
            Some(message) => TransportError::Untrusted {
                url: url.to_string(),
                message,
            },
            None => TransportError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            },
        };
        let mut response = response.map_err(unreachable)?;
        let status = response.status().as_u16();
        let signature = response
            .headers()
            .get(SIGNATURE_HEADER)
            .map(|v| v.as_bytes().to_vec());
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(unreachable)?;
        Ok(Reply {
            status,
            signature,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_told_apart_from_an_unreachable_server() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.clone());
        let found = refused_certificate(&ureq::Error::Io(io)).unwrap();
        assert!(found.contains("UnknownIssuer"), "{found}");
        assert!(refused_certificate(&ureq::Error::Rustls(refused)).is_some());
        let down = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(refused_certificate(&ureq::Error::Io(down)), None);
    }
}
