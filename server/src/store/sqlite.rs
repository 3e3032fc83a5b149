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

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use penguindome_protocol::envelope::utc;
use penguindome_protocol::wire::Patch;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::diff::{Change, ChangeAction, diff};
use super::{
    AuditRecord, ClientDocument, ClientSummary, EnrollOutcome, Enrollment, Issue, IssueFilter,
    KeyInfo, KeyRecord, Kind, NewPatch, Parameter, Record, RequestMeta, Store, StoreError,
    StoreResult, Submission, SubmitOutcome, audit_order, plugin_digest, validate_report,
};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer before senders wait.
const QUEUE: usize = 4096;
/// Current schema version (PRAGMA user_version).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clients (
    client_id        TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    enrolled_at      TEXT NOT NULL,
    first_seen_at    TEXT NOT NULL,
    last_seen_at     TEXT NOT NULL,
    last_address     TEXT NOT NULL,
    last_listener    TEXT NOT NULL,
    collected_at     TEXT,
    submitted_at     TEXT,
    last_report_id   TEXT,
    agent_version    TEXT,
    plugin_digests   BLOB,
    revoked_at       TEXT,
    reenroll_allowed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS clients_hostname ON clients(hostname);
CREATE TABLE IF NOT EXISTS client_keys (
    fingerprint TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients(client_id),
    certificate BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX IF NOT EXISTS client_keys_client ON client_keys(client_id);
-- A rowid table: plugin outputs can be tens of KB, and SQLite's
-- WITHOUT ROWID tables are meant for small rows.
CREATE TABLE IF NOT EXISTS plugins (
    id         INTEGER PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients(client_id),
    name       TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS plugins_client_name ON plugins(client_id, name);
CREATE TABLE IF NOT EXISTS audit_trail (
    id           INTEGER PRIMARY KEY,
    client_id    TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    field        TEXT NOT NULL,
    action       TEXT NOT NULL,
    old          TEXT,
    new          TEXT,
    recorded_at  TEXT NOT NULL,
    n            INTEGER NOT NULL DEFAULT 0,
    collected_at TEXT
);
CREATE INDEX IF NOT EXISTS audit_trail_client ON audit_trail(client_id, id);
CREATE TABLE IF NOT EXISTS nonces (
    seq        INTEGER PRIMARY KEY,
    client_id  TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces(expires_at);
CREATE TABLE IF NOT EXISTS patches (
    id         TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    files      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patch_targets (
    patch_id     TEXT NOT NULL REFERENCES patches(id),
    client_id    TEXT NOT NULL,
    completed_at TEXT,
    PRIMARY KEY (patch_id, client_id)
) WITHOUT ROWID;
-- Version 2: the issues audit.
CREATE TABLE IF NOT EXISTS issues (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    detail       TEXT,
    opened_at    TEXT NOT NULL,
    closed_at    TEXT,
    closed_by    TEXT,
    alerted_at   TEXT,
    snoozed_at   TEXT,
    unsnooze_at  TEXT,
    unsnoozed_at TEXT
);
CREATE INDEX IF NOT EXISTS issues_client ON issues(client_id, opened_at);
CREATE INDEX IF NOT EXISTS issues_open ON issues(closed_at);
CREATE TABLE IF NOT EXISTS client_parameters (
    client_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (client_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TEXT NOT NULL
) WITHOUT ROWID;
"#;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

enum Job {
    Enroll(Enrollment, Reply<EnrollOutcome>),
    Touch(RequestMeta, Reply<()>),
    Submit(Box<Submission>, Reply<SubmitOutcome>),
    AddPatch(NewPatch, Reply<()>),
    Ack(RequestMeta, String, Reply<()>),
    Revoke(String, DateTime<Utc>, Reply<bool>),
    AllowReenroll(String, Reply<()>),
    PruneNonces(DateTime<Utc>, Reply<u64>),
    Import(Vec<Record>, Reply<()>),
    PutIssues(Vec<Issue>, Reply<()>),
    PutParameter(Parameter, Reply<()>),
    TakeLease(Lease, Reply<bool>),
    ReleaseLease(String, String, Reply<()>),
    Clear(Reply<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// WAL length (frames of one page) past which the writer restarts the WAL
/// from its beginning. Under constant writes a passive checkpoint never lets
/// the WAL restart on its own, and a long WAL makes page lookups slower.
const WAL_FRAMES_LIMIT: i64 = 16_384;

/// Copies the WAL into the database on its own thread and connection, so
/// that the writer's commits never pay for a checkpoint. It publishes the
/// WAL's length; the writer restarts the WAL between batches when it is long
/// (by then nearly every frame is already copied, so that is quick).
struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path, wal_frames: Arc<std::sync::atomic::AtomicI64>) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend_err)?;
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().expect("checkpointer lock");
                loop {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .expect("checkpointer lock")
                        .0;
                    if *stopped {
                        break;
                    }
                    let frames: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    match frames {
                        Ok((_, log, _)) => {
                            wal_frames.store(log, std::sync::atomic::Ordering::Relaxed)
                        }
                        Err(e) => log::warn!("checkpoint failed: {e}"),
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, handle })
    }

    fn stop(self) {
        *self.stop.0.lock().expect("checkpointer lock") = true;
        self.stop.1.notify_all();
        let _ = self.handle.join();
    }
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
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
             PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864; \
             PRAGMA mmap_size=268435456;",
        )
        .map_err(backend_err)?;
        migrate(&conn)?;
        let wal_frames = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let checkpointer = Checkpointer::start(path, wal_frames.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, wal_frames))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let result = f(&conn).map_err(backend_err);
            readers.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(backend_err)?;
    conn.execute_batch("PRAGMA mmap_size=268435456;")
        .map_err(backend_err)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this server's \
             {SCHEMA_VERSION}; upgrade penguindome-server"
        )));
    }
    if version == SCHEMA_VERSION {
        // Up to date: opening writes nothing (pdome-admin opens the store
        // while the server runs).
        return Ok(());
    }
    // IMMEDIATE: take the write lock first (waiting for it), rather than
    // upgrading a read snapshot, which fails at once when a checkpoint or
    // another writer got in between.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(backend_err)
}

/// Answers one job after the batch's commit (or its failure).
type Finisher = Box<dyn FnOnce(Option<&str>) + Send>;

fn finisher<T: Send + 'static>(reply: Reply<T>, result: StoreResult<T>) -> (Finisher, bool) {
    let ok = result.is_ok();
    let f = Box::new(move |commit_error: Option<&str>| {
        let result = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
            (r, _) => r,
        };
        let _ = reply.send(result);
    });
    (f, ok)
}

/// Batch statistics, logged at debug level every ten seconds of activity.
struct WriterStats {
    since: Instant,
    jobs: usize,
    batches: usize,
    execute: std::time::Duration,
    commit: std::time::Duration,
}

impl WriterStats {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            jobs: 0,
            batches: 0,
            execute: Default::default(),
            commit: Default::default(),
        }
    }

    fn record(&mut self, jobs: usize, execute: std::time::Duration, commit: std::time::Duration) {
        self.jobs += jobs;
        self.batches += 1;
        self.execute += execute;
        self.commit += commit;
        if self.since.elapsed() >= std::time::Duration::from_secs(10) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.jobs > 0 {
            log::debug!(
                "store writer: {} jobs in {} batches ({:.1} per batch), {:.0} µs executing per job, {:.2} ms per commit",
                self.jobs,
                self.batches,
                self.jobs as f64 / self.batches as f64,
                self.execute.as_secs_f64() * 1e6 / self.jobs.max(1) as f64,
                self.commit.as_secs_f64() * 1e3 / self.batches as f64
            );
        }
        *self = Self::new();
    }
}

/// The writer thread's own state: its connection and the seen nonces.
struct Writer {
    conn: Connection,
    nonces: Nonces,
}

/// Nonces seen within their window, keyed by a digest of client and nonce.
struct Nonces {
    seen: std::collections::HashMap<u128, i64>,
}

impl Nonces {
    fn key(client_id: &str, nonce: &str) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(client_id.as_bytes());
        h.update(b":");
        h.update(nonce.as_bytes());
        h.digest128()
    }

    fn load(conn: &Connection, now: i64) -> StoreResult<Self> {
        let mut seen = std::collections::HashMap::new();
        let mut st = conn
            .prepare("SELECT client_id, nonce, expires_at FROM nonces WHERE expires_at >= ?1")
            .map_err(backend_err)?;
        let rows = st
            .query_map([now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend_err)?;
        for row in rows {
            let (client, nonce, expires) = row.map_err(backend_err)?;
            seen.insert(Self::key(&client, &nonce), expires);
        }
        Ok(Self { seen })
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wal_frames: Arc<std::sync::atomic::AtomicI64>,
) {
    let nonces = match Nonces::load(&conn, Utc::now().timestamp()) {
        Ok(n) => n,
        Err(e) => {
            log::error!("cannot load the seen nonces: {e}; refusing writes");
            // Answer every job with the error rather than accept replays.
            while let Some(job) = rx.blocking_recv() {
                match job {
                    Job::Shutdown(done) => {
                        let _ = done.send(());
                        break;
                    }
                    job => fail_job(job, &e.to_string())(None),
                }
            }
            return;
        }
    };
    let mut w = Writer { conn, nonces };
    let mut stats = WriterStats::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut shutdown = None;
        let mut finishers: Vec<Finisher> = Vec::with_capacity(batch.len());
        let mut added: Vec<u128> = Vec::new();
        let mut executed = started;
        let commit_error = match w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(txn) => {
                for job in batch.drain(..) {
                    if let Job::Shutdown(done) = job {
                        shutdown = Some(done);
                        continue;
                    }
                    finishers.push(run_in_savepoint(&txn, &mut w.nonces, &mut added, job));
                }
                executed = Instant::now();
                txn.commit().err().map(|e| e.to_string())
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch.drain(..) {
                    match job {
                        Job::Shutdown(done) => shutdown = Some(done),
                        job => finishers.push(fail_job(job, &msg)),
                    }
                }
                Some(msg)
            }
        };
        if let Some(e) = &commit_error {
            log::error!(
                "SQLite commit failed, {} requests not stored: {e}",
                finishers.len()
            );
            // Their nonces were not stored either.
            for k in &added {
                w.nonces.seen.remove(k);
            }
        }
        stats.record(finishers.len(), executed - started, executed.elapsed());
        for f in finishers {
            f(commit_error.as_deref());
        }
        if wal_frames.load(std::sync::atomic::Ordering::Relaxed) > WAL_FRAMES_LIMIT {
            wal_frames.store(0, std::sync::atomic::Ordering::Relaxed);
            match w
                .conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            {
                Ok(0) => log::debug!("restarted the WAL"),
                Ok(_) => log::debug!("the WAL could not restart yet: readers are busy"),
                Err(e) => log::warn!("cannot restart the WAL: {e}"),
            }
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
            break;
        }
    }
    stats.flush();
    // Leave a small WAL behind for the next start.
    let _ = w.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

fn fail_job(job: Job, msg: &str) -> Finisher {
    fn fail<T: Send + 'static>(r: Reply<T>, msg: &str) -> Finisher {
        finisher(
            r,
            Err(StoreError::Backend(format!(
                "the database refused the write: {msg}"
            ))),
        )
        .0
    }
    match job {
        Job::Enroll(_, r) => fail(r, msg),
        Job::Touch(_, r) => fail(r, msg),
        Job::Submit(_, r) => fail(r, msg),
        Job::AddPatch(_, r) => fail(r, msg),
        Job::Ack(_, _, r) => fail(r, msg),
        Job::Revoke(_, _, r) => fail(r, msg),
        Job::AllowReenroll(_, r) => fail(r, msg),
        Job::PruneNonces(_, r) => fail(r, msg),
        Job::Import(_, r) => fail(r, msg),
        Job::PutIssues(_, r) => fail(r, msg),
        Job::PutParameter(_, r) => fail(r, msg),
        Job::TakeLease(_, r) => fail(r, msg),
        Job::ReleaseLease(_, _, r) => fail(r, msg),
        Job::Clear(r) => fail(r, msg),
        Job::Shutdown(_) => Box::new(|_| {}),
    }
}

/// Runs one job inside a savepoint of the batch's transaction, so that a
/// refused job leaves nothing behind. The savepoint statements are prepared
/// once and reused: this runs for every request.
fn run_in_savepoint(
    conn: &Connection,
    nonces: &mut Nonces,
    added: &mut Vec<u128>,
    job: Job,
) -> Finisher {
    let exec = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(|_| ())
    };
    if let Err(e) = exec("SAVEPOINT job") {
        return fail_job(job, &e.to_string());
    }
    let mut n = NonceLog { nonces, added };
    let (finish, ok) = match job {
        Job::Enroll(e, r) => finisher(r, enroll(conn, &mut n, &e)),
        Job::Touch(m, r) => finisher(r, touch(conn, &mut n, &m)),
        Job::Submit(s, r) => finisher(r, submit(conn, &mut n, &s)),
        Job::AddPatch(p, r) => finisher(r, add_patch(conn, &p)),
        Job::Ack(m, id, r) => finisher(r, acknowledge(conn, &mut n, &m, &id)),
        Job::Revoke(id, at, r) => finisher(r, revoke(conn, &id, &at)),
        Job::AllowReenroll(id, r) => finisher(r, allow_reenroll(conn, &id)),
        Job::PruneNonces(now, r) => finisher(r, prune(conn, n.nonces, &now)),
        Job::Import(records, r) => finisher(r, import(conn, &mut n, &records)),
        Job::PutIssues(issues, r) => finisher(r, put_issues(conn, &issues)),
        Job::PutParameter(p, r) => finisher(r, put_parameter(conn, &p)),
        Job::TakeLease(l, r) => finisher(r, take_lease(conn, &l)),
        Job::ReleaseLease(name, holder, r) => finisher(
            r,
            conn.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(|_| ())
            .map_err(backend_err),
        ),
        Job::Clear(r) => finisher(r, clear(conn, n.nonces)),
        Job::Shutdown(_) => unreachable!("handled by the writer loop"),
    };
    let end = if ok {
        exec("RELEASE job")
    } else {
        exec("ROLLBACK TO job").and_then(|_| exec("RELEASE job"))
    };
    if let Err(e) = end {
        // The batch's commit reports the failure to every job in it.
        log::error!("cannot end a savepoint: {e}");
    }
    finish
}

/// Refuses unknown and revoked keys; the check runs inside the write, so a
/// revocation committed by pdome-admin applies to the very next request.
fn check_key(conn: &Connection, meta: &RequestMeta) -> StoreResult<()> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT client_id, revoked_at FROM client_keys WHERE fingerprint = ?1")
        .and_then(|mut s| {
            s.query_row([&meta.fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(backend_err)?;
    match row {
        None => Err(StoreError::UnknownKey),
        Some((client, _)) if client != meta.client_id => Err(StoreError::UnknownKey),
        Some((client_id, Some(_))) => Err(StoreError::Revoked { client_id }),
        Some(_) => Ok(()),
    }
}

/// The seen nonces and the ones this batch added (forgotten again if the
/// batch's commit fails).
struct NonceLog<'a> {
    nonces: &'a mut Nonces,
    added: &'a mut Vec<u128>,
}

/// Refuses a nonce seen before and records it, in memory and in the log.
fn consume_nonce(
    conn: &Connection,
    log: &mut NonceLog<'_>,
    client_id: &str,
    nonce: &str,
    expires: &DateTime<Utc>,
) -> StoreResult<()> {
    let key = Nonces::key(client_id, nonce);
    if log.nonces.seen.contains_key(&key) {
        return Err(StoreError::Replay);
    }
    conn.prepare_cached("INSERT INTO nonces (client_id, nonce, expires_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![client_id, nonce, expires.timestamp()]))
        .map_err(backend_err)?;
    log.nonces.seen.insert(key, expires.timestamp());
    log.added.push(key);
    Ok(())
}

fn mark_seen(conn: &Connection, meta: &RequestMeta) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE clients SET last_seen_at = ?2, last_address = ?3, last_listener = ?4 \
         WHERE client_id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            meta.client_id,
            ts(&meta.received_at),
            meta.address.to_string(),
            meta.listener
        ])
    })
    .map_err(backend_err)?;
    Ok(())
}

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

fn enroll(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    e: &Enrollment,
) -> StoreResult<EnrollOutcome> {
    let existing_key: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT client_id, revoked_at FROM client_keys WHERE fingerprint = ?1",
            [&e.fingerprint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend_err)?;
    match existing_key {
        Some((client, None)) if client == e.client_id => {
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            return Ok(EnrollOutcome::AlreadyEnrolled);
        }
        Some((client, Some(_))) if client == e.client_id => {
            return Err(StoreError::Revoked { client_id: client });
        }
        Some(_) => {
            return Err(StoreError::Invalid(
                "this key is already enrolled for another client; generate a new key".into(),
            ));
        }
        None => {}
    }
    let client: Option<(Option<String>, bool, String)> = conn
        .query_row(
            "SELECT revoked_at, reenroll_allowed, hostname FROM clients WHERE client_id = ?1",
            [&e.client_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(backend_err)?;
    let now = ts(&e.received_at);
    let mut changes = Vec::new();
    match client {
        Some((revoked, allowed, _)) => {
            if !allowed {
                if revoked.is_some() {
                    return Err(StoreError::Revoked {
                        client_id: e.client_id.clone(),
                    });
                }
                return Err(StoreError::AlreadyEnrolled {
                    client_id: e.client_id.clone(),
                });
            }
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            conn.execute(
                "UPDATE client_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
                params![e.client_id, now],
            )
            .map_err(backend_err)?;
            conn.execute(
                "UPDATE clients SET revoked_at = NULL, reenroll_allowed = 0, hostname = ?2, \
                 last_seen_at = ?3, last_address = ?4, last_listener = ?5 WHERE client_id = ?1",
                params![
                    e.client_id,
                    e.hostname,
                    now,
                    e.address.to_string(),
                    e.listener
                ],
            )
            .map_err(backend_err)?;
            changes.push(Change {
                field: "key".into(),
                action: ChangeAction::Change,
                old: None,
                new: Some(Value::String(e.fingerprint.clone())),
            });
        }
        None => {
            consume_nonce(conn, nonces, &e.client_id, &e.nonce, &e.nonce_expires_at)?;
            conn.execute(
                "INSERT INTO clients (client_id, hostname, enrolled_at, first_seen_at, last_seen_at, \
                 last_address, last_listener) VALUES (?1, ?2, ?3, ?3, ?3, ?4, ?5)",
                params![e.client_id, e.hostname, now, e.address.to_string(), e.listener],
            )
            .map_err(backend_err)?;
            changes.push(Change {
                field: "key".into(),
                action: ChangeAction::Add,
                old: None,
                new: Some(Value::String(e.fingerprint.clone())),
            });
        }
    }
    conn.execute(
        "INSERT INTO client_keys (fingerprint, client_id, certificate, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![e.fingerprint, e.client_id, e.certificate, now],
    )
    .map_err(backend_err)?;
    insert_changes(
        conn,
        &e.client_id,
        &e.hostname,
        &changes,
        &e.received_at,
        None,
    )?;
    Ok(EnrollOutcome::Enrolled)
}

fn touch(conn: &Connection, nonces: &mut NonceLog<'_>, meta: &RequestMeta) -> StoreResult<()> {
    check_key(conn, meta)?;
    consume_nonce(
        conn,
        nonces,
        &meta.client_id,
        &meta.nonce,
        &meta.nonce_expires_at,
    )?;
    mark_seen(conn, meta)
}

/// Plugin digests packed into one column of the client's row: for each
/// plugin, one length byte, the name, then the 16-byte digest.
fn pack_digests(digests: &BTreeMap<String, [u8; 16]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(digests.len() * 40);
    for (name, digest) in digests {
        // Plugin names are at most 64 bytes (validate_report).
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(digest);
    }
    out
}

fn unpack_digests(mut bytes: &[u8]) -> BTreeMap<String, [u8; 16]> {
    let mut out = BTreeMap::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = len as usize;
        if rest.len() < len + 16 {
            break;
        }
        let name = String::from_utf8_lossy(&rest[..len]).into_owned();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&rest[len..len + 16]);
        out.insert(name, digest);
        bytes = &rest[len + 16..];
    }
    out
}

/// What a submission needs to know about its client, read in one query.
struct ClientState {
    hostname: String,
    collected_at: Option<DateTime<Utc>>,
    last_report_id: Option<String>,
    digests: BTreeMap<String, [u8; 16]>,
}

/// Checks the key (as [`check_key`] does) and reads the client's state.
fn key_and_client(conn: &Connection, meta: &RequestMeta) -> StoreResult<ClientState> {
    type Row = (
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT k.client_id, k.revoked_at, c.hostname, c.collected_at, c.last_report_id, c.plugin_digests \
             FROM client_keys k JOIN clients c ON c.client_id = k.client_id WHERE k.fingerprint = ?1",
        )
        .and_then(|mut st| {
            st.query_row([&meta.fingerprint], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(backend_err)?;
    match row {
        None => Err(StoreError::UnknownKey),
        Some((client, ..)) if client != meta.client_id => Err(StoreError::UnknownKey),
        Some((client_id, Some(_), ..)) => Err(StoreError::Revoked { client_id }),
        Some((_, None, hostname, collected, last_report_id, digests)) => Ok(ClientState {
            hostname,
            collected_at: parse_opt_ts(collected).map_err(backend_err)?,
            last_report_id,
            digests: digests.as_deref().map(unpack_digests).unwrap_or_default(),
        }),
    }
}

fn submit(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    s: &Submission,
) -> StoreResult<SubmitOutcome> {
    let meta = &s.meta;
    let report = &s.report;
    validate_report(report)?;
    let state = key_and_client(conn, meta)?;
    consume_nonce(
        conn,
        nonces,
        &meta.client_id,
        &meta.nonce,
        &meta.nonce_expires_at,
    )?;

    // A re-delivery (the agent crashed before deleting its spool file) or a
    // report older than the stored one changes nothing. A new report
    // collected in the same millisecond is not older: an agent's reports
    // arrive one after another.
    if state.last_report_id.as_deref() == Some(report.report_id.as_str())
        || state.collected_at.is_some_and(|c| c > report.collected_at)
    {
        mark_seen(conn, meta)?;
        return Ok(SubmitOutcome::Duplicate);
    }

    // Compare digests; read a stored text back only to diff a change.
    let old_value = |name: &str| -> StoreResult<Option<Value>> {
        let text: Option<String> = conn
            .prepare_cached("SELECT data FROM plugins WHERE client_id = ?1 AND name = ?2")
            .and_then(|mut st| {
                st.query_row(params![meta.client_id, name], |r| r.get(0))
                    .optional()
            })
            .map_err(backend_err)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let mut changes = Vec::new();
    let renamed = state.hostname != report.hostname;
    if renamed {
        changes.push(Change {
            field: "hostname".into(),
            action: ChangeAction::Change,
            old: Some(Value::String(state.hostname.clone())),
            new: Some(Value::String(report.hostname.clone())),
        });
    }
    let now = ts(&meta.received_at);
    let mut old_digests = state.digests;
    {
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO plugins (client_id, name, data, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (client_id, name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            )
            .map_err(backend_err)?;
        for (name, raw) in &report.plugins {
            let digest = s.digests.get(name).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "plugin {name} has no digest; build submissions with Submission::new"
                ))
            })?;
            let old = match old_digests.remove(name) {
                Some(d) if d == *digest => continue,
                Some(_) => old_value(name)?,
                None => None,
            };
            let text = raw.get();
            let new_value: Value = serde_json::from_str(text)
                .map_err(|e| StoreError::Invalid(format!("plugin {name}: {e}")))?;
            diff(
                &format!("plugins.{name}"),
                old.as_ref(),
                Some(&new_value),
                &mut changes,
            );
            upsert
                .execute(params![meta.client_id, name, text, now])
                .map_err(backend_err)?;
        }
    }
    if !old_digests.is_empty() {
        let mut delete = conn
            .prepare_cached("DELETE FROM plugins WHERE client_id = ?1 AND name = ?2")
            .map_err(backend_err)?;
        for name in old_digests.keys() {
            let old = old_value(name)?;
            diff(&format!("plugins.{name}"), old.as_ref(), None, &mut changes);
            delete
                .execute(params![meta.client_id, name])
                .map_err(backend_err)?;
        }
    }
    insert_changes(
        conn,
        &meta.client_id,
        &report.hostname,
        &changes,
        &meta.received_at,
        Some(&report.collected_at),
    )?;
    if renamed {
        // Only a rename touches the host name index.
        conn.prepare_cached("UPDATE clients SET hostname = ?2 WHERE client_id = ?1")
            .and_then(|mut st| st.execute(params![meta.client_id, report.hostname]))
            .map_err(backend_err)?;
    }
    conn.prepare_cached(
        "UPDATE clients SET last_seen_at = ?2, last_address = ?3, last_listener = ?4, collected_at = ?5, \
         submitted_at = ?2, last_report_id = ?6, agent_version = ?7, plugin_digests = ?8 WHERE client_id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            meta.client_id,
            now,
            meta.address.to_string(),
            meta.listener,
            ts(&report.collected_at),
            report.report_id,
            report.agent_version,
            pack_digests(&s.digests),
        ])
    })
    .map_err(backend_err)?;
    Ok(SubmitOutcome::Stored {
        changes: changes.len(),
    })
}

fn add_patch(conn: &Connection, p: &NewPatch) -> StoreResult<()> {
    let files =
        serde_json::to_string(&p.patch.files).map_err(|e| StoreError::Invalid(e.to_string()))?;
    conn.execute(
        "INSERT INTO patches (id, created_at, files) VALUES (?1, ?2, ?3)",
        params![p.patch.id, ts(&p.created_at), files],
    )
    .map_err(backend_err)?;
    for client in &p.client_ids {
        conn.execute(
            "INSERT INTO patch_targets (patch_id, client_id) VALUES (?1, ?2)",
            params![p.patch.id, client],
        )
        .map_err(backend_err)?;
    }
    Ok(())
}

fn acknowledge(
    conn: &Connection,
    nonces: &mut NonceLog<'_>,
    meta: &RequestMeta,
    patch_id: &str,
) -> StoreResult<()> {
    check_key(conn, meta)?;
    consume_nonce(
        conn,
        nonces,
        &meta.client_id,
        &meta.nonce,
        &meta.nonce_expires_at,
    )?;
    let n = conn
        .execute(
            "UPDATE patch_targets SET completed_at = ?3 \
             WHERE patch_id = ?1 AND client_id = ?2 AND completed_at IS NULL",
            params![patch_id, meta.client_id, ts(&meta.received_at)],
        )
        .map_err(backend_err)?;
    if n == 0 {
        return Err(StoreError::NoSuchPatch {
            patch_id: patch_id.to_string(),
        });
    }
    mark_seen(conn, meta)
}

fn revoke(conn: &Connection, client_id: &str, at: &DateTime<Utc>) -> StoreResult<bool> {
    let hostname: Option<String> = conn
        .query_row(
            "SELECT hostname FROM clients WHERE client_id = ?1",
            [client_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend_err)?;
    let Some(hostname) = hostname else {
        return Err(StoreError::NoSuchClient(client_id.to_string()));
    };
    let at_s = ts(at);
    conn.execute(
        "UPDATE client_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
        params![client_id, at_s],
    )
    .map_err(backend_err)?;
    let n = conn
        .execute(
            "UPDATE clients SET revoked_at = ?2, reenroll_allowed = 0 WHERE client_id = ?1 AND revoked_at IS NULL",
            params![client_id, at_s],
        )
        .map_err(backend_err)?;
    if n > 0 {
        let change = Change {
            field: "revoked_at".into(),
            action: ChangeAction::Add,
            old: None,
            new: Some(Value::String(at_s)),
        };
        insert_changes(conn, client_id, &hostname, &[change], at, None)?;
    }
    Ok(n > 0)
}

fn allow_reenroll(conn: &Connection, client_id: &str) -> StoreResult<()> {
    let n = conn
        .execute(
            "UPDATE clients SET reenroll_allowed = 1 WHERE client_id = ?1",
            [client_id],
        )
        .map_err(backend_err)?;
    if n == 0 {
        return Err(StoreError::NoSuchClient(client_id.to_string()));
    }
    Ok(())
}

fn prune(conn: &Connection, nonces: &mut Nonces, now: &DateTime<Utc>) -> StoreResult<u64> {
    let now = now.timestamp();
    nonces.seen.retain(|_, expires| *expires >= now);
    conn.execute("DELETE FROM nonces WHERE expires_at < ?1", [now])
        .map(|n| n as u64)
        .map_err(backend_err)
}

fn put_issues(conn: &Connection, issues: &[Issue]) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO issues (id, client_id, name, detail, opened_at, closed_at, \
             closed_by, alerted_at, snoozed_at, unsnooze_at, unsnoozed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(backend_err)?;
    let opt = |t: &Option<DateTime<Utc>>| t.as_ref().map(ts);
    for i in issues {
        st.execute(params![
            i.id,
            i.client_id,
            i.name,
            i.detail,
            ts(&i.opened_at),
            opt(&i.closed_at),
            i.closed_by,
            opt(&i.alerted_at),
            opt(&i.snoozed_at),
            opt(&i.unsnooze_at),
            opt(&i.unsnoozed_at),
        ])
        .map_err(backend_err)?;
    }
    Ok(())
}

/// A lease request.
struct Lease {
    name: String,
    holder: String,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
}

fn take_lease(conn: &Connection, l: &Lease) -> StoreResult<bool> {
    // Timestamps are fixed-width RFC 3339 UTC, so text order is time order.
    conn.execute(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE leases.until < ?4 OR leases.holder = excluded.holder",
        params![l.name, l.holder, ts(&l.until), ts(&l.now)],
    )
    .map(|n| n == 1)
    .map_err(backend_err)
}

fn put_parameter(conn: &Connection, p: &Parameter) -> StoreResult<()> {
    if p.value.is_null() {
        conn.execute(
            "DELETE FROM client_parameters WHERE client_id = ?1 AND name = ?2",
            params![p.client_id, p.name],
        )
    } else {
        conn.execute(
            "INSERT OR REPLACE INTO client_parameters (client_id, name, value, updated_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![p.client_id, p.name, p.value.to_string(), ts(&p.updated_at)],
        )
    }
    .map(|_| ())
    .map_err(backend_err)
}

const ISSUE_COLUMNS: &str = "id, client_id, name, detail, opened_at, closed_at, closed_by, \
                             alerted_at, snoozed_at, unsnooze_at, unsnoozed_at";

fn issue_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Issue> {
    Ok(Issue {
        id: r.get(0)?,
        client_id: r.get(1)?,
        name: r.get(2)?,
        detail: r.get(3)?,
        opened_at: parse_ts(&r.get::<_, String>(4)?)?,
        closed_at: parse_opt_ts(r.get(5)?)?,
        closed_by: r.get(6)?,
        alerted_at: parse_opt_ts(r.get(7)?)?,
        snoozed_at: parse_opt_ts(r.get(8)?)?,
        unsnooze_at: parse_opt_ts(r.get(9)?)?,
        unsnoozed_at: parse_opt_ts(r.get(10)?)?,
    })
}

fn parameter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Parameter> {
    let text: String = r.get(2)?;
    Ok(Parameter {
        client_id: r.get(0)?,
        name: r.get(1)?,
        value: serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        updated_at: parse_ts(&r.get::<_, String>(3)?)?,
    })
}

/// Writes records copied from another store.
fn import(conn: &Connection, nonces: &mut NonceLog<'_>, records: &[Record]) -> StoreResult<()> {
    use base64::Engine as _;
    for r in records {
        match r {
            Record::Client {
                client_id,
                hostname,
                enrolled_at,
                first_seen_at,
                last_seen_at,
                last_address,
                last_listener,
                collected_at,
                submitted_at,
                last_report_id,
                agent_version,
                revoked_at,
                reenroll_allowed,
                plugins,
            } => {
                let digests: BTreeMap<String, [u8; 16]> = plugins
                    .iter()
                    .map(|(n, t)| (n.clone(), plugin_digest(t)))
                    .collect();
                conn.execute(
                    "INSERT INTO clients (client_id, hostname, enrolled_at, first_seen_at, last_seen_at, last_address, \
                     last_listener, collected_at, submitted_at, last_report_id, agent_version, plugin_digests, \
                     revoked_at, reenroll_allowed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    params![
                        client_id, hostname, ts(enrolled_at), ts(first_seen_at), ts(last_seen_at), last_address,
                        last_listener, collected_at.as_ref().map(ts), submitted_at.as_ref().map(ts), last_report_id,
                        agent_version, pack_digests(&digests), revoked_at.as_ref().map(ts), reenroll_allowed,
                    ],
                )
                .map_err(backend_err)?;
                let updated = ts(submitted_at.as_ref().unwrap_or(last_seen_at));
                for (name, text) in plugins {
                    conn.execute(
                        "INSERT INTO plugins (client_id, name, data, updated_at) VALUES (?1, ?2, ?3, ?4)",
                        params![client_id, name, text, updated],
                    )
                    .map_err(backend_err)?;
                }
            }
            Record::Key {
                fingerprint,
                client_id,
                certificate,
                created_at,
                revoked_at,
            } => {
                let cert = base64::engine::general_purpose::STANDARD
                    .decode(certificate)
                    .map_err(|e| {
                        StoreError::Invalid(format!(
                            "key {fingerprint}: certificate is not base64: {e}"
                        ))
                    })?;
                conn.execute(
                    "INSERT INTO client_keys (fingerprint, client_id, certificate, created_at, revoked_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![fingerprint, client_id, cert, ts(created_at), revoked_at.as_ref().map(ts)],
                )
                .map_err(backend_err)?;
            }
            Record::Audit {
                client_id,
                hostname,
                field,
                action,
                old,
                new,
                recorded_at,
                n,
                collected_at,
            } => {
                conn.prepare_cached(
                    "INSERT INTO audit_trail (client_id, hostname, field, action, old, new, recorded_at, n, collected_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        client_id, hostname, field, action.as_str(), old, new, ts(recorded_at), n,
                        collected_at.as_ref().map(ts),
                    ])
                })
                .map_err(backend_err)?;
            }
            Record::Nonce {
                client_id,
                nonce,
                expires_at,
            } => {
                let expires =
                    DateTime::from_timestamp(*expires_at, 0).unwrap_or(DateTime::UNIX_EPOCH);
                consume_nonce(conn, nonces, client_id, nonce, &expires)?;
            }
            Record::Issue(issue) => put_issues(conn, std::slice::from_ref(issue))?,
            Record::Parameter(p) => put_parameter(conn, p)?,
            Record::Patch {
                id,
                created_at,
                files,
                targets,
            } => {
                conn.execute(
                    "INSERT INTO patches (id, created_at, files) VALUES (?1, ?2, ?3)",
                    params![id, ts(created_at), files],
                )
                .map_err(backend_err)?;
                for (client, done) in targets {
                    conn.execute(
                        "INSERT INTO patch_targets (patch_id, client_id, completed_at) VALUES (?1, ?2, ?3)",
                        params![id, client, done],
                    )
                    .map_err(backend_err)?;
                }
            }
        }
    }
    Ok(())
}

/// Empties every table (a migration target with --force).
fn clear(conn: &Connection, nonces: &mut Nonces) -> StoreResult<()> {
    conn.execute_batch(
        "DELETE FROM issues; DELETE FROM client_parameters; \
         DELETE FROM patch_targets; DELETE FROM patches; DELETE FROM nonces; DELETE FROM audit_trail; \
         DELETE FROM plugins; DELETE FROM client_keys; DELETE FROM clients;",
    )
    .map_err(backend_err)?;
    nonces.seen.clear();
    Ok(())
}

fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Clients => "clients",
        Kind::Keys => "client_keys",
        Kind::Audit => "audit_trail",
        Kind::Nonces => "nonces",
        Kind::Patches => "patches",
        Kind::Issues => "issues",
        Kind::Parameters => "client_parameters",
    }
}

/// Reads one page of records for a copy.
fn export(
    c: &Connection,
    kind: Kind,
    after: Option<String>,
    limit: usize,
) -> rusqlite::Result<Vec<(String, Record)>> {
    use base64::Engine as _;
    let limit = limit as i64;
    let after_text = after.clone().unwrap_or_default();
    let after_num: i64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut out = Vec::new();
    match kind {
        Kind::Clients => {
            let mut st = c.prepare(
                "SELECT client_id, hostname, enrolled_at, first_seen_at, last_seen_at, last_address, last_listener, \
                 collected_at, submitted_at, last_report_id, agent_version, revoked_at, reenroll_allowed \
                 FROM clients WHERE client_id > ?1 ORDER BY client_id LIMIT ?2",
            )?;
            let mut plugins_st =
                c.prepare("SELECT name, data FROM plugins WHERE client_id = ?1 ORDER BY name")?;
            let rows = st.query_map(params![after_text, limit], |r| {
                Ok(Record::Client {
                    client_id: r.get(0)?,
                    hostname: r.get(1)?,
                    enrolled_at: parse_ts(&r.get::<_, String>(2)?)?,
                    first_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
                    last_seen_at: parse_ts(&r.get::<_, String>(4)?)?,
                    last_address: r.get(5)?,
                    last_listener: r.get(6)?,
                    collected_at: parse_opt_ts(r.get(7)?)?,
                    submitted_at: parse_opt_ts(r.get(8)?)?,
                    last_report_id: r.get(9)?,
                    agent_version: r.get(10)?,
                    revoked_at: parse_opt_ts(r.get(11)?)?,
                    reenroll_allowed: r.get(12)?,
                    plugins: BTreeMap::new(),
                })
            })?;
            for row in rows {
                let mut record = row?;
                if let Record::Client {
                    client_id, plugins, ..
                } = &mut record
                {
                    for p in plugins_st.query_map([&*client_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                        let (name, data) = p?;
                        plugins.insert(name, data);
                    }
                    out.push((client_id.clone(), record));
                }
            }
        }
        Kind::Keys => {
            let mut st = c.prepare(
                "SELECT fingerprint, client_id, certificate, created_at, revoked_at FROM client_keys \
                 WHERE fingerprint > ?1 ORDER BY fingerprint LIMIT ?2",
            )?;
            for row in st.query_map(params![after_text, limit], |r| {
                let fingerprint: String = r.get(0)?;
                Ok((
                    fingerprint.clone(),
                    Record::Key {
                        fingerprint,
                        client_id: r.get(1)?,
                        certificate: base64::engine::general_purpose::STANDARD
                            .encode(r.get::<_, Vec<u8>>(2)?),
                        created_at: parse_ts(&r.get::<_, String>(3)?)?,
                        revoked_at: parse_opt_ts(r.get(4)?)?,
                    },
                ))
            })? {
                out.push(row?);
            }
        }
        Kind::Audit => {
            let mut st = c.prepare(
                "SELECT id, client_id, hostname, field, action, old, new, recorded_at, n, collected_at \
                 FROM audit_trail WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            for row in st.query_map(params![after_num, limit], |r| {
                let action: String = r.get(4)?;
                Ok((
                    r.get::<_, i64>(0)?.to_string(),
                    Record::Audit {
                        client_id: r.get(1)?,
                        hostname: r.get(2)?,
                        field: r.get(3)?,
                        action: ChangeAction::parse(&action).unwrap_or(ChangeAction::Change),
                        old: r.get(5)?,
                        new: r.get(6)?,
                        recorded_at: parse_ts(&r.get::<_, String>(7)?)?,
                        n: r.get(8)?,
                        collected_at: parse_opt_ts(r.get(9)?)?,
                    },
                ))
            })? {
                out.push(row?);
            }
        }
        Kind::Nonces => {
            let mut st = c.prepare(
                "SELECT seq, client_id, nonce, expires_at FROM nonces WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            for row in st.query_map(params![after_num, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?.to_string(),
                    Record::Nonce {
                        client_id: r.get(1)?,
                        nonce: r.get(2)?,
                        expires_at: r.get(3)?,
                    },
                ))
            })? {
                out.push(row?);
            }
        }
        Kind::Patches => {
            let mut st = c.prepare(
                "SELECT id, created_at, files FROM patches WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut targets_st = c.prepare(
                "SELECT client_id, completed_at FROM patch_targets WHERE patch_id = ?1 ORDER BY client_id",
            )?;
            let rows: Vec<(String, String, String)> = st
                .query_map(params![after_text, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (id, created, files) in rows {
                let targets = targets_st
                    .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                out.push((
                    id.clone(),
                    Record::Patch {
                        id,
                        created_at: parse_ts(&created)?,
                        files,
                        targets,
                    },
                ));
            }
        }
        Kind::Issues => {
            let mut st = c.prepare(&format!(
                "SELECT {ISSUE_COLUMNS} FROM issues WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            for row in st.query_map(params![after_text, limit], issue_from_row)? {
                let issue = row?;
                out.push((issue.id.clone(), Record::Issue(issue)));
            }
        }
        Kind::Parameters => {
            // The cursor is `client_id NUL name`.
            let (after_client, after_name) = after_text
                .split_once('\0')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            let mut st = c.prepare(
                "SELECT client_id, name, value, updated_at FROM client_parameters \
                 WHERE client_id > ?1 OR (client_id = ?1 AND name > ?2) \
                 ORDER BY client_id, name LIMIT ?3",
            )?;
            for row in st.query_map(params![after_client, after_name, limit], parameter_from_row)? {
                let p = row?;
                out.push((format!("{}\0{}", p.client_id, p.name), Record::Parameter(p)));
            }
        }
    }
    Ok(out)
}

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientSummary> {
    Ok(ClientSummary {
        client_id: r.get(0)?,
        hostname: r.get(1)?,
        first_seen_at: parse_ts(&r.get::<_, String>(2)?)?,
        last_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
        collected_at: parse_opt_ts(r.get(4)?)?,
        last_address: r.get(5)?,
        last_listener: r.get(6)?,
        revoked_at: parse_opt_ts(r.get(7)?)?,
    })
}

const SUMMARY_COLUMNS: &str = "client_id, hostname, first_seen_at, last_seen_at, collected_at, \
     last_address, last_listener, revoked_at";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn find_key(&self, fingerprint: &str) -> StoreResult<Option<KeyRecord>> {
        let fp = fingerprint.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT client_id, certificate, revoked_at FROM client_keys WHERE fingerprint = ?1",
            )?
            .query_row([fp], |r| {
                Ok(KeyRecord {
                    client_id: r.get(0)?,
                    certificate: r.get(1)?,
                    revoked_at: parse_opt_ts(r.get(2)?)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn enroll(&self, e: Enrollment) -> StoreResult<EnrollOutcome> {
        self.call(|r| Job::Enroll(e, r)).await
    }

    async fn touch(&self, meta: RequestMeta) -> StoreResult<()> {
        self.call(|r| Job::Touch(meta, r)).await
    }

    async fn submit(&self, s: Submission) -> StoreResult<SubmitOutcome> {
        self.call(|r| Job::Submit(Box::new(s), r)).await
    }

    async fn pending_patches(&self, client_id: &str) -> StoreResult<Vec<Patch>> {
        let id = client_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.id, p.files FROM patches p JOIN patch_targets t ON t.patch_id = p.id \
                 WHERE t.client_id = ?1 AND t.completed_at IS NULL ORDER BY p.created_at, p.id",
            )?;
            let rows = st.query_map([id], |r| {
                let files: String = r.get(1)?;
                Ok(Patch {
                    id: r.get(0)?,
                    files: serde_json::from_str(&files).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn add_patch(&self, p: NewPatch) -> StoreResult<()> {
        self.call(|r| Job::AddPatch(p, r)).await
    }

    async fn acknowledge_patch(&self, meta: RequestMeta, patch_id: &str) -> StoreResult<()> {
        let id = patch_id.to_string();
        self.call(|r| Job::Ack(meta, id, r)).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientSummary>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM clients ORDER BY hostname, client_id"
            ))?;
            let rows = st.query_map([], summary_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn resolve_client(&self, selector: &str) -> StoreResult<String> {
        let sel = selector.to_string();
        let ids: Vec<String> = self
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT client_id FROM clients WHERE client_id = ?1 \
                     UNION SELECT client_id FROM clients WHERE hostname = ?1 ORDER BY 1",
                )?;
                let rows = st.query_map([sel], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        if ids.iter().any(|id| id == selector) {
            return Ok(selector.to_string());
        }
        match ids.len() {
            0 => Err(StoreError::NoSuchClient(selector.to_string())),
            1 => Ok(ids.into_iter().next().expect("one id")),
            n => Err(StoreError::Ambiguous {
                hostname: selector.to_string(),
                count: n,
                ids: ids.join(", "),
            }),
        }
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientDocument>> {
        let id = client_id.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, enrolled_at, submitted_at, agent_version \
                         FROM clients WHERE client_id = ?1"
                    ),
                    [&id],
                    |r| {
                        Ok((
                            summary_from_row(r)?,
                            parse_ts(&r.get::<_, String>(8)?)?,
                            parse_opt_ts(r.get(9)?)?,
                            r.get::<_, Option<String>>(10)?,
                        ))
                    },
                )
                .optional()?;
            let Some((summary, enrolled_at, submitted_at, agent_version)) = row else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT fingerprint, created_at, revoked_at FROM client_keys WHERE client_id = ?1 \
                 ORDER BY revoked_at IS NOT NULL, created_at DESC",
            )?;
            let keys = st
                .query_map([&id], |r| {
                    Ok(KeyInfo {
                        fingerprint: r.get(0)?,
                        created_at: parse_ts(&r.get::<_, String>(1)?)?,
                        revoked_at: parse_opt_ts(r.get(2)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare("SELECT name, data FROM plugins WHERE client_id = ?1")?;
            let mut plugins = BTreeMap::new();
            for row in st.query_map([&id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })? {
                let (name, data) = row?;
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                plugins.insert(name, value);
            }
            Ok(Some(ClientDocument {
                summary,
                enrolled_at,
                submitted_at,
                agent_version,
                keys,
                plugins,
            }))
        })
        .await
    }

    async fn audit_trail(&self, client_id: &str, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let id = client_id.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT client_id, hostname, field, action, old, new, recorded_at, collected_at FROM \
                 (SELECT * FROM audit_trail WHERE client_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            )?;
            let rows = st.query_map(params![id, limit], |r| {
                let parse_json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
                let action: String = r.get(3)?;
                Ok(AuditRecord {
                    client_id: r.get(0)?,
                    hostname: r.get(1)?,
                    field: r.get(2)?,
                    action: ChangeAction::parse(&action).unwrap_or(ChangeAction::Change),
                    old: parse_json(r.get(4)?),
                    new: parse_json(r.get(5)?),
                    recorded_at: parse_ts(&r.get::<_, String>(6)?)?,
                    collected_at: parse_opt_ts(r.get(7)?)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn revoke_client(&self, client_id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let id = client_id.to_string();
        self.call(|r| Job::Revoke(id, at, r)).await
    }

    async fn allow_reenroll(&self, client_id: &str) -> StoreResult<()> {
        let id = client_id.to_string();
        self.call(|r| Job::AllowReenroll(id, r)).await
    }

    async fn prune_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.call(|r| Job::PruneNonces(now, r)).await
    }

    async fn put_issues(&self, issues: Vec<Issue>) -> StoreResult<()> {
        self.call(|r| Job::PutIssues(issues, r)).await
    }

    async fn issues(&self, filter: IssueFilter) -> StoreResult<Vec<Issue>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE 1");
            if filter.client_id.is_some() {
                sql.push_str(" AND client_id = ?1");
            }
            if filter.open_only {
                sql.push_str(" AND closed_at IS NULL");
            }
            sql.push_str(" ORDER BY client_id, opened_at, id");
            let mut st = c.prepare(&sql)?;
            match &filter.client_id {
                Some(id) => st.query_map([id], issue_from_row)?.collect(),
                None => st.query_map([], issue_from_row)?.collect(),
            }
        })
        .await
    }

    async fn put_parameter(&self, p: Parameter) -> StoreResult<()> {
        self.call(|r| Job::PutParameter(p, r)).await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let lease = Lease {
            name: name.into(),
            holder: holder.into(),
            until,
            now,
        };
        self.call(|r| Job::TakeLease(lease, r)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(|r| Job::ReleaseLease(name, holder, r)).await
    }

    async fn parameters(&self, client_id: Option<&str>) -> StoreResult<Vec<Parameter>> {
        let client = client_id.map(str::to_string);
        self.read(move |c| {
            let base = "SELECT client_id, name, value, updated_at FROM client_parameters";
            match &client {
                Some(id) => c
                    .prepare(&format!("{base} WHERE client_id = ?1 ORDER BY name"))?
                    .query_map([id], parameter_from_row)?
                    .collect(),
                None => c
                    .prepare(&format!("{base} ORDER BY client_id, name"))?
                    .query_map([], parameter_from_row)?
                    .collect(),
            }
        })
        .await
    }

    async fn health(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(|_| ())
    }

    async fn count(&self, kind: Kind) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM {}", table(kind));
        self.read(move |c| {
            c.query_row(&sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn export(
        &self,
        kind: Kind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Record)>> {
        self.read(move |c| export(c, kind, after, limit)).await
    }

    async fn import(&self, records: Vec<Record>) -> StoreResult<()> {
        self.call(|r| Job::Import(records, r)).await
    }

    async fn clear(&self) -> StoreResult<()> {
        self.call(Job::Clear).await
    }

    async fn close(&self) {
        let checkpointer = self.checkpointer.lock().expect("checkpointer lock").take();
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_while_another_process_writes_never_fails() {
        // pdome-admin opens the store while the server commits to it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        SqliteStore::open(&path).unwrap().close().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                // Commits as fast as they go, so that an opener's read
                // snapshot is overtaken often.
                conn.execute_batch("PRAGMA synchronous=OFF; CREATE TABLE IF NOT EXISTS churn(x)")
                    .unwrap();
                let mut commits = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.execute("INSERT INTO churn VALUES (1)", []).unwrap();
                    commits += 1;
                    // The server's checkpointer restarts the WAL now and then.
                    if commits.is_multiple_of(50) {
                        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
                            .unwrap();
                    }
                }
                commits
            })
        };
        for _ in 0..40 {
            let store = SqliteStore::open(&path).expect("opening waits for the writer");
            store.close().await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("db.sqlite")).unwrap());
        conformance::run_all(store.clone()).await;
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopening_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        let (id, fp) = ("a".repeat(32), "F".repeat(40));
        let mut e = conformance::enrollment(&id, &fp, "h");
        e.address = "::1".parse().unwrap();
        store.enroll(e).await.unwrap();
        store.close().await;
        assert!(matches!(
            store.touch(conformance::meta(&id, &fp)).await,
            Err(StoreError::Closed)
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SqliteStore::open(&path).unwrap();
        let doc = again.get_client(&id).await.unwrap().unwrap();
        assert_eq!(doc.summary.last_address, "::1");
        again.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_are_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        let (id, fp) = ("b".repeat(32), "E".repeat(40));
        let enrollment = conformance::enrollment(&id, &fp, "h");
        let enrollment_nonce = enrollment.nonce.clone();
        store.enroll(enrollment).await.unwrap();
        let meta = conformance::meta(&id, &fp);
        store.touch(meta.clone()).await.unwrap();
        store.close().await;

        let again = SqliteStore::open(&path).unwrap();
        assert!(matches!(
            again.touch(meta.clone()).await,
            Err(StoreError::Replay)
        ));
        // The enrollment's nonce is remembered too.
        let mut other = meta.clone();
        other.nonce = enrollment_nonce;
        assert!(matches!(again.touch(other).await, Err(StoreError::Replay)));
        // Once pruned past its expiry, the nonce is forgotten in memory and on disk.
        let later = meta.nonce_expires_at + chrono::Duration::minutes(1);
        assert_eq!(again.prune_nonces(later).await.unwrap(), 2);
        again.close().await;
        let third = SqliteStore::open(&path).unwrap();
        third.touch(meta).await.unwrap();
        third.close().await;
    }

    #[test]
    fn digests_pack_and_unpack() {
        let d: BTreeMap<String, [u8; 16]> = [
            ("a".to_string(), [1u8; 16]),
            ("os_updates".to_string(), [2u8; 16]),
        ]
        .into_iter()
        .collect();
        assert_eq!(unpack_digests(&pack_digests(&d)), d);
        assert!(
            unpack_digests(&[200, 1, 2]).is_empty(),
            "a damaged blob yields nothing, not a panic"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        assert!(e.to_string().contains("upgrade penguindome-server"), "{e}");
    }

    #[tokio::test]
    async fn a_version_1_database_gains_the_audit_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // What a version-1 server left: its tables, data, no issues tables.
        let store = SqliteStore::open(&path).unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        conformance::populate(&store).await;
        let clients = store.count(Kind::Clients).await.unwrap();
        store.close().await;
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TABLE issues; DROP TABLE client_parameters; PRAGMA user_version = 1;",
            )
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.count(Kind::Clients).await.unwrap(),
            clients,
            "data kept"
        );
        let issue = Issue::open("c", "firewall-disabled", None, chrono::Utc::now());
        store.put_issues(vec![issue.clone()]).await.unwrap();
        assert_eq!(
            store.issues(IssueFilter::default()).await.unwrap(),
            vec![issue]
        );
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        store.close().await;
    }
}
