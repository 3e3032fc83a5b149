//! The issues audit: issues and the leases that serialise their writers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc};

use super::fields::{date, from_bson_date, get_str, opt_date, opt_str, to_bson_date};
use super::{MongoStore, is_duplicate_key};
use std::collections::HashMap;

use crate::store::roles::AuditRows;
use crate::store::{AuditRow, AuditStore, Issue, IssueFilter, StoreResult};

/// An issue from its document.
pub(super) fn issue_from_doc(d: &Document) -> Issue {
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

/// An issue as a document.
pub(super) fn issue_doc(i: &Issue) -> Document {
    doc! {
        "_id": &i.id, "client_id": &i.client_id, "name": &i.name, "detail": i.detail.as_deref(),
        "opened_at": to_bson_date(&i.opened_at), "closed_at": opt_date(i.closed_at.as_ref()),
        "closed_by": i.closed_by.as_deref(),
        "alerted_at": opt_date(i.alerted_at.as_ref()), "snoozed_at": opt_date(i.snoozed_at.as_ref()),
        "unsnooze_at": opt_date(i.unsnooze_at.as_ref()), "unsnoozed_at": opt_date(i.unsnoozed_at.as_ref()),
    }
}

#[async_trait]
impl AuditStore for MongoStore {
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

    async fn audit_rows(&self) -> StoreResult<AuditRows> {
        let i = self.inner.clone();
        let projection = doc! {"hostname": 1, "enrolled_at": 1, "last_seen_at": 1,
        "submitted_at": 1, "revoked_at": 1, "verdicts": 1, "last_listener": 1};
        let cursor = i
            .clients
            .find(doc! {})
            .projection(projection)
            .sort(doc! {"hostname": 1, "_id": 1})
            .await
            .map_err(|e| i.err(e))?;
        Ok(cursor
            .map_ok(|d| audit_row(&d))
            .map_err(move |e| i.err(e))
            .boxed())
    }

    async fn pending_patch_counts(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<HashMap<String, usize>> {
        self.inner.pending_patch_counts(&now).await
    }
}

/// One client's document as the audit reads it.
fn audit_row(d: &Document) -> AuditRow {
    AuditRow {
        client_id: get_str(d, "_id"),
        hostname: get_str(d, "hostname"),
        enrolled_at: date(d, "enrolled_at"),
        last_seen_at: date(d, "last_seen_at"),
        submitted_at: from_bson_date(d.get("submitted_at")),
        revoked_at: from_bson_date(d.get("revoked_at")),
        verdicts: opt_str(d, "verdicts"),
        last_listener: get_str(d, "last_listener"),
    }
}
