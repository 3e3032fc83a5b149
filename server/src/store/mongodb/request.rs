//! The request path: key lookups, enrollment, contacts, submissions (handed
//! to the batcher), actions (in `actions`) and nonce housekeeping.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::doc;
use penguindome_protocol::actions::ActionReport;
use tokio::sync::oneshot;

use super::batch::Pending;
use super::fields::{from_bson_date, get_str, to_bson_date};
use super::{DUPLICATE_KEY, Inner, MongoStore, nonce_id};
use crate::store::{
    Delivered, EnrollOutcome, Enrollment, KeyRecord, RequestMeta, RequestStore, StoreError,
    StoreResult, Submission, SubmitOutcome, TokenRecord,
};

/// The checks and writes every request makes.
impl Inner {
    /// The client of a key and whether it is revoked, if it is enrolled.
    pub(super) async fn key_status(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<(String, bool)>> {
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

    /// Refuses unknown and revoked keys.
    async fn check_key(&self, meta: &RequestMeta) -> StoreResult<()> {
        match self.key_status(&meta.fingerprint).await? {
            None => Err(StoreError::UnknownKey),
            Some((client, _)) if client != meta.client_id => Err(StoreError::UnknownKey),
            Some((client_id, true)) => Err(StoreError::Revoked { client_id }),
            Some(_) => Ok(()),
        }
    }

    /// Records a nonce; a duplicate is a replay, whichever server saw it
    /// first.
    pub(super) async fn consume_nonce(
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

    /// Records the request as the client's latest contact.
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
}

#[async_trait]
impl RequestStore for MongoStore {
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
        if let Some(outcome) = i.enrolled_key(&e).await? {
            return outcome;
        }
        let existing = i
            .clients
            .find_one(doc! {"_id": &e.client_id})
            .projection(doc! {"revoked_at": 1, "reenroll_allowed": 1, "enrolling_key": 1, "enrolling_action": 1})
            .await
            .map_err(|x| i.err(x))?;
        if let Some(d) = &existing {
            super::enroll::may_claim(&e, d)?;
        }
        if let Some(claim) = &e.token {
            i.spend_token(&e, claim).await?;
        }
        i.consume_nonce(&e.client_id, &e.nonce, &e.nonce_expires_at)
            .await?;
        let action = match existing {
            None => i.claim_new_client(&e).await?,
            Some(d) => i.claim_existing_client(&e, &d).await?,
        };
        i.finish_enrollment(&e, action).await?;
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

    async fn deliver_actions(
        &self,
        meta: RequestMeta,
        now: DateTime<Utc>,
    ) -> StoreResult<Delivered> {
        self.touch(meta.clone()).await?;
        let i = &self.inner;
        Ok(Delivered {
            actions: i.deliver(&meta.client_id, &now).await?,
            // FerretDB has no projection in findAndModify, so this is its
            // own small read rather than part of mark_seen.
            needs_repo_credential: i.repo_credential(&meta.client_id).await?.is_none(),
        })
    }

    async fn report_action(&self, meta: RequestMeta, report: ActionReport) -> StoreResult<()> {
        let i = &self.inner;
        i.check_key(&meta).await?;
        i.consume_nonce(&meta.client_id, &meta.nonce, &meta.nonce_expires_at)
            .await?;
        i.mark_seen(&meta).await?;
        i.report_action(&meta, &report).await
    }

    async fn find_token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.find_token(id).await
    }

    async fn repo_credential(&self, client_id: &str) -> StoreResult<Option<String>> {
        self.inner.repo_credential(client_id).await
    }

    async fn set_repo_credential(&self, meta: RequestMeta, sha256: String) -> StoreResult<()> {
        self.touch(meta.clone()).await?;
        self.inner
            .set_repo_credential(&meta.client_id, &sha256)
            .await
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
}
