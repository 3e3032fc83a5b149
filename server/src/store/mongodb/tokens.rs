//! Enrollment tokens (`enrollment_tokens`) and each client's repository
//! credential (`repo_credential_sha256` in its client document).
//!
//! Without transactions a token's use is spent before the client is
//! claimed, and remembered by the key that spent it (`used_by`), so the same
//! key's retry after a fault does not spend it twice.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::Inner;
use super::fields::{date, from_bson_date, get_str, to_bson_date};
use crate::store::tokens::unknown_token;
use crate::store::{Enrollment, NewToken, StoreResult, TokenClaim, TokenRecord};

/// A token document as the stores share it.
pub(super) fn record(d: &Document) -> TokenRecord {
    let count = |k: &str| {
        d.get_i64(k)
            .or_else(|_| d.get_i32(k).map(i64::from))
            .unwrap_or(0)
    };
    let max_uses = u32::try_from(count("max_uses")).unwrap_or(0);
    let remaining = count("remaining").clamp(0, i64::from(max_uses));
    TokenRecord {
        id: get_str(d, "_id"),
        secret_sha256: get_str(d, "secret_sha256"),
        label: get_str(d, "label"),
        max_uses,
        uses: max_uses - u32::try_from(remaining).unwrap_or(0),
        expires_at: date(d, "expires_at"),
        created_at: date(d, "created_at"),
        created_by: get_str(d, "created_by"),
        revoked_at: from_bson_date(d.get("revoked_at")),
        last_used_at: from_bson_date(d.get("last_used_at")),
    }
}

/// A token as a document: `remaining` from its uses; which keys spent them
/// is not known across stores.
pub(super) fn token_doc(t: &TokenRecord) -> Document {
    let opt = |d: &Option<DateTime<Utc>>| d.as_ref().map_or(Bson::Null, to_bson_date);
    doc! {
        "_id": &t.id, "secret_sha256": &t.secret_sha256, "label": &t.label,
        "max_uses": i64::from(t.max_uses),
        "remaining": i64::from(t.max_uses.saturating_sub(t.uses)),
        "used_by": [], "expires_at": to_bson_date(&t.expires_at),
        "created_at": to_bson_date(&t.created_at), "created_by": &t.created_by,
        "revoked_at": opt(&t.revoked_at), "last_used_at": opt(&t.last_used_at),
    }
}

impl Inner {
    pub(super) async fn find_token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let d = self
            .tokens
            .find_one(doc! {"_id": id})
            .await
            .map_err(|e| self.err(e))?;
        Ok(d.as_ref().map(record))
    }

    pub(super) async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let docs: Vec<Document> = self
            .tokens
            .find(doc! {})
            .sort(doc! {"created_at": -1, "_id": 1})
            .await
            .map_err(|e| self.err(e))?
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        Ok(docs.iter().map(record).collect())
    }

    pub(super) async fn add_token(&self, t: &NewToken) -> StoreResult<()> {
        self.tokens
            .insert_one(doc! {
                "_id": &t.id, "secret_sha256": &t.secret_sha256, "label": &t.label,
                "max_uses": i64::from(t.max_uses), "remaining": i64::from(t.max_uses),
                "used_by": [], "expires_at": to_bson_date(&t.expires_at),
                "created_at": to_bson_date(&t.created_at), "created_by": &t.created_by,
                "revoked_at": Bson::Null, "last_used_at": Bson::Null,
            })
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) async fn revoke_token(&self, id: &str, at: &DateTime<Utc>) -> StoreResult<bool> {
        let r = self
            .tokens
            .update_one(
                doc! {"_id": id, "revoked_at": Bson::Null},
                doc! {"$set": {"revoked_at": to_bson_date(at)}},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.modified_count == 1)
    }

    /// Spends one use of the enrollment's token (once per key), or says why
    /// it cannot.
    pub(super) async fn spend_token(&self, e: &Enrollment, claim: &TokenClaim) -> StoreResult<()> {
        let spent_before = self
            .tokens
            .find_one(doc! {"_id": &claim.id, "secret_sha256": &claim.secret_sha256, "used_by": &e.fingerprint})
            .projection(doc! {"_id": 1})
            .await
            .map_err(|x| self.err(x))?;
        if spent_before.is_some() {
            return Ok(());
        }
        let now = to_bson_date(&e.received_at);
        let r = self
            .tokens
            .update_one(
                doc! {
                    "_id": &claim.id, "secret_sha256": &claim.secret_sha256,
                    "revoked_at": Bson::Null, "expires_at": {"$gt": now.clone()},
                    "remaining": {"$gt": 0},
                },
                doc! {
                    "$inc": {"remaining": -1},
                    "$push": {"used_by": &e.fingerprint},
                    "$set": {"last_used_at": now},
                },
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|x| self.err(x))?;
        if r.matched_count == 1 {
            return Ok(());
        }
        // Say why, from what is stored.
        let token = self
            .find_token(&claim.id)
            .await?
            .ok_or_else(|| unknown_token(&claim.id))?;
        Err(token
            .refusal(&claim.secret_sha256, e.received_at)
            .unwrap_or_else(|| unknown_token(&claim.id)))
    }

    pub(super) async fn repo_credential(&self, client_id: &str) -> StoreResult<Option<String>> {
        let d = self
            .clients
            .find_one(doc! {"_id": client_id, "revoked_at": Bson::Null})
            .projection(doc! {"repo_credential_sha256": 1})
            .await
            .map_err(|e| self.err(e))?;
        Ok(d.map(|d| get_str(&d, "repo_credential_sha256"))
            .filter(|s| !s.is_empty()))
    }

    pub(super) async fn set_repo_credential(
        &self,
        client_id: &str,
        sha256: &str,
    ) -> StoreResult<()> {
        self.clients
            .update_one(
                doc! {"_id": client_id},
                doc! {"$set": {"repo_credential_sha256": sha256}},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) async fn clear_repo_credentials(&self, client_ids: &[String]) -> StoreResult<u64> {
        let r = self
            .clients
            .update_many(
                doc! {"_id": {"$in": client_ids}, "repo_credential_sha256": {"$type": "string"}},
                doc! {"$unset": {"repo_credential_sha256": ""}},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.modified_count)
    }
}
