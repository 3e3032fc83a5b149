//! Enrolling a key without transactions, in steps a retry can resume.

use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::fields::{from_bson_date, to_bson_date};
use super::{Inner, audit_doc, is_duplicate_key};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{EnrollOutcome, Enrollment, StoreError, StoreResult};

/// Refuses to claim a known machine for another key unless an
/// administrator allowed it (checked before a token is spent on it).
pub(super) fn may_claim(e: &Enrollment, d: &Document) -> StoreResult<()> {
    if d.get_str("enrolling_key") == Ok(e.fingerprint.as_str())
        || d.get_bool("reenroll_allowed").unwrap_or(false)
    {
        return Ok(());
    }
    Err(if from_bson_date(d.get("revoked_at")).is_some() {
        StoreError::Revoked {
            client_id: e.client_id.clone(),
        }
    } else {
        StoreError::AlreadyEnrolled {
            client_id: e.client_id.clone(),
        }
    })
}

/// Enrollment without transactions, in steps that a retry can resume: the
/// client document first names the key being enrolled (`enrolling_key`),
/// then the audit record and the key follow. A fault between the steps
/// leaves a document that lets the same key, and only it, finish; it never
/// locks the machine out.
impl Inner {
    /// The answer for a key that is enrolled already, if it is.
    pub(super) async fn enrolled_key(
        &self,
        e: &Enrollment,
    ) -> StoreResult<Option<StoreResult<EnrollOutcome>>> {
        Ok(match self.key_status(&e.fingerprint).await? {
            Some((client, false)) if client == e.client_id => {
                self.consume_nonce(&e.client_id, &e.nonce, &e.nonce_expires_at)
                    .await?;
                Some(Ok(EnrollOutcome::AlreadyEnrolled))
            }
            Some((client, true)) if client == e.client_id => {
                Some(Err(StoreError::Revoked { client_id: client }))
            }
            Some(_) => Some(Err(StoreError::Invalid(
                "this key is already enrolled for another client; generate a new key".into(),
            ))),
            None => None,
        })
    }

    /// Creates the client document for a machine never seen before.
    pub(super) async fn claim_new_client(&self, e: &Enrollment) -> StoreResult<ChangeAction> {
        let now = to_bson_date(&e.received_at);
        let r = self
            .clients
            .insert_one(doc! {
                "_id": &e.client_id, "hostname": &e.hostname, "enrolled_at": now.clone(),
                "first_seen_at": now.clone(), "last_seen_at": now,
                "last_address": e.address.to_string(), "last_listener": &e.listener,
                "reenroll_allowed": false, "plugins": {}, "plugin_digests": {},
                "enrolling_key": &e.fingerprint, "enrolling_action": ChangeAction::Add.as_str(),
            })
            .write_concern(self.write_concern.clone())
            .await;
        match r {
            Ok(_) => Ok(ChangeAction::Add),
            // Another request enrolled this machine a moment ago: only
            // the same key may go on.
            Err(x) if is_duplicate_key(&x) => self.resume_claim(e).await,
            Err(x) => Err(self.err(x)),
        }
    }

    /// A known machine: resumes this key's interrupted enrollment, or
    /// spends the administrator's one-time permission to re-enroll.
    pub(super) async fn claim_existing_client(
        &self,
        e: &Enrollment,
        d: &Document,
    ) -> StoreResult<ChangeAction> {
        if d.get_str("enrolling_key") == Ok(e.fingerprint.as_str()) {
            return self.resume_claim(e).await;
        }
        may_claim(e, d)?;
        let now = to_bson_date(&e.received_at);
        // Only one re-enrollment may use the permission.
        let r = self
            .clients
            .update_one(
                doc! {"_id": &e.client_id, "reenroll_allowed": true},
                doc! {"$set": {
                    "reenroll_allowed": false, "revoked_at": Bson::Null, "hostname": &e.hostname,
                    "last_seen_at": now, "last_address": e.address.to_string(),
                    "last_listener": &e.listener, "enrolling_key": &e.fingerprint,
                    "enrolling_action": ChangeAction::Change.as_str(),
                }},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|x| self.err(x))?;
        if r.matched_count == 0 {
            return self.resume_claim(e).await;
        }
        Ok(ChangeAction::Change)
    }

    /// Goes on with an enrollment whose client document names this key,
    /// unless an administrator revoked the client since.
    async fn resume_claim(&self, e: &Enrollment) -> StoreResult<ChangeAction> {
        let d = self
            .clients
            .find_one(doc! {"_id": &e.client_id})
            .projection(doc! {"revoked_at": 1, "enrolling_key": 1, "enrolling_action": 1})
            .await
            .map_err(|x| self.err(x))?;
        let Some(d) = d.filter(|d| d.get_str("enrolling_key") == Ok(e.fingerprint.as_str())) else {
            return Err(StoreError::AlreadyEnrolled {
                client_id: e.client_id.clone(),
            });
        };
        if from_bson_date(d.get("revoked_at")).is_some() {
            return Err(StoreError::Revoked {
                client_id: e.client_id.clone(),
            });
        }
        Ok(match d.get_str("enrolling_action") {
            Ok("change") => ChangeAction::Change,
            _ => ChangeAction::Add,
        })
    }

    /// Records the enrollment, retires the client's other keys and adds
    /// this one. Each step may run again.
    pub(super) async fn finish_enrollment(
        &self,
        e: &Enrollment,
        action: ChangeAction,
    ) -> StoreResult<()> {
        let now = to_bson_date(&e.received_at);
        let c = Change {
            field: "key".into(),
            action,
            old: None,
            new: Some(Value::String(e.fingerprint.clone())),
        };
        let id = hex::encode(
            xxhash_rust::xxh3::xxh3_128(
                format!("{}:enroll:{}", e.client_id, e.fingerprint).as_bytes(),
            )
            .to_le_bytes(),
        );
        let mut records = vec![audit_doc(
            Bson::String(id.clone()),
            &e.client_id,
            &e.hostname,
            &c,
            0,
            &e.received_at,
            None,
        )];
        if let Some(claim) = &e.token {
            records.push(audit_doc(
                Bson::String(format!("{id}:token")),
                &e.client_id,
                &e.hostname,
                &crate::store::tokens::enrolled_with(claim),
                1,
                &e.received_at,
                None,
            ));
        }
        self.insert_audit(records).await?;
        self.fault("enroll-key")?;
        self.keys
            .update_many(
                doc! {"client_id": &e.client_id, "revoked_at": Bson::Null, "_id": {"$ne": &e.fingerprint}},
                doc! {"$set": {"revoked_at": now.clone()}},
            )
            .write_concern(self.write_concern.clone())
            .await
            .map_err(|x| self.err(x))?;
        let r = self
            .keys
            .insert_one(doc! {
                "_id": &e.fingerprint, "client_id": &e.client_id,
                "certificate": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: e.certificate.clone() },
                "created_at": now, "revoked_at": Bson::Null,
            })
            .write_concern(self.write_concern.clone())
            .await;
        match r {
            // A concurrent request of the same key finished first.
            Err(x) if is_duplicate_key(&x) => Ok(()),
            r => r.map(|_| ()).map_err(|x| self.err(x)),
        }
    }
}
