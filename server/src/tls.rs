//! TLS: the rustls configuration of a listener, the self-signed
//! certificate `pdome-admin init` makes when the admin brings none, and
//! the client side for reaching another server.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a generated certificate is valid. Agents pin it, so renewing it
/// means shipping a new agent.toml; ten years keeps that a planned event.
pub const SELF_SIGNED_VALIDITY_DAYS: i64 = 3650;

/// Builds the rustls server configuration from PEM files.
pub fn server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read the TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a PEM private key from {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the key {} does not match the certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A generated certificate and key, PEM.
pub struct SelfSigned {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// Makes a self-signed certificate for the given host names and addresses.
pub fn self_signed(names: &[String]) -> anyhow::Result<SelfSigned> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("cannot use these names in a certificate")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "penguindome".into()),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "PenguinDome server");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().context("cannot generate a TLS key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the TLS certificate")?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A TLS client configuration trusting `ca` (PEM: a CA or a self-signed
/// certificate) when given, else the system's roots.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("{} is not PEM", path.display()))?)?;
            }
        }
        None => {
            // Unreadable system certificates leave fewer roots, not none:
            // the handshake then says which peer could not be verified.
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Either transport under a WebSocket: a Unix socket, TCP or TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The connection to another server at `url` (http:// or https://): TCP to
/// its host and port, then, for https://, TLS with the configuration
/// `tls` makes (asked for only then). Each step may take `within`; a
/// failed handshake names `ca_hint`, where the trusted certificate comes
/// from.
pub async fn connect(
    url: &url::Url,
    tls: impl FnOnce() -> anyhow::Result<Arc<rustls::ClientConfig>>,
    within: std::time::Duration,
    ca_hint: &str,
) -> anyhow::Result<Box<dyn Stream>> {
    use tokio::time::timeout;
    let host = url
        .host_str()
        .with_context(|| format!("{url} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url
        .port_or_known_default()
        .with_context(|| format!("{url} has no port"))?;
    let tcp = timeout(
        within,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .with_context(|| format!("connecting to {host}:{port} timed out"))?
    .with_context(|| format!("cannot reach {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    if url.scheme() != "https" {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .with_context(|| format!("{host} is not a valid name for TLS"))?;
    let handshake = tokio_rustls::TlsConnector::from(tls()?).connect(name, tcp);
    let stream = timeout(within, handshake)
        .await
        .with_context(|| format!("the TLS handshake with {host} timed out"))?
        .with_context(|| format!("the TLS handshake with {host} failed ({ca_hint}?)"))?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads() {
        let dir = tempfile::tempdir().unwrap();
        let s = self_signed(&["127.0.0.1".into(), "pd.example.com".into()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), &s.cert_pem).unwrap();
        std::fs::write(dir.path().join("k.pem"), &s.key_pem).unwrap();
        server_config(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        let other = self_signed(&["x".into()]).unwrap();
        std::fs::write(dir.path().join("k2.pem"), &other.key_pem).unwrap();
        let e = server_config(&dir.path().join("c.pem"), &dir.path().join("k2.pem")).unwrap_err();
        assert!(format!("{e:#}").contains("does not match"), "{e:#}");
        let e =
            server_config(&dir.path().join("missing.pem"), &dir.path().join("k.pem")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
    }
}
