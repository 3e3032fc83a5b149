//! `pdome-admin keys`: rotating the server's signing key in two steps.
//!
//! `keys rotate` stages a new key and has the current one certify it; every
//! `/update` answer carries the certification, and `pdome-admin release`
//! puts both keys in the site package's keyrings. `keys status` shows which
//! clients have asked for news since. `keys rotate --finish` signs with the
//! new key from then on and repins agent.toml; the next release re-signs
//! the repositories. An agent that missed the whole window still follows:
//! the certifications lead it from the key it pins to the new one.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use penguindome_protocol::SecretKey;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::key_rotation::{SignedKeyCertification, walk};
use serde::Serialize;

use super::listeners::{write_keeping_owner, write_server_secret};
use super::tls::{Waiting, asked_since, hosts};
use crate::config::{AGENT_CONFIG_FILE, ServerConfig};
use crate::signing::{chain_path, current_path, load_key, next_path, previous_path, read_chain};
use crate::store::AdminStore;

/// `pdome-admin keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Stage a new signing key certified by the current one (agents learn
    /// it at their next update), or with --finish sign with it from now on.
    Rotate {
        /// Sign with the staged key from now on.
        #[arg(long)]
        finish: bool,
    },
    /// The signing key, a staged rotation, and which clients have not
    /// asked for news since it was staged.
    Status {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `keys rotate` (staging or finishing).
pub fn rotate(config: &ServerConfig, finish: bool) -> anyhow::Result<()> {
    if finish {
        finish_rotation(config)
    } else {
        stage(config)
    }
}

/// The staged key, if any.
fn staged_key(config: &ServerConfig) -> anyhow::Result<Option<SecretKey>> {
    let next = next_path(config);
    if !next.exists() {
        return Ok(None);
    }
    load_key(&next).map(Some)
}

/// Whether `chain` leads from `from` to `to` in one step.
fn certifies(chain: &[SignedKeyCertification], from: &SecretKey, to: &SecretKey) -> bool {
    walk(&from.public(), chain)
        .get(1)
        .is_some_and(|k| k.fingerprint() == to.fingerprint())
}

fn write_chain(config: &ServerConfig, chain: &[SignedKeyCertification]) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(chain)?;
    crate::secrets::write_file(&chain_path(config), &text, 0o644)
}

fn stage(config: &ServerConfig) -> anyhow::Result<()> {
    let current = load_key(&current_path(config))?;
    let mut chain = read_chain(&chain_path(config))?;
    // A key staged by a run that stopped before certifying it is kept.
    let next = match staged_key(config)? {
        Some(next) if certifies(&chain, &current, &next) => bail!(
            "key {} is already staged: finish the rotation with `pdome-admin keys rotate \
             --finish` (`pdome-admin keys status` shows who has learned it)",
            next.fingerprint()
        ),
        Some(next) => next,
        None => {
            let next = SecretKey::generate(&userid_of(&current))?;
            write_server_secret(&next_path(config), &String::from_utf8(next.to_armored()?)?)?;
            next
        }
    };
    // The current key's certification goes last, so the walk from any
    // older key continues through it.
    chain.push(SignedKeyCertification::make(
        &current,
        &next.public(),
        Utc::now(),
    )?);
    write_chain(config, &chain)?;
    println!(
        "Staged server key {}, certified by the current key {}.",
        next.fingerprint(),
        current.fingerprint()
    );
    println!(
        "Agents learn it from their next update. Now run `pdome-admin release`, so that \
         package managers trust both keys; when `pdome-admin keys status` shows every client, \
         run `pdome-admin keys rotate --finish`."
    );
    Ok(())
}

/// The user ID for a new key: the current key's (same site, same host).
fn userid_of(current: &SecretKey) -> String {
    current
        .public()
        .user_id()
        .unwrap_or_else(|| "PenguinDome server <penguindome@localhost>".to_string())
}

fn finish_rotation(config: &ServerConfig) -> anyhow::Result<()> {
    let current_file = current_path(config);
    let chain = read_chain(&chain_path(config))?;
    let Some(next) = staged_key(config)? else {
        // A finish that stopped after switching keys repins agent.toml now.
        let current = load_key(&current_file)?;
        if repin_agents(config, &current, &chain)? {
            println!("agent.toml now pins key {}.", current.fingerprint());
            return Ok(());
        }
        bail!("no key rotation is staged: start one with `pdome-admin keys rotate`");
    };
    let current = load_key(&current_file)?;
    if !certifies(&chain, &current, &next) {
        bail!(
            "the staged key {} is not certified by the current key {} in {}: run \
             `pdome-admin keys rotate` again to certify it",
            next.fingerprint(),
            current.fingerprint(),
            chain_path(config).display()
        );
    }
    let previous = previous_path(config);
    std::fs::copy(&current_file, &previous)
        .with_context(|| format!("cannot keep a copy of {}", current_file.display()))?;
    std::fs::rename(next_path(config), &current_file)
        .with_context(|| format!("cannot put the new key in {}", current_file.display()))?;
    repin_agents(config, &next, &chain)?;
    println!(
        "The server signs with key {} from now on (running servers switch within a few \
         seconds); the old key is kept as {}.",
        next.fingerprint(),
        previous.display()
    );
    println!(
        "Now run `pdome-admin release`: it re-signs the repositories and site packages with \
         the new key. Agents that missed the rotation follow the certification at their next \
         update. Tokens made before now pin the old key: make new ones with `pdome-admin \
         tokens create`."
    );
    Ok(())
}

/// Makes agent.toml pin `current` when it pins a key the chain leads from.
/// Returns whether it changed.
fn repin_agents(
    config: &ServerConfig,
    current: &SecretKey,
    chain: &[SignedKeyCertification],
) -> anyhow::Result<bool> {
    let path = config.config_dir.join(AGENT_CONFIG_FILE);
    let mut agent = AgentConfig::load(&path)?;
    let pinned = penguindome_protocol::PublicKey::from_bytes(agent.server_public_key.as_bytes())
        .with_context(|| format!("{}: server_public_key is not a key", path.display()))?;
    let leads_here = walk(&pinned, chain)
        .iter()
        .skip(1)
        .any(|k| k.fingerprint() == current.fingerprint());
    if !leads_here {
        return Ok(false);
    }
    agent.server_public_key = current.public().to_armored()?;
    write_keeping_owner(&path, agent.to_toml()?.as_bytes())?;
    Ok(true)
}

/// What `keys status --json` prints.
#[derive(Debug, Serialize)]
struct Status {
    /// The key that signs now.
    current: String,
    /// The staged key, during a rotation.
    staged: Option<String>,
    /// When it was staged.
    staged_at: Option<DateTime<Utc>>,
    /// Certifications handed to agents.
    certifications: usize,
    /// Clients (not revoked) that have asked for news since it was staged.
    learned: usize,
    /// Clients that have not.
    waiting: Vec<Waiting>,
}

/// What the key files say, read as root before the store is opened.
pub struct KeyFiles {
    /// The current key's fingerprint.
    current: String,
    /// The staged key's fingerprint and when it was staged.
    staged: Option<(String, DateTime<Utc>)>,
}

/// Shows the signing key, a staged rotation and who has learned it.
pub async fn status(
    config: &ServerConfig,
    store: &dyn AdminStore,
    files: KeyFiles,
    json: bool,
) -> anyhow::Result<()> {
    let (learned, waiting) = asked_since(store, files.staged.as_ref().map(|s| s.1)).await?;
    let s = Status {
        current: files.current,
        staged: files.staged.as_ref().map(|s| s.0.clone()),
        staged_at: files.staged.map(|s| s.1),
        certifications: read_chain(&chain_path(config))?.len(),
        learned,
        waiting,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("The server signs with key {}.", s.current);
    match (&s.staged, s.staged_at) {
        (Some(fp), Some(at)) => println!(
            "Key {fp} was staged at {}; {} client(s) have asked for news since, {} have not{}.",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            s.learned,
            s.waiting.len(),
            if s.waiting.is_empty() {
                String::new()
            } else {
                format!(
                    " ({}; they follow the certification after --finish too)",
                    hosts(&s.waiting)
                )
            }
        ),
        _ => println!("No rotation is staged."),
    }
    Ok(())
}

/// Reads, as root, what `status` needs from the key files.
pub fn read_for_status(config: &ServerConfig) -> anyhow::Result<KeyFiles> {
    let current = load_key(&current_path(config))?.fingerprint().to_string();
    let staged = match staged_key(config)? {
        Some(k) => {
            let at = std::fs::metadata(next_path(config))?.modified()?;
            Some((k.fingerprint().to_string(), DateTime::<Utc>::from(at)))
        }
        None => None,
    };
    Ok(KeyFiles { current, staged })
}
