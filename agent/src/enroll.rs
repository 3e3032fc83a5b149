//! `penguindome-agent enroll URL TOKEN`: join a site with an enrollment
//! token. The token pins the server (its certificate and its key), so an
//! agent.toml from anywhere else is refused before anything is sent; the
//! enrollment then spends one use of the token, and the client fetches its
//! own repository credential.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use penguindome_protocol::PublicKey;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::token::{EnrollmentToken, certificate_pin, pin_text};
use serde::Serialize;

use crate::run::{Agent, fetch_repo_credential, hostname};
use crate::session::{Authority, Session};
use crate::transport::Transport;

/// How long `enroll` waits for a timer run holding the state lock.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What an enrollment did.
#[derive(Debug, Serialize)]
pub struct Enrolled {
    /// The client id (machine id).
    pub client_id: String,
    /// `enrolled` or `already-enrolled`.
    pub status: String,
    /// The key's fingerprint.
    pub fingerprint: String,
    /// The repository credential files written.
    pub credential_files: Vec<PathBuf>,
}

/// Checks that agent.toml is the configuration of the server the token
/// comes from: same URL, same key, same certificate.
pub fn check_pins(config: &AgentConfig, url: &str, token: &EnrollmentToken) -> anyhow::Result<()> {
    let url = url.trim_end_matches('/');
    if config.base_url() != url {
        bail!(
            "agent.toml is for {}, not {url}: install the penguindome-site package of {url} \
             (the bootstrap does), or give the URL agent.toml names",
            config.base_url()
        );
    }
    let key = PublicKey::from_bytes(config.server_public_key.as_bytes())
        .context("agent.toml: server_public_key is not a key")?;
    if !key
        .fingerprint()
        .eq_ignore_ascii_case(&token.key_fingerprint)
    {
        bail!(
            "the token is for the server key {}, but agent.toml trusts {}: this agent.toml \
             is not from the site that made the token; do not enroll",
            token.key_fingerprint,
            key.fingerprint()
        );
    }
    if let Some(pin) = &token.certificate_sha256 {
        let trusted = config.ca_certificate.as_deref().and_then(certificate_pin);
        if trusted.as_ref() != Some(pin) {
            bail!(
                "the token pins the server certificate {}, but agent.toml trusts {}: \
                 this agent.toml is not from the site that made the token; do not enroll",
                pin_text(pin),
                trusted
                    .as_ref()
                    .map_or_else(|| "the system's roots".into(), pin_text)
            );
        }
    }
    Ok(())
}

/// Waits for the state directory's run lock (a timer run may hold it).
fn wait_for_lock(agent: &Agent) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let started = Instant::now();
    loop {
        if let Some(lock) = agent.state.try_lock()? {
            return Ok(lock);
        }
        if started.elapsed() > LOCK_WAIT {
            bail!("another penguindome-agent run holds the state directory; try again");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Enrolls this machine with `token` and fetches its repository credential.
pub fn enroll(agent: &Agent, url: &str, token: &EnrollmentToken) -> anyhow::Result<Enrolled> {
    check_pins(&agent.config, url, token)?;
    let _lock = wait_for_lock(agent)?;
    let mut state = agent.state.load();
    let key = agent.state.load_or_create_key(&agent.machine_id)?;
    let transport = Transport::new(&agent.config)?;
    let session = Session::new(&agent.config, &transport, &key, agent.machine_id.clone())?;
    let host_name = hostname();
    let answer = session
        .enroll(&host_name, Authority::Token(token))
        .context("enrollment failed")?;
    state.enrolled_fingerprint = Some(key.fingerprint().to_string());
    state.enrolled_server = Some(agent.config.base_url().to_string());
    agent.state.save(&state)?;
    log::info!(client_id:% = agent.machine_id, token:% = token.id; "enrolled with {} ({})", agent.config.base_url(), answer.status);
    let credential_files = fetch_repo_credential(&session, &host_name, agent).context(
        "enrolled, but the repository credential could not be fetched (the next run retries)",
    )?;
    Ok(Enrolled {
        client_id: answer.client_id,
        status: answer.status,
        fingerprint: answer.fingerprint,
        credential_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use penguindome_protocol::SecretKey;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";

    fn config(key: &SecretKey, ca: Option<&str>) -> AgentConfig {
        let mut c = AgentConfig::new(
            "https://pd.example.com:8443".into(),
            key.public().to_armored().unwrap(),
            String::new(),
        );
        c.ca_certificate = ca.map(str::to_string);
        c
    }

    #[test]
    fn pins_refuse_another_sites_configuration() {
        let key = SecretKey::generate("server").unwrap();
        let pin = certificate_pin(PEM).unwrap();
        let token = EnrollmentToken::generate(Some(pin), key.fingerprint());
        let good = config(&key, Some(PEM));
        check_pins(&good, "https://pd.example.com:8443/", &token).unwrap();
        let e = check_pins(&good, "https://other.example.com", &token).unwrap_err();
        assert!(
            e.to_string().contains("not https://other.example.com"),
            "{e}"
        );
        let stranger = SecretKey::generate("stranger").unwrap();
        let e = check_pins(
            &config(&stranger, Some(PEM)),
            "https://pd.example.com:8443",
            &token,
        )
        .unwrap_err();
        assert!(e.to_string().contains("server key"), "{e}");
        let e = check_pins(&config(&key, None), "https://pd.example.com:8443", &token).unwrap_err();
        assert!(e.to_string().contains("system's roots"), "{e}");
    }
}
