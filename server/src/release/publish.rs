//! The repository on disk: one folder per release under releases/, and a
//! `current` symlink switched atomically once a release is complete, so a
//! client never sees half a repository.
//!
//! ```text
//! <data-dir>/repo/current -> releases/7
//! <data-dir>/repo/releases/7/{key.asc, manifest.json, apt/, rpm/, arch/}
//! ```

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use penguindome_protocol::keys::SecretKey;
use serde::{Deserialize, Serialize};

use super::spec::{BuiltPackage, Family, PackageRecord};
use super::{BuildError, apt_repo, dnf_repo, pacman_repo};

/// Errors while publishing a release.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Building an index failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A release's manifest is unreadable.
    #[error(
        "release manifest {path} is damaged: {reason}; remove that release folder or publish again"
    )]
    Manifest {
        /// Which manifest.
        path: PathBuf,
        /// Why it is unreadable.
        reason: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + use<> {
    let path = path.to_path_buf();
    move |source| PublishError::Io {
        action,
        path,
        source,
    }
}

/// Whether a requested path names a file below a release and nothing else:
/// plain names only, none hidden (no `..`, no `/x`, no dot files).
pub fn is_plain_path(request: &str) -> bool {
    !request.is_empty()
        && Path::new(request)
            .components()
            .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')))
}

/// The file in each release that describes it (never served to clients).
pub const MANIFEST: &str = "manifest.json";

/// What a release folder holds, so later releases can index its packages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The release number.
    pub serial: u64,
    /// When it was published.
    pub published_at: DateTime<Utc>,
    /// Every package its indexes list (its own and those kept from before).
    pub packages: Vec<PackageRecord>,
    /// When `pdome-admin release` started building it (older manifests
    /// lack it), so that publishing time shows in the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new release number.
    pub serial: u64,
    /// Packages built for it: (file name, size).
    pub new_packages: Vec<(String, u64)>,
    /// Packages its indexes list in all.
    pub indexed: usize,
    /// Release folders removed as too old.
    pub pruned: Vec<u64>,
}

/// The repository folder.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
    apt_valid_for: Duration,
    started_at: Option<DateTime<Utc>>,
}

/// How long an apt Release stays valid unless server.toml says otherwise.
pub const APT_VALID_FOR: Duration = Duration::from_secs(14 * 86_400);

impl Repository {
    /// The repository under a server's data directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            apt_valid_for: APT_VALID_FOR,
            started_at: None,
        }
    }

    /// When the release now being made started, for its manifest.
    pub fn with_started_at(mut self, at: DateTime<Utc>) -> Self {
        self.started_at = Some(at);
        self
    }

    /// How long apt Release files are valid (`[server] apt_valid_for`).
    pub fn with_apt_validity(mut self, valid_for: Duration) -> Self {
        self.apt_valid_for = valid_for;
        self
    }

    /// Signs the current release's apt Release file anew when half of its
    /// validity has passed. Returns whether it did.
    pub fn refresh_apt_release(
        &self,
        key: &SecretKey,
        now: DateTime<Utc>,
    ) -> Result<bool, PublishError> {
        let Some(dir) = self.current_dir() else {
            return Ok(false);
        };
        let apt = dir.join(Family::Deb.repo_dir());
        let path = apt.join(format!("dists/{}/Release", apt_repo::SUITE));
        let Ok(release) = fs::read_to_string(&path) else {
            return Ok(false);
        };
        let Some(files) = apt_repo::refreshed(&release, key, now, self.apt_valid_for)? else {
            return Ok(false);
        };
        // Atomically: clients read these files while they change.
        for (rel, bytes) in files {
            replace_file(&apt.join(rel), &bytes)?;
        }
        Ok(true)
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// The folder `current` points to, if anything was published.
    pub fn current_dir(&self) -> Option<PathBuf> {
        let link = self.root.join("current");
        let target = fs::read_link(&link).ok()?;
        Some(self.root.join(target))
    }

    /// The current release number, from where `current` points (one
    /// syscall: every update answer carries it).
    pub fn current_serial(&self) -> Option<u64> {
        let target = fs::read_link(self.root.join("current")).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// The current release's manifest.
    pub fn current(&self) -> Result<Option<Manifest>, PublishError> {
        let Some(dir) = self.current_dir() else {
            return Ok(None);
        };
        let path = dir.join("manifest.json");
        let text = fs::read(&path).map_err(io("reading", &path))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| PublishError::Manifest {
                path,
                reason: e.to_string(),
            })
    }

    /// Release numbers that have a folder, oldest first.
    pub fn serials(&self) -> Result<Vec<u64>, PublishError> {
        let dir = self.releases();
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    if let Some(n) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                        out.push(n);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("listing", &dir)(e)),
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Takes the publishing lock, so two releases never interleave (the
    /// lock goes with the returned guard).
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, PublishError> {
        fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, e)| PublishError::Io {
                action: "locking (is another `pdome-admin release` running?)",
                path,
                source: std::io::Error::from(e),
            },
        )
    }

    /// The number the next release gets: one more than any before, so
    /// versions only ever increase.
    pub fn next_serial(&self) -> Result<u64, PublishError> {
        let current = self.current()?.map(|m| m.serial).unwrap_or(0);
        let highest = self.serials()?.last().copied().unwrap_or(0);
        Ok(current.max(highest) + 1)
    }

    /// Safely maps a request path below `current` to a file.
    pub fn resolve(&self, request: &str) -> Option<PathBuf> {
        if !is_plain_path(request) {
            return None;
        }
        Some(self.current_dir()?.join(request))
    }

    /// Publishes `built` as release `serial`: indexes list them plus the
    /// packages of the `keep - 1` releases before, and older release
    /// folders are removed.
    pub fn publish(
        &self,
        serial: u64,
        built: &[BuiltPackage],
        key: &SecretKey,
        keep: u64,
        now: DateTime<Utc>,
        extras: &[(String, String)],
    ) -> Result<Published, PublishError> {
        let keep = keep.max(1);
        let releases = self.releases();
        fs::create_dir_all(&releases).map_err(io("creating", &releases))?;
        let staging = releases.join(format!(".staging-{serial}-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
        }
        fs::create_dir(&staging).map_err(io("creating", &staging))?;
        let result = write_extras(&staging, extras)
            .and_then(|()| self.fill(&staging, serial, built, key, keep, now));
        let (indexed, pruned) = match result {
            Ok(indexed) => {
                let final_dir = releases.join(serial.to_string());
                fs::rename(&staging, &final_dir).map_err(io("renaming", &staging))?;
                // The rename must be on disk before `current` names it, or a
                // crash could leave `current` pointing at nothing.
                sync_dir(&releases)?;
                self.switch_current(serial)?;
                (indexed, self.prune(serial, keep)?)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        Ok(Published {
            serial,
            new_packages: built
                .iter()
                .map(|b| (b.record.file_name.clone(), b.record.size))
                .collect(),
            indexed,
            pruned,
        })
    }

    fn fill(
        &self,
        dir: &Path,
        serial: u64,
        built: &[BuiltPackage],
        key: &SecretKey,
        keep: u64,
        now: DateTime<Utc>,
    ) -> Result<usize, PublishError> {
        let oldest_kept = serial.saturating_sub(keep - 1);
        let mut records: Vec<PackageRecord> = Vec::new();
        if let (Some(previous), Some(prev_dir)) = (self.current()?, self.current_dir()) {
            for r in previous
                .packages
                .into_iter()
                .filter(|r| r.release >= oldest_kept)
            {
                // Checked before its location becomes a path to copy from.
                r.check()?;
                let family_dir = r.family.repo_dir();
                link_or_copy(
                    &prev_dir.join(family_dir).join(&r.location),
                    &dir.join(family_dir).join(&r.location),
                )?;
                if r.family == Family::Arch {
                    let sig = format!("{}.sig", r.location);
                    link_or_copy(
                        &prev_dir.join(family_dir).join(&sig),
                        &dir.join(family_dir).join(&sig),
                    )?;
                }
                records.push(r);
            }
        }
        for b in built {
            let family_dir = dir.join(b.record.family.repo_dir());
            write_file(&family_dir.join(&b.record.location), &b.bytes)?;
            if let Some(sig) = &b.signature {
                write_file(&family_dir.join(format!("{}.sig", b.record.location)), sig)?;
            }
            records.retain(|r| !(r.family == b.record.family && r.file_name == b.record.file_name));
            records.push(b.record.clone());
        }
        records.sort_by(|a, b| (a.family, &a.name, a.release).cmp(&(b.family, &b.name, b.release)));

        for family in Family::ALL {
            let these: Vec<&PackageRecord> =
                records.iter().filter(|r| r.family == family).collect();
            let files = match family {
                Family::Deb => {
                    self.carry_by_hash(dir)?;
                    apt_repo::index(&these, key, now, self.apt_valid_for)?
                }
                Family::Rpm => dnf_repo::index(&these, key, now, serial)?,
                Family::Arch => {
                    pacman_repo::index(&these, key, u64::try_from(now.timestamp()).unwrap_or(0))?
                }
            };
            for (rel, bytes) in files {
                let path = dir.join(family.repo_dir()).join(&rel);
                // Named by their hash: one carried over is the same file,
                // and may be a link into the release clients read now.
                if rel.contains("/by-hash/") && path.exists() {
                    continue;
                }
                write_file(&path, &bytes)?;
            }
        }
        let public = key
            .public()
            .to_armored()
            .map_err(|e| BuildError::Sign(e.to_string()))?;
        write_file(&dir.join("key.asc"), public.as_bytes())?;
        let manifest = Manifest {
            serial,
            published_at: now,
            packages: records,
            started_at: self.started_at,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| PublishError::Manifest {
            path: dir.join("manifest.json"),
            reason: e.to_string(),
        })?;
        write_file(&dir.join("manifest.json"), &json)?;
        sync_tree(dir)?;
        Ok(manifest.packages.len())
    }

    /// Links the by-hash indexes the current Release names into the new
    /// release, so a client that read the old Release during the switch
    /// finds them (older ones are not carried: nobody can still need them).
    fn carry_by_hash(&self, dir: &Path) -> Result<(), PublishError> {
        let Some(prev) = self.current_dir() else {
            return Ok(());
        };
        let apt = Family::Deb.repo_dir();
        let release = prev
            .join(apt)
            .join(format!("dists/{}/Release", apt_repo::SUITE));
        let named: Vec<String> = fs::read_to_string(&release)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.strip_prefix(' ')?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .collect();
        for rel in apt_repo::by_hash_dirs() {
            for hash in &named {
                let from = prev.join(apt).join(&rel).join(hash);
                if from.is_file() {
                    link_or_copy(&from, &dir.join(apt).join(&rel).join(hash))?;
                }
            }
        }
        Ok(())
    }

    /// Installs a release made elsewhere (a publishing host mirroring the
    /// site's database) as `releases/SERIAL`, replacing a folder of that
    /// number.
    pub fn adopt(&self, serial: u64, files: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let releases = self.releases();
        fs::create_dir_all(&releases).map_err(io("creating", &releases))?;
        let pid = std::process::id();
        let staging = releases.join(format!(".adopting-{serial}-{pid}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
        }
        fs::create_dir(&staging).map_err(io("creating", &staging))?;
        for (rel, bytes) in files {
            if !is_plain_path(rel) {
                let _ = fs::remove_dir_all(&staging);
                return Err(PublishError::Io {
                    action: "refusing the path",
                    path: PathBuf::from(rel),
                    source: std::io::ErrorKind::InvalidData.into(),
                });
            }
            write_file(&staging.join(rel), bytes)?;
        }
        let dir = releases.join(serial.to_string());
        if dir.exists() {
            let old = releases.join(format!(".replaced-{serial}-{pid}"));
            fs::rename(&dir, &old).map_err(io("renaming", &dir))?;
            fs::rename(&staging, &dir).map_err(io("renaming", &staging))?;
            fs::remove_dir_all(&old).map_err(io("removing", &old))?;
        } else {
            fs::rename(&staging, &dir).map_err(io("renaming", &staging))?;
        }
        sync_dir(&releases)
    }

    /// Points `current` at the release folder `serial`.
    pub fn point_current(&self, serial: u64) -> Result<(), PublishError> {
        self.switch_current(serial)
    }

    /// Points `current` at a release with one rename.
    fn switch_current(&self, serial: u64) -> Result<(), PublishError> {
        let tmp = self.root.join(".current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("releases/{serial}"), &tmp)
            .map_err(io("linking", &tmp))?;
        let link = self.root.join("current");
        fs::rename(&tmp, &link).map_err(io("switching", &link))?;
        sync_dir(&self.root)
    }

    /// Removes release folders that no index lists any more.
    fn prune(&self, serial: u64, keep: u64) -> Result<Vec<u64>, PublishError> {
        let mut pruned = Vec::new();
        for s in self.serials()? {
            if s + keep <= serial {
                let dir = self.releases().join(s.to_string());
                fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
                pruned.push(s);
            }
        }
        Ok(pruned)
    }
}

/// Writes a file durably, creating its folder.
/// Files published beside the repositories (the bootstrap scripts), by
/// path relative to the release.
fn write_extras(dir: &Path, extras: &[(String, String)]) -> Result<(), PublishError> {
    for (rel, text) in extras {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        write_file(&path, text.as_bytes())?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mut f = fs::File::create(path).map_err(io("creating", path))?;
    f.write_all(bytes).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

/// Replaces a file atomically (temporary file, fsync, rename, directory
/// fsync).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    penguindome_protocol::files::write_atomic(path, bytes, 0o644).map_err(io("replacing", path))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), PublishError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(io("copying", from))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Syncs every folder in a tree, so that the new release's directory
/// entries are on disk before `current` points at it.
fn sync_tree(dir: &Path) -> Result<(), PublishError> {
    for e in fs::read_dir(dir).map_err(io("listing", dir))?.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&e.path())?;
        }
    }
    sync_dir(dir)
}
