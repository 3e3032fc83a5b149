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
use penguindome_protocol::sealing::{
    DigestKey, Opener, Recipient, SealError, Sealed, SealingPolicy, Selector, field_mut,
    sealed_digest,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// Seals stored plaintext of the selected fields (`secrets encrypt`).
///
/// The agents' digests are keyed by their own keys, which the server does
/// not have; values sealed here get digests under a random key that is
/// forgotten when the run ends, so they compare equal within the run's
/// records and nobody can test guesses against them later. The first
/// report after the run shows one change of each such field.
pub struct Resealer {
    recipient: Recipient,
    digests: DigestKey,
    /// The selected fields as audit-trail paths (`plugins.<collector>...`).
    fields: Vec<String>,
}

impl Resealer {
    /// For the site's key and selectors.
    pub fn new(file: &SecretsFile) -> anyhow::Result<Self> {
        let recipient = Recipient::from_bytes(file.public_key.as_bytes())?;
        let fields = file
            .selectors
            .iter()
            .map(|s| Selector::parse(s).map(|s| s.audit_field()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut key = [0u8; 32];
        penguindome_protocol::envelope::random_bytes(&mut key);
        Ok(Self {
            recipient,
            digests: DigestKey(key),
            fields,
        })
    }

    /// Whether a selected field lies in the output of collector `plugin`.
    pub fn covers(&self, plugin: &str) -> bool {
        self.fields.iter().any(|f| {
            f.strip_prefix("plugins.")
                .and_then(|r| r.strip_prefix(plugin))
                .is_some_and(|r| r.starts_with('.'))
        })
    }

    /// Seals what lies at or below a selected field in `value`, which
    /// stands at `path`. Returns whether anything changed.
    pub fn apply(&self, path: &str, value: &mut Value) -> Result<bool, SealError> {
        let mut changed = false;
        for field in &self.fields {
            if path == field || below(path, field) {
                // The whole value is the secret, or a part of it.
                changed |= self.seal_here(field, value)?;
            } else if let Some(rest) = field.strip_prefix(path).and_then(|r| r.strip_prefix('.')) {
                let keys: Vec<String> = rest.split('.').map(str::to_string).collect();
                if let Some(slot) = field_mut(value, &keys) {
                    changed |= self.seal_here(field, slot)?;
                }
            }
        }
        Ok(changed)
    }

    fn seal_here(&self, field: &str, slot: &mut Value) -> Result<bool, SealError> {
        if slot.is_null() || slot == "unknown" || sealed_digest(slot).is_some() {
            return Ok(false);
        }
        let selector = field.strip_prefix("plugins.").unwrap_or(field);
        let sealed = self.recipient.seal(selector, slot, &self.digests)?;
        *slot = serde_json::to_value(sealed).map_err(|e| SealError::Encrypt(e.into()))?;
        Ok(true)
    }
}

fn below(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.starts_with('.'))
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

/// Where a key `secrets enable --replace` retired is kept: values in
/// backups, or not re-encrypted yet, still open with its shares.
pub fn previous_path(config: &ServerConfig, fingerprint: &str) -> PathBuf {
    config.config_path(Path::new(&format!("secrets.previous.{fingerprint}.json")))
}

/// The current key's file and every retired one.
pub fn all_files(config: &ServerConfig) -> anyhow::Result<Vec<SecretsFile>> {
    let mut out: Vec<SecretsFile> = read(&path(config))?.into_iter().collect();
    let dir = config.config_path(Path::new(""));
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("secrets.previous.") && name.ends_with(".json") {
            out.extend(read(&e.path())?);
        }
    }
    Ok(out)
}

/// Moves sealed values from a retired key to the current one, keeping
/// their digests (`secrets enable --replace`, `secrets reencrypt`).
pub struct Rekeyer {
    from: Opener,
    from_fingerprint: String,
    to: Recipient,
}

impl Rekeyer {
    /// From the opened old key to the current key's certificate.
    pub fn new(from: Opener, to: &SecretsFile) -> anyhow::Result<Self> {
        Ok(Self {
            from_fingerprint: from.fingerprint(),
            from,
            to: Recipient::from_bytes(to.public_key.as_bytes())?,
        })
    }

    /// Re-encrypts every marker of the old key in `value`.
    pub fn apply(&self, value: &mut Value) -> Result<bool, SealError> {
        if sealed_digest(value).is_some() {
            let Ok(marker) = serde_json::from_value::<Sealed>(value.clone()) else {
                return Ok(false);
            };
            if marker.sealed.key != self.from_fingerprint {
                return Ok(false);
            }
            let moved = Sealed {
                sealed: self.from.reseal_to(&marker.sealed, &self.to)?,
            };
            *value = serde_json::to_value(moved).map_err(|e| SealError::Encrypt(e.into()))?;
            return Ok(true);
        }
        let mut changed = false;
        if let Value::Object(map) = value {
            for v in map.values_mut() {
                changed |= self.apply(v)?;
            }
        }
        Ok(changed)
    }
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
    fn stored_values_are_sealed_at_above_and_below_the_selected_field() {
        use serde_json::json;
        let tsk = penguindome_protocol::sealing::generate_key("t").unwrap();
        let (public_key, _) = penguindome_protocol::sealing::public_armored(&tsk).unwrap();
        let mut f = file(String::new());
        f.public_key = public_key;
        f.selectors = vec!["geolocation.location".into()];
        let r = Resealer::new(&f).unwrap();
        let is_sealed = |v: &Value| sealed_digest(v).is_some();
        // A client document's plugin output, or an audit record that added it.
        let mut whole = json!({"location": {"lat": 1.5, "lng": 2.5}, "evidence": ["x"]});
        assert!(r.apply("plugins.geolocation", &mut whole).unwrap());
        assert!(is_sealed(&whole["location"]) && whole["evidence"][0] == "x");
        assert!(
            !r.apply("plugins.geolocation", &mut whole).unwrap(),
            "sealed once"
        );
        // A record of the field, and one of a leaf below it.
        let mut at = json!({"lat": 1.5, "lng": 2.5});
        assert!(r.apply("plugins.geolocation.location", &mut at).unwrap());
        assert!(is_sealed(&at));
        let mut leaf = json!(1.5);
        assert!(
            r.apply("plugins.geolocation.location.lat", &mut leaf)
                .unwrap()
        );
        assert!(is_sealed(&leaf));
        // Elsewhere, and unknown values, stay.
        let mut other = json!({"location": {"lat": 1}});
        assert!(!r.apply("plugins.geolocationx", &mut other).unwrap());
        let mut unknown = json!("unknown");
        assert!(
            !r.apply("plugins.geolocation.location", &mut unknown)
                .unwrap()
        );
        // Equal values digest alike within the run.
        let (mut a, mut b) = (json!({"lat": 1}), json!({"lat": 1}));
        r.apply("plugins.geolocation.location", &mut a).unwrap();
        r.apply("plugins.geolocation.location", &mut b).unwrap();
        assert_eq!(sealed_digest(&a), sealed_digest(&b));
    }

    #[test]
    fn disabled_sealing_announces_nothing() {
        let mut f = file(String::new());
        assert!(f.policy().is_some());
        f.enabled = false;
        assert!(f.policy().is_none());
    }
}
