//! Who may fetch the repositories and releases: IP ranges, per-endpoint
//! passwords, server-wide users and groups, as the original had them. Any
//! one match grants access. Rules live in `access.toml`, which
//! `pdome-admin password` edits; the server notices changes by itself.
//!
//! ```toml
//! [users]            # server-wide users: name = PBKDF2-SHA256 PHC hash
//! alice = "$pbkdf2-sha256$i=600000,l=32$..."
//! [groups]
//! admins = ["alice"]
//! [endpoint.repo]
//! ip_ranges = ["10.0.0.0/8", "2001:db8::/32"]
//! users = ["alice"]
//! groups = ["admins"]
//! [endpoint.repo.passwords]   # users of this endpoint only
//! agent = "$pbkdf2-sha256$..."
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use lru::LruCache;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::Pbkdf2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file with the rules, in the configuration directory.
pub const ACCESS_FILE: &str = "access.toml";

/// Endpoints with access rules.
pub const ENDPOINTS: &[&str] = &[
    "repo",
    "download_release",
    "shell",
    "metrics",
    "web_fleet",
    "web_clients",
];

/// The endpoints that serve packages: the site package's own repository
/// user reaches these, and never a shell.
pub const REPO_ENDPOINTS: &[&str] = &["repo", "download_release"];

/// Errors reading or changing the rules.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The rules of one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointRules {
    /// Addresses allowed without a password (CIDR, IPv4 or IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<IpNet>,
    /// Server-wide users allowed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups of server-wide users allowed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Users of this endpoint only, with their password hashes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub passwords: BTreeMap<String, String>,
}

/// The whole access.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessRules {
    /// Server-wide users and their password hashes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, String>,
    /// Groups of server-wide users.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules per endpoint; an endpoint without rules refuses everyone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint: BTreeMap<String, EndpointRules>,
}

/// Hashes a password as a PBKDF2-SHA256 PHC string (600,000 rounds).
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    let mut raw = [0u8; 16];
    penguindome_protocol::envelope::random_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw).map_err(|e| AccessError::Hash(e.to_string()))?;
    Pbkdf2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Hash(e.to_string()))
}

/// Checks a password against a PHC string; false for unreadable hashes.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm.as_str() == "pbkdf2-sha256" => {
            Pbkdf2.verify_password(password.as_bytes(), &h).is_ok()
        }
        _ => false,
    }
}

impl AccessRules {
    /// Reads the rules; a missing file means no rules (everything refused).
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(AccessError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let rules: Self = toml::from_str(&text).map_err(|e| AccessError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        rules.validate().map_err(|reason| AccessError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(rules)
    }

    /// Writes the rules atomically, readable by the server's group only.
    pub fn save(&self, path: &Path) -> Result<(), AccessError> {
        let text = format!(
            "# PenguinDome access rules: edit with `pdome-admin password` or by hand.\n\n{}",
            toml::to_string(self).map_err(|e| AccessError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        );
        crate::secrets::write_file(path, text.as_bytes(), 0o640).map_err(|e| AccessError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Names unknown endpoints, users and groups, and unreadable hashes.
    pub fn validate(&self) -> Result<(), String> {
        for (name, phc) in &self.users {
            PasswordHash::new(phc).map_err(|e| format!("user {name}: bad password hash: {e}"))?;
        }
        for (group, members) in &self.groups {
            for m in members {
                if !self.users.contains_key(m) {
                    return Err(format!("group {group} names unknown user {m}"));
                }
            }
        }
        for (endpoint, rules) in &self.endpoint {
            if !ENDPOINTS.contains(&endpoint.as_str()) {
                return Err(format!(
                    "unknown endpoint {endpoint:?}; known: {}",
                    ENDPOINTS.join(", ")
                ));
            }
            for u in &rules.users {
                if !self.users.contains_key(u) {
                    return Err(format!("endpoint {endpoint} names unknown user {u}"));
                }
            }
            for g in &rules.groups {
                if !self.groups.contains_key(g) {
                    return Err(format!("endpoint {endpoint} names unknown group {g}"));
                }
            }
            for (name, phc) in &rules.passwords {
                PasswordHash::new(phc).map_err(|e| {
                    format!("endpoint {endpoint}, user {name}: bad password hash: {e}")
                })?;
            }
        }
        Ok(())
    }

    /// The hashes a user name may match at an endpoint.
    fn candidate_hashes<'a>(&'a self, endpoint: &str, user: &str) -> Vec<&'a str> {
        let Some(rules) = self.endpoint.get(endpoint) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(h) = rules.passwords.get(user) {
            out.push(h.as_str());
        }
        let global = rules.users.iter().any(|u| u == user)
            || rules.groups.iter().any(|g| {
                self.groups
                    .get(g)
                    .is_some_and(|m| m.iter().any(|u| u == user))
            });
        if global && let Some(h) = self.users.get(user) {
            out.push(h.as_str());
        }
        out
    }

    fn ip_allowed(&self, endpoint: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.endpoint
            .get(endpoint)
            .is_some_and(|r| r.ip_ranges.iter().any(|n| n.contains(&ip)))
    }
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Ask for credentials (401 with a Basic challenge).
    Challenge,
    /// Too many password checks wait already: try again later (503).
    Busy,
}

/// The rules as the server uses them: re-read when the file changes, and
/// verified passwords remembered briefly, because PBKDF2 is slow on
/// purpose and apt sends credentials with every request.
pub struct AccessControl {
    path: PathBuf,
    state: Mutex<State>,
    /// Password checks running (as many as cores).
    verifying: tokio::sync::Semaphore,
    /// Password checks running or waiting; past it, requests get Busy.
    admitted: tokio::sync::Semaphore,
}

struct State {
    rules: std::sync::Arc<AccessRules>,
    stamp: Option<SystemTime>,
    checked_at: Instant,
    /// Credentials that passed and that failed, apart: a flood of wrong
    /// passwords evicts only other wrong ones.
    passed: LruCache<[u8; 32], Instant>,
    failed: LruCache<[u8; 32], Instant>,
}

impl State {
    fn forget_all(&mut self) {
        self.passed.clear();
        self.failed.clear();
    }

    /// The remembered verdict on `key`, if recent.
    fn remembered(&mut self, key: &[u8; 32]) -> Option<bool> {
        let recent = |at: &Instant| at.elapsed() < REMEMBER;
        if self.passed.get(key).is_some_and(recent) {
            return Some(true);
        }
        self.failed.get(key).is_some_and(recent).then_some(false)
    }

    fn remember(&mut self, key: [u8; 32], ok: bool) {
        let cache = if ok {
            &mut self.passed
        } else {
            &mut self.failed
        };
        cache.put(key, Instant::now());
    }
}

const RECHECK: Duration = Duration::from_secs(1);
const REMEMBER: Duration = Duration::from_secs(300);
/// Verdicts remembered of each kind.
const REMEMBER_MAX: NonZeroUsize = NonZeroUsize::new(4096).unwrap();
/// Password checks that may wait for a core; each takes about 0.3 s.
const WAITING_MAX: usize = 32;

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl AccessControl {
    /// Loads the rules from `path`.
    pub fn load(path: PathBuf) -> Result<Self, AccessError> {
        Self::load_with(path, cores(), WAITING_MAX)
    }

    /// Loads the rules with `running` password checks at a time and
    /// `waiting` more allowed to wait.
    fn load_with(path: PathBuf, running: usize, waiting: usize) -> Result<Self, AccessError> {
        let rules = AccessRules::load(&path)?;
        Ok(Self {
            state: Mutex::new(State {
                rules: std::sync::Arc::new(rules),
                stamp: stamp(&path),
                checked_at: Instant::now(),
                passed: LruCache::new(REMEMBER_MAX),
                failed: LruCache::new(REMEMBER_MAX),
            }),
            path,
            verifying: tokio::sync::Semaphore::new(running),
            admitted: tokio::sync::Semaphore::new(running + waiting),
        })
    }

    fn rules(&self) -> std::sync::Arc<AccessRules> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked_at.elapsed() >= RECHECK {
            st.checked_at = Instant::now();
            let now = stamp(&self.path);
            if now != st.stamp {
                match AccessRules::load(&self.path) {
                    Ok(r) => {
                        st.rules = std::sync::Arc::new(r);
                        st.forget_all();
                        log::info!("access rules reloaded from {}", self.path.display());
                    }
                    // Keep the last good rules rather than lock everyone out.
                    Err(e) => log::error!("keeping the previous access rules: {e}"),
                }
                st.stamp = now;
            }
        }
        st.rules.clone()
    }

    /// True when the rules name `endpoint` at all (endpoints that must be
    /// switched on explicitly, like remote shells, check this first).
    pub fn has_rules(&self, endpoint: &str) -> bool {
        self.rules().endpoint.contains_key(endpoint)
    }

    /// Decides on a request to `endpoint` from `ip` with optional Basic
    /// credentials.
    pub async fn check(
        &self,
        endpoint: &str,
        ip: IpAddr,
        basic: Option<(String, String)>,
    ) -> Decision {
        if self.rules().ip_allowed(endpoint, ip) {
            return Decision::Allow;
        }
        let Some((user, password)) = basic else {
            return Decision::Challenge;
        };
        self.check_password(endpoint, user, password).await
    }

    /// Whether `user` is one of `endpoint`'s users (its own, or server-wide
    /// users and groups granted it), without checking a password.
    pub fn grants(&self, endpoint: &str, user: &str) -> bool {
        !self.rules().candidate_hashes(endpoint, user).is_empty()
    }

    /// Decides on a user and password for `endpoint`, whatever the
    /// address: for what an address alone must never open.
    pub async fn check_password(&self, endpoint: &str, user: String, password: String) -> Decision {
        let rules = self.rules();
        let hashes: Vec<String> = rules
            .candidate_hashes(endpoint, &user)
            .into_iter()
            .map(str::to_string)
            .collect();
        // An unknown user costs the same PBKDF2 as a known one, so that
        // answer times do not tell which user names exist.
        let known = !hashes.is_empty();
        let hashes = if known {
            hashes
        } else {
            vec![dummy_hash().to_string()]
        };
        let mut key_input = Sha256::new();
        for part in [endpoint, &user, &password] {
            key_input.update(part.as_bytes());
            key_input.update([0]);
        }
        for h in &hashes {
            key_input.update(h.as_bytes());
        }
        let key: [u8; 32] = key_input.finalize().into();
        let remembered = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remembered(&key);
        let ok = match remembered {
            Some(ok) => ok,
            None => match self.verify(hashes, password, known).await {
                Some(ok) => {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.remember(key, ok);
                    ok
                }
                None => return Decision::Busy,
            },
        };
        if ok {
            Decision::Allow
        } else {
            Decision::Challenge
        }
    }

    /// Runs PBKDF2 on a core of its own, or says `None` when too many
    /// checks wait already (a flood must not queue without bound).
    async fn verify(&self, hashes: Vec<String>, password: String, known: bool) -> Option<bool> {
        let _admitted = self.admitted.try_acquire().ok()?;
        let _running = self.verifying.acquire().await.ok()?;
        let ok = tokio::task::spawn_blocking(move || {
            hashes.iter().any(|h| verify_password(&password, h)) && known
        })
        .await
        .unwrap_or(false);
        Some(ok)
    }
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// A hash no password is checked against for real (made once).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such user").unwrap_or_default())
}

/// Parses an `Authorization: Basic` header value.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AccessRules {
        let mut r = AccessRules::default();
        r.users
            .insert("alice".into(), hash_password("wonder").unwrap());
        r.users
            .insert("bob".into(), hash_password("builder").unwrap());
        r.groups.insert("ops".into(), vec!["bob".into()]);
        r.endpoint.insert(
            "repo".into(),
            EndpointRules {
                ip_ranges: vec![
                    "10.1.0.0/16".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ],
                users: vec!["alice".into()],
                groups: vec!["ops".into()],
                passwords: [("agent".to_string(), hash_password("s3cret").unwrap())].into(),
            },
        );
        r
    }

    #[tokio::test]
    async fn password_checks_past_the_queue_are_busy_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCESS_FILE);
        rules().save(&path).unwrap();
        let ac = AccessControl::load_with(path, 1, 1).unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        let guesses = (0..6).map(|i| {
            let cred = Some(("alice".to_string(), format!("guess {i}")));
            ac.check("repo", outside, cred)
        });
        let decisions = futures_util::future::join_all(guesses).await;
        let busy = decisions.iter().filter(|d| **d == Decision::Busy).count();
        // One running, one waiting: the other four are told at once.
        assert_eq!(busy, 4, "{decisions:?}");
        assert!(decisions[..2].iter().all(|d| *d == Decision::Challenge));
        // Once the queue drained, the right password gets through.
        let right = Some(("alice".to_string(), "wonder".to_string()));
        assert_eq!(ac.check("repo", outside, right).await, Decision::Allow);
    }

    #[test]
    fn a_flood_of_wrong_passwords_keeps_the_good_ones_remembered() {
        let mut st = State {
            rules: std::sync::Arc::new(AccessRules::default()),
            stamp: None,
            checked_at: Instant::now(),
            passed: LruCache::new(REMEMBER_MAX),
            failed: LruCache::new(REMEMBER_MAX),
        };
        st.remember([1; 32], true);
        for i in 0..3 * REMEMBER_MAX.get() as u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            key[31] = 2;
            st.remember(key, false);
        }
        assert_eq!(st.remembered(&[1; 32]), Some(true));
        assert_eq!(st.failed.len(), REMEMBER_MAX.get());
    }

    #[tokio::test]
    async fn any_one_match_grants_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCESS_FILE);
        rules().save(&path).unwrap();
        let ac = AccessControl::load(path).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cred = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        let outside = ip("192.0.2.1");
        assert_eq!(
            ac.check("repo", ip("10.1.2.3"), None).await,
            Decision::Allow
        );
        assert_eq!(
            ac.check("repo", ip("::ffff:10.1.2.3"), None).await,
            Decision::Allow
        );
        assert_eq!(
            ac.check("repo", ip("2001:db8::7"), None).await,
            Decision::Allow
        );
        assert_eq!(ac.check("repo", outside, None).await, Decision::Challenge);
        assert_eq!(
            ac.check("repo", outside, cred("agent", "s3cret")).await,
            Decision::Allow
        );
        assert_eq!(
            ac.check("repo", outside, cred("agent", "wrong")).await,
            Decision::Challenge
        );
        assert_eq!(
            ac.check("repo", outside, cred("alice", "wonder")).await,
            Decision::Allow
        );
        assert_eq!(
            ac.check("repo", outside, cred("bob", "builder")).await,
            Decision::Allow,
            "via group"
        );
        assert_eq!(
            ac.check("repo", outside, cred("bob", "wonder")).await,
            Decision::Challenge
        );
        // Nobody gets in with a name that does not exist, whatever the password.
        assert_eq!(
            ac.check("repo", outside, cred("mallory", "no such user"))
                .await,
            Decision::Challenge
        );
        // An endpoint without rules refuses everyone.
        assert_eq!(
            ac.check("download_release", ip("10.1.2.3"), cred("alice", "wonder"))
                .await,
            Decision::Challenge
        );
        // Remembered answers do not outlive a change of the rules.
        assert_eq!(
            ac.check("repo", outside, cred("agent", "s3cret")).await,
            Decision::Allow
        );
        let mut changed = rules();
        changed.endpoint.get_mut("repo").unwrap().passwords.clear();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        changed.save(&dir.path().join(ACCESS_FILE)).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(
            ac.check("repo", outside, cred("agent", "s3cret")).await,
            Decision::Challenge
        );
    }

    #[test]
    fn hashes_are_pbkdf2_sha256_and_invalid_files_are_refused() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$pbkdf2-sha256$i=600000,"), "{h}");
        assert!(verify_password("pw", &h) && !verify_password("px", &h));
        assert!(!verify_password("pw", "not a hash"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCESS_FILE);
        std::fs::write(&path, "[endpoint.repo]\nusers = [\"nobody\"]\n").unwrap();
        let e = AccessRules::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown user nobody"), "{e}");
        std::fs::write(&path, "[endpoint.submit]\n").unwrap();
        assert!(
            AccessRules::load(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown endpoint")
        );
        assert_eq!(
            parse_basic("Basic YWdlbnQ6czNjcmV0"),
            Some(("agent".into(), "s3cret".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
    }
}
