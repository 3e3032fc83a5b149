//! The MongoDB store: the same behaviour as the embedded one, for sites
//! that want replication, failover, or several servers on one database.
//!
//! - One document per client in `clients`; `plugins.<name>` holds each
//!   collector's JSON text exactly as received (MongoDB field names cannot
//!   hold every key a collector reports, such as dotted package names).
//! - Everything several server processes must share lives in the database:
//!   seen nonces (`nonces`, unique `_id`) and revocations (`client_keys`).
//! - Submissions are batched: concurrent ones share a handful of round trips
//!   (key lookup, client states, `insert_many` of nonces and audit records,
//!   one multi-statement `update`), so a round trip per submission is not
//!   the limit.
//! - No transactions (FerretDB has none, and a standalone server neither):
//!   the nonce is recorded first, audit records have ids derived from the
//!   report so a retry cannot duplicate them, and the client update is
//!   conditional on the state it was computed from.
//! - Writes wait for `w: majority, j: true`: a majority of a replica set,
//!   or the journal of a standalone server.
//!
//! Here: connecting, and the helpers every part shares. `options` builds
//! the driver's options, `indexes` sets the database up, `fields` reads and
//! writes document fields, `batch` and `plan` batch submissions, `enroll`
//! enrolls keys, `records` converts documents for copies. Each role's
//! implementation has its own file: `request`, `admin`, `audit`,
//! `migration`, and `base` for what every role reaches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Collection, Database};
use serde_json::Value;
use tokio::sync::mpsc;

use super::diff::Change;
use super::{StoreError, StoreResult, audit_order};
use crate::config::MongoConfig;
use batch::Pending;
use fields::{opt_date, to_bson_date};

mod actions;
mod admin;
mod audit;
mod base;
mod batch;
mod enroll;
mod fields;
mod fleet;
mod indexes;
mod migration;
mod options;
mod plan;
mod records;
mod releases;
mod request;
mod rewrite;
mod sessions;
mod shell_routes;
#[cfg(test)]
pub(crate) mod tests;
mod tokens;

pub use options::client_options;
pub use releases::{MongoReleases, Pointer};
pub use sessions::MongoSessions;
pub use shell_routes::MongoShellRoutes;

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;

/// The MongoDB-backed [`Store`](super::Store).
pub struct MongoStore {
    inner: Arc<Inner>,
    batch_tx: mpsc::Sender<Pending>,
    batcher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What every part of the store shares: the connection, its collections
/// and the write concern.
struct Inner {
    client: Client,
    db: Database,
    clients: Collection<Document>,
    keys: Collection<Document>,
    audit: Collection<Document>,
    nonces: Collection<Document>,
    actions: Collection<Document>,
    action_targets: Collection<Document>,
    issues: Collection<Document>,
    parameters: Collection<Document>,
    leases: Collection<Document>,
    tokens: Collection<Document>,
    write_concern: WriteConcern,
    /// Where the database is, for messages.
    target: String,
    /// Steps that fail once, as if the database had gone (tests).
    #[cfg(test)]
    faults: std::sync::Mutex<HashSet<&'static str>>,
}

/// Every write waits for a majority (or a standalone server's journal),
/// at most `write_timeout`.
fn majority(write_timeout: Duration) -> WriteConcern {
    WriteConcern::builder()
        .w(mongodb::options::Acknowledgment::Majority)
        .journal(true)
        .w_timeout(write_timeout)
        .build()
}

/// Turns a driver error into a message an administrator can act on.
fn db_err(target: &str, e: mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    let msg = match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => format!(
            "cannot reach a usable MongoDB server at {target} (is it running, reachable, and \
             for a replica set, does it have a primary?): {message}"
        ),
        ErrorKind::Authentication { message, .. } => format!(
            "MongoDB at {target} refused the credentials: {message}; check store.username and \
             store.password_file"
        ),
        ErrorKind::Io(io) => format!("network error talking to MongoDB at {target}: {io}"),
        ErrorKind::Command(c) if c.code == 13 => format!(
            "the MongoDB user lacks a privilege on {target}: {}; grant readWrite on the database",
            c.message
        ),
        ErrorKind::InvalidTlsConfig { message, .. } => {
            format!("the TLS settings for MongoDB are unusable: {message}")
        }
        _ => format!("MongoDB at {target}: {e}"),
    };
    StoreError::Backend(msg)
}

/// Is this an insert failure made only of duplicate keys? Returns their
/// indexes, or the error back when anything else failed.
fn duplicate_indexes(e: mongodb::error::Error) -> Result<HashSet<usize>, mongodb::error::Error> {
    use mongodb::error::ErrorKind;
    if let ErrorKind::InsertMany(ime) = e.kind.as_ref()
        && ime.write_concern_error.is_none()
        && let Some(we) = &ime.write_errors
        && we.iter().all(|w| w.code == DUPLICATE_KEY)
    {
        return Ok(we.iter().map(|w| w.index).collect());
    }
    Err(e)
}

fn nonce_id(client_id: &str, nonce: &str) -> String {
    format!("{client_id}:{nonce}")
}

impl MongoStore {
    /// Connects (lazily: an unreachable database does not stop the server,
    /// requests fail with a clear error until it answers) and starts setting
    /// up indexes in the background.
    pub async fn connect(config: &MongoConfig, config_dir: &std::path::Path) -> StoreResult<Self> {
        let (opts, database, target) = client_options(config, config_dir).await?;
        Self::with_options(opts, &database, target, config.write_timeout)
    }

    /// Connects to a URI (tests, migration targets).
    pub async fn connect_uri(uri: &str, database: Option<&str>) -> StoreResult<Self> {
        let config = MongoConfig {
            uri: Some(uri.to_string()),
            database: database.map(str::to_string),
            server_selection_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        Self::connect(&config, std::path::Path::new("/")).await
    }

    fn with_options(
        opts: ClientOptions,
        database: &str,
        target: String,
        write_timeout: Duration,
    ) -> StoreResult<Self> {
        let client = Client::with_options(opts).map_err(|e| db_err(&target, e))?;
        let db = client.database(database);
        let inner = Arc::new(Inner {
            clients: db.collection("clients"),
            keys: db.collection("client_keys"),
            audit: db.collection("audit_trail"),
            nonces: db.collection("nonces"),
            actions: db.collection("actions"),
            action_targets: db.collection("action_targets"),
            issues: db.collection("issues"),
            parameters: db.collection("client_parameters"),
            leases: db.collection("leases"),
            tokens: db.collection("enrollment_tokens"),
            db,
            client,
            write_concern: majority(write_timeout),
            target,
            #[cfg(test)]
            faults: Default::default(),
        });
        tokio::spawn(indexes::setup(inner.clone()));
        let (tx, rx) = mpsc::channel(4096);
        let handle = tokio::spawn(batch::batcher(inner.clone(), rx));
        Ok(Self {
            inner,
            batch_tx: tx,
            batcher: std::sync::Mutex::new(Some(handle)),
        })
    }

    /// The releases kept in this database, on the same connection.
    pub fn releases(&self) -> MongoReleases {
        MongoReleases::new(
            &self.inner.db,
            self.inner.write_concern.clone(),
            self.inner.target.clone(),
        )
    }

    /// The web logins kept in this database, on the same connection.
    pub fn sessions(&self, lifetime: Duration, idle: Duration) -> MongoSessions {
        MongoSessions::new(
            &self.inner.db,
            self.inner.write_concern.clone(),
            self.inner.target.clone(),
            lifetime,
            idle,
        )
    }

    /// Where the site's servers find a waiting shell session, on the same
    /// connection.
    pub fn shell_routes(&self) -> MongoShellRoutes {
        MongoShellRoutes::new(
            &self.inner.db,
            self.inner.write_concern.clone(),
            self.inner.target.clone(),
        )
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.inner.db.drop().await.map_err(|e| self.inner.err(e))
    }
}

impl Inner {
    /// A driver error, with where the database is.
    fn err(&self, e: mongodb::error::Error) -> StoreError {
        db_err(&self.target, e)
    }

    /// Fails once at `step` when a test asked for it.
    fn fault(&self, step: &'static str) -> StoreResult<()> {
        #[cfg(test)]
        if self.faults.lock().expect("faults lock").remove(step) {
            return Err(StoreError::Backend(format!("injected fault at {step}")));
        }
        let _ = step;
        Ok(())
    }

    /// The write concern for commands sent as documents.
    fn write_concern_document(&self) -> Document {
        let wtimeout = self.write_concern.w_timeout.unwrap_or_default();
        doc! {
            "w": "majority",
            "j": true,
            "wtimeout": i64::try_from(wtimeout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    async fn insert_audit(&self, docs: Vec<Document>) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        match self
            .audit
            .insert_many(docs)
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await
        {
            Ok(_) => Ok(()),
            // Records a retried request wrote already.
            Err(e) => duplicate_indexes(e).map(|_| ()).map_err(|e| self.err(e)),
        }
    }
}

/// An audit record as a document. `n` orders records of one request.
fn audit_doc(
    id: Bson,
    client_id: &str,
    hostname: &str,
    change: &Change,
    n: usize,
    recorded_at: &DateTime<Utc>,
    collected_at: Option<&DateTime<Utc>>,
) -> Document {
    doc! {
        "_id": id,
        "client_id": client_id,
        "hostname": hostname,
        "field": &change.field,
        "action": change.action.as_str(),
        "old": change.old.as_ref().map(Value::to_string),
        "new": change.new.as_ref().map(Value::to_string),
        "recorded_at": to_bson_date(recorded_at),
        "n": audit_order(recorded_at, n),
        "collected_at": opt_date(collected_at),
    }
}

/// Whether a write failed on a duplicate `_id` or unique index.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}
