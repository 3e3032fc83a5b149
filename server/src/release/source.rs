//! Where a running server reads the published repositories: the release
//! folder on its own disk (embedded store, one server), or the database
//! (MongoDB store, several servers behind a balancer), so any server
//! answers any request from the same release.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use penguindome_protocol::keys::SecretKey;

use super::publish::{Manifest, PublishError, Repository};
use crate::store::StoreError;

/// Reading or refreshing a published release failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The release folder on disk.
    #[error(transparent)]
    Disk(#[from] PublishError),
    /// The database holding the releases.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest that does not parse.
    #[error("the current release's manifest is damaged ({0}); publish again")]
    Manifest(#[source] serde_json::Error),
    /// Re-signing the apt Release failed.
    #[error(transparent)]
    Build(#[from] super::BuildError),
    /// A blocking task died.
    #[error("a release task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One repository file, as the source has it.
pub enum RepoFile {
    /// A file on disk, streamed.
    Disk {
        /// Where it is.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A file read into memory (from the database).
    Memory(axum::body::Bytes),
}

/// The published repositories, for the request handlers.
#[async_trait::async_trait]
pub trait ReleaseSource: Send + Sync + 'static {
    /// The current release number for update answers; may trail a switch
    /// by the source's poll interval (the repositories themselves never do).
    fn latest_serial(&self) -> Option<u64>;

    /// Brings [`Self::latest_serial`] up to date (the server calls it every
    /// second or two).
    async fn poll(&self) {}

    /// The current release's manifest, if anything is published.
    async fn manifest(&self) -> Result<Option<Manifest>, SourceError>;

    /// A file of the current release by its path below the release root;
    /// `None` for a path with anything but plain names (`..`, dot files).
    async fn file(&self, path: &str) -> Result<Option<RepoFile>, SourceError>;

    /// A file of the current release, read in full.
    async fn read(&self, path: &str) -> Result<Option<axum::body::Bytes>, SourceError> {
        match self.file(path).await? {
            None => Ok(None),
            Some(RepoFile::Memory(bytes)) => Ok(Some(bytes)),
            Some(RepoFile::Disk { path, .. }) => match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(Some(bytes.into())),
                // Switched away from between the two steps.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(SourceError::Disk(PublishError::Io {
                    action: "reading",
                    path,
                    source,
                })),
            },
        }
    }

    /// Signs the current apt Release anew once half its validity has
    /// passed; returns whether it did.
    async fn refresh_apt(&self, key: &SecretKey, now: DateTime<Utc>) -> Result<bool, SourceError>;
}

/// The release folder under the site's data directory.
pub fn site_repository(config: &crate::config::ServerConfig) -> Repository {
    Repository::new(config.server.data_dir.join("repo"))
        .with_apt_validity(config.server.apt_valid_for)
}

/// The release folder on this server's disk.
pub struct DiskReleases {
    repo: Repository,
}

impl DiskReleases {
    /// Serves `repo`.
    pub fn new(repo: Repository) -> Self {
        Self { repo }
    }
}

/// Parses a manifest's bytes.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, SourceError> {
    serde_json::from_slice(bytes).map_err(SourceError::Manifest)
}

#[async_trait::async_trait]
impl ReleaseSource for DiskReleases {
    fn latest_serial(&self) -> Option<u64> {
        self.repo.current_serial()
    }

    async fn manifest(&self) -> Result<Option<Manifest>, SourceError> {
        let repo = self.repo.clone();
        Ok(tokio::task::spawn_blocking(move || repo.current()).await??)
    }

    async fn file(&self, path: &str) -> Result<Option<RepoFile>, SourceError> {
        let Some(path) = self.repo.resolve(path) else {
            return Ok(None);
        };
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(RepoFile::Disk { path, len: m.len() })),
            _ => Ok(None),
        }
    }

    async fn refresh_apt(&self, key: &SecretKey, now: DateTime<Utc>) -> Result<bool, SourceError> {
        let repo = self.repo.clone();
        let key = key.clone();
        Ok(tokio::task::spawn_blocking(move || repo.refresh_apt_release(&key, now)).await??)
    }
}
