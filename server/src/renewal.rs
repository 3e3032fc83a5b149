//! Renewing a self-signed certificate without stranding agents: the new
//! certificate is staged next to the current one (`tls/NAME.next.crt`),
//! announced to agents in every signed `/update` answer, and only then put
//! in service (`pdome-admin tls renew --finish`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use penguindome_protocol::token::certificates_only;

use crate::config::ServerConfig;

/// How long the server keeps the announced certificates before reading the
/// files again: a staged certificate reaches agents within this much.
pub const ANNOUNCE_REFRESH: Duration = Duration::from_secs(5);

/// Where the renewal of the certificate at `path` is staged:
/// `tls/server.crt` → `tls/server.next.crt` (keys likewise).
pub fn staged(path: &Path) -> PathBuf {
    sibling(path, "next")
}

/// Where a renewal keeps the certificate it replaced: `tls/server.previous.crt`.
pub fn previous(path: &Path) -> PathBuf {
    sibling(path, "previous")
}

fn sibling(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

/// Whether a PEM certificate signs itself (agents pin those; CA-signed
/// ones are trusted through their CA and not announced).
pub fn is_self_signed(pem: &[u8]) -> bool {
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    block
        .parse_x509()
        .is_ok_and(|c| c.issuer().as_raw() == c.subject().as_raw())
}

/// The certificate files to announce: every TLS listener's, and its staged
/// renewal's.
fn files_of(config: &ServerConfig) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        let cert = config.config_path(&tls.certificate);
        let next = staged(&cert);
        for f in [cert, next] {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    files
}

/// What `/update` announces, re-read at most every [`ANNOUNCE_REFRESH`].
pub struct Announced {
    files: Mutex<Vec<PathBuf>>,
    cache: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl Announced {
    /// For the listeners of `config`.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            files: Mutex::new(files_of(config)),
            cache: Mutex::new(None),
        }
    }

    /// After a reload: the listeners' files now.
    pub fn set_listeners(&self, config: &ServerConfig) {
        if let Ok(mut f) = self.files.lock() {
            *f = files_of(config);
        }
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
    }

    /// The self-signed certificates to announce, PEM, without duplicates.
    pub fn certificates(&self) -> Arc<Vec<String>> {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(_) => return Arc::default(),
        };
        if let Some((at, certs)) = cache.as_ref()
            && at.elapsed() < ANNOUNCE_REFRESH
        {
            return certs.clone();
        }
        let files = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        let mut certs: Vec<String> = Vec::new();
        for f in files {
            // A missing staged file is the usual case; a listener's own
            // file was checked when it started.
            // Certificates only: a combined certificate-and-key file must
            // not hand its key to every agent.
            if let Ok(text) = std::fs::read_to_string(&f)
                && is_self_signed(text.as_bytes())
                && let Some(pem) = certificates_only(&text)
                && !certs.contains(&pem)
            {
                certs.push(pem);
            }
        }
        let certs = Arc::new(certs);
        *cache = Some((Instant::now(), certs.clone()));
        certs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_sit_next_to_the_current_ones() {
        assert_eq!(
            staged(Path::new("/etc/pd/tls/server.crt")),
            Path::new("/etc/pd/tls/server.next.crt")
        );
        assert_eq!(staged(Path::new("tls/key")), Path::new("tls/key.next"));
    }

    #[test]
    fn only_self_signed_certificates_are_announced() {
        let own = crate::tls::self_signed(&["a.example".into()]).unwrap();
        assert!(is_self_signed(own.cert_pem.as_bytes()));
        assert!(!is_self_signed(b"not a certificate"));
    }
}
