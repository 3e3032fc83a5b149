//! Migration: counting, exporting, importing and clearing every kind of
//! record; `records` converts between documents and records.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};

use super::records::{from_record, kind_of, to_record};
use super::{Inner, MongoStore};
use crate::store::{Kind, MigrationStore, Record, StoreResult};

impl Inner {
    /// The collection that holds a kind of record.
    fn collection(&self, kind: Kind) -> &Collection<Document> {
        match kind {
            Kind::Clients => &self.clients,
            Kind::Keys => &self.keys,
            Kind::Audit => &self.audit,
            Kind::Nonces => &self.nonces,
            Kind::Actions => &self.actions,
            Kind::Issues => &self.issues,
            Kind::Parameters => &self.parameters,
            Kind::Tokens => &self.tokens,
        }
    }
}

#[async_trait]
impl MigrationStore for MongoStore {
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
        if kind == Kind::Actions {
            let page = i
                .export_actions(after, i64::try_from(limit).unwrap_or(i64::MAX))
                .await?;
            return Ok(page
                .into_iter()
                .map(|(c, a)| (c, Record::Action(a)))
                .collect());
        }
        let (filter, sort) = export_query(kind, after);
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
        let mut actions = Vec::new();
        for r in records {
            match r {
                Record::Action(a) => actions.push(a),
                r => by_kind
                    .entry(kind_of(&r))
                    .or_default()
                    .push(from_record(&r)?),
            }
        }
        i.import_actions(&actions).await?;
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
        i.action_targets
            .delete_many(doc! {})
            .write_concern(i.write_concern.clone())
            .await
            .map_err(|e| i.err(e))?;
        for kind in Kind::ALL {
            i.collection(kind)
                .delete_many(doc! {})
                .write_concern(i.write_concern.clone())
                .await
                .map_err(|e| i.err(e))?;
        }
        Ok(())
    }
}

/// The filter and order of an export page after `after`. Audit records
/// page by time, then position, then id.
fn export_query(kind: Kind, after: Option<String>) -> (Document, Document) {
    match (kind, after) {
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
    }
}
