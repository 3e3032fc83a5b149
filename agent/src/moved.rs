//! Where `pdome-admin clients configure` moved this agent. agent.toml
//! belongs to the site package (an upgrade may replace it), so a move is
//! kept in the state directory and laid over agent.toml at every start.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::{ConfigureTask, PinnedCertificate};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::files;
use penguindome_protocol::token::certificates_only;
use serde::{Deserialize, Serialize};

const FILE: &str = "moved.json";

/// A move that worked: the server's address and certificate since.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Moved {
    /// The server's URL now.
    pub server_url: String,
    /// The pinned certificate now; none: the system's CAs.
    pub ca_certificate: Option<String>,
    /// The URL it was reached at before.
    pub from: String,
    /// agent.toml's own URL when the first move was made; once agent.toml
    /// says something else (a later release), agent.toml wins.
    pub package_url: String,
    /// The action that moved it.
    pub action_id: String,
    /// When.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub moved_at: DateTime<Utc>,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Lays a recorded move over `config`; returns it. A damaged record is
/// ignored with a warning (the agent then uses agent.toml as it is).
pub fn apply(config: &mut AgentConfig, state_dir: &Path) -> Option<Moved> {
    let text = std::fs::read(path(state_dir)).ok()?;
    let moved: Moved = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => {
            log::warn!(
                "{} is damaged ({e}); using agent.toml",
                path(state_dir).display()
            );
            return None;
        }
    };
    if moved.package_url != config.server_url {
        log::info!(
            "agent.toml now names {}; the earlier move to {} no longer applies",
            config.server_url,
            moved.server_url
        );
        return None;
    }
    config.server_url = moved.server_url.clone();
    config.ca_certificate = moved.ca_certificate.clone();
    Some(moved)
}

/// The configuration a move asks for, checked.
pub fn candidate(config: &AgentConfig, task: &ConfigureTask) -> Result<AgentConfig, String> {
    let mut c = config.clone();
    if let Some(url) = &task.server_url {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let plain_ok = config.allow_plain_http;
        if parsed.host_str().is_none()
            || !(parsed.scheme() == "https" || plain_ok && parsed.scheme() == "http")
        {
            return Err(format!("{url:?} is not an https:// URL with a host"));
        }
        c.server_url = url.clone();
    }
    match &task.certificate {
        None => {}
        Some(PinnedCertificate::SystemCas) => c.ca_certificate = None,
        Some(PinnedCertificate::Pem(pem)) => {
            let certs = certificates_only(pem).ok_or("the certificate to pin is not PEM")?;
            c.ca_certificate = Some(certs);
        }
    }
    if c.server_url == config.server_url && c.ca_certificate == config.ca_certificate {
        return Err(format!(
            "this agent already uses {} that way",
            config.server_url
        ));
    }
    Ok(c)
}

/// Records a move that worked.
pub fn save(state_dir: &Path, moved: &Moved) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(moved).expect("a move serializes");
    files::write_atomic(&path(state_dir), &text, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new(
            "https://old.example:8443".into(),
            "KEY".into(),
            String::new(),
        )
    }

    #[test]
    fn a_move_is_checked_then_laid_over_agent_toml() {
        let task = |url: &str| ConfigureTask {
            server_url: Some(url.into()),
            certificate: Some(PinnedCertificate::SystemCas),
        };
        assert!(candidate(&config(), &task("not a url")).is_err());
        assert!(
            candidate(&config(), &task("http://new.example"))
                .unwrap_err()
                .contains("https")
        );
        let bad_pem = ConfigureTask {
            server_url: None,
            certificate: Some(PinnedCertificate::Pem("junk".into())),
        };
        assert!(candidate(&config(), &bad_pem).unwrap_err().contains("PEM"));
        let same = ConfigureTask {
            server_url: Some("https://old.example:8443".into()),
            certificate: None,
        };
        assert!(candidate(&config(), &same).unwrap_err().contains("already"));
        let c = candidate(&config(), &task("https://new.example")).unwrap();
        assert_eq!(c.server_url, "https://new.example");

        let dir = tempfile::tempdir().unwrap();
        let mut loaded = config();
        assert_eq!(apply(&mut loaded, dir.path()), None);
        let moved = Moved {
            server_url: c.server_url.clone(),
            ca_certificate: None,
            from: "https://old.example:8443".into(),
            package_url: "https://old.example:8443".into(),
            action_id: "a".repeat(32),
            moved_at: Utc::now(),
        };
        save(dir.path(), &moved).unwrap();
        let mut loaded = config();
        loaded.ca_certificate = Some("PEM".into());
        assert_eq!(apply(&mut loaded, dir.path()).unwrap().from, moved.from);
        assert_eq!(loaded.server_url, "https://new.example");
        assert_eq!(loaded.ca_certificate, None);
        // A release whose agent.toml names another server wins.
        let mut released = config();
        released.server_url = "https://released.example".into();
        assert_eq!(apply(&mut released, dir.path()), None);
        assert_eq!(released.server_url, "https://released.example");
        std::fs::write(path(dir.path()), "{").unwrap();
        assert_eq!(apply(&mut config(), dir.path()), None, "damaged: ignored");
    }
}
