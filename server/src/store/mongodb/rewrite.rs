//! Rewriting stored values in place (`pdome-admin secrets encrypt`).

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::Inner;
use crate::store::{Rewritten, StoreResult, ValueRewrite, plugin_digest, rewrite_text};

impl Inner {
    /// See [`crate::store::AdminStore::rewrite_values`].
    pub(super) async fn rewrite_values(&self, f: &ValueRewrite) -> StoreResult<Rewritten> {
        let mut out = Rewritten::default();
        self.rewrite_plugins(f, &mut out).await?;
        self.rewrite_audit(f, &mut out).await?;
        Ok(out)
    }

    async fn rewrite_plugins(&self, f: &ValueRewrite, out: &mut Rewritten) -> StoreResult<()> {
        let mut cursor = self
            .clients
            .find(doc! {})
            .projection(doc! {"plugins": 1})
            .await
            .map_err(|e| self.err(e))?;
        while let Some(client) = cursor.try_next().await.map_err(|e| self.err(e))? {
            let set = rewritten_plugins(f, &client, out)?;
            if set.is_empty() {
                continue;
            }
            let mut set = set;
            set.insert("verdicts", Bson::Null);
            self.clients
                .update_one(doc! {"_id": client.get("_id")}, doc! {"$set": set})
                .write_concern(self.write_concern.clone())
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn rewrite_audit(&self, f: &ValueRewrite, out: &mut Rewritten) -> StoreResult<()> {
        let mut cursor = self
            .audit
            .find(doc! {})
            .projection(doc! {"field": 1, "old": 1, "new": 1})
            .await
            .map_err(|e| self.err(e))?;
        while let Some(record) = cursor.try_next().await.map_err(|e| self.err(e))? {
            let field = record.get_str("field").unwrap_or_default();
            let mut set = Document::new();
            for side in ["old", "new"] {
                if let Ok(text) = record.get_str(side)
                    && let Some(new) = rewrite_text(f, field, text)?
                {
                    set.insert(side, new);
                }
            }
            if set.is_empty() {
                continue;
            }
            self.audit
                .update_one(doc! {"_id": record.get("_id")}, doc! {"$set": set})
                .write_concern(self.write_concern.clone())
                .await
                .map_err(|e| self.err(e))?;
            out.audit_records += 1;
        }
        Ok(())
    }
}

/// The `$set` of a client's rewritten plugin texts and their digests.
fn rewritten_plugins(
    f: &ValueRewrite,
    client: &Document,
    out: &mut Rewritten,
) -> StoreResult<Document> {
    let mut set = Document::new();
    let Ok(plugins) = client.get_document("plugins") else {
        return Ok(set);
    };
    for (name, text) in plugins {
        let Some(text) = text.as_str() else { continue };
        if let Some(new) = rewrite_text(f, &format!("plugins.{name}"), text)? {
            set.insert(
                format!("plugin_digests.{name}"),
                hex::encode(plugin_digest(&new)),
            );
            set.insert(format!("plugins.{name}"), new);
            out.plugin_outputs += 1;
        }
    }
    Ok(set)
}
