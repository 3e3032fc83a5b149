//! The site's secrets key as the server keeps it: `secrets.json` beside
//! server.toml, written by `pdome-admin secrets`.
//!
//! It holds the public certificate agents seal to, the fields to seal, and
//! the secret key locked (ChaCha20-Poly1305) under a random 256-bit key that
//! exists only as Shamir shares held by administrators
//! ([`crate::shares`]). Nobody holding the file alone, the server included,
//! can open a sealed value.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use penguindome_protocol::sealing::SealingPolicy;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::ServerConfig;

/// The file's name in the configuration directory.
pub const FILE: &str = "secrets.json";

/// `secrets.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretsFile {
    /// The secrets key's fingerprint.
    pub fingerprint: String,
    /// Its certificate, armored: what agents seal to.
    pub public_key: String,
    /// The transferable secret key, sealed under the share key: base64 of
    /// the 12-byte nonce then the ciphertext; the fingerprint is the
    /// associated data.
    pub locked_key: String,
    /// Names this set of shares; every share carries it.
    pub share_set: String,
    /// How many shares open it.
    pub threshold: u8,
    /// How many shares were made.
    pub shares: u8,
    /// Fields agents seal, as `<collector>.<field>...`.
    #[serde(default)]
    pub selectors: Vec<String>,
    /// Whether agents are asked to seal (`secrets disable` keeps the key,
    /// so sealed values stay readable).
    pub enabled: bool,
    /// When the key was made.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub created_at: DateTime<Utc>,
}

impl SecretsFile {
    /// What `/update` announces, when sealing is on.
    pub fn policy(&self) -> Option<SealingPolicy> {
        self.enabled.then(|| SealingPolicy {
            public_key: self.public_key.clone(),
            fingerprint: self.fingerprint.clone(),
            selectors: self.selectors.clone(),
        })
    }

    /// Unlocks the secret key with the key the shares rebuilt. A wrong key
    /// (shares of another set, or too few) fails the AEAD check.
    pub fn unlock(&self, share_key: &[u8; 32]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let bytes = B64
            .decode(&self.locked_key)
            .context("secrets.json's locked_key is damaged")?;
        if bytes.len() < 12 {
            bail!("secrets.json's locked_key is damaged (too short)");
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(share_key));
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: self.fingerprint.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the shares do not open the secrets key {}: they are from another set, \
                     or fewer than {} distinct correct shares were given",
                    self.fingerprint,
                    self.threshold
                )
            })
    }
}

/// Locks a transferable secret key under `share_key` (see
/// [`SecretsFile::locked_key`]).
pub fn lock(tsk: &[u8], share_key: &[u8; 32], fingerprint: &str) -> anyhow::Result<String> {
    let mut nonce = [0u8; 12];
    penguindome_protocol::envelope::random_bytes(&mut nonce);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(share_key));
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: tsk,
                aad: fingerprint.as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot lock the secrets key"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(B64.encode(out))
}

/// Where `secrets.json` lives.
pub fn path(config: &ServerConfig) -> PathBuf {
    config.config_path(Path::new(FILE))
}

/// Reads `secrets.json`; none when the site never enabled secrets.
pub fn read(path: &Path) -> anyhow::Result<Option<SecretsFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(locked_key: String) -> SecretsFile {
        SecretsFile {
            fingerprint: "F".into(),
            public_key: "P".into(),
            locked_key,
            share_set: "s".into(),
            threshold: 2,
            shares: 3,
            selectors: vec!["geolocation.location".into()],
            enabled: true,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn the_locked_key_opens_with_its_share_key_only() {
        let k = [9u8; 32];
        let f = file(lock(b"tsk bytes", &k, "F").unwrap());
        assert_eq!(f.unlock(&k).unwrap().as_slice(), b"tsk bytes");
        let e = f.unlock(&[8u8; 32]).unwrap_err().to_string();
        assert!(e.contains("do not open"), "{e}");
        // Bound to its fingerprint: moved to another file, it does not open.
        let mut other = f.clone();
        other.fingerprint = "G".into();
        assert!(other.unlock(&k).is_err());
    }

    #[test]
    fn disabled_sealing_announces_nothing() {
        let mut f = file(String::new());
        assert!(f.policy().is_some());
        f.enabled = false;
        assert!(f.policy().is_none());
    }
}
