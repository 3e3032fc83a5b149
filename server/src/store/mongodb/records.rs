//! Documents as backend-neutral records and back, for copies between
//! stores.

use base64::Engine as _;
use mongodb::bson::{Bson, Document, doc};

use super::admin::{parameter_doc, parameter_from_doc};
use super::audit::{issue_doc, issue_from_doc};
use super::fields::{
    date, facts_version, from_bson_date, get_str, opt_date, opt_str, to_bson_date,
};
use super::nonce_id;
use crate::store::diff::ChangeAction;
use crate::store::{Kind, Record, StoreError, StoreResult, plugin_digest};

/// A document as a backend-neutral record, with its export cursor.
pub(super) fn to_record(kind: Kind, d: &Document) -> StoreResult<(String, Record)> {
    let id = get_str(d, "_id");
    let record = match kind {
        Kind::Clients => client_record(&id, d),
        Kind::Keys => key_record(&id, d),
        Kind::Audit => audit_record(d),
        Kind::Nonces => nonce_record(&id, d),
        Kind::Actions => {
            return Err(StoreError::Backend(
                "actions are exported with their targets, not as single documents".into(),
            ));
        }
        Kind::Issues => Record::Issue(issue_from_doc(d)),
        Kind::Parameters => Record::Parameter(parameter_from_doc(d)?),
        Kind::Tokens => Record::Token(super::tokens::record(d)),
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

fn client_record(id: &str, d: &Document) -> Record {
    Record::Client {
        client_id: id.to_string(),
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
        facts_version: facts_version(d),
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
        repo_credential_sha256: opt_str(d, "repo_credential_sha256"),
    }
}

fn key_record(id: &str, d: &Document) -> Record {
    Record::Key {
        fingerprint: id.to_string(),
        client_id: get_str(d, "client_id"),
        certificate: base64::engine::general_purpose::STANDARD.encode(
            d.get_binary_generic("certificate")
                .cloned()
                .unwrap_or_default(),
        ),
        created_at: date(d, "created_at"),
        revoked_at: from_bson_date(d.get("revoked_at")),
    }
}

fn audit_record(d: &Document) -> Record {
    Record::Audit {
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
    }
}

fn nonce_record(id: &str, d: &Document) -> Record {
    let (client_id, nonce) = id.split_once(':').unwrap_or((id, ""));
    Record::Nonce {
        client_id: client_id.to_string(),
        nonce: nonce.to_string(),
        expires_at: date(d, "expires_at").timestamp(),
    }
}

/// A backend-neutral record as a document of its collection.
pub(super) fn from_record(r: &Record) -> StoreResult<Document> {
    Ok(match r {
        Record::Client { .. } => client_doc(r),
        Record::Key { .. } => key_doc(r)?,
        Record::Audit { .. } => audit_doc(r),
        Record::Nonce {
            client_id,
            nonce,
            expires_at,
        } => doc! {
            "_id": nonce_id(client_id, nonce),
            "expires_at": Bson::DateTime(mongodb::bson::DateTime::from_millis(expires_at.saturating_mul(1000))),
        },
        Record::Action(_) => {
            return Err(StoreError::Backend(
                "actions are imported with their targets, not as single documents".into(),
            ));
        }
        Record::Issue(issue) => issue_doc(issue),
        Record::Parameter(p) => parameter_doc(p),
        Record::Token(t) => super::tokens::token_doc(t),
    })
}

fn client_doc(r: &Record) -> Document {
    let Record::Client {
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
        facts_version,
        revoked_at,
        reenroll_allowed,
        plugins,
        repo_credential_sha256,
    } = r
    else {
        unreachable!("from_record hands clients only");
    };
    let mut texts = Document::new();
    let mut digests = Document::new();
    for (name, text) in plugins {
        texts.insert(name.clone(), text.as_str());
        digests.insert(name.clone(), hex::encode(plugin_digest(text)));
    }
    let mut d = doc! {
        "_id": client_id, "hostname": hostname, "enrolled_at": to_bson_date(enrolled_at),
        "first_seen_at": to_bson_date(first_seen_at), "last_seen_at": to_bson_date(last_seen_at),
        "last_address": last_address, "last_listener": last_listener,
        "collected_at": opt_date(collected_at.as_ref()), "submitted_at": opt_date(submitted_at.as_ref()),
        "last_report_id": last_report_id, "agent_version": agent_version,
        "facts_version": i64::from(*facts_version),
        "revoked_at": opt_date(revoked_at.as_ref()), "reenroll_allowed": reenroll_allowed,
        "plugins": texts, "plugin_digests": digests,
    };
    if let Some(sha) = repo_credential_sha256 {
        d.insert("repo_credential_sha256", sha);
    }
    d
}

fn key_doc(r: &Record) -> StoreResult<Document> {
    let Record::Key {
        fingerprint,
        client_id,
        certificate,
        created_at,
        revoked_at,
    } = r
    else {
        unreachable!("from_record hands keys only");
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(certificate)
        .map_err(|e| {
            StoreError::Invalid(format!("key {fingerprint}: certificate is not base64: {e}"))
        })?;
    Ok(doc! {
        "_id": fingerprint, "client_id": client_id,
        "certificate": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes },
        "created_at": to_bson_date(created_at), "revoked_at": opt_date(revoked_at.as_ref()),
    })
}

fn audit_doc(r: &Record) -> Document {
    let Record::Audit {
        client_id,
        hostname,
        field,
        action,
        old,
        new,
        recorded_at,
        n,
        collected_at,
    } = r
    else {
        unreachable!("from_record hands audit records only");
    };
    doc! {
        "_id": penguindome_protocol::envelope::new_nonce(), "client_id": client_id, "hostname": hostname,
        "field": field, "action": action.as_str(), "old": old, "new": new,
        "recorded_at": to_bson_date(recorded_at), "n": n, "collected_at": opt_date(collected_at.as_ref()),
    }
}

/// The collection a record belongs in.
pub(super) fn kind_of(r: &Record) -> Kind {
    match r {
        Record::Client { .. } => Kind::Clients,
        Record::Key { .. } => Kind::Keys,
        Record::Audit { .. } => Kind::Audit,
        Record::Nonce { .. } => Kind::Nonces,
        Record::Action(_) => Kind::Actions,
        Record::Issue(_) => Kind::Issues,
        Record::Parameter(_) => Kind::Parameters,
        Record::Token(_) => Kind::Tokens,
    }
}
