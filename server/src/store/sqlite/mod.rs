//! The embedded store: one SQLite database in WAL mode.
//!
//! All writes go through one writer thread that takes every job waiting in
//! its queue, runs each inside its own savepoint of one transaction, commits
//! once (fsync with `synchronous=FULL`), and only then answers every job in
//! the batch. Durability therefore costs one fsync per batch, not per
//! request. Reads use a small pool of separate connections.
//!
//! Seen nonces live in the writer's memory and in an append-only table it
//! reloads at start: a replay is refused after a restart too, and recording
//! a nonce appends to one page instead of inserting into a random one.
//!
//! Here: opening, the reader pool and helpers every part shares. The
//! writer thread and its jobs are in `writer`, the seen nonces in `nonces`,
//! the checkpointer in `checkpoint`, the schema in `schema`. Each role's
//! implementation has its own file: `request` (with the `enroll` and
//! `submit` writes), `admin`, `audit`, `migration` (with `export`), and
//! `base` for what every role reaches.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use penguindome_protocol::envelope::utc;
use rusqlite::{Connection, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::diff::Change;
use super::{StoreError, StoreResult, audit_order};
use checkpoint::Checkpointer;
use writer::{Job, Reply, WriterHealth};

mod actions;
mod admin;
mod audit;
mod base;
mod checkpoint;
mod enroll;
mod export;
mod fleet;
mod migration;
mod nonces;
mod request;
mod rewrite;
mod schema;
mod submit;
#[cfg(test)]
mod tests;
mod tokens;
mod writer;

/// Jobs waiting for the writer before senders wait.
const QUEUE: usize = 4096;

/// The SQLite-backed [`Store`](super::Store).
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    writer_health: Arc<WriterHealth>,
}

fn backend_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn ts(t: &DateTime<Utc>) -> String {
    utc::format(t)
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn parse_opt_ts(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // Client data is private: create the file 0600 before SQLite does;
        // SQLite gives its -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(backend_err)?;
        // Before anything else: pdome-admin opens the store while the server
        // writes to it, and the PRAGMAs below must wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend_err)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864; \
             PRAGMA mmap_size={MMAP_SIZE};",
        ))
        .map_err(backend_err)?;
        schema::migrate(&conn)?;
        let wal_frames = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let checkpointer = Checkpointer::start(path, wal_frames.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_health = Arc::new(WriterHealth::default());
        let health = writer_health.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::writer_loop(conn, rx, wal_frames, &health))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            writer_health,
        })
    }

    /// Hands a write to the writer thread; answers once it is committed.
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on a pooled reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_blocking(&readers, &path, f))
            .await
            .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

/// Runs `f` on a pooled reader connection, on the calling thread.
fn read_blocking<T>(
    readers: &Mutex<Vec<Connection>>,
    path: &Path,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> StoreResult<T> {
    let conn = readers.lock().expect("reader pool lock").pop();
    let conn = match conn {
        Some(c) => c,
        None => open_reader(path)?,
    };
    let result = f(&conn).map_err(backend_err);
    readers.lock().expect("reader pool lock").push(conn);
    result
}

/// How much of the database file each connection maps (256 MiB): reads of
/// mapped pages skip a copy.
pub(super) const MMAP_SIZE: u64 = 256 << 20;

/// A read-only connection for the pool.
fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(backend_err)?;
    conn.execute_batch(&format!("PRAGMA mmap_size={MMAP_SIZE};"))
        .map_err(backend_err)?;
    Ok(conn)
}

/// Appends a request's changes to the audit trail, in order.
fn insert_changes(
    conn: &Connection,
    client_id: &str,
    hostname: &str,
    changes: &[Change],
    recorded_at: &DateTime<Utc>,
    collected_at: Option<&DateTime<Utc>>,
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO audit_trail (client_id, hostname, field, action, old, new, recorded_at, n, collected_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(backend_err)?;
    let recorded = ts(recorded_at);
    let collected = collected_at.map(ts);
    for (n, c) in changes.iter().enumerate() {
        stmt.execute(params![
            client_id,
            hostname,
            c.field,
            c.action.as_str(),
            c.old.as_ref().map(Value::to_string),
            c.new.as_ref().map(Value::to_string),
            recorded,
            audit_order(recorded_at, n),
            collected,
        ])
        .map_err(backend_err)?;
    }
    Ok(())
}
