//! The site's sealing policy as this agent keeps it, and sealing a report
//! with it before the report is spooled, so selected values never reach
//! the disk, the wire or the server in the clear.
//!
//! The policy comes from the server's signed `/update` answers and is kept
//! in the state directory between runs (an answer without one turns
//! sealing off). Before the first answer, the site package's copy
//! ([`SITE_FILE`]) applies, so a machine that collects before it ever
//! reached the server spools nothing selected in the clear.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use penguindome_protocol::SecretKey;
use penguindome_protocol::files;
use penguindome_protocol::sealing::{
    DigestKey, Recipient, SealError, SealingPolicy, Selector, seal_plugins,
};
use penguindome_protocol::wire::Report;
use serde_json::Value;

use crate::collectors::Cache;

/// The file, in the state directory.
const FILE: &str = "sealing.json";

/// What the digests of this client's sealed values are keyed with.
const DIGEST_PURPOSE: &str = "penguindome sealed-field digest v1";

/// The site package's copy, below the package root.
pub const SITE_FILE: &str = "usr/share/penguindome/sealing.json";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Why a report could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// The kept policy does not read.
    #[error("the sealing policy {path} is damaged ({source}); the next update rewrites it")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The policy cannot be read from disk.
    #[error("cannot read the sealing policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Sealing itself failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The client key cannot derive the digest key.
    #[error("cannot derive the digest key from the client key: {0}")]
    Key(#[from] penguindome_protocol::keys::KeyError),
}

/// The policy in force: the last answer's (which may be none), else the
/// site package's.
pub fn load(state_dir: &Path, package_root: &Path) -> Result<Option<SealingPolicy>, SealingError> {
    match read(&path(state_dir))? {
        Some(kept) => Ok(kept),
        None => Ok(read(&package_root.join(SITE_FILE))?.flatten()),
    }
}

/// A policy file: `None` when absent; `Some(None)` says "seal nothing".
fn read(p: &Path) -> Result<Option<Option<SealingPolicy>>, SealingError> {
    match std::fs::read(p) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| SealingError::Damaged {
                    path: p.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SealingError::Read {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// Keeps the policy of a verified answer (none: sealing off, which also
/// overrides the site package's copy). Returns whether it changed.
pub fn remember(state_dir: &Path, policy: Option<&SealingPolicy>) -> Result<bool, String> {
    let p = path(state_dir);
    if let Ok(Some(kept)) = read(&p)
        && kept.as_ref() == policy
    {
        return Ok(false);
    }
    serde_json::to_vec_pretty(&policy)
        .map_err(std::io::Error::other)
        .and_then(|text| files::write_atomic(&p, &text, 0o600))
        .map(|()| true)
        .map_err(|e| format!("cannot keep the sealing policy in {}: {e}", p.display()))
}

/// Seals the fields the policy selects in `report`. Returns how many
/// values were sealed.
pub fn seal(
    report: &mut Report,
    policy: &SealingPolicy,
    key: &SecretKey,
) -> Result<usize, SealingError> {
    let recipient = Recipient::from_bytes(policy.public_key.as_bytes())?;
    let selectors: Vec<Selector> = policy
        .selectors
        .iter()
        .filter_map(|s| match Selector::parse(s) {
            Ok(sel) => Some(sel),
            Err(e) => {
                log::warn!("ignoring a sealing selector from the server: {e}");
                None
            }
        })
        .collect();
    let digests = DigestKey(key.derive_key(DIGEST_PURPOSE)?);
    Ok(seal_plugins(
        &mut report.plugins,
        &selectors,
        &recipient,
        &digests,
    )?)
}

/// The cache a collection under `policy` uses: collectors whose output
/// holds a sealed field keep nothing in it, and what they kept before is
/// overwritten, so a sealed value never rests on disk in the clear. Cache
/// keys are `<collector>.<name>`.
pub struct SealedCache<'a> {
    inner: &'a dyn Cache,
    plugins: BTreeSet<String>,
}

impl<'a> SealedCache<'a> {
    /// Wraps `inner` for `policy` (none: everything passes).
    pub fn new(inner: &'a dyn Cache, policy: Option<&SealingPolicy>) -> Self {
        let plugins = policy
            .into_iter()
            .flat_map(|p| &p.selectors)
            .filter_map(|s| Selector::parse(s).ok())
            .map(|s| s.plugin)
            .collect();
        Self { inner, plugins }
    }

    fn sealed(&self, key: &str) -> bool {
        let owner = key.split('.').next().unwrap_or(key);
        self.plugins.contains(owner)
    }
}

impl Cache for SealedCache<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        if self.sealed(key) {
            if self.inner.get(key).is_some_and(|v| !v.is_null()) {
                self.inner.put(key, &Value::Null);
            }
            return None;
        }
        self.inner.get(key)
    }

    fn put(&self, key: &str, value: &Value) {
        if self.sealed(key) {
            self.inner.put(key, &Value::Null);
        } else {
            self.inner.put(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use penguindome_protocol::sealing::{generate_key, public_armored};
    use serde_json::json;

    fn policy() -> SealingPolicy {
        let (public_key, fingerprint) = public_armored(&generate_key("t").unwrap()).unwrap();
        SealingPolicy {
            public_key,
            fingerprint,
            selectors: vec!["asset.owner".into()],
        }
    }

    #[test]
    fn the_servers_word_wins_over_the_site_package() {
        let (state, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (site, p) = (policy(), policy());
        assert_eq!(load(state.path(), root.path()).unwrap(), None);
        let file = root.path().join(SITE_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, serde_json::to_vec(&site).unwrap()).unwrap();
        assert_eq!(load(state.path(), root.path()).unwrap(), Some(site.clone()));
        assert!(remember(state.path(), Some(&p)).unwrap());
        assert!(!remember(state.path(), Some(&p)).unwrap());
        assert_eq!(load(state.path(), root.path()).unwrap(), Some(p));
        // Disabled on the server: nothing is sealed, whatever the package says.
        assert!(remember(state.path(), None).unwrap());
        assert_eq!(load(state.path(), root.path()).unwrap(), None);
        assert!(!remember(state.path(), None).unwrap());
        std::fs::write(state.path().join(FILE), "{").unwrap();
        assert!(matches!(
            load(state.path(), root.path()),
            Err(SealingError::Damaged { .. })
        ));
    }

    #[test]
    fn collectors_with_sealed_fields_keep_nothing_in_the_cache() {
        let inner = crate::collectors::MemoryCache::default();
        inner.put("asset.last", &json!({"owner": "alice"}));
        inner.put("screenlock.last_sessions", &json!({"a": 1}));
        let p = policy();
        let cache = SealedCache::new(&inner, Some(&p));
        assert_eq!(cache.get("asset.last"), None);
        assert_eq!(
            inner.get("asset.last"),
            Some(Value::Null),
            "the old entry is gone"
        );
        cache.put("asset.last", &json!({"owner": "bob"}));
        assert_eq!(inner.get("asset.last"), Some(Value::Null));
        assert_eq!(cache.get("screenlock.last_sessions"), Some(json!({"a": 1})));
    }

    #[test]
    fn a_client_digests_the_same_value_alike_and_unlike_another_client() {
        let p = policy();
        let report = |owner: &str| Report {
            report_id: "r".into(),
            hostname: "h".into(),
            collected_at: chrono::Utc::now(),
            agent_version: "1".into(),
            facts_version: 2,
            plugins: [("asset".to_string(), json!({"owner": owner}))].into(),
        };
        let digest = |key: &SecretKey, owner: &str| {
            let mut r = report(owner);
            assert_eq!(seal(&mut r, &p, key).unwrap(), 1);
            r.plugins["asset"]["owner"]["sealed"]["digest"].clone()
        };
        let (a, b) = (
            SecretKey::generate("a").unwrap(),
            SecretKey::generate("b").unwrap(),
        );
        assert_eq!(digest(&a, "alice"), digest(&a, "alice"));
        assert_ne!(digest(&a, "alice"), digest(&a, "bob"));
        assert_ne!(digest(&a, "alice"), digest(&b, "alice"));
    }
}
