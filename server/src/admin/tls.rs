//! `pdome-admin tls`: renewing a listener's self-signed certificate in two
//! steps, so that every agent trusts the new certificate before the server
//! presents it.
//!
//! `tls renew` stages the new certificate; `/update` answers announce it
//! and `pdome-admin release` ships both to package managers. `tls status`
//! shows which clients have asked for news since. `tls renew --finish` puts
//! it in service, refusing while clients would be stranded.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::token::{certificate_pin, certificates_only, pin_text};
use serde::{Deserialize, Serialize};

use super::listeners::{agents_pin, write_server_secret};
use crate::config::{AGENT_CONFIG_FILE, ListenerConfig, ServerConfig};
use crate::renewal::{ANNOUNCE_REFRESH, is_self_signed, previous, staged};
use crate::store::AdminStore;

/// `pdome-admin tls …`.
#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Stage a new self-signed certificate (agents learn it at their next
    /// update), or with --finish put the staged one in service.
    Renew {
        /// The listener (default: the one whose certificate agents pin).
        #[arg(long)]
        listener: Option<String>,
        /// Put the staged certificate in service.
        #[arg(long)]
        finish: bool,
        /// Finish even though some clients have not learned it yet.
        #[arg(long, requires = "finish")]
        force: bool,
    },
    /// The staged renewal, and which clients have not asked for news since.
    Status {
        /// The listener (default: the one whose certificate agents pin).
        #[arg(long)]
        listener: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// What `tls status --json` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    listener: String,
    certificate: PathBuf,
    /// When the staged certificate was written; none when nothing is staged.
    staged_at: Option<DateTime<Utc>>,
    /// Clients (not revoked) whose last contact came after agents could
    /// have learned the staged certificate.
    learned: usize,
    /// Clients that have not: host names and last contact.
    waiting: Vec<Waiting>,
}

/// A client that has not asked for news since a change was staged.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Waiting {
    client_id: String,
    hostname: String,
    last_seen_at: DateTime<Utc>,
}

/// The listener to renew: named, or the one agents pin, or the only TLS one.
fn choose<'a>(config: &'a ServerConfig, name: Option<&str>) -> anyhow::Result<&'a ListenerConfig> {
    let tls: Vec<&ListenerConfig> = config
        .listeners
        .iter()
        .filter(|l| l.tls.is_some())
        .collect();
    if let Some(name) = name {
        return tls.into_iter().find(|l| l.name == name).with_context(|| {
            format!("no TLS listener is named {name:?}; `pdome-admin listeners list` shows them")
        });
    }
    let pinned = agents_pin(config);
    let by_pin = tls
        .iter()
        .find(|l| pinned.is_some() && pin_of(config, l) == pinned);
    match (by_pin, tls.as_slice()) {
        (Some(l), _) => Ok(l),
        (None, [only]) => Ok(only),
        _ => bail!(
            "say which listener with --listener: {}",
            tls.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn cert_path(config: &ServerConfig, l: &ListenerConfig) -> PathBuf {
    config.config_path(&l.tls.as_ref().expect("a TLS listener").certificate)
}

fn key_path(config: &ServerConfig, l: &ListenerConfig) -> PathBuf {
    config.config_path(&l.tls.as_ref().expect("a TLS listener").key)
}

fn pin_of(config: &ServerConfig, l: &ListenerConfig) -> Option<String> {
    let pem = std::fs::read_to_string(cert_path(config, l)).ok()?;
    certificate_pin(&pem).map(|p| pin_text(&p))
}

/// Runs `tls renew` (staging or finishing); `tls status` is [`status`].
pub fn renew(
    config: &ServerConfig,
    listener: Option<&str>,
    finish: bool,
    force: bool,
) -> anyhow::Result<()> {
    let l = choose(config, listener)?;
    if finish {
        return finish_renewal(config, l, force);
    }
    stage(config, l)
}

fn stage(config: &ServerConfig, l: &ListenerConfig) -> anyhow::Result<()> {
    let cert = cert_path(config, l);
    let pem = read_certificates(&cert)?;
    if !is_self_signed(pem.as_bytes()) {
        bail!(
            "listener {:?} presents a CA-signed certificate: renew it with your CA, install \
             the files (`pdome-admin listeners set {} --certificate F --key F` if their \
             paths change) and `systemctl reload penguindome-server`; agents trust it \
             through the CA",
            l.name,
            l.name
        );
    }
    let next = staged(&cert);
    if next.exists() {
        bail!(
            "a renewal is already staged in {}: finish it with `pdome-admin tls renew --finish`, \
             or delete that file and its key to start over",
            next.display()
        );
    }
    let names = subject_names(&pem)?;
    let made = crate::tls::self_signed(&names)?;
    let next_key = staged(&key_path(config, l));
    write_server_secret(&next_key, &made.key_pem)?;
    crate::secrets::write_file(&next, made.cert_pem.as_bytes(), 0o644)?;
    let bundled = pin_agents_to(
        config,
        &pem,
        &format!("{}{}", ensure_nl(&pem), made.cert_pem),
    )?;
    println!(
        "Staged a new certificate for listener {:?} ({}) in {}.",
        l.name,
        names.join(", "),
        next.display()
    );
    println!(
        "Agents learn it from their next update (every signed /update answer announces it).{}",
        if bundled {
            " agent.toml now holds both certificates: run `pdome-admin release` so that apt, \
             dnf and pacman on the clients trust both as well."
        } else {
            ""
        }
    );
    println!(
        "Follow it with `pdome-admin tls status`; once no client is waiting, run \
         `pdome-admin tls renew --finish` and `systemctl reload penguindome-server`."
    );
    Ok(())
}

/// The certificates of a file, without anything else it holds (a key).
fn read_certificates(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    certificates_only(&text).with_context(|| format!("{} holds no PEM certificate", path.display()))
}

fn ensure_nl(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_string()
    } else {
        format!("{pem}\n")
    }
}

/// The DNS names and addresses the certificate is for, to keep them.
fn subject_names(pem: &str) -> anyhow::Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the certificate is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|i| i.to_string()));
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        bail!(
            "the certificate names no host (subjectAltName): make one with `pdome-admin listeners set NAME --tls self-signed HOST`"
        );
    }
    Ok(names)
}

/// Rewrites agent.toml's pinned certificate to `pems` if it pinned `old`.
/// Returns whether it did.
fn pin_agents_to(config: &ServerConfig, old: &str, pems: &str) -> anyhow::Result<bool> {
    let path = config.config_dir.join(AGENT_CONFIG_FILE);
    let mut agent = AgentConfig::load(&path)?;
    let (Some(pinned), Some(old_pin)) = (agent.ca_certificate.as_deref(), certificate_pin(old))
    else {
        return Ok(false);
    };
    if certificate_pin(pinned) != Some(old_pin) {
        return Ok(false);
    }
    agent.ca_certificate = Some(pems.to_string());
    crate::secrets::write_secret(&path, agent.to_toml()?.as_bytes())?;
    Ok(true)
}

fn finish_renewal(config: &ServerConfig, l: &ListenerConfig, force: bool) -> anyhow::Result<()> {
    let cert = cert_path(config, l);
    let key = key_path(config, l);
    let (next, next_key) = (staged(&cert), staged(&key));
    if next.exists() && !next_key.exists() && crate::tls::server_config(&next, &key).is_ok() {
        // An earlier --finish stopped between its two renames: the new key
        // is in place, the certificate still staged. Complete it.
        return complete(config, l, &cert, &next);
    }
    if !next.exists() || !next_key.exists() {
        bail!(
            "nothing is staged for listener {:?}: start with `pdome-admin tls renew`",
            l.name
        );
    }
    crate::tls::server_config(&next, &next_key).context("the staged certificate is unusable")?;
    let status = status_as_data_owner(config, l)?;
    if status.staged_at.is_none() {
        bail!(
            "the store's owner cannot read {}: give the server's group read access to tls/ \
             (as `pdome-admin init` sets it up) and try again",
            next.display()
        );
    }
    if !status.waiting.is_empty() && !force {
        bail!(
            "{} client(s) have not asked for news since the renewal was staged, and would \
             lose the server: {}. Wait for them, or pass --force; a client left behind needs \
             an agent.toml with the new certificate (the site package of a release made after \
             this, installed by hand)",
            status.waiting.len(),
            hosts(&status.waiting)
        );
    }
    keep_previous(&cert)?;
    keep_previous(&key)?;
    // Key first: a stop after it is completed by the next --finish (above).
    std::fs::rename(&next_key, &key)
        .with_context(|| format!("cannot move {} into place", next_key.display()))?;
    complete(config, l, &cert, &next)
}

/// Puts the staged certificate in place (its key already is) and repins
/// agent.toml.
fn complete(
    config: &ServerConfig,
    l: &ListenerConfig,
    cert: &Path,
    next: &Path,
) -> anyhow::Result<()> {
    let old_pem = read_certificates(&previous(cert))?;
    let new_pem = read_certificates(next)?;
    std::fs::rename(next, cert)
        .with_context(|| format!("cannot move {} into place", next.display()))?;
    let repinned = pin_agents_to(config, &old_pem, &new_pem)?;
    println!(
        "Listener {:?} now has the new certificate on disk (the old one is kept as {}).",
        l.name,
        previous(cert).display()
    );
    println!("Run `systemctl reload penguindome-server` to present it.");
    if repinned {
        println!(
            "agent.toml pins only the new certificate: run `pdome-admin release` so new \
             installations get it, and make new tokens (older ones pin the old certificate)."
        );
    }
    Ok(())
}

/// The first waiting clients, for a message.
pub(super) fn hosts(waiting: &[Waiting]) -> String {
    let mut names: Vec<String> = waiting
        .iter()
        .take(20)
        .map(|w| format!("{} ({})", w.hostname, w.client_id))
        .collect();
    if waiting.len() > 20 {
        names.push(format!("and {} more", waiting.len() - 20));
    }
    names.join(", ")
}

fn keep_previous(path: &Path) -> anyhow::Result<()> {
    std::fs::copy(path, previous(path))
        .map(|_| ())
        .with_context(|| format!("cannot keep a copy of {}", path.display()))
}

/// `tls status` in a child process: it drops to the data directory's owner
/// to read the store, while this one stays root for the files.
fn status_as_data_owner(config: &ServerConfig, l: &ListenerConfig) -> anyhow::Result<Status> {
    let exe = std::env::current_exe().context("cannot find pdome-admin itself")?;
    let out = std::process::Command::new(exe)
        .arg("--config-dir")
        .arg(&config.config_dir)
        .args(["tls", "status", "--json", "--listener", &l.name])
        .output()
        .context("cannot run pdome-admin tls status")?;
    if !out.status.success() {
        bail!(
            "pdome-admin tls status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("pdome-admin tls status printed no status")
}

/// Which clients have asked for news since the renewal was staged.
pub async fn status(
    config: &ServerConfig,
    store: &dyn AdminStore,
    listener: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let l = choose(config, listener)?;
    let cert = cert_path(config, l);
    let staged_at = std::fs::metadata(staged(&cert))
        .and_then(|m| m.modified())
        .ok()
        .map(DateTime::<Utc>::from);
    let (learned, waiting) = asked_since(store, staged_at).await?;
    let s = Status {
        listener: l.name.clone(),
        certificate: cert,
        staged_at,
        learned,
        waiting,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(())
}

/// How many clients (not revoked) have asked for news since what was
/// staged at `staged_at` reached the server's answers, and which have not.
pub(super) async fn asked_since(
    store: &dyn AdminStore,
    staged_at: Option<DateTime<Utc>>,
) -> anyhow::Result<(usize, Vec<Waiting>)> {
    let mut learned = 0;
    let mut waiting = Vec::new();
    let Some(at) = staged_at else {
        return Ok((learned, waiting));
    };
    let since = at + chrono::Duration::from_std(ANNOUNCE_REFRESH)?;
    for c in store.list_clients().await? {
        if c.revoked_at.is_some() {
            continue;
        }
        if c.last_seen_at > since {
            learned += 1;
        } else {
            waiting.push(Waiting {
                client_id: c.client_id,
                hostname: c.hostname,
                last_seen_at: c.last_seen_at,
            });
        }
    }
    Ok((learned, waiting))
}

fn print_status(s: &Status) {
    let Some(at) = s.staged_at else {
        println!(
            "Listener {:?}: no renewal is staged ({}).",
            s.listener,
            s.certificate.display()
        );
        return;
    };
    println!(
        "Listener {:?}: a renewal was staged at {}; {} client(s) have asked for news since, {} have not.",
        s.listener,
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        s.learned,
        s.waiting.len()
    );
    for w in &s.waiting {
        println!(
            "  waiting: {} ({}), last contact {}",
            w.hostname,
            w.client_id,
            w.last_seen_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}
