//! A recording proxy between an agent and the site's server: it passes
//! every request through, keeps each `/update` answer, and can hand the
//! agent something else instead (a re-signed answer with other actions, a
//! flipped byte, an old recording), as a compromised network or server
//! would.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use penguindome_agent::transport::Transport;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::wire::paths;
use penguindome_protocol::{Envelope, SIGNATURE_HEADER};

/// An `/update` answer as it travels: the payload and its signature header.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The signed JSON payload.
    pub body: Vec<u8>,
    /// The signature header's value.
    pub signature: String,
}

/// A request as the agent sent it: its path and body.
pub type SentRequest = (String, Vec<u8>);

/// What the proxy hands the agent instead of the server's answer.
pub type Rewrite = Box<dyn Fn(&Answer) -> Answer + Send + Sync>;

/// A running proxy on loopback.
pub struct Proxy {
    /// The URL agents use instead of the server's.
    pub url: String,
    answers: Arc<Mutex<Vec<Answer>>>,
    requests: Arc<Mutex<Vec<SentRequest>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    _runtime: tokio::runtime::Runtime,
}

struct Shared {
    transport: Transport,
    answers: Arc<Mutex<Vec<Answer>>>,
    requests: Arc<Mutex<Vec<SentRequest>>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
}

impl Proxy {
    /// Starts a proxy to the server `config` names, serving TLS with the
    /// site's certificate and key from `tls_dir` (so agents pinning the
    /// site's certificate trust it).
    pub fn start(config: &AgentConfig, tls_dir: &Path) -> Self {
        let port = crate::free_port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            transport: Transport::new(config).unwrap(),
            answers: Arc::default(),
            requests: Arc::default(),
            rewrite: Arc::default(),
        });
        let acceptor = acceptor(tls_dir);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let (answers, rewrite) = (shared.answers.clone(), shared.rewrite.clone());
        let requests = shared.requests.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| forward(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("https://127.0.0.1:{port}"),
            answers,
            requests,
            rewrite,
            _runtime: runtime,
        }
    }

    /// From now on, hands the agent `f(answer)` instead of each answer.
    pub fn rewrite(&self, f: impl Fn(&Answer) -> Answer + Send + Sync + 'static) {
        *self.rewrite.lock().unwrap() = Some(Box::new(f));
    }

    /// Passes answers through unchanged again.
    pub fn pass(&self) {
        *self.rewrite.lock().unwrap() = None;
    }

    /// Every request's path and body as the agent sent them, oldest first.
    pub fn requests(&self) -> Vec<SentRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Every `/update` answer the server gave, oldest first.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }
}

fn acceptor(tls_dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir.join("server.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn forward(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    shared
        .requests
        .lock()
        .unwrap()
        .push((path.clone(), body.clone()));
    let upstream = shared.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let envelope = Envelope::from_wire(body, signature.as_deref()).ok()?;
        upstream
            .transport
            .post(&path, &envelope)
            .ok()
            .map(|r| (path, r))
    })
    .await
    .ok()
    .flatten();
    let Some((path, reply)) = reply else {
        return Ok(Response::builder()
            .status(502)
            .body(Full::new(Bytes::new()))
            .unwrap());
    };
    let mut answer = Answer {
        body: reply.body,
        signature: reply
            .signature
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default(),
    };
    if path == paths::UPDATE && reply.status == 200 {
        shared.answers.lock().unwrap().push(answer.clone());
        if let Some(f) = shared.rewrite.lock().unwrap().as_ref() {
            answer = f(&answer);
        }
    }
    let mut response = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json");
    if !answer.signature.is_empty() {
        response = response.header(SIGNATURE_HEADER, answer.signature);
    }
    Ok(response.body(Full::new(Bytes::from(answer.body))).unwrap())
}
