//! The agent's state directory: its key, its stamps, its spool, its lock.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use penguindome_protocol::SecretKey;
use penguindome_protocol::files::{Readers, read_private};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::collectors::Cache;

/// File name of the client's secret key.
pub const KEY_FILE: &str = "client-key.asc";
const STATE_FILE: &str = "state.json";
const CACHE_FILE: &str = "collector-cache.json";
const LOCK_FILE: &str = "agent.lock";
const SPOOL_DIR: &str = "spool";

/// The last error, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastError {
    /// When it happened.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub at: DateTime<Utc>,
    /// What failed.
    pub message: String,
}

/// What the agent remembers between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    /// Fingerprint the server accepted, if enrolled.
    #[serde(default)]
    pub enrolled_fingerprint: Option<String>,
    /// Server URL it enrolled with.
    #[serde(default)]
    pub enrolled_server: Option<String>,
    /// Last collection.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub last_collect_at: Option<DateTime<Utc>>,
    /// Last submit attempt.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub last_submit_attempt_at: Option<DateTime<Utc>>,
    /// Last successful submission.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub last_submit_at: Option<DateTime<Utc>>,
    /// Last successful update check.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub last_update_at: Option<DateTime<Utc>>,
    /// Server clock minus ours at the last update, in seconds.
    #[serde(default)]
    pub clock_skew_seconds: Option<i64>,
    /// The most recent failure, cleared by a fully successful run.
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// When this agent last started an upgrade of its own packages.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub last_upgrade_attempt_at: Option<DateTime<Utc>>,
    /// The release that upgrade aimed at.
    #[serde(default)]
    pub last_upgrade_target: Option<u64>,
    /// The newest release the server named at the last update check.
    #[serde(default)]
    pub latest_release: Option<u64>,
    /// What the server's checks found wrong in the newest delivered report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<penguindome_protocol::wire::Problem>,
    /// When that report was collected.
    #[serde(default, with = "penguindome_protocol::envelope::utc::option")]
    pub problems_as_of: Option<DateTime<Utc>>,
    /// The last refusal of the server's certificate, reported for a week.
    #[serde(default)]
    pub certificate_refused: Option<penguindome_protocol::facts::agent::CertificateRefusal>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

pub use penguindome_protocol::files::write_atomic;

impl StateDir {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create the state directory {}", root.display()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(SPOOL_DIR)
    }

    /// The action journal's directory.
    pub fn actions_dir(&self) -> PathBuf {
        self.root.join("actions")
    }

    /// Path of the client's key.
    pub fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }

    /// Loads the client key, or makes one (0600) on first use.
    pub fn load_or_create_key(&self, machine_id: &str) -> anyhow::Result<SecretKey> {
        let path = self.key_path();
        match fs::read(&path) {
            Ok(_) => {
                let bytes = read_private(&path, Readers::OwnerOnly)?;
                SecretKey::from_bytes(&bytes).with_context(|| {
                    format!(
                        "{} is not a usable key; move it away to make a new one \
                         (an administrator must then run `pdome-admin clients reenroll {machine_id}`)",
                        path.display()
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate(&format!("PenguinDome client {machine_id}"))?;
                write_atomic(&path, &key.to_armored()?, 0o600)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                log::info!(client_id:% = machine_id; "generated a new client key {}", key.fingerprint());
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The remembered state (defaults when missing or unreadable).
    pub fn load(&self) -> AgentState {
        let path = self.root.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "{} is damaged ({e}); starting from empty state",
                    path.display()
                );
                AgentState::default()
            }),
            Err(_) => AgentState::default(),
        }
    }

    /// Saves the state atomically; on a full disk, in place over the old
    /// file (not atomic, but what stops repeated upgrade attempts and
    /// resubmissions must not be lost to a full disk).
    pub fn save(&self, state: &AgentState) -> anyhow::Result<()> {
        let path = self.root.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(state)?;
        match write_atomic(&path, &bytes, 0o600) {
            Err(e) if is_full(&e) => {
                overwrite_in_place(&path, &bytes).with_context(|| {
                    format!("the disk is full: cannot write {}", path.display())
                })?;
                log::warn!(
                    "the disk is full: {} was rewritten in place",
                    path.display()
                );
                Ok(())
            }
            other => other.with_context(|| format!("cannot write {}", path.display())),
        }
    }

    /// Takes the run lock without waiting. None if another run holds it.
    pub fn try_lock(&self) -> anyhow::Result<Option<nix::fcntl::Flock<fs::File>>> {
        let path = self.root.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
        }
    }

    /// The collector cache stored in this directory.
    pub fn cache(&self) -> FileCache {
        FileCache::load(self.root.join(CACHE_FILE))
    }
}

/// A [`Cache`] kept in one JSON file, written back by [`FileCache::save`].
pub struct FileCache {
    path: PathBuf,
    values: std::sync::Mutex<serde_json::Map<String, Value>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl FileCache {
    fn load(path: PathBuf) -> Self {
        let values = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            values: std::sync::Mutex::new(values),
            dirty: false.into(),
        }
    }

    /// Writes the cache back if anything changed.
    pub fn save(&self) -> std::io::Result<()> {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let values = self.values.lock().expect("cache lock");
        let bytes = serde_json::to_vec(&*values).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &bytes, 0o600)
    }
}

impl Cache for FileCache {
    fn get(&self, key: &str) -> Option<Value> {
        self.values.lock().expect("cache lock").get(key).cloned()
    }

    fn put(&self, key: &str, value: &Value) {
        let mut values = self.values.lock().expect("cache lock");
        if values.get(key) != Some(value) {
            values.insert(key.to_string(), value.clone());
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Reads and checks the machine id.
pub fn read_machine_id(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the machine id from {}", path.display()))?;
    let id = text.trim().to_string();
    if !penguindome_protocol::wire::is_valid_client_id(&id) {
        bail!(
            "{} does not hold a machine id (32 lower-case hex characters); run systemd-machine-id-setup",
            path.display()
        );
    }
    Ok(id)
}

/// Whether a write failed for lack of space (or quota).
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Writes `data` over the existing file's bytes, padded with spaces (JSON
/// ignores them) to its old length, so no new block is needed when the
/// state did not grow past the file's last page.
fn overwrite_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    let old = f.metadata()?.len();
    let mut padded = data.to_vec();
    let wanted = usize::try_from(old).unwrap_or(usize::MAX);
    if padded.len() < wanted {
        padded.resize(wanted, b' ');
    }
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(&padded)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_written_in_place_over_a_longer_one_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let store = StateDir::open(d.path()).unwrap();
        let long = AgentState {
            latest_release: Some(123_456_789),
            last_collect_at: Some(Utc::now()),
            ..Default::default()
        };
        store.save(&long).unwrap();
        let short = AgentState::default();
        let path = d.path().join(STATE_FILE);
        overwrite_in_place(&path, &serde_json::to_vec_pretty(&short).unwrap()).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 2, "padded, not cut");
        assert_eq!(store.load().latest_release, None);
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
    }

    #[test]
    fn key_is_made_once_and_private() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(&d.path().join("state")).unwrap();
        let k1 = s.load_or_create_key(&"a".repeat(32)).unwrap();
        let k2 = s.load_or_create_key(&"a".repeat(32)).unwrap();
        assert_eq!(k1.fingerprint(), k2.fingerprint());
        let mode = fs::metadata(s.key_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(s.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let e = s
            .load_or_create_key(&"a".repeat(32))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn state_round_trips_and_survives_damage() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        assert_eq!(s.load(), AgentState::default());
        let st = AgentState {
            last_collect_at: Some(Utc::now()),
            clock_skew_seconds: Some(3),
            ..Default::default()
        };
        s.save(&st).unwrap();
        assert_eq!(s.load().clock_skew_seconds, Some(3));
        fs::write(d.path().join(STATE_FILE), b"{broken").unwrap();
        assert_eq!(s.load(), AgentState::default());
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let held = s.try_lock().unwrap();
        assert!(held.is_some());
        assert!(s.try_lock().unwrap().is_none());
        drop(held);
        assert!(s.try_lock().unwrap().is_some());
    }

    #[test]
    fn machine_id_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("machine-id");
        fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            read_machine_id(&p).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        fs::write(&p, "uninitialized\n").unwrap();
        assert!(
            read_machine_id(&p)
                .unwrap_err()
                .to_string()
                .contains("systemd-machine-id-setup")
        );
    }
}
