//! Which server keys this agent accepts. agent.toml pins one; the server's
//! signed `/update` answers carry the certifications of every later key by
//! the one before it (`pdome-admin keys rotate`). The agent walks that
//! chain from its pin, so it follows a rotation even when it was offline
//! through the whole transition. Once an answer signed by a newer key has
//! been seen, older keys are refused: the transition is over for this
//! agent.

use std::path::{Path, PathBuf};

use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::files;
use penguindome_protocol::key_rotation::{SignedKeyCertification, walk};
use penguindome_protocol::{KeyError, PublicKey};
use serde::{Deserialize, Serialize};

/// The file, in the state directory (public data).
const FILE: &str = "server-keys.json";

/// What the agent keeps between runs.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Saved {
    /// Certifications seen in verified answers.
    chain: Vec<SignedKeyCertification>,
    /// Fingerprint of the key that signed the last verified answer.
    signer: Option<String>,
}

/// The server keys this agent accepts.
#[derive(Debug, Clone)]
pub struct ServerKeys {
    pinned: PublicKey,
    chain: Vec<SignedKeyCertification>,
    signer: Option<String>,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

impl ServerKeys {
    /// Only the pinned key (before any answer was verified).
    pub fn pinned(pinned: PublicKey) -> Self {
        Self {
            pinned,
            chain: Vec::new(),
            signer: None,
        }
    }

    /// agent.toml's pinned key and what earlier runs learned.
    pub fn for_agent(config: &AgentConfig, state_dir: &Path) -> Result<Self, KeyError> {
        let pinned = PublicKey::from_bytes(config.server_public_key.as_bytes())?;
        Ok(Self::load(pinned, state_dir))
    }

    /// The pinned key and what earlier runs learned. An unreadable file
    /// is logged and ignored: the server hands the chain out again.
    pub fn load(pinned: PublicKey, state_dir: &Path) -> Self {
        let file = path(state_dir);
        let saved: Saved = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!("ignoring {}: {e}", file.display());
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        Self {
            pinned,
            chain: saved.chain,
            signer: saved.signer,
        }
    }

    /// The keys accepted now, oldest first: from the last signer seen (or
    /// the pin) along the known certifications and `offered` ones.
    pub fn accepted(&self, offered: &[SignedKeyCertification]) -> Vec<PublicKey> {
        let mut chain = self.chain.clone();
        chain.extend(offered.iter().cloned());
        let keys = walk(&self.pinned, &chain);
        let from = self
            .signer
            .as_deref()
            .and_then(|s| keys.iter().position(|k| k.fingerprint() == s))
            .unwrap_or(0);
        keys[from..].to_vec()
    }

    /// The accepted key whose signing key is `issuer`.
    pub fn key_for(
        &self,
        issuer: &str,
        offered: &[SignedKeyCertification],
    ) -> Result<PublicKey, String> {
        let accepted = self.accepted(offered);
        accepted
            .iter()
            .find(|k| k.signing_fingerprint().eq_ignore_ascii_case(issuer))
            .cloned()
            .ok_or_else(|| {
                let trusted: Vec<&str> = accepted.iter().map(PublicKey::fingerprint).collect();
                format!(
                    "the answer is signed by key {issuer}, which this agent does not trust \
                     (it trusts {}, and no certification links them): if the site replaced \
                     its key without `pdome-admin keys rotate`, reinstall this machine's \
                     penguindome-site package from the new release",
                    trusted.join(", ")
                )
            })
    }

    /// After an answer signed by `signer` verified: keeps the offered
    /// certifications the walk from the pin uses, and the signer, for the
    /// next runs. Returns whether the file changed.
    pub fn remember(
        &self,
        state_dir: &Path,
        offered: &[SignedKeyCertification],
        signer: &PublicKey,
    ) -> Result<bool, String> {
        let mut chain = self.chain.clone();
        for c in offered {
            if !chain.contains(c) {
                chain.push(c.clone());
            }
        }
        let on_walk: Vec<String> = walk(&self.pinned, &chain)
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect();
        chain.retain(|c| c.claims().is_ok_and(|s| on_walk.contains(&s.to)));
        // A site that never rotated keeps no file.
        let signer = (signer.fingerprint() != self.pinned.fingerprint() || self.signer.is_some())
            .then(|| signer.fingerprint().to_string());
        // What `load` read is what the file holds: the run's state lock
        // keeps other runs out meanwhile.
        if chain == self.chain && signer == self.signer {
            return Ok(false);
        }
        let saved = Saved { chain, signer };
        let file = path(state_dir);
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
        files::write_atomic(&file, &bytes, 0o644)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use penguindome_protocol::SecretKey;

    fn key(name: &str) -> SecretKey {
        SecretKey::generate(&format!("{name} <{name}@example.test>")).unwrap()
    }

    #[test]
    fn a_rotation_is_followed_and_then_the_old_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, stranger) = (key("old"), key("new"), key("stranger"));
        let cert = SignedKeyCertification::make(&old, &new.public(), Utc::now()).unwrap();
        let offered = [cert];
        let keys = ServerKeys::load(old.public(), dir.path());
        assert!(keys.key_for(new.fingerprint(), &[]).is_err());
        // During the window: the old key signs and announces the new one.
        let signer = keys.key_for(old.fingerprint(), &offered).unwrap();
        assert!(keys.remember(dir.path(), &offered, &signer).unwrap());
        let keys = ServerKeys::load(old.public(), dir.path());
        assert!(keys.key_for(old.fingerprint(), &[]).is_ok());
        assert!(keys.key_for(new.fingerprint(), &[]).is_ok(), "learned");
        let e = keys.key_for(stranger.fingerprint(), &[]).unwrap_err();
        assert!(e.contains("does not trust"), "{e}");
        // After it: the new key signs; the old one is refused from then on.
        let signer = keys.key_for(new.fingerprint(), &[]).unwrap();
        assert!(keys.remember(dir.path(), &[], &signer).unwrap());
        let keys = ServerKeys::load(old.public(), dir.path());
        assert!(keys.key_for(old.fingerprint(), &[]).is_err());
        let accepted: Vec<String> = keys
            .accepted(&[])
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect();
        assert_eq!(accepted, [new.fingerprint()]);
    }

    #[test]
    fn an_agent_offline_through_the_window_walks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let now = Utc::now();
        let chain = [
            SignedKeyCertification::make(&a, &b.public(), now).unwrap(),
            SignedKeyCertification::make(&b, &c.public(), now).unwrap(),
        ];
        let keys = ServerKeys::load(a.public(), dir.path());
        // Two rotations later, the first answer it sees is signed by c.
        let signer = keys.key_for(c.fingerprint(), &chain).unwrap();
        assert!(keys.remember(dir.path(), &chain, &signer).unwrap());
        let keys = ServerKeys::load(a.public(), dir.path());
        assert!(!keys.remember(dir.path(), &chain, &signer).unwrap());
        let fps: Vec<String> = keys
            .accepted(&[])
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect();
        assert_eq!(fps, [c.fingerprint()]);
        // A damaged file costs nothing but the memory of the chain.
        std::fs::write(path(dir.path()), "{").unwrap();
        let keys = ServerKeys::load(a.public(), dir.path());
        assert_eq!(keys.accepted(&[]).len(), 1);
    }
}
