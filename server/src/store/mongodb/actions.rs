//! Actions: one document per action in `actions`, one per target client in
//! `action_targets` (`_id` "<action>/<client>", with the action's creation
//! and expiry copied, so that handing out needs one query by client).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use penguindome_protocol::actions::{ActionReport, ActionState};
use serde_json::json;

use super::fields::{date, from_bson_date, get_str, opt_date, opt_str, to_bson_date};
use super::{Inner, audit_doc};
use crate::store::actions::{audit_field, state_change};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{
    ActionFilter, ActionRecord, Delivery, NewAction, RequestMeta, StoreError, StoreResult,
    TargetRecord,
};

/// States in which an action may still be handed out or reported on.
const OPEN: [&str; 3] = ["queued", "delivered", "started"];

fn target_id(action_id: &str, client_id: &str) -> String {
    format!("{action_id}/{client_id}")
}

fn action_doc(a: &ActionRecord) -> Document {
    doc! {
        "_id": &a.id, "kind": &a.kind, "summary": &a.summary, "task": &a.task,
        "queued_by": &a.queued_by, "created_at": to_bson_date(&a.created_at),
        "expires_at": to_bson_date(&a.expires_at),
    }
}

fn target_doc(a: &ActionRecord, t: &TargetRecord) -> Document {
    doc! {
        "_id": target_id(&a.id, &t.client_id), "action_id": &a.id, "client_id": &t.client_id,
        "hostname": &t.hostname, "state": t.state.as_str(),
        "created_at": to_bson_date(&a.created_at), "expires_at": to_bson_date(&a.expires_at),
        "delivered_at": opt_date(t.delivered_at.as_ref()), "started_at": opt_date(t.started_at.as_ref()),
        "finished_at": opt_date(t.finished_at.as_ref()), "detail": t.detail.as_deref(),
        "output": t.output.as_ref().map(|o| serde_json::to_string(o).expect("outputs serialize")),
    }
}

fn target_from_doc(d: &Document) -> TargetRecord {
    TargetRecord {
        client_id: get_str(d, "client_id"),
        hostname: get_str(d, "hostname"),
        state: ActionState::parse(&get_str(d, "state")).unwrap_or(ActionState::Queued),
        delivered_at: from_bson_date(d.get("delivered_at")),
        started_at: from_bson_date(d.get("started_at")),
        finished_at: from_bson_date(d.get("finished_at")),
        detail: opt_str(d, "detail"),
        output: opt_str(d, "output").and_then(|o| serde_json::from_str(&o).ok()),
    }
}

fn action_from_doc(d: &Document) -> ActionRecord {
    ActionRecord {
        id: get_str(d, "_id"),
        kind: get_str(d, "kind"),
        summary: get_str(d, "summary"),
        task: get_str(d, "task"),
        queued_by: get_str(d, "queued_by"),
        created_at: date(d, "created_at"),
        expires_at: date(d, "expires_at"),
        targets: Vec::new(),
    }
}

impl Inner {
    /// Queues an action: its targets and audit records first, the action
    /// last, so that a failure half-way leaves targets no read joins to.
    pub(super) async fn add_action(&self, a: NewAction) -> StoreResult<()> {
        let record = ActionRecord {
            id: a.id.clone(),
            kind: a.kind.clone(),
            summary: a.summary.clone(),
            task: a.task.clone(),
            queued_by: a.queued_by.clone(),
            created_at: a.created_at,
            expires_at: a.expires_at,
            targets: Vec::new(),
        };
        let queued = json!({"kind": a.kind, "summary": a.summary, "queued_by": a.queued_by,
            "expires_at": penguindome_protocol::envelope::utc::format(&a.expires_at), "state": "queued"});
        let mut targets = Vec::with_capacity(a.targets.len());
        let mut audit = Vec::with_capacity(a.targets.len());
        for (client_id, hostname) in &a.targets {
            let t = TargetRecord {
                client_id: client_id.clone(),
                hostname: hostname.clone(),
                state: ActionState::Queued,
                delivered_at: None,
                started_at: None,
                finished_at: None,
                detail: None,
                output: None,
            };
            targets.push(target_doc(&record, &t));
            let change = Change {
                field: audit_field(&a.id),
                action: ChangeAction::Add,
                old: None,
                new: Some(queued.clone()),
            };
            let id = Bson::String(format!("{}/queued", target_id(&a.id, client_id)));
            audit.push(audit_doc(
                id,
                client_id,
                hostname,
                &change,
                0,
                &a.created_at,
                None,
            ));
        }
        self.insert_targets(targets).await?;
        self.insert_audit(audit).await?;
        self.actions
            .insert_one(action_doc(&record))
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn insert_targets(&self, docs: Vec<Document>) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        self.action_targets
            .insert_many(docs)
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Hands out a client's actions (see the trait).
    pub(super) async fn deliver(
        &self,
        client_id: &str,
        now: &DateTime<Utc>,
    ) -> StoreResult<Vec<Delivery>> {
        let open = doc! {"client_id": client_id, "state": {"$in": ["queued", "delivered"]},
        "expires_at": {"$gt": to_bson_date(now)}};
        // The common case, nothing queued, costs one indexed read.
        let pending: Vec<Document> = self.find_targets(open).await?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        if pending.iter().any(|d| get_str(d, "state") == "queued") {
            self.action_targets
                .update_many(
                    doc! {"client_id": client_id, "state": "queued", "expires_at": {"$gt": to_bson_date(now)}},
                    doc! {"$set": {"state": "delivered", "delivered_at": to_bson_date(now)}},
                )
                .write_concern(self.write_concern.clone())
                .await
                .map_err(|e| self.err(e))?;
        }
        // Re-read: a cancel may have won the race for some.
        let delivered = self
            .find_targets(doc! {"client_id": client_id, "state": "delivered",
            "expires_at": {"$gt": to_bson_date(now)}})
            .await?;
        let ids: Vec<String> = delivered.iter().map(|d| get_str(d, "action_id")).collect();
        let mut actions: Vec<ActionRecord> = self.find_actions(doc! {"_id": {"$in": &ids}}).await?;
        actions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(actions
            .into_iter()
            .map(|a| Delivery {
                id: a.id,
                queued_by: a.queued_by,
                created_at: a.created_at,
                expires_at: a.expires_at,
                task: a.task,
            })
            .collect())
    }

    async fn find_targets(&self, filter: Document) -> StoreResult<Vec<Document>> {
        self.action_targets
            .find(filter)
            .await
            .map_err(|e| self.err(e))?
            .try_collect()
            .await
            .map_err(|e| self.err(e))
    }

    async fn find_actions(&self, filter: Document) -> StoreResult<Vec<ActionRecord>> {
        let docs: Vec<Document> = self
            .actions
            .find(filter)
            .sort(doc! {"created_at": 1, "_id": 1})
            .await
            .map_err(|e| self.err(e))?
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        Ok(docs.iter().map(action_from_doc).collect())
    }

    /// Stores an agent's report on an action (key and nonce checked by the
    /// caller).
    pub(super) async fn report_action(
        &self,
        meta: &RequestMeta,
        report: &ActionReport,
    ) -> StoreResult<()> {
        let id = target_id(&report.action_id, &meta.client_id);
        let Some(current) = self
            .action_targets
            .find_one(doc! {"_id": &id})
            .await
            .map_err(|e| self.err(e))?
        else {
            return Err(StoreError::NoSuchAction {
                action_id: report.action_id.clone(),
            });
        };
        let stored = ActionState::parse(&get_str(&current, "state")).unwrap_or(ActionState::Queued);
        if stored.is_final() || !report.state.is_reportable() || stored == report.state {
            return Ok(());
        }
        let at = to_bson_date(&report.at);
        let mut set = doc! {"state": report.state.as_str(), "detail": report.detail.as_deref()};
        let has = |k: &str| current.get(k).is_some_and(|b| b != &Bson::Null);
        if report.state == ActionState::Started {
            set.insert("started_at", at);
        } else {
            set.insert("finished_at", at);
            if let Some(o) = &report.output {
                if !has("started_at") {
                    set.insert("started_at", to_bson_date(&o.started_at));
                }
                set.insert(
                    "output",
                    serde_json::to_string(o).expect("outputs serialize"),
                );
            }
        }
        if !has("delivered_at") {
            set.insert("delivered_at", to_bson_date(&meta.received_at));
        }
        // Only from the state read: of two racing reports, one wins.
        let r = self
            .action_targets
            .update_one(
                doc! {"_id": &id, "state": stored.as_str()},
                doc! {"$set": set},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        if r.modified_count == 0 {
            return Ok(());
        }
        let change = state_change(
            &report.action_id,
            stored,
            report.state,
            report.detail.as_deref(),
        );
        let audit_id = Bson::String(format!("{id}/{}", report.state.as_str()));
        let hostname = get_str(&current, "hostname");
        self.insert_audit(vec![audit_doc(
            audit_id,
            &meta.client_id,
            &hostname,
            &change,
            0,
            &meta.received_at,
            None,
        )])
        .await
    }

    /// Cancels an action where it is still queued.
    pub(super) async fn cancel_action(
        &self,
        id: &str,
        by: &str,
        at: &DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        if self.find_actions(doc! {"_id": id}).await?.is_empty() {
            return Err(StoreError::Invalid(format!(
                "no action has id {id}; `pdome-admin patch list` shows them"
            )));
        }
        let detail = format!("cancelled by {by}");
        let mut cancelled = Vec::new();
        for t in self
            .find_targets(doc! {"action_id": id, "state": "queued"})
            .await?
        {
            // One by one, each only while still queued: a delivery racing
            // this cancel wins or loses per client, never both.
            let r = self
                .action_targets
                .update_one(
                    doc! {"_id": get_str(&t, "_id"), "state": "queued"},
                    doc! {"$set": {"state": "cancelled", "finished_at": to_bson_date(at), "detail": &detail}},
                )
                .write_concern(self.write_concern.clone())
                .await
                .map_err(|e| self.err(e))?;
            if r.modified_count == 1 {
                let client_id = get_str(&t, "client_id");
                let change = state_change(
                    id,
                    ActionState::Queued,
                    ActionState::Cancelled,
                    Some(&detail),
                );
                let audit_id = Bson::String(format!("{}/cancelled", get_str(&t, "_id")));
                self.insert_audit(vec![audit_doc(
                    audit_id,
                    &client_id,
                    &get_str(&t, "hostname"),
                    &change,
                    0,
                    at,
                    None,
                )])
                .await?;
                cancelled.push(client_id);
            }
        }
        cancelled.sort();
        Ok(cancelled)
    }

    /// Actions matching a filter, oldest first, with their targets.
    pub(super) async fn list_actions(
        &self,
        filter: &ActionFilter,
    ) -> StoreResult<Vec<ActionRecord>> {
        let mut query = doc! {};
        if let Some(id) = &filter.id {
            query.insert("_id", id);
        }
        if let Some(kind) = &filter.kind {
            query.insert("kind", kind);
        }
        if let Some(client) = &filter.client_id {
            let ids: Vec<String> = self
                .find_targets(doc! {"client_id": client})
                .await?
                .iter()
                .map(|d| get_str(d, "action_id"))
                .collect();
            query.insert("_id", doc! {"$in": ids});
        }
        let mut actions = self.find_actions(query).await?;
        for a in &mut actions {
            a.targets = self.targets_of(&a.id).await?;
        }
        Ok(actions)
    }

    async fn targets_of(&self, id: &str) -> StoreResult<Vec<TargetRecord>> {
        let mut targets: Vec<TargetRecord> = self
            .find_targets(doc! {"action_id": id})
            .await?
            .iter()
            .map(target_from_doc)
            .collect();
        targets.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(targets)
    }

    /// Unfinished, unexpired patches per client.
    pub(super) async fn pending_patch_counts(
        &self,
        now: &DateTime<Utc>,
    ) -> StoreResult<HashMap<String, usize>> {
        let patches: Vec<String> = self
            .find_actions(doc! {"kind": "patch", "expires_at": {"$gt": to_bson_date(now)}})
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect();
        let mut out: HashMap<String, usize> = HashMap::new();
        if patches.is_empty() {
            return Ok(out);
        }
        let open = self
            .find_targets(doc! {"action_id": {"$in": patches}, "state": {"$in": OPEN.to_vec()}})
            .await?;
        for t in open {
            *out.entry(get_str(&t, "client_id")).or_default() += 1;
        }
        Ok(out)
    }

    /// A page of actions for export, after the id `after`.
    pub(super) async fn export_actions(
        &self,
        after: Option<String>,
        limit: i64,
    ) -> StoreResult<Vec<(String, ActionRecord)>> {
        let filter = match after {
            Some(a) => doc! {"_id": {"$gt": a}},
            None => doc! {},
        };
        let docs: Vec<Document> = self
            .actions
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await
            .map_err(|e| self.err(e))?
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(docs.len());
        for d in &docs {
            let mut a = action_from_doc(d);
            a.targets = self.targets_of(&a.id).await?;
            out.push((a.id.clone(), a));
        }
        Ok(out)
    }

    /// Writes actions copied from another store.
    pub(super) async fn import_actions(&self, actions: &[ActionRecord]) -> StoreResult<()> {
        let targets: Vec<Document> = actions
            .iter()
            .flat_map(|a| a.targets.iter().map(move |t| target_doc(a, t)))
            .collect();
        self.insert_targets(targets).await?;
        if actions.is_empty() {
            return Ok(());
        }
        self.actions
            .insert_many(actions.iter().map(action_doc))
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
