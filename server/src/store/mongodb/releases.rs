//! Published releases in the database, so that every server behind a
//! balancer serves the same repositories, and a release outlives the
//! server that published it.
//!
//! Each file of a release is a GridFS file in the bucket `releases`, with
//! `metadata: {serial, path, revision}`; one document in
//! `release_pointer` names the current release and revision. A request
//! resolves the pointer, then the newest revision of its path at or below
//! the pointer's, so every server answers from the same release: the
//! pointer is the one switch, as the `current` symlink is on one disk.
//! Revisions come from re-signing the apt Release before it expires (each
//! attempt picks a fresh, larger number, so a refresh that loses the
//! pointer's compare-and-set is never visible). Files never change once
//! written, so servers keep recently served ones in memory by file id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use futures_util::{AsyncReadExt, AsyncWriteExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use mongodb::options::{GridFsBucketOptions, WriteConcern};
use mongodb::{Collection, Database};

use chrono::{DateTime, Utc};
use penguindome_protocol::keys::SecretKey;

use super::db_err;
use crate::release::apt_repo;
use crate::release::publish::{MANIFEST, Manifest};
use crate::release::source::{ReleaseSource, RepoFile, SourceError, parse_manifest};
use crate::store::{StoreError, StoreResult};

/// The GridFS bucket's name (collections `releases.files`, `releases.chunks`).
pub const BUCKET: &str = "releases";
const POINTER: &str = "release_pointer";
/// GridFS chunk size: a 6 MB package is six chunks.
const CHUNK_BYTES: u32 = 1 << 20;
/// How many bytes of files a server keeps in memory.
const CACHE_BYTES: usize = 96 << 20;

/// Which release clients get, and which revision of its re-signed files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// The release number.
    pub serial: u64,
    /// The newest revision clients see (0: as published).
    pub revision: u64,
}

/// The releases of one database.
pub struct MongoReleases {
    bucket: GridFsBucket,
    files: Collection<Document>,
    pointer: Collection<Document>,
    write_concern: WriteConcern,
    target: String,
    /// How long a re-signed apt Release is valid.
    apt_valid_for: std::time::Duration,
    /// The last pointer read (serial 0: none), for update answers.
    latest: AtomicU64,
    cache: Mutex<Cache>,
}

/// Recently read files by GridFS id, least recently used dropped first.
struct Cache {
    files: lru::LruCache<String, Bytes>,
    bytes: usize,
}

impl MongoReleases {
    pub(super) fn new(db: &Database, write_concern: WriteConcern, target: String) -> Self {
        let bucket = db.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(BUCKET.to_string())
                .chunk_size_bytes(CHUNK_BYTES)
                .write_concern(write_concern.clone())
                .build(),
        );
        Self {
            bucket,
            files: db.collection(&format!("{BUCKET}.files")),
            pointer: db.collection(POINTER),
            write_concern,
            target,
            apt_valid_for: crate::release::publish::APT_VALID_FOR,
            latest: AtomicU64::new(0),
            cache: Mutex::new(Cache {
                files: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Connects on its own (`pdome-admin`, which needs no batcher).
    pub async fn connect(
        config: &crate::config::MongoConfig,
        config_dir: &std::path::Path,
    ) -> StoreResult<Self> {
        let (opts, database, target) = super::client_options(config, config_dir).await?;
        let client = mongodb::Client::with_options(opts).map_err(|e| db_err(&target, e))?;
        let write_concern = super::majority(config.write_timeout);
        Ok(Self::new(
            &client.database(&database),
            write_concern,
            target,
        ))
    }

    /// Connects to the database a URI names (`pdome-admin store migrate`).
    pub async fn connect_uri(uri: &str) -> StoreResult<Self> {
        let config = crate::config::MongoConfig {
            uri: Some(uri.to_string()),
            server_selection_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        Self::connect(&config, std::path::Path::new("/")).await
    }

    /// How long re-signed apt Release files are valid (`[server]
    /// apt_valid_for`).
    pub fn with_apt_validity(mut self, valid_for: std::time::Duration) -> Self {
        self.apt_valid_for = valid_for;
        self
    }

    fn err(&self, e: mongodb::error::Error) -> StoreError {
        db_err(&self.target, e)
    }

    /// The current pointer, if a release was ever published here.
    pub async fn pointer(&self) -> StoreResult<Option<Pointer>> {
        let found = self
            .pointer
            .find_one(doc! {"_id": "current"})
            .await
            .map_err(|e| self.err(e))?;
        let pointer = found.map(|d| Pointer {
            serial: number(&d, "serial"),
            revision: number(&d, "revision"),
        });
        self.latest
            .store(pointer.map_or(0, |p| p.serial), Ordering::Relaxed);
        Ok(pointer)
    }

    /// The serial the last read of the pointer found.
    pub fn latest(&self) -> Option<u64> {
        Some(self.latest.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// Points clients at `to` if the pointer still says `from` (`None`:
    /// nothing was published). Returns whether this call switched it.
    pub async fn switch(&self, from: Option<Pointer>, to: Pointer) -> StoreResult<bool> {
        let set = doc! {"serial": to_i64(to.serial), "revision": to_i64(to.revision)};
        let Some(from) = from else {
            let mut first = set;
            first.insert("_id", "current");
            return match self
                .pointer
                .insert_one(first)
                .write_concern(self.write_concern.clone())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let filter = doc! {
            "_id": "current",
            "serial": to_i64(from.serial),
            "revision": to_i64(from.revision),
        };
        let done = self
            .pointer
            .update_one(filter, doc! {"$set": set})
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.matched_count == 1)
    }

    /// Writes files of release `serial` at `revision`; returns their ids,
    /// so a publish that loses the switch can take exactly them back. When
    /// a write fails, the files already written are taken back first.
    pub async fn upload(
        &self,
        serial: u64,
        revision: u64,
        files: &[(String, Vec<u8>)],
    ) -> StoreResult<Vec<Bson>> {
        let mut ids = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            match self.upload_one(serial, revision, path, bytes).await {
                Ok(id) => ids.push(id),
                Err(e) => {
                    if let Err(cleanup) = self.delete(ids).await {
                        log::warn!("cannot take back a half-written release: {cleanup}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    async fn upload_one(
        &self,
        serial: u64,
        revision: u64,
        path: &str,
        bytes: &[u8],
    ) -> StoreResult<Bson> {
        let mut stream = self
            .bucket
            .open_upload_stream(format!("{serial}/{path}"))
            .metadata(doc! {
                "serial": to_i64(serial),
                "path": path,
                "revision": to_i64(revision),
            })
            .await
            .map_err(|e| self.err(e))?;
        let write = async {
            stream.write_all(bytes).await?;
            stream.close().await
        };
        write.await.map_err(|e| upload_err(&self.target, path, e))?;
        Ok(stream.id().clone())
    }

    /// Deletes files by id (a lost switch, a pruned release).
    pub async fn delete(&self, ids: Vec<Bson>) -> StoreResult<()> {
        for id in ids {
            match self.bucket.delete(id).await {
                Ok(()) => {}
                // Already gone: someone else pruned it.
                Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::GridFs(_)) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Every release number with files, oldest first.
    pub async fn serials(&self) -> StoreResult<Vec<u64>> {
        let values = self
            .files
            .distinct("metadata.serial", doc! {})
            .await
            .map_err(|e| self.err(e))?;
        let mut serials: Vec<u64> = values
            .iter()
            .filter_map(|v| v.as_i64().or(v.as_i32().map(i64::from)))
            .filter_map(|v| u64::try_from(v).ok())
            .collect();
        serials.sort_unstable();
        Ok(serials)
    }

    /// Deletes every file of release `serial`.
    pub async fn delete_release(&self, serial: u64) -> StoreResult<()> {
        let ids = self
            .find(doc! {"metadata.serial": to_i64(serial)})
            .await?
            .into_iter()
            .map(|f| f.id)
            .collect();
        self.delete(ids).await
    }

    /// Every file of release `serial` as of `revision` (its newest version
    /// of each path), read in full: what a publishing host mirrors.
    pub async fn release_files(
        &self,
        serial: u64,
        revision: u64,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let filter = doc! {
            "metadata.serial": to_i64(serial),
            "metadata.revision": {"$lte": to_i64(revision)},
        };
        let mut newest: BTreeMap<String, FilesCollectionDocument> = BTreeMap::new();
        for f in self.find(filter).await? {
            let Some(path) = meta_path(&f) else { continue };
            let keep = newest
                .get(&path)
                .is_none_or(|old| meta_revision(old) < meta_revision(&f));
            if keep {
                newest.insert(path, f);
            }
        }
        let mut out = Vec::with_capacity(newest.len());
        for (path, f) in newest {
            out.push((path, self.read_file(&f).await?.to_vec()));
        }
        Ok(out)
    }

    /// One file of the release `pointer` names, or `None`.
    pub async fn read(&self, pointer: Pointer, path: &str) -> StoreResult<Option<Bytes>> {
        let filter = doc! {
            "metadata.serial": to_i64(pointer.serial),
            "metadata.path": path,
            "metadata.revision": {"$lte": to_i64(pointer.revision)},
        };
        let Some(f) = self
            .find(filter)
            .await?
            .into_iter()
            .max_by_key(meta_revision)
        else {
            return Ok(None);
        };
        self.read_file(&f).await.map(Some)
    }

    async fn find(&self, filter: Document) -> StoreResult<Vec<FilesCollectionDocument>> {
        self.bucket
            .find(filter)
            .await
            .map_err(|e| self.err(e))?
            .try_collect()
            .await
            .map_err(|e| self.err(e))
    }

    async fn read_file(&self, f: &FilesCollectionDocument) -> StoreResult<Bytes> {
        let key = f.id.to_string();
        if let Some(hit) = self.cache.lock().expect("cache lock").files.get(&key) {
            return Ok(hit.clone());
        }
        let mut stream = self
            .bucket
            .open_download_stream(f.id.clone())
            .await
            .map_err(|e| self.err(e))?;
        let mut buf = Vec::with_capacity(usize::try_from(f.length).unwrap_or(0));
        stream.read_to_end(&mut buf).await.map_err(|e| {
            StoreError::Backend(format!("reading a release file from {}: {e}", self.target))
        })?;
        let bytes = Bytes::from(buf);
        self.remember(key, bytes.clone());
        Ok(bytes)
    }

    fn remember(&self, key: String, bytes: Bytes) {
        if bytes.len() > CACHE_BYTES / 4 {
            return;
        }
        let mut cache = self.cache.lock().expect("cache lock");
        cache.bytes += bytes.len();
        if let Some(old) = cache.files.put(key, bytes) {
            cache.bytes -= old.len();
        }
        while cache.bytes > CACHE_BYTES {
            match cache.files.pop_lru() {
                Some((_, old)) => cache.bytes -= old.len(),
                None => break,
            }
        }
    }
}

#[async_trait::async_trait]
impl ReleaseSource for MongoReleases {
    fn latest_serial(&self) -> Option<u64> {
        self.latest()
    }

    async fn poll(&self) {
        if let Err(e) = self.pointer().await {
            log::debug!("cannot read the current release from the database: {e}");
        }
    }

    async fn manifest(&self) -> Result<Option<Manifest>, SourceError> {
        let Some(pointer) = self.pointer().await? else {
            return Ok(None);
        };
        match self.read(pointer, MANIFEST).await? {
            Some(bytes) => Ok(Some(parse_manifest(&bytes)?)),
            None => Err(SourceError::Store(StoreError::Backend(format!(
                "release {} in {} has no {MANIFEST}; publish again",
                pointer.serial, self.target
            )))),
        }
    }

    async fn file(&self, path: &str) -> Result<Option<RepoFile>, SourceError> {
        if !crate::release::publish::is_plain_path(path) {
            return Ok(None);
        }
        let Some(pointer) = self.pointer().await? else {
            return Ok(None);
        };
        Ok(self.read(pointer, path).await?.map(RepoFile::Memory))
    }

    async fn refresh_apt(&self, key: &SecretKey, now: DateTime<Utc>) -> Result<bool, SourceError> {
        let Some(pointer) = self.pointer().await? else {
            return Ok(false);
        };
        let path = format!("apt/dists/{}/Release", apt_repo::SUITE);
        let Some(release) = self.read(pointer, &path).await? else {
            return Ok(false);
        };
        let release = String::from_utf8_lossy(&release);
        let Some(files) = apt_repo::refreshed(&release, key, now, self.apt_valid_for)? else {
            return Ok(false);
        };
        let files: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .map(|(rel, bytes)| (format!("apt/{rel}"), bytes))
            .collect();
        // A number no other server's attempt picks, so the loser of the
        // switch below is never visible while it takes its files back.
        let revision = fresh_revision(pointer.revision, now);
        let ids = self.upload(pointer.serial, revision, &files).await?;
        let to = Pointer {
            serial: pointer.serial,
            revision,
        };
        if self.switch(Some(pointer), to).await? {
            return Ok(true);
        }
        self.delete(ids).await?;
        Ok(false)
    }
}

/// A revision above `current`, from the clock in nanoseconds (two servers
/// refreshing at once do not pick the same one).
fn fresh_revision(current: u64, now: DateTime<Utc>) -> u64 {
    let nanos = now
        .timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    nanos.max(current.saturating_add(1))
}

fn upload_err(target: &str, path: &str, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("writing the release file {path} to {target}: {e}"))
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w))
            if w.code == super::DUPLICATE_KEY
    )
}

fn meta(f: &FilesCollectionDocument) -> Option<&Document> {
    f.metadata.as_ref()
}

fn meta_path(f: &FilesCollectionDocument) -> Option<String> {
    meta(f)?.get_str("path").ok().map(str::to_string)
}

fn meta_revision(f: &FilesCollectionDocument) -> u64 {
    meta(f).map_or(0, |m| number(m, "revision"))
}

/// A non-negative integer field, however the server stored it.
fn number(d: &Document, key: &str) -> u64 {
    match d.get(key) {
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreBase;
    use crate::store::mongodb::tests::{fresh_store, test_uri};

    fn files(tag: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            ("apt/dists/stable/InRelease".into(), tag.as_bytes().to_vec()),
            // Larger than a chunk, so it spans several.
            (
                "apt/pool/agent.deb".into(),
                vec![7; (CHUNK_BYTES as usize) * 2 + 5],
            ),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pointer_switches_once_and_revisions_stay_hidden_until_it_does() {
        let Some(uri) = test_uri() else { return };
        let store = fresh_store(&uri).await;
        let db = store.releases();
        assert_eq!(db.pointer().await.unwrap(), None);
        let first = Pointer {
            serial: 1,
            revision: 0,
        };
        db.upload(1, 0, &files("one")).await.unwrap();
        assert!(db.switch(None, first).await.unwrap());
        // A second first publish loses: the pointer exists.
        assert!(
            !db.switch(
                None,
                Pointer {
                    serial: 9,
                    revision: 0
                }
            )
            .await
            .unwrap()
        );
        assert_eq!(db.latest(), None, "not read yet");
        assert_eq!(db.pointer().await.unwrap(), Some(first));
        assert_eq!(db.latest(), Some(1));
        let deb = db.read(first, "apt/pool/agent.deb").await.unwrap().unwrap();
        assert_eq!(deb.len(), CHUNK_BYTES as usize * 2 + 5);
        assert_eq!(db.read(first, "apt/missing").await.unwrap(), None);

        // A re-signed file at a later revision is invisible until the
        // pointer names that revision; the other files stay as they were.
        let resigned = vec![("apt/dists/stable/InRelease".to_string(), b"two".to_vec())];
        let ids = db.upload(1, 50, &resigned).await.unwrap();
        let path = "apt/dists/stable/InRelease";
        assert_eq!(&db.read(first, path).await.unwrap().unwrap()[..], b"one");
        let second = Pointer {
            serial: 1,
            revision: 50,
        };
        // A switch from a pointer that is no longer current fails.
        assert!(!db.switch(Some(second), first).await.unwrap());
        assert!(db.switch(Some(first), second).await.unwrap());
        assert_eq!(&db.read(second, path).await.unwrap().unwrap()[..], b"two");
        let all = db.release_files(1, 50).await.unwrap();
        assert_eq!(all.len(), 2, "the newest revision of each path");
        assert!(all.iter().any(|(p, b)| p == path && b == b"two"));
        // Taking a revision's files back leaves the older one.
        db.delete(ids).await.unwrap();
        assert_eq!(&db.read(second, path).await.unwrap().unwrap()[..], b"one");

        db.upload(2, 0, &files("three")).await.unwrap();
        assert_eq!(db.serials().await.unwrap(), vec![1, 2]);
        db.delete_release(1).await.unwrap();
        assert_eq!(db.serials().await.unwrap(), vec![2]);
        store.drop_database().await.unwrap();
        store.close().await;
    }

    #[test]
    fn a_fresh_revision_is_above_the_current_one_and_the_clock() {
        let now = chrono::Utc::now();
        let nanos = u64::try_from(now.timestamp_nanos_opt().unwrap()).unwrap();
        assert_eq!(fresh_revision(0, now), nanos);
        assert_eq!(fresh_revision(u64::MAX - 1, now), u64::MAX);
    }
}
