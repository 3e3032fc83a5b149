//! Certificates the server announced in its signed `/update` answers. An
//! agent that pins agent.toml's certificate trusts these as well, so when
//! the administrator renews the server's self-signed certificate the agent
//! already trusts the new one before the old one is retired.

use std::path::{Path, PathBuf};

use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::files;
use penguindome_protocol::token::certificates_only;

/// The file, in the state directory: public certificates, PEM.
const FILE: &str = "server-certificates.pem";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// `config` with the announced certificates added to the pinned one; a
/// configuration that trusts the platform's CAs stays as it is.
pub fn with_announced(config: &AgentConfig, state_dir: &Path) -> AgentConfig {
    let mut config = config.clone();
    let (Some(pinned), Ok(announced)) = (
        config.ca_certificate.as_mut(),
        std::fs::read_to_string(path(state_dir)),
    ) else {
        return config;
    };
    if !pinned.ends_with('\n') {
        pinned.push('\n');
    }
    pinned.push_str(&announced);
    config
}

/// Keeps the server's latest list, which came in a verified answer. An
/// empty list (a server that announces none) leaves the file alone.
/// Returns whether it changed.
pub fn remember(state_dir: &Path, pems: &[String]) -> Result<bool, String> {
    if pems.is_empty() {
        return Ok(false);
    }
    // Only certificates, re-encoded: an entry that is not one is left out,
    // so one bad entry cannot make the transport refuse them all.
    let good: Vec<String> = pems.iter().filter_map(|p| certificates_only(p)).collect();
    if good.len() != pems.len() {
        log::warn!(
            "the server announced {} entries that are not PEM certificates; left out",
            pems.len() - good.len()
        );
    }
    if good.is_empty() {
        return Err("the server announced no readable certificate; keeping the ones known".into());
    }
    let text: String = good.concat();
    let file = path(state_dir);
    if std::fs::read_to_string(&file).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    files::write_atomic(&file, text.as_bytes(), 0o644)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real self-signed certificate (P-256, CN=test).
    const PEM: &str = concat!(
        "-----BEGIN CERTIFICATE-----\n",
        "MIIBczCCARmgAwIBAgIUBXPLNB7ztZGvAwOLAy74w/xKCQwwCgYIKoZIzj0EAwIw\n",
        "DzENMAsGA1UEAwwEdGVzdDAeFw0yNjEyMDQwMjQ3NDFaFw0zNjEyMDEwMjQ3NDFa\n",
        "MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARJ7gyd\n",
        "T5NIXhErRhRKr/ac7nRV3yK4iowD+H2E11XUeiNblr2Ynq6djoeNgOjVhHGyZAy+\n",
        "abn94eGiELBymbRHo1MwUTAdBgNVHQ4EFgQUKtcHMTotFRr1VLlR5misGKhzObow\n",
        "HwYDVR0jBBgwFoAUKtcHMTotFRr1VLlR5misGKhzObowDwYDVR0TAQH/BAUwAwEB\n",
        "/zAKBggqhkjOPQQDAgNIADBFAiEAvZJeeBIFESeiIy1Fo/gyT1vk7tPiu7E9/Sc5\n",
        "fYDJAaICIE7tERj+vrpozrjkqtPTjbeW6w9PzmQHkBPn7PvJzIRK\n",
        "-----END CERTIFICATE-----\n",
    );

    fn config(ca: Option<&str>) -> AgentConfig {
        let mut c = AgentConfig::new("https://s".into(), "KEY".into(), String::new());
        c.ca_certificate = ca.map(str::to_string);
        c
    }

    #[test]
    fn announced_certificates_join_the_pinned_one_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            with_announced(&config(Some("A")), dir.path())
                .ca_certificate
                .as_deref(),
            Some("A")
        );
        let e = remember(dir.path(), &["junk".into()]).unwrap_err();
        assert!(e.contains("no readable certificate"), "{e}");
        // A bad entry is left out; a key next to a certificate never lands.
        let with_key =
            format!("-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n{PEM}");
        assert!(remember(dir.path(), &["junk".into(), with_key]).unwrap());
        let kept = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(kept, PEM);
        assert!(!remember(dir.path(), &[PEM.into()]).unwrap(), "unchanged");
        std::fs::remove_file(path(dir.path())).unwrap();
        assert!(remember(dir.path(), &[PEM.into()]).unwrap());
        assert!(!remember(dir.path(), &[]).unwrap());
        let c = with_announced(&config(Some("A")), dir.path());
        assert_eq!(c.ca_certificate.unwrap(), format!("A\n{PEM}"));
        assert_eq!(
            with_announced(&config(None), dir.path()).ca_certificate,
            None
        );
    }
}
