//! The submission batcher: concurrent submissions share a handful of round
//! trips; each is answered only once every write of its batch succeeded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use tokio::sync::{mpsc, oneshot};

use super::fields::{from_bson_date, get_str, to_bson_date};
use super::plan::{changed_plugins, is_duplicate, plan_submission};
use super::{Inner, duplicate_indexes, nonce_id};
use crate::store::{
    RequestMeta, StoreError, StoreResult, Submission, SubmitOutcome, validate_report,
};

/// Most submissions handled in one batch.
const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A submission waiting for the batcher, and where its answer goes.
pub(super) struct Pending {
    pub(super) submission: Submission,
    pub(super) reply: Reply<SubmitOutcome>,
}

/// Gathers concurrent submissions into batches.
pub(super) async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Pending>) {
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
        let (size, started) = (now.len(), std::time::Instant::now());
        submit_batch(&inner, now).await;
        crate::metrics::global().store_batch("mongodb", size, started.elapsed());
    }
}

/// One submission's progress through a batch.
///
/// `outcome` is set early only for refusals; what a stored or duplicate
/// submission gets waits in `planned` until every write of the batch has
/// succeeded, so that nothing is acknowledged that is not in the database.
pub(super) struct Work {
    pub(super) pending: Pending,
    pub(super) state: Option<Document>,
    planned: Option<Planned>,
    outcome: Option<StoreResult<SubmitOutcome>>,
}

/// The writes one submission needs, and what it gets once they are done.
pub(super) struct Planned {
    pub(super) outcome: SubmitOutcome,
    /// The client update, conditional on `base` for a new report.
    pub(super) update: Document,
    /// `last_report_id` the changes were computed from (None: a duplicate,
    /// whose update is unconditional).
    pub(super) base: Option<Bson>,
}

impl Work {
    fn is_open(&self) -> bool {
        self.outcome.is_none() && self.planned.is_none()
    }

    fn meta(&self) -> &RequestMeta {
        &self.pending.submission.meta
    }

    fn refuse(&mut self, e: StoreError) {
        self.planned = None;
        self.outcome = Some(Err(e));
    }
}

async fn submit_batch(inner: &Inner, batch: Vec<Pending>) {
    let mut work: Vec<Work> = batch
        .into_iter()
        .map(|pending| Work {
            pending,
            state: None,
            planned: None,
            outcome: None,
        })
        .collect();
    if let Err(e) = submit_batch_inner(inner, &mut work).await {
        // Whatever was not refused before the failure is not known to be
        // stored: the agent keeps it and retries.
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
    refuse_invalid_reports(work);
    check_batch_keys(inner, work).await?;
    load_client_states(inner, work).await?;
    consume_batch_nonces(inner, work).await?;
    let mut old_texts = read_changed_plugin_texts(inner, work).await?;
    let mut audit = Vec::new();
    for w in work.iter_mut().filter(|w| w.is_open()) {
        let olds = old_texts.remove(&w.meta().client_id).unwrap_or_default();
        match plan_submission(w, &olds) {
            Ok((planned, docs)) => {
                w.planned = Some(planned);
                audit.extend(docs);
            }
            Err(e) => w.refuse(e),
        }
    }
    // Audit records first: their ids are derived from the report and the
    // state it was compared with, so a retry rewrites the same ones, and a
    // client update that then fails leaves nothing acknowledged.
    inner.insert_audit(audit).await?;
    apply_client_updates(inner, work).await
}

fn refuse_invalid_reports(work: &mut [Work]) {
    for w in work.iter_mut() {
        if let Err(e) = validate_report(&w.pending.submission.report) {
            w.refuse(e);
        }
    }
}

/// Refuses unknown and revoked keys, one lookup per submission.
async fn check_batch_keys(inner: &Inner, work: &mut [Work]) -> StoreResult<()> {
    let fps: Vec<&str> = work
        .iter()
        .filter(|w| w.is_open())
        .map(|w| w.meta().fingerprint.as_str())
        .collect();
    let mut keys: HashMap<String, (String, bool)> = HashMap::new();
    let projection = doc! {"client_id": 1, "revoked_at": 1};
    for d in find_by_ids(inner, &inner.keys, &fps, projection).await? {
        let revoked = from_bson_date(d.get("revoked_at")).is_some();
        keys.insert(get_str(&d, "_id"), (get_str(&d, "client_id"), revoked));
    }
    for w in work.iter_mut().filter(|w| w.is_open()) {
        let meta = w.meta();
        let refusal = match keys.get(&meta.fingerprint) {
            None => Some(StoreError::UnknownKey),
            Some((client, _)) if *client != meta.client_id => Some(StoreError::UnknownKey),
            Some((client, true)) => Some(StoreError::Revoked {
                client_id: client.clone(),
            }),
            Some(_) => None,
        };
        if let Some(e) = refusal {
            w.refuse(e);
        }
    }
    Ok(())
}

async fn load_client_states(inner: &Inner, work: &mut [Work]) -> StoreResult<()> {
    let ids: Vec<&str> = work
        .iter()
        .filter(|w| w.is_open())
        .map(|w| w.meta().client_id.as_str())
        .collect();
    let projection =
        doc! {"hostname": 1, "collected_at": 1, "last_report_id": 1, "plugin_digests": 1};
    let mut states: HashMap<String, Document> = HashMap::new();
    for d in find_by_ids(inner, &inner.clients, &ids, projection).await? {
        states.insert(get_str(&d, "_id"), d);
    }
    for w in work.iter_mut().filter(|w| w.is_open()) {
        match states.remove(&w.meta().client_id) {
            Some(d) => w.state = Some(d),
            None => w.refuse(StoreError::UnknownKey),
        }
    }
    Ok(())
}

/// Records the nonces: a duplicate is a replay, whichever server saw it
/// first.
async fn consume_batch_nonces(inner: &Inner, work: &mut [Work]) -> StoreResult<()> {
    let open: Vec<usize> = (0..work.len()).filter(|&i| work[i].is_open()).collect();
    if open.is_empty() {
        return Ok(());
    }
    let docs: Vec<Document> = open
        .iter()
        .map(|&i| {
            let m = work[i].meta();
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
    for (k, &i) in open.iter().enumerate() {
        if dups.contains(&k) {
            work[i].refuse(StoreError::Replay);
        }
    }
    Ok(())
}

/// Reads back the stored texts of changed plugins only, by client.
async fn read_changed_plugin_texts(
    inner: &Inner,
    work: &[Work],
) -> StoreResult<HashMap<String, Document>> {
    let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
    for w in work.iter().filter(|w| w.is_open()) {
        let s = &w.pending.submission;
        let state = w.state.as_ref().expect("state of an open submission");
        let names = changed_plugins(s, state);
        if !names.is_empty() && !is_duplicate(s, state) {
            wanted.insert(s.meta.client_id.clone(), names);
        }
    }
    let mut old_texts = HashMap::new();
    if wanted.is_empty() {
        return Ok(old_texts);
    }
    let mut projection = Document::new();
    for n in wanted.values().flatten() {
        projection.insert(format!("plugins.{n}"), 1);
    }
    let ids: Vec<&str> = wanted.keys().map(String::as_str).collect();
    for d in find_by_ids(inner, &inner.clients, &ids, projection).await? {
        let plugins = d.get_document("plugins").cloned().unwrap_or_default();
        old_texts.insert(get_str(&d, "_id"), plugins);
    }
    Ok(old_texts)
}

/// Applies every planned client update in one round trip, then gives each
/// submission its outcome: planned when its update matched, or when the
/// stored state shows its report (a retry on another server stored it),
/// else a retryable error.
async fn apply_client_updates(inner: &Inner, work: &mut [Work]) -> StoreResult<()> {
    inner.fault("client-updates")?;
    let planned: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].planned.is_some())
        .collect();
    if planned.is_empty() {
        return Ok(());
    }
    let updates: Vec<Document> = planned
        .iter()
        .map(|&i| {
            let w = &work[i];
            let p = w.planned.as_ref().expect("planned");
            // Conditional on the state the changes were computed from, so
            // two servers cannot interleave one client's reports.
            let q = match &p.base {
                Some(base) => doc! {"_id": &w.meta().client_id, "last_report_id": base.clone()},
                None => doc! {"_id": &w.meta().client_id},
            };
            doc! {"q": q, "u": p.update.clone()}
        })
        .collect();
    let count = updates.len();
    let reply = inner
        .db
        .run_command(doc! {
            "update": "clients",
            "updates": updates,
            "ordered": false,
            "writeConcern": inner.write_concern_document(),
        })
        .await
        .map_err(|e| inner.err(e))?;
    check_write_reply(&reply)?;
    let matched = reply_count(&reply, "n");
    if matched == count as i64 {
        for &i in &planned {
            let p = work[i].planned.take().expect("planned");
            work[i].outcome = Some(Ok(p.outcome));
        }
        return Ok(());
    }
    settle_unmatched(inner, work, &planned).await
}

/// Some conditional update did not match: reads each planned client's
/// state to tell a report stored (here or by another server) from a lost
/// race.
async fn settle_unmatched(inner: &Inner, work: &mut [Work], planned: &[usize]) -> StoreResult<()> {
    let ids: Vec<&str> = planned
        .iter()
        .map(|&i| work[i].meta().client_id.as_str())
        .collect();
    let mut stored: HashMap<String, String> = HashMap::new();
    for d in find_by_ids(inner, &inner.clients, &ids, doc! {"last_report_id": 1}).await? {
        stored.insert(get_str(&d, "_id"), get_str(&d, "last_report_id"));
    }
    for &i in planned {
        let w = &mut work[i];
        let p = w.planned.take().expect("planned");
        let ours = &w.pending.submission.report.report_id;
        let present = p.base.is_none() || stored.get(&w.meta().client_id) == Some(ours);
        w.outcome = Some(if present {
            Ok(p.outcome)
        } else {
            log::warn!(
                "client {}: another report was stored at the same moment; this one was not \
                 (the agent retries it)",
                w.meta().client_id
            );
            Err(StoreError::Backend(
                "another report of this client was stored at the same moment".into(),
            ))
        });
    }
    Ok(())
}

/// Fails on write errors and on a write concern error: either means the
/// writes are not known to be durable.
fn check_write_reply(reply: &Document) -> StoreResult<()> {
    if let Ok(errors) = reply.get_array("writeErrors")
        && !errors.is_empty()
    {
        return Err(StoreError::Backend(format!(
            "MongoDB refused client updates: {errors:?}"
        )));
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(StoreError::Backend(format!(
            "MongoDB could not confirm that client updates are durable (write concern: {wce}); \
             they are retried"
        )));
    }
    Ok(())
}

/// A count field of a command reply, whatever integer type it came as.
fn reply_count(reply: &Document, key: &str) -> i64 {
    match reply.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
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
