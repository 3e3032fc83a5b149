//! The server's signing key and the certifications that lead to it from
//! the keys before it (`pdome-admin keys rotate`). Files, next to the key
//! server.toml names (`server-key.asc`):
//!
//! - `server-key.next.asc`: the staged successor, during a rotation;
//! - `server-key.previous.asc`: the key a finished rotation replaced;
//! - `server-key.certifications.json`: every certification so far, public.
//!
//! The running server re-reads them every few seconds, so a finished
//! rotation takes effect without a restart, on every server of the site.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use penguindome_protocol::key_rotation::{SignedKeyCertification, walk};
use penguindome_protocol::sealing::SealingPolicy;
use penguindome_protocol::{PublicKey, SecretKey};

use crate::config::ServerConfig;
use crate::renewal::{ANNOUNCE_REFRESH, previous, staged};
use crate::sealing::Resealer;

/// Where server.toml's signing key lives.
pub fn current_path(config: &ServerConfig) -> PathBuf {
    config.config_path(&config.server.signing_key)
}

/// Where a rotation stages the next key.
pub fn next_path(config: &ServerConfig) -> PathBuf {
    staged(&current_path(config))
}

/// Where a finished rotation keeps the key it replaced.
pub fn previous_path(config: &ServerConfig) -> PathBuf {
    previous(&current_path(config))
}

/// The certifications file, beside the key.
pub fn chain_path(config: &ServerConfig) -> PathBuf {
    let current = current_path(config);
    let stem = current.file_stem().unwrap_or_default().to_string_lossy();
    current.with_file_name(format!("{stem}.certifications.json"))
}

/// Loads a signing key, refusing a key file others can read.
pub fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    let bytes = crate::secrets::read_secret(path)?;
    SecretKey::from_bytes(&bytes)
        .with_context(|| format!("{} is not the server's OpenPGP key", path.display()))
}

/// Reads the certifications; none when the site never rotated its key.
pub fn read_chain(path: &Path) -> anyhow::Result<Vec<SignedKeyCertification>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The public keys package managers should trust now: the current key,
/// and during a rotation the staged one it certified.
pub fn trusted_keys(config: &ServerConfig, current: &SecretKey) -> anyhow::Result<Vec<PublicKey>> {
    let chain = read_chain(&chain_path(config))?;
    let mut keys = walk(&current.public(), &chain);
    // Only one step: older rotations' keys are past, and the walk from the
    // current key never goes back to them anyway.
    keys.truncate(2);
    if keys.len() == 2 && !next_path(config).exists() {
        // A certification whose key was never put in service (a rotation
        // abandoned by deleting the staged key) is not trusted.
        keys.truncate(1);
    }
    Ok(keys)
}

/// What signs `/update` answers now, and what they announce beside actions.
pub struct Signing {
    /// The current key.
    pub key: SecretKey,
    /// Every certification, for agents to walk.
    pub chain: Vec<SignedKeyCertification>,
    /// The fields agents seal and the key they seal to (`secrets.json`).
    pub sealing: Option<SealingPolicy>,
    /// Seals those fields when a client sends them in the clear.
    pub resealer: Option<Arc<Resealer>>,
}

/// The signing key and chain, re-read at most every [`ANNOUNCE_REFRESH`].
pub struct SigningKeys {
    key_path: PathBuf,
    chain_path: PathBuf,
    sealing_path: PathBuf,
    cache: Mutex<(Instant, Arc<Signing>)>,
}

impl SigningKeys {
    /// Reads them once; the server does not start without a usable key.
    pub fn load(config: &ServerConfig) -> anyhow::Result<Self> {
        let key_path = current_path(config);
        let chain_path = chain_path(config);
        let sealing_path = crate::sealing::path(config);
        let signing = read_signing(&key_path, &chain_path, &sealing_path)?;
        Ok(Self {
            key_path,
            chain_path,
            sealing_path,
            cache: Mutex::new((Instant::now(), Arc::new(signing))),
        })
    }

    /// The current key and chain. A file that cannot be read now keeps
    /// what was read before (logged): answers stay signed.
    pub fn get(&self) -> Arc<Signing> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.0.elapsed() < ANNOUNCE_REFRESH {
            return cache.1.clone();
        }
        match read_signing(&self.key_path, &self.chain_path, &self.sealing_path) {
            Ok(s) => {
                if s.key.fingerprint() != cache.1.key.fingerprint() {
                    log::info!("now signing with server key {}", s.key.fingerprint());
                }
                cache.1 = Arc::new(s);
            }
            Err(e) => log::error!("keeping the signing key in use: {e:#}"),
        }
        cache.0 = Instant::now();
        cache.1.clone()
    }
}

fn read_signing(key: &Path, chain: &Path, sealing: &Path) -> anyhow::Result<Signing> {
    let secrets = crate::sealing::read(sealing)?.filter(|f| f.enabled);
    Ok(Signing {
        key: load_key(key)?,
        chain: read_chain(chain)?,
        sealing: secrets.as_ref().and_then(|f| f.policy()),
        resealer: secrets
            .as_ref()
            .map(Resealer::new)
            .transpose()?
            .map(Arc::new),
    })
}
