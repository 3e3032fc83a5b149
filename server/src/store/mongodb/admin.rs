//! Administration: clients, their history, revocation, actions and
//! parameters.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::fields::{date, facts_version, from_bson_date, get_str, opt_str, to_bson_date};
use super::{MongoStore, audit_doc};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{
    ActionFilter, ActionRecord, AdminStore, AuditRecord, ClientDocument, ClientSummary, KeyInfo,
    NewAction, NewToken, Parameter, StoreError, StoreResult, TokenRecord,
};

/// The summary fields of a client document.
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

/// Parameters are keyed `<client_id>/<name>` (client ids hold no `/`).
fn parameter_id(client_id: &str, name: &str) -> String {
    format!("{client_id}/{name}")
}

/// A parameter from its document.
pub(super) fn parameter_from_doc(d: &Document) -> StoreResult<Parameter> {
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

/// A parameter as a document.
pub(super) fn parameter_doc(p: &Parameter) -> Document {
    doc! {
        "_id": parameter_id(&p.client_id, &p.name), "client_id": &p.client_id,
        "parameter": &p.name, "value": p.value.to_string(), "updated_at": to_bson_date(&p.updated_at),
    }
}

#[async_trait]
impl AdminStore for MongoStore {
    async fn add_token(&self, t: NewToken) -> StoreResult<()> {
        self.inner.add_token(&t).await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.inner.tokens().await
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        self.inner.revoke_token(id, &at).await
    }

    async fn clear_repo_credentials(&self, client_ids: Vec<String>) -> StoreResult<u64> {
        self.inner.clear_repo_credentials(&client_ids).await
    }

    async fn rewrite_values(
        &self,
        rewrite: crate::store::ValueRewrite,
    ) -> StoreResult<crate::store::Rewritten> {
        self.inner.rewrite_values(&rewrite).await
    }

    async fn note_on_audit_trail(
        &self,
        client_id: &str,
        hostname: &str,
        change: Change,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let id = Bson::ObjectId(mongodb::bson::oid::ObjectId::new());
        let record = audit_doc(id, client_id, hostname, &change, 0, &at, None);
        self.inner.insert_audit(vec![record]).await
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
            facts_version: facts_version(&d),
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

    async fn add_action(&self, a: NewAction) -> StoreResult<()> {
        self.inner.add_action(a).await
    }

    async fn actions(&self, filter: ActionFilter) -> StoreResult<Vec<ActionRecord>> {
        self.inner.list_actions(&filter).await
    }

    async fn cancel_action(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        self.inner.cancel_action(id, by, &at).await
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
}
