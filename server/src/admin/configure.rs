//! `pdome-admin clients configure`: move clients to another server address
//! or certificate through a signed action. Each agent makes one signed
//! request at the new address with the new pin first and keeps its old
//! configuration if that fails; the action's outcome says which it uses.

use std::time::Duration;

use anyhow::{Context, bail};
use penguindome_protocol::actions::{ConfigureTask, PinnedCertificate, Task};
use penguindome_protocol::token::certificates_only;
use serde_json::json;

use super::actions;
use crate::config::ServerConfig;
use crate::store::AdminStore;

/// `pdome-admin clients configure`.
#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// Client ids or host names.
    #[arg(required_unless_present = "all")]
    pub clients: Vec<String>,
    /// Every client that is not revoked.
    #[arg(long, conflicts_with = "clients")]
    pub all: bool,
    /// The server's new URL, e.g. https://pd.example.com:8443.
    #[arg(long, conflicts_with = "host")]
    pub url: Option<String>,
    /// A new host name in server.toml's URL (scheme and port stay).
    #[arg(long)]
    pub host: Option<String>,
    /// Pin this certificate (PEM, e.g. the new listener's tls/NAME.crt).
    #[arg(long, conflicts_with = "system_cas")]
    pub certificate: Option<std::path::PathBuf>,
    /// Trust the system's certificate authorities instead of a pin (for a
    /// CA-signed certificate).
    #[arg(long)]
    pub system_cas: bool,
    /// How long offline machines have to pick it up.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// The task the arguments describe; reads the certificate file (as root,
/// before pdome-admin drops to the store's owner).
pub fn task(config: &ServerConfig, args: &ConfigureArgs) -> anyhow::Result<Task> {
    let server_url = match (&args.url, &args.host) {
        (Some(u), _) => Some(checked_url(u)?),
        (None, Some(h)) => Some(with_host(&config.server.url, h)?),
        (None, None) => None,
    };
    let certificate = match (&args.certificate, args.system_cas) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if text.contains("PRIVATE KEY") {
                bail!(
                    "{} holds a private key: give the certificate alone (it goes to every client)",
                    path.display()
                );
            }
            let pem = certificates_only(&text)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
            Some(PinnedCertificate::Pem(pem))
        }
        (None, true) => Some(PinnedCertificate::SystemCas),
        (None, false) => None,
    };
    if server_url.is_none() && certificate.is_none() {
        bail!("say what changes: --url or --host, and/or --certificate or --system-cas");
    }
    Ok(Task::Configure(ConfigureTask {
        server_url,
        certificate,
    }))
}

fn checked_url(text: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if u.scheme() != "https" || u.host().is_none() {
        bail!("{text:?}: agents move only to an https:// URL with a host");
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn with_host(current: &str, host: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(current).context("server.url in server.toml is not a URL")?;
    u.set_host(Some(host))
        .with_context(|| format!("{host:?} is not a host name or address"))?;
    checked_url(u.as_str())
}

/// Queues the move for the chosen clients as `operator`.
pub async fn queue(
    store: &dyn AdminStore,
    args: &ConfigureArgs,
    task: Task,
    operator: &str,
) -> anyhow::Result<()> {
    let hosts = if args.all { &[][..] } else { &args.clients[..] };
    let targets = actions::targets(store, hosts).await?;
    let Task::Configure(t) = &task else {
        unreachable!("task() makes configure tasks")
    };
    let summary = match (&t.server_url, &t.certificate) {
        (Some(u), _) => format!("configure: move to {u}"),
        (None, Some(PinnedCertificate::SystemCas)) => "configure: trust the system CAs".into(),
        (None, _) => "configure: pin a new certificate".into(),
    };
    let count = targets.len();
    let id = actions::queue(
        store,
        &task,
        summary.clone(),
        operator,
        args.expires,
        targets,
    )
    .await?;
    if args.json {
        println!(
            "{}",
            json!({"id": id, "clients": count, "summary": summary})
        );
    } else {
        println!(
            "Queued {summary} ({id}) for {count} client(s). Each agent tries the new address once \
             at its next contact and keeps its configuration if that fails; \
             `pdome-admin command show {id}` says which each one uses."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_and_hosts_replace_only_the_host() {
        assert_eq!(
            with_host("https://old.example:8443/", "new.example").unwrap(),
            "https://new.example:8443"
        );
        assert!(checked_url("http://x").is_err());
        assert!(checked_url("nope").is_err());
        assert_eq!(
            checked_url("https://a.example/").unwrap(),
            "https://a.example"
        );
    }
}
