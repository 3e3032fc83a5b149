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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{
    ClientOptions, Credential, IndexOptions, ServerAddress, Tls, TlsOptions, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use penguindome_protocol::wire::{Patch, PatchFile};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::diff::{Change, ChangeAction, diff};
use super::{
    AuditRecord, ClientDocument, ClientSummary, EnrollOutcome, Enrollment, Issue, IssueFilter,
    KeyInfo, KeyRecord, Kind, NewPatch, Parameter, Record, RequestMeta, Store, StoreError,
    StoreResult, Submission, SubmitOutcome, audit_order, plugin_digest, validate_report,
};
use crate::config::MongoConfig;

/// Most submissions handled in one batch.
const MAX_BATCH: usize = 256;
/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// The MongoDB-backed [`Store`].
pub struct MongoStore {
    inner: Arc<Inner>,
    batch_tx: mpsc::Sender<Pending>,
    batcher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    client: Client,
    db: Database,
    clients: Collection<Document>,
    keys: Collection<Document>,
    audit: Collection<Document>,
    nonces: Collection<Document>,
    patches: Collection<Document>,
    issues: Collection<Document>,
    parameters: Collection<Document>,
    leases: Collection<Document>,
    write_concern: WriteConcern,
    /// Where the database is, for messages.
    target: String,
}

struct Pending {
    submission: Submission,
    reply: Reply<SubmitOutcome>,
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

fn to_bson_date(t: &DateTime<Utc>) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::from_millis(t.timestamp_millis()))
}

fn from_bson_date(b: Option<&Bson>) -> Option<DateTime<Utc>> {
    match b {
        Some(Bson::DateTime(d)) => DateTime::from_timestamp_millis(d.timestamp_millis()),
        _ => None,
    }
}

fn opt_date(t: Option<&DateTime<Utc>>) -> Bson {
    t.map(to_bson_date).unwrap_or(Bson::Null)
}

fn get_str(d: &Document, k: &str) -> String {
    d.get_str(k).unwrap_or_default().to_string()
}

fn opt_str(d: &Document, k: &str) -> Option<String> {
    d.get_str(k).ok().map(str::to_string)
}

fn date(d: &Document, k: &str) -> DateTime<Utc> {
    from_bson_date(d.get(k)).unwrap_or(DateTime::UNIX_EPOCH)
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

/// Builds the driver options from the configuration.
pub async fn client_options(
    config: &MongoConfig,
    config_dir: &std::path::Path,
) -> StoreResult<(ClientOptions, String, String)> {
    let bad = |m: String| StoreError::Backend(m);
    let mut opts = match &config.uri {
        Some(uri) => ClientOptions::parse(uri).await.map_err(|e| {
            bad(format!(
                "store.uri is not a usable MongoDB connection string: {e}"
            ))
        })?,
        None => {
            let hosts = config
                .hosts
                .iter()
                .map(|h| {
                    ServerAddress::parse(h).map_err(|e| {
                        bad(format!("store.hosts entry {h:?} is not host[:port]: {e}"))
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let mut o = ClientOptions::default();
            o.hosts = hosts;
            o
        }
    };
    if let Some(rs) = &config.replica_set {
        opts.repl_set_name = Some(rs.clone());
    }
    if let Some(user) = &config.username {
        let password = match &config.password_file {
            Some(p) => {
                let path = config_dir.join(p);
                let bytes =
                    crate::secrets::read_secret(&path).map_err(|e| bad(format!("{e:#}")))?;
                Some(
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                )
            }
            None => None,
        };
        let mut credential = Credential::default();
        credential.username = Some(user.clone());
        credential.password = password;
        opts.credential = Some(credential);
    }
    if config.tls || config.tls_ca_file.is_some() || config.tls_certificate_key_file.is_some() {
        let mut tls = TlsOptions::default();
        tls.ca_file_path = config.tls_ca_file.as_ref().map(|p| config_dir.join(p));
        tls.cert_key_file_path = config
            .tls_certificate_key_file
            .as_ref()
            .map(|p| config_dir.join(p));
        opts.tls = Some(Tls::Enabled(tls));
    }
    opts.server_selection_timeout = Some(config.server_selection_timeout);
    opts.connect_timeout = Some(config.server_selection_timeout.min(Duration::from_secs(10)));
    opts.app_name = Some("penguindome-server".into());
    let database = config
        .database
        .clone()
        .or_else(|| opts.default_database.clone())
        .unwrap_or_else(|| "penguindome".into());
    let target = match &config.uri {
        Some(_) => opts
            .hosts
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(","),
        None => config.hosts.join(","),
    };
    let target = format!("{target}/{database}");
    Ok((opts, database, target))
}

impl MongoStore {
    /// Connects (lazily: an unreachable database does not stop the server,
    /// requests fail with a clear error until it answers) and starts setting
    /// up indexes in the background.
    pub async fn connect(config: &MongoConfig, config_dir: &std::path::Path) -> StoreResult<Self> {
        let (opts, database, target) = client_options(config, config_dir).await?;
        Self::with_options(opts, &database, target)
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

    fn with_options(opts: ClientOptions, database: &str, target: String) -> StoreResult<Self> {
        let client = Client::with_options(opts).map_err(|e| db_err(&target, e))?;
        let db = client.database(database);
        let inner = Arc::new(Inner {
            clients: db.collection("clients"),
            keys: db.collection("client_keys"),
            audit: db.collection("audit_trail"),
            nonces: db.collection("nonces"),
            patches: db.collection("patches"),
            issues: db.collection("issues"),
            parameters: db.collection("client_parameters"),
            leases: db.collection("leases"),
            db,
            client,
            write_concern: WriteConcern::builder()
                .w(mongodb::options::Acknowledgment::Majority)
                .journal(true)
                .build(),
            target,
        });
        tokio::spawn(setup(inner.clone()));
        let (tx, rx) = mpsc::channel(4096);
        let handle = tokio::spawn(batcher(inner.clone(), rx));
        Ok(Self {
            inner,
            batch_tx: tx,
            batcher: std::sync::Mutex::new(Some(handle)),
        })
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.inner.db.drop().await.map_err(|e| self.inner.err(e))
    }
}

impl Inner {
    fn err(&self, e: mongodb::error::Error) -> StoreError {
        db_err(&self.target, e)
    }

    async fn key_status(&self, fingerprint: &str) -> StoreResult<Option<(String, bool)>> {
        let d = self
            .keys
            .find_one(doc! {"_id": fingerprint})
            .projection(doc! {"client_id": 1, "revoked_at": 1})
            .await
            .map_err(|e| self.err(e))?;
        Ok(d.map(|d| {
            (
                get_str(&d, "client_id"),
                from_bson_date(d.get("revoked_at")).is_some(),
            )
        }))
    }

    async fn check_key(&self, meta: &RequestMeta) -> StoreResult<()> {
        match self.key_status(&meta.fingerprint).await? {
            None => Err(StoreError::UnknownKey),
            Some((client, _)) if client != meta.client_id => Err(StoreError::UnknownKey),
            Some((client_id, true)) => Err(StoreError::Revoked { client_id }),
            Some(_) => Ok(()),
        }
    }

    async fn consume_nonce(
        &self,
        client_id: &str,
        nonce: &str,
        expires: &DateTime<Utc>,
    ) -> StoreResult<()> {
        let r = self
            .nonces
            .insert_one(
                doc! {"_id": nonce_id(client_id, nonce), "expires_at": to_bson_date(expires)},
            )
            .write_concern(self.write_concern.clone())
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                match e.kind.as_ref() {
                    mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(
                        w,
                    )) if w.code == DUPLICATE_KEY => Err(StoreError::Replay),
                    _ => Err(self.err(e)),
                }
            }
        }
    }

    async fn mark_seen(&self, meta: &RequestMeta) -> StoreResult<()> {
        self.clients
            .update_one(
                doc! {"_id": &meta.client_id},
                doc! {"$set": {
                    "last_seen_at": to_bson_date(&meta.received_at),
                    "last_address": meta.address.to_string(),
                    "last_listener": &meta.listener,
                }},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
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

/// Creates the indexes, retrying until the database answers, and says what
/// kind of deployment it is.
async fn setup(inner: Arc<Inner>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match create_indexes(&inner).await {
            Ok(()) => break,
            Err(e) => {
                log::warn!(
                    "cannot set up the MongoDB indexes yet ({e}); retrying in {} s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    match inner.db.run_command(doc! {"hello": 1}).await {
        Ok(hello) if hello.get_str("setName").is_ok() => log::info!(
            "MongoDB at {} is replica set {}: writes are acknowledged by a majority of its members",
            inner.target,
            hello.get_str("setName").unwrap_or_default()
        ),
        Ok(_) => log::info!(
            "MongoDB at {} is a standalone server: writes are acknowledged once journaled on that \
             one server (a replica set adds failover); transactions are not used",
            inner.target
        ),
        Err(e) => log::warn!("cannot ask MongoDB what it is: {}", inner.err(e)),
    }
}

async fn create_indexes(inner: &Inner) -> StoreResult<()> {
    let index = |keys: Document| IndexModel::builder().keys(keys).build();
    let unique = |keys: Document| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().unique(true).build())
            .build()
    };
    let plans: Vec<(&str, Vec<IndexModel>)> = vec![
        ("clients", vec![index(doc! {"hostname": 1})]),
        ("client_keys", vec![index(doc! {"client_id": 1})]),
        (
            "audit_trail",
            vec![index(doc! {"client_id": 1, "recorded_at": 1, "n": 1})],
        ),
        ("nonces", vec![index(doc! {"expires_at": 1})]),
        ("patches", vec![index(doc! {"pending": 1})]),
        ("issues", vec![index(doc! {"client_id": 1, "name": 1})]),
        (
            "client_parameters",
            vec![unique(doc! {"client_id": 1, "parameter": 1})],
        ),
    ];
    for (name, models) in plans {
        inner
            .db
            .collection::<Document>(name)
            .create_indexes(models)
            .await
            .map_err(|e| inner.err(e))?;
    }
    Ok(())
}

/// Gathers concurrent submissions into batches.
async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Pending>) {
    let mut carry: Vec<Pending> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carry);
        if batch.is_empty() {
            match rx.recv().await {
                Some(p) => batch.push(p),
                None => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // One submission per client per batch: later ones see earlier ones.
        let mut seen = HashSet::new();
        let (now, later): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|p| seen.insert(p.submission.meta.client_id.clone()));
        carry = later;
        submit_batch(&inner, now).await;
    }
}

/// One submission's progress through a batch.
struct Work {
    pending: Pending,
    state: Option<Document>,
    outcome: Option<StoreResult<SubmitOutcome>>,
}

async fn submit_batch(inner: &Inner, batch: Vec<Pending>) {
    let mut work: Vec<Work> = batch
        .into_iter()
        .map(|pending| Work {
            pending,
            state: None,
            outcome: None,
        })
        .collect();
    if let Err(e) = submit_batch_inner(inner, &mut work).await {
        for w in work.iter_mut().filter(|w| w.outcome.is_none()) {
            w.outcome = Some(Err(StoreError::Backend(e.to_string())));
        }
    }
    for w in work {
        let outcome = w
            .outcome
            .unwrap_or_else(|| Err(StoreError::Backend("no outcome".into())));
        let _ = w.pending.reply.send(outcome);
    }
}

async fn submit_batch_inner(inner: &Inner, work: &mut [Work]) -> StoreResult<()> {
    for w in work.iter_mut() {
        if let Err(e) = validate_report(&w.pending.submission.report) {
            w.outcome = Some(Err(e));
        }
    }
    let open = |w: &Work| w.outcome.is_none();

    // 1. Keys and client states, two queries for the whole batch.
    let fps: Vec<&str> = work
        .iter()
        .filter(|w| open(w))
        .map(|w| w.pending.submission.meta.fingerprint.as_str())
        .collect();
    let mut keys: HashMap<String, (String, bool)> = HashMap::new();
    for d in find_by_ids(
        inner,
        &inner.keys,
        &fps,
        doc! {"client_id": 1, "revoked_at": 1},
    )
    .await?
    {
        keys.insert(
            get_str(&d, "_id"),
            (
                get_str(&d, "client_id"),
                from_bson_date(d.get("revoked_at")).is_some(),
            ),
        );
    }
    for w in work.iter_mut().filter(|w| w.outcome.is_none()) {
        let meta = &w.pending.submission.meta;
        w.outcome = match keys.get(&meta.fingerprint) {
            None => Some(Err(StoreError::UnknownKey)),
            Some((client, _)) if *client != meta.client_id => Some(Err(StoreError::UnknownKey)),
            Some((client, true)) => Some(Err(StoreError::Revoked {
                client_id: client.clone(),
            })),
            Some(_) => None,
        };
    }
    let ids: Vec<&str> = work
        .iter()
        .filter(|w| open(w))
        .map(|w| w.pending.submission.meta.client_id.as_str())
        .collect();
    let mut states: HashMap<String, Document> = HashMap::new();
    let projection =
        doc! {"hostname": 1, "collected_at": 1, "last_report_id": 1, "plugin_digests": 1};
    for d in find_by_ids(inner, &inner.clients, &ids, projection).await? {
        states.insert(get_str(&d, "_id"), d);
    }
    for w in work.iter_mut().filter(|w| w.outcome.is_none()) {
        match states.remove(&w.pending.submission.meta.client_id) {
            Some(d) => w.state = Some(d),
            None => w.outcome = Some(Err(StoreError::UnknownKey)),
        }
    }

    // 2. Nonces: a duplicate is a replay, whichever server saw it first.
    let open_idx: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].outcome.is_none())
        .collect();
    if !open_idx.is_empty() {
        let docs: Vec<Document> = open_idx
            .iter()
            .map(|&i| {
                let m = &work[i].pending.submission.meta;
                doc! {"_id": nonce_id(&m.client_id, &m.nonce), "expires_at": to_bson_date(&m.nonce_expires_at)}
            })
            .collect();
        let dups = match inner
            .nonces
            .insert_many(docs)
            .ordered(false)
            .write_concern(inner.write_concern.clone())
            .await
        {
            Ok(_) => HashSet::new(),
            Err(e) => duplicate_indexes(e).map_err(|e| inner.err(e))?,
        };
        for (k, &i) in open_idx.iter().enumerate() {
            if dups.contains(&k) {
                work[i].outcome = Some(Err(StoreError::Replay));
            }
        }
    }

    // 3. What changed. Old texts are read back only for changed plugins.
    let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
    for w in work.iter().filter(|w| open(w)) {
        let s = &w.pending.submission;
        let state = w.state.as_ref().expect("state of an open submission");
        let old = state
            .get_document("plugin_digests")
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = s
            .digests
            .iter()
            .filter(|(n, d)| old.get_str(n.as_str()).is_ok_and(|o| o != hex::encode(d)))
            .map(|(n, _)| n.clone())
            .chain(
                old.keys()
                    .filter(|n| !s.digests.contains_key(n.as_str()))
                    .cloned(),
            )
            .collect();
        if !names.is_empty() && !is_duplicate(s, state) {
            wanted.insert(s.meta.client_id.clone(), names);
        }
    }
    let mut old_texts: HashMap<String, Document> = HashMap::new();
    if !wanted.is_empty() {
        let mut projection = Document::new();
        for names in wanted.values() {
            for n in names {
                projection.insert(format!("plugins.{n}"), 1);
            }
        }
        let ids: Vec<&str> = wanted.keys().map(String::as_str).collect();
        for d in find_by_ids(inner, &inner.clients, &ids, projection).await? {
            let plugins = d.get_document("plugins").cloned().unwrap_or_default();
            old_texts.insert(get_str(&d, "_id"), plugins);
        }
    }

    // 4. Audit records and client updates, one round trip each.
    let mut audit = Vec::new();
    let mut updates = Vec::new();
    for w in work.iter_mut().filter(|w| w.outcome.is_none()) {
        let s = &w.pending.submission;
        let meta = &s.meta;
        let report = &s.report;
        let state = w.state.as_ref().expect("state of an open submission");
        let seen = doc! {
            "last_seen_at": to_bson_date(&meta.received_at),
            "last_address": meta.address.to_string(),
            "last_listener": &meta.listener,
        };
        if is_duplicate(s, state) {
            updates.push(doc! {"q": {"_id": &meta.client_id}, "u": {"$set": seen}});
            w.outcome = Some(Ok(SubmitOutcome::Duplicate));
            continue;
        }
        let old_digests = state
            .get_document("plugin_digests")
            .cloned()
            .unwrap_or_default();
        let olds = old_texts.remove(&meta.client_id).unwrap_or_default();
        let old_value = |name: &str| {
            olds.get_str(name)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
        };
        let mut changes = Vec::new();
        let old_hostname = get_str(state, "hostname");
        if old_hostname != report.hostname {
            changes.push(Change {
                field: "hostname".into(),
                action: ChangeAction::Change,
                old: Some(Value::String(old_hostname)),
                new: Some(Value::String(report.hostname.clone())),
            });
        }
        let mut set = seen;
        let mut unset = Document::new();
        let mut digests = Document::new();
        let mut bad = None;
        for (name, raw) in &report.plugins {
            let digest = s.digests.get(name).map(hex::encode).unwrap_or_default();
            digests.insert(name.clone(), digest.clone());
            let old = match old_digests.get_str(name) {
                Ok(d) if d == digest => continue,
                Ok(_) => old_value(name),
                Err(_) => None,
            };
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(new) => diff(
                    &format!("plugins.{name}"),
                    old.as_ref(),
                    Some(&new),
                    &mut changes,
                ),
                Err(e) => bad = Some(StoreError::Invalid(format!("plugin {name}: {e}"))),
            }
            set.insert(format!("plugins.{name}"), raw.get());
        }
        if let Some(e) = bad {
            w.outcome = Some(Err(e));
            continue;
        }
        for name in old_digests
            .keys()
            .filter(|n| !report.plugins.contains_key(n.as_str()))
        {
            diff(
                &format!("plugins.{name}"),
                old_value(name).as_ref(),
                None,
                &mut changes,
            );
            unset.insert(format!("plugins.{name}"), "");
        }
        set.insert("hostname", &report.hostname);
        set.insert("collected_at", to_bson_date(&report.collected_at));
        set.insert("submitted_at", to_bson_date(&meta.received_at));
        set.insert("last_report_id", &report.report_id);
        set.insert("agent_version", &report.agent_version);
        set.insert("plugin_digests", digests);
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        // Conditional on the state the changes were computed from, so two
        // servers cannot interleave one client's reports.
        let last = state.get("last_report_id").cloned().unwrap_or(Bson::Null);
        updates.push(doc! {"q": {"_id": &meta.client_id, "last_report_id": last}, "u": update});
        for (n, c) in changes.iter().enumerate() {
            let id = hex::encode(
                xxhash_rust::xxh3::xxh3_128(
                    format!("{}:{}:{n}", meta.client_id, report.report_id).as_bytes(),
                )
                .to_le_bytes(),
            );
            audit.push(audit_doc(
                Bson::String(id),
                &meta.client_id,
                &report.hostname,
                c,
                n,
                &meta.received_at,
                Some(&report.collected_at),
            ));
        }
        w.outcome = Some(Ok(SubmitOutcome::Stored {
            changes: changes.len(),
        }));
    }
    inner.insert_audit(audit).await?;
    if !updates.is_empty() {
        let reply = inner
            .db
            .run_command(doc! {
                "update": "clients",
                "updates": updates,
                "ordered": false,
                "writeConcern": {"w": "majority", "j": true},
            })
            .await
            .map_err(|e| inner.err(e))?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && !errors.is_empty()
        {
            return Err(StoreError::Backend(format!(
                "MongoDB refused client updates: {errors:?}"
            )));
        }
    }
    Ok(())
}

/// Reads documents by `_id`, one point lookup each, concurrently. One
/// `$in` query would be a single round trip, but FerretDB 1.x scans the
/// whole collection for it; point lookups are cheap on every server.
async fn find_by_ids(
    inner: &Inner,
    collection: &Collection<Document>,
    ids: &[&str],
    projection: Document,
) -> StoreResult<Vec<Document>> {
    let lookups = ids.iter().map(|id| {
        collection
            .find_one(doc! {"_id": *id})
            .projection(projection.clone())
            .into_future()
    });
    let found = futures_util::future::try_join_all(lookups)
        .await
        .map_err(|e| inner.err(e))?;
    Ok(found.into_iter().flatten().collect())
}

/// A re-delivered report, or one older than what is stored. A new report
/// collected in the same millisecond as the stored one is not older: an
/// agent's reports arrive one after another.
fn is_duplicate(s: &Submission, state: &Document) -> bool {
    state.get_str("last_report_id").ok() == Some(s.report.report_id.as_str())
        || from_bson_date(state.get("collected_at")).is_some_and(|c| c > s.report.collected_at)
}

fn summary(d: &Document) -> ClientSummary {
    ClientSummary {
        client_id: get_str(d, "_id"),
        hostname: get_str(d, "hostname"),
        first_seen_at: date(d, "first_seen_at"),
        last_seen_at: date(d, "last_seen_at"),
        collected_at: from_bson_date(d.get("collected_at")),
        last_address: get_str(d, "last_address"),
        last_listener: get_str(d, "last_listener"),
        revoked_at: from_bson_date(d.get("revoked_at")),
    }
}

impl Inner {
    fn collection(&self, kind: Kind) -> &Collection<Document> {
        match kind {
            Kind::Clients => &self.clients,
            Kind::Keys => &self.keys,
            Kind::Audit => &self.audit,
            Kind::Nonces => &self.nonces,
            Kind::Patches => &self.patches,
            Kind::Issues => &self.issues,
            Kind::Parameters => &self.parameters,
        }
    }
}

/// A document as a backend-neutral record.
fn to_record(kind: Kind, d: &Document) -> StoreResult<(String, Record)> {
    use base64::Engine as _;
    let id = get_str(d, "_id");
    let record = match kind {
        Kind::Clients => Record::Client {
            client_id: id.clone(),
            hostname: get_str(d, "hostname"),
            enrolled_at: date(d, "enrolled_at"),
            first_seen_at: date(d, "first_seen_at"),
            last_seen_at: date(d, "last_seen_at"),
            last_address: get_str(d, "last_address"),
            last_listener: get_str(d, "last_listener"),
            collected_at: from_bson_date(d.get("collected_at")),
            submitted_at: from_bson_date(d.get("submitted_at")),
            last_report_id: opt_str(d, "last_report_id"),
            agent_version: opt_str(d, "agent_version"),
            revoked_at: from_bson_date(d.get("revoked_at")),
            reenroll_allowed: d.get_bool("reenroll_allowed").unwrap_or(false),
            plugins: d
                .get_document("plugins")
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        },
        Kind::Keys => Record::Key {
            fingerprint: id.clone(),
            client_id: get_str(d, "client_id"),
            certificate: base64::engine::general_purpose::STANDARD.encode(
                d.get_binary_generic("certificate")
                    .cloned()
                    .unwrap_or_default(),
            ),
            created_at: date(d, "created_at"),
            revoked_at: from_bson_date(d.get("revoked_at")),
        },
        Kind::Audit => Record::Audit {
            client_id: get_str(d, "client_id"),
            hostname: get_str(d, "hostname"),
            field: get_str(d, "field"),
            action: ChangeAction::parse(d.get_str("action").unwrap_or("change"))
                .unwrap_or(ChangeAction::Change),
            old: opt_str(d, "old"),
            new: opt_str(d, "new"),
            recorded_at: date(d, "recorded_at"),
            n: d.get_i64("n").unwrap_or(0),
            collected_at: from_bson_date(d.get("collected_at")),
        },
        Kind::Nonces => {
            let (client_id, nonce) = id.split_once(':').unwrap_or((&id, ""));
            Record::Nonce {
                client_id: client_id.to_string(),
                nonce: nonce.to_string(),
                expires_at: date(d, "expires_at").timestamp(),
            }
        }
        Kind::Patches => {
            let mut targets: Vec<(String, Option<String>)> = d
                .get_array("pending")
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.as_str().map(|s| (s.to_string(), None)))
                        .collect()
                })
                .unwrap_or_default();
            if let Ok(done) = d.get_array("completed") {
                for c in done.iter().filter_map(Bson::as_document) {
                    let at = from_bson_date(c.get("completed_at"))
                        .map(|t| penguindome_protocol::envelope::utc::format(&t));
                    targets.push((get_str(c, "client_id"), at));
                }
            }
            targets.sort();
            Record::Patch {
                id: id.clone(),
                created_at: date(d, "created_at"),
                files: get_str(d, "files"),
                targets,
            }
        }
        Kind::Issues => Record::Issue(issue_from_doc(d)),
        Kind::Parameters => Record::Parameter(parameter_from_doc(d)?),
    };
    // Audit records page by time, then position, then id.
    let cursor = match kind {
        Kind::Audit => format!(
            "{:020}:{:010}:{id}",
            date(d, "recorded_at").timestamp_millis(),
            d.get_i64("n").unwrap_or(0)
        ),
        _ => id,
    };
    Ok((cursor, record))
}

fn issue_from_doc(d: &Document) -> Issue {
    Issue {
        id: get_str(d, "_id"),
        client_id: get_str(d, "client_id"),
        name: get_str(d, "name"),
        detail: opt_str(d, "detail"),
        opened_at: date(d, "opened_at"),
        closed_at: from_bson_date(d.get("closed_at")),
        closed_by: opt_str(d, "closed_by"),
        alerted_at: from_bson_date(d.get("alerted_at")),
        snoozed_at: from_bson_date(d.get("snoozed_at")),
        unsnooze_at: from_bson_date(d.get("unsnooze_at")),
        unsnoozed_at: from_bson_date(d.get("unsnoozed_at")),
    }
}

fn issue_doc(i: &Issue) -> Document {
    doc! {
        "_id": &i.id, "client_id": &i.client_id, "name": &i.name, "detail": i.detail.as_deref(),
        "opened_at": to_bson_date(&i.opened_at), "closed_at": opt_date(i.closed_at.as_ref()),
        "closed_by": i.closed_by.as_deref(),
        "alerted_at": opt_date(i.alerted_at.as_ref()), "snoozed_at": opt_date(i.snoozed_at.as_ref()),
        "unsnooze_at": opt_date(i.unsnooze_at.as_ref()), "unsnoozed_at": opt_date(i.unsnoozed_at.as_ref()),
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

/// Parameters are keyed `<client_id>/<name>` (client ids hold no `/`).
fn parameter_id(client_id: &str, name: &str) -> String {
    format!("{client_id}/{name}")
}

fn parameter_from_doc(d: &Document) -> StoreResult<Parameter> {
    let text = get_str(d, "value");
    Ok(Parameter {
        client_id: get_str(d, "client_id"),
        name: get_str(d, "parameter"),
        value: serde_json::from_str(&text).map_err(|e| {
            StoreError::Backend(format!("parameter {} is damaged: {e}", get_str(d, "_id")))
        })?,
        updated_at: date(d, "updated_at"),
    })
}

fn parameter_doc(p: &Parameter) -> Document {
    doc! {
        "_id": parameter_id(&p.client_id, &p.name), "client_id": &p.client_id,
        "parameter": &p.name, "value": p.value.to_string(), "updated_at": to_bson_date(&p.updated_at),
    }
}

/// A backend-neutral record as a document of its collection.
fn from_record(r: &Record) -> StoreResult<Document> {
    use base64::Engine as _;
    Ok(match r {
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
            let mut texts = Document::new();
            let mut digests = Document::new();
            for (name, text) in plugins {
                texts.insert(name.clone(), text.as_str());
                digests.insert(name.clone(), hex::encode(plugin_digest(text)));
            }
            doc! {
                "_id": client_id, "hostname": hostname, "enrolled_at": to_bson_date(enrolled_at),
                "first_seen_at": to_bson_date(first_seen_at), "last_seen_at": to_bson_date(last_seen_at),
                "last_address": last_address, "last_listener": last_listener,
                "collected_at": opt_date(collected_at.as_ref()), "submitted_at": opt_date(submitted_at.as_ref()),
                "last_report_id": last_report_id, "agent_version": agent_version,
                "revoked_at": opt_date(revoked_at.as_ref()), "reenroll_allowed": reenroll_allowed,
                "plugins": texts, "plugin_digests": digests,
            }
        }
        Record::Key {
            fingerprint,
            client_id,
            certificate,
            created_at,
            revoked_at,
        } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(certificate)
                .map_err(|e| {
                    StoreError::Invalid(format!(
                        "key {fingerprint}: certificate is not base64: {e}"
                    ))
                })?;
            doc! {
                "_id": fingerprint, "client_id": client_id,
                "certificate": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes },
                "created_at": to_bson_date(created_at), "revoked_at": opt_date(revoked_at.as_ref()),
            }
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
        } => doc! {
            "_id": penguindome_protocol::envelope::new_nonce(), "client_id": client_id, "hostname": hostname,
            "field": field, "action": action.as_str(), "old": old, "new": new,
            "recorded_at": to_bson_date(recorded_at), "n": n, "collected_at": opt_date(collected_at.as_ref()),
        },
        Record::Nonce {
            client_id,
            nonce,
            expires_at,
        } => doc! {
            "_id": nonce_id(client_id, nonce),
            "expires_at": Bson::DateTime(mongodb::bson::DateTime::from_millis(expires_at.saturating_mul(1000))),
        },
        Record::Patch {
            id,
            created_at,
            files,
            targets,
        } => {
            let pending: Vec<&String> = targets
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(c, _)| c)
                .collect();
            let completed: Vec<Document> = targets
                .iter()
                .filter_map(|(c, d)| {
                    let at = d.as_deref().and_then(|s| DateTime::parse_from_rfc3339(s).ok())?;
                    Some(doc! {"client_id": c, "completed_at": to_bson_date(&at.with_timezone(&Utc))})
                })
                .collect();
            doc! {"_id": id, "created_at": to_bson_date(created_at), "files": files, "pending": pending, "completed": completed}
        }
        Record::Issue(issue) => issue_doc(issue),
        Record::Parameter(p) => parameter_doc(p),
    })
}

fn kind_of(r: &Record) -> Kind {
    match r {
        Record::Client { .. } => Kind::Clients,
        Record::Key { .. } => Kind::Keys,
        Record::Audit { .. } => Kind::Audit,
        Record::Nonce { .. } => Kind::Nonces,
        Record::Patch { .. } => Kind::Patches,
        Record::Issue(_) => Kind::Issues,
        Record::Parameter(_) => Kind::Parameters,
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn find_key(&self, fingerprint: &str) -> StoreResult<Option<KeyRecord>> {
        let i = &self.inner;
        let d = i
            .keys
            .find_one(doc! {"_id": fingerprint})
            .await
            .map_err(|e| i.err(e))?;
        Ok(d.map(|d| KeyRecord {
            client_id: get_str(&d, "client_id"),
            certificate: d
                .get_binary_generic("certificate")
                .cloned()
                .unwrap_or_default(),
            revoked_at: from_bson_date(d.get("revoked_at")),
        }))
    }

    async fn enroll(&self, e: Enrollment) -> StoreResult<EnrollOutcome> {
        let i = &self.inner;
        match i.key_status(&e.fingerprint).await? {
            Some((client, false)) if client == e.client_id => {
                i.consume_nonce(&e.client_id, &e.nonce, &e.nonce_expires_at)
                    .await?;
                return Ok(EnrollOutcome::AlreadyEnrolled);
            }
            Some((client, true)) if client == e.client_id => {
                return Err(StoreError::Revoked { client_id: client });
            }
            Some(_) => {
                return Err(StoreError::Invalid(
                    "this key is already enrolled for another client; generate a new key".into(),
                ));
            }
            None => {}
        }
        let existing = i
            .clients
            .find_one(doc! {"_id": &e.client_id})
            .projection(doc! {"revoked_at": 1, "reenroll_allowed": 1})
            .await
            .map_err(|x| i.err(x))?;
        let now = to_bson_date(&e.received_at);
        let change = match &existing {
            Some(d) => {
                let allowed = d.get_bool("reenroll_allowed").unwrap_or(false);
                if !allowed {
                    if from_bson_date(d.get("revoked_at")).is_some() {
                        return Err(StoreError::Revoked {
                            client_id: e.client_id.clone(),
                        });
                    }
                    return Err(StoreError::AlreadyEnrolled {
                        client_id: e.client_id.clone(),
                    });
                }
                i.consume_nonce(&e.client_id, &e.nonce, &e.nonce_expires_at)
                    .await?;
                // Only one re-enrollment may use the permission.
                let r = i
                    .clients
                    .update_one(
                        doc! {"_id": &e.client_id, "reenroll_allowed": true},
                        doc! {"$set": {"reenroll_allowed": false, "revoked_at": Bson::Null, "hostname": &e.hostname,
                            "last_seen_at": now.clone(), "last_address": e.address.to_string(), "last_listener": &e.listener}},
                    )
                    .write_concern(i.write_concern.clone())
                    .await
                    .map_err(|x| i.err(x))?;
                if r.matched_count == 0 {
                    return Err(StoreError::AlreadyEnrolled {
                        client_id: e.client_id.clone(),
                    });
                }
                i.keys
                    .update_many(
                        doc! {"client_id": &e.client_id, "revoked_at": Bson::Null},
                        doc! {"$set": {"revoked_at": now.clone()}},
                    )
                    .write_concern(i.write_concern.clone())
                    .await
                    .map_err(|x| i.err(x))?;
                ChangeAction::Change
            }
            None => {
                i.consume_nonce(&e.client_id, &e.nonce, &e.nonce_expires_at)
                    .await?;
                let r = i
                    .clients
                    .insert_one(doc! {
                        "_id": &e.client_id, "hostname": &e.hostname, "enrolled_at": now.clone(),
                        "first_seen_at": now.clone(), "last_seen_at": now.clone(),
                        "last_address": e.address.to_string(), "last_listener": &e.listener,
                        "reenroll_allowed": false, "plugins": {}, "plugin_digests": {},
                    })
                    .write_concern(i.write_concern.clone())
                    .await;
                if let Err(x) = r {
                    // Another server enrolled this machine a moment ago.
                    return Err(match x.kind.as_ref() {
                        mongodb::error::ErrorKind::Write(
                            mongodb::error::WriteFailure::WriteError(w),
                        ) if w.code == DUPLICATE_KEY => StoreError::AlreadyEnrolled {
                            client_id: e.client_id.clone(),
                        },
                        _ => i.err(x),
                    });
                }
                ChangeAction::Add
            }
        };
        i.keys
            .insert_one(doc! {
                "_id": &e.fingerprint, "client_id": &e.client_id,
                "certificate": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: e.certificate.clone() },
                "created_at": now, "revoked_at": Bson::Null,
            })
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|x| i.err(x))?;
        let c = Change {
            field: "key".into(),
            action: change,
            old: None,
            new: Some(Value::String(e.fingerprint.clone())),
        };
        i.insert_audit(vec![audit_doc(
            Bson::String(penguindome_protocol::envelope::new_nonce()),
            &e.client_id,
            &e.hostname,
            &c,
            0,
            &e.received_at,
            None,
        )])
        .await?;
        Ok(EnrollOutcome::Enrolled)
    }

    async fn touch(&self, meta: RequestMeta) -> StoreResult<()> {
        let i = &self.inner;
        i.check_key(&meta).await?;
        i.consume_nonce(&meta.client_id, &meta.nonce, &meta.nonce_expires_at)
            .await?;
        i.mark_seen(&meta).await
    }

    async fn submit(&self, s: Submission) -> StoreResult<SubmitOutcome> {
        let (reply, rx) = oneshot::channel();
        self.batch_tx
            .send(Pending {
                submission: s,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn pending_patches(&self, client_id: &str) -> StoreResult<Vec<Patch>> {
        let i = &self.inner;
        let mut cursor = i
            .patches
            .find(doc! {"pending": client_id})
            .sort(doc! {"created_at": 1, "_id": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            let files: Vec<PatchFile> = serde_json::from_str(d.get_str("files").unwrap_or("[]"))
                .map_err(|e| {
                    StoreError::Backend(format!("patch {} is damaged: {e}", get_str(&d, "_id")))
                })?;
            out.push(Patch {
                id: get_str(&d, "_id"),
                files,
            });
        }
        Ok(out)
    }

    async fn add_patch(&self, p: NewPatch) -> StoreResult<()> {
        let i = &self.inner;
        let files = serde_json::to_string(&p.patch.files)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        i.patches
            .insert_one(doc! {
                "_id": &p.patch.id, "created_at": to_bson_date(&p.created_at), "files": files,
                "pending": &p.client_ids, "completed": [],
            })
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        Ok(())
    }

    async fn acknowledge_patch(&self, meta: RequestMeta, patch_id: &str) -> StoreResult<()> {
        let i = &self.inner;
        i.check_key(&meta).await?;
        i.consume_nonce(&meta.client_id, &meta.nonce, &meta.nonce_expires_at)
            .await?;
        let r = i
            .patches
            .update_one(
                doc! {"_id": patch_id, "pending": &meta.client_id},
                doc! {
                    "$pull": {"pending": &meta.client_id},
                    "$push": {"completed": {"client_id": &meta.client_id, "completed_at": to_bson_date(&meta.received_at)}},
                },
            )
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        if r.matched_count == 0 {
            return Err(StoreError::NoSuchPatch {
                patch_id: patch_id.to_string(),
            });
        }
        i.mark_seen(&meta).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientSummary>> {
        let i = &self.inner;
        let mut cursor = i
            .clients
            .find(doc! {})
            .projection(doc! {"plugins": 0, "plugin_digests": 0})
            .sort(doc! {"hostname": 1, "_id": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.push(summary(&d));
        }
        Ok(out)
    }

    async fn resolve_client(&self, selector: &str) -> StoreResult<String> {
        let i = &self.inner;
        let mut cursor = i
            .clients
            .find(doc! {"$or": [{"_id": selector}, {"hostname": selector}]})
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut ids = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            ids.push(get_str(&d, "_id"));
        }
        if ids.iter().any(|id| id == selector) {
            return Ok(selector.to_string());
        }
        match ids.len() {
            0 => Err(StoreError::NoSuchClient(selector.to_string())),
            1 => Ok(ids.remove(0)),
            n => Err(StoreError::Ambiguous {
                hostname: selector.to_string(),
                count: n,
                ids: ids.join(", "),
            }),
        }
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientDocument>> {
        let i = &self.inner;
        let Some(d) = i
            .clients
            .find_one(doc! {"_id": client_id})
            .await
            .map_err(|e| i.err(e))?
        else {
            return Ok(None);
        };
        let mut cursor = i
            .keys
            .find(doc! {"client_id": client_id})
            .await
            .map_err(|e| i.err(e))?;
        let mut keys = Vec::new();
        while let Some(k) = cursor.try_next().await.map_err(|e| i.err(e))? {
            keys.push(KeyInfo {
                fingerprint: get_str(&k, "_id"),
                created_at: date(&k, "created_at"),
                revoked_at: from_bson_date(k.get("revoked_at")),
            });
        }
        keys.sort_by(|a, b| {
            (a.revoked_at.is_some(), std::cmp::Reverse(a.created_at))
                .cmp(&(b.revoked_at.is_some(), std::cmp::Reverse(b.created_at)))
        });
        let plugins: BTreeMap<String, Value> = d
            .get_document("plugins")
            .map(|p| {
                p.iter()
                    .map(|(k, v)| {
                        let text = v.as_str().unwrap_or_default();
                        (
                            k.clone(),
                            serde_json::from_str(text).unwrap_or(Value::String(text.to_string())),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(ClientDocument {
            summary: summary(&d),
            enrolled_at: date(&d, "enrolled_at"),
            submitted_at: from_bson_date(d.get("submitted_at")),
            agent_version: opt_str(&d, "agent_version"),
            keys,
            plugins,
        }))
    }

    async fn audit_trail(&self, client_id: &str, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let i = &self.inner;
        let mut cursor = i
            .audit
            .find(doc! {"client_id": client_id})
            .sort(doc! {"recorded_at": -1, "n": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        let json = |d: &Document, k: &str| {
            d.get_str(k)
                .ok()
                .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.to_string())))
        };
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.push(AuditRecord {
                client_id: get_str(&d, "client_id"),
                hostname: get_str(&d, "hostname"),
                field: get_str(&d, "field"),
                action: ChangeAction::parse(d.get_str("action").unwrap_or("change"))
                    .unwrap_or(ChangeAction::Change),
                old: json(&d, "old"),
                new: json(&d, "new"),
                recorded_at: date(&d, "recorded_at"),
                collected_at: from_bson_date(d.get("collected_at")),
            });
        }
        out.reverse();
        Ok(out)
    }

    async fn revoke_client(&self, client_id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let i = &self.inner;
        let Some(d) = i
            .clients
            .find_one(doc! {"_id": client_id})
            .projection(doc! {"hostname": 1})
            .await
            .map_err(|e| i.err(e))?
        else {
            return Err(StoreError::NoSuchClient(client_id.to_string()));
        };
        let when = to_bson_date(&at);
        i.keys
            .update_many(
                doc! {"client_id": client_id, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": when.clone()}},
            )
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        let r = i
            .clients
            .update_one(
                doc! {"_id": client_id, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": when, "reenroll_allowed": false}},
            )
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        if r.modified_count > 0 {
            let c = Change {
                field: "revoked_at".into(),
                action: ChangeAction::Add,
                old: None,
                new: Some(Value::String(penguindome_protocol::envelope::utc::format(
                    &at,
                ))),
            };
            i.insert_audit(vec![audit_doc(
                Bson::String(penguindome_protocol::envelope::new_nonce()),
                client_id,
                &get_str(&d, "hostname"),
                &c,
                0,
                &at,
                None,
            )])
            .await?;
        }
        Ok(r.modified_count > 0)
    }

    async fn allow_reenroll(&self, client_id: &str) -> StoreResult<()> {
        let i = &self.inner;
        let r = i
            .clients
            .update_one(
                doc! {"_id": client_id},
                doc! {"$set": {"reenroll_allowed": true}},
            )
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        if r.matched_count == 0 {
            return Err(StoreError::NoSuchClient(client_id.to_string()));
        }
        Ok(())
    }

    async fn put_issues(&self, issues: Vec<Issue>) -> StoreResult<()> {
        // No transactions: each write is a whole-document replace keyed by
        // the issue's id, so repeating the batch after a failure is safe.
        let i = &self.inner;
        for issue in &issues {
            i.issues
                .replace_one(doc! {"_id": &issue.id}, issue_doc(issue))
                .upsert(true)
                .write_concern(i.write_concern.clone())
                .await
                .map_err(|e| i.err(e))?;
        }
        Ok(())
    }

    async fn issues(&self, filter: IssueFilter) -> StoreResult<Vec<Issue>> {
        let i = &self.inner;
        let mut query = Document::new();
        if let Some(id) = &filter.client_id {
            query.insert("client_id", id.as_str());
        }
        if filter.open_only {
            query.insert("closed_at", Bson::Null);
        }
        let mut cursor = i
            .issues
            .find(query)
            .sort(doc! {"client_id": 1, "opened_at": 1, "_id": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.push(issue_from_doc(&d));
        }
        Ok(out)
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let i = &self.inner;
        // Matches a free or expired lease, or our own; otherwise the upsert
        // tries to insert a second document with the same _id and fails.
        let filter = doc! {"_id": name, "$or": [
            {"until": {"$lt": to_bson_date(&now)}},
            {"holder": holder},
        ]};
        let update = doc! {"$set": {"holder": holder, "until": to_bson_date(&until)}};
        match i
            .leases
            .update_one(filter, update)
            .upsert(true)
            .write_concern(i.write_concern.clone())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(i.err(e)),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let i = &self.inner;
        i.leases
            .delete_one(doc! {"_id": name, "holder": holder})
            .write_concern(i.write_concern.clone())
            .await
            .map(|_| ())
            .map_err(|e| i.err(e))
    }

    async fn put_parameter(&self, p: Parameter) -> StoreResult<()> {
        let i = &self.inner;
        let id = parameter_id(&p.client_id, &p.name);
        if p.value.is_null() {
            i.parameters
                .delete_one(doc! {"_id": id})
                .write_concern(i.write_concern.clone())
                .await
                .map(|_| ())
        } else {
            i.parameters
                .replace_one(doc! {"_id": id}, parameter_doc(&p))
                .upsert(true)
                .write_concern(i.write_concern.clone())
                .await
                .map(|_| ())
        }
        .map_err(|e| i.err(e))
    }

    async fn parameters(&self, client_id: Option<&str>) -> StoreResult<Vec<Parameter>> {
        let i = &self.inner;
        let query = match client_id {
            Some(id) => doc! {"client_id": id},
            None => doc! {},
        };
        let mut cursor = i
            .parameters
            .find(query)
            .sort(doc! {"client_id": 1, "parameter": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.push(parameter_from_doc(&d)?);
        }
        Ok(out)
    }

    async fn prune_nonces(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let i = &self.inner;
        let r = i
            .nonces
            .delete_many(doc! {"expires_at": {"$lt": to_bson_date(&now)}})
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        Ok(r.deleted_count)
    }

    async fn health(&self) -> StoreResult<()> {
        let i = &self.inner;
        match tokio::time::timeout(HEALTH_TIMEOUT, i.db.run_command(doc! {"ping": 1})).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(i.err(e)),
            Err(_) => Err(StoreError::Backend(format!(
                "cannot reach a usable MongoDB server at {} (no answer within {} s: is it running, \
                 reachable, and for a replica set, does it have a primary?)",
                i.target,
                HEALTH_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn count(&self, kind: Kind) -> StoreResult<u64> {
        let i = &self.inner;
        i.collection(kind)
            .count_documents(doc! {})
            .await
            .map_err(|e| i.err(e))
    }

    async fn export(
        &self,
        kind: Kind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<(String, Record)>> {
        let i = &self.inner;
        let (filter, sort) = match (kind, after) {
            (Kind::Audit, Some(cursor)) => {
                let mut parts = cursor.splitn(3, ':');
                let millis: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let n: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let id = parts.next().unwrap_or_default().to_string();
                let t = Bson::DateTime(mongodb::bson::DateTime::from_millis(millis));
                (
                    doc! {"$or": [
                        {"recorded_at": {"$gt": t.clone()}},
                        {"recorded_at": t.clone(), "n": {"$gt": n}},
                        {"recorded_at": t, "n": n, "_id": {"$gt": id}},
                    ]},
                    doc! {"recorded_at": 1, "n": 1, "_id": 1},
                )
            }
            (Kind::Audit, None) => (doc! {}, doc! {"recorded_at": 1, "n": 1, "_id": 1}),
            (_, Some(cursor)) => (doc! {"_id": {"$gt": cursor}}, doc! {"_id": 1}),
            (_, None) => (doc! {}, doc! {"_id": 1}),
        };
        let mut cursor = i
            .collection(kind)
            .find(filter)
            .sort(sort)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.push(to_record(kind, &d)?);
        }
        Ok(out)
    }

    async fn import(&self, records: Vec<Record>) -> StoreResult<()> {
        let i = &self.inner;
        let mut by_kind: HashMap<Kind, Vec<Document>> = HashMap::new();
        for r in &records {
            by_kind.entry(kind_of(r)).or_default().push(from_record(r)?);
        }
        for kind in Kind::ALL {
            if let Some(docs) = by_kind.remove(&kind) {
                i.collection(kind)
                    .insert_many(docs)
                    .write_concern(i.write_concern.clone())
                    .await
                    .map_err(|e| i.err(e))?;
            }
        }
        Ok(())
    }

    async fn clear(&self) -> StoreResult<()> {
        let i = &self.inner;
        for kind in Kind::ALL {
            i.collection(kind)
                .delete_many(doc! {})
                .write_concern(i.write_concern.clone())
                .await
                .map_err(|e| i.err(e))?;
        }
        Ok(())
    }

    async fn close(&self) {
        // The server closes the store after its last request has finished,
        // so no submission is waiting for the batcher.
        let handle = self.batcher.lock().expect("batcher lock").take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        self.inner.client.clone().shutdown().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::conformance;

    /// The MongoDB-protocol server the tests use: PENGUINDOME_TEST_MONGODB_URI
    /// (scripts/test starts FerretDB and sets it). Without it the MongoDB
    /// tests are skipped, except under CI, where that is a failure.
    pub(crate) fn test_uri() -> Option<String> {
        match std::env::var("PENGUINDOME_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => Some(uri),
            _ if std::env::var_os("CI").is_some() => {
                panic!(
                    "CI is set but PENGUINDOME_TEST_MONGODB_URI is not: run the suite through scripts/test"
                )
            }
            _ => {
                eprintln!(
                    "PENGUINDOME_TEST_MONGODB_URI is not set: skipping a MongoDB test (scripts/test sets it)"
                );
                None
            }
        }
    }

    /// A store on a fresh database of the test server.
    pub(crate) async fn fresh_store(uri: &str) -> MongoStore {
        let db = format!("pdtest_{}", penguindome_protocol::envelope::new_nonce());
        let store = MongoStore::connect_uri(uri, Some(&db)).await.unwrap();
        store
            .health()
            .await
            .unwrap_or_else(|e| panic!("the test MongoDB server does not answer: {e}"));
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mongodb_passes_the_conformance_suite() {
        let Some(uri) = test_uri() else { return };
        let store = Arc::new(fresh_store(&uri).await);
        conformance::run_all(store.clone()).await;
        store.drop_database().await.unwrap();
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_database_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = MongoConfig {
            hosts: vec![format!("127.0.0.1:{port}")],
            server_selection_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let store = MongoStore::connect(&config, std::path::Path::new("/"))
            .await
            .unwrap();
        let e = store.health().await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && e.contains("cannot reach"),
            "{e}"
        );
        let e = store.list_clients().await.unwrap_err().to_string();
        assert!(e.contains("is it running"), "{e}");
        store.close().await;
    }
}
