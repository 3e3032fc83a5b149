//! Working out what one submission changes: its audit records and the
//! client update that stores it, from the stored state alone.

use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::audit_doc;
use super::batch::{Planned, Work};
use super::fields::{from_bson_date, get_str, to_bson_date};
use crate::store::diff::{Change, ChangeAction, diff};
use crate::store::{StoreError, StoreResult, Submission, SubmitOutcome};

/// Names of the plugins whose stored text a submission replaces or removes.
pub(super) fn changed_plugins(s: &Submission, state: &Document) -> Vec<String> {
    let old = state
        .get_document("plugin_digests")
        .cloned()
        .unwrap_or_default();
    s.digests
        .iter()
        .filter(|(n, d)| old.get_str(n.as_str()).is_ok_and(|o| o != hex::encode(d)))
        .map(|(n, _)| n.clone())
        .chain(
            old.keys()
                .filter(|n| !s.digests.contains_key(n.as_str()))
                .cloned(),
        )
        .collect()
}

/// Works out one submission's client update and audit records.
pub(super) fn plan_submission(w: &Work, olds: &Document) -> StoreResult<(Planned, Vec<Document>)> {
    let s = &w.pending.submission;
    let meta = &s.meta;
    let report = &s.report;
    let state = w.state.as_ref().expect("state of an open submission");
    let seen = doc! {
        "last_seen_at": to_bson_date(&meta.received_at),
        "last_address": meta.address.to_string(),
        "last_listener": &meta.listener,
    };
    if is_duplicate(s, state) {
        let planned = Planned {
            outcome: SubmitOutcome::Duplicate,
            update: doc! {"$set": seen},
            base: None,
        };
        return Ok((planned, Vec::new()));
    }
    let (changes, update) = new_state(s, state, olds, seen)?;
    let base = state.get("last_report_id").cloned().unwrap_or(Bson::Null);
    let docs = changes
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let id = audit_id(&meta.client_id, &report.report_id, &base, n);
            audit_doc(
                Bson::String(id),
                &meta.client_id,
                &report.hostname,
                c,
                n,
                &meta.received_at,
                Some(&report.collected_at),
            )
        })
        .collect();
    let planned = Planned {
        outcome: SubmitOutcome::Stored {
            changes: changes.len(),
        },
        update,
        base: Some(base),
    };
    Ok((planned, docs))
}

/// An audit record's id: the same for a retry of the same report against
/// the same stored state, different once the stored state has moved on.
fn audit_id(client_id: &str, report_id: &str, base: &Bson, n: usize) -> String {
    let base = base.as_str().unwrap_or("");
    let key = format!("{client_id}:{report_id}:{base}:{n}");
    hex::encode(xxhash_rust::xxh3::xxh3_128(key.as_bytes()).to_le_bytes())
}

/// The changes a new report makes, and the update that stores it.
fn new_state(
    s: &Submission,
    state: &Document,
    olds: &Document,
    seen: Document,
) -> StoreResult<(Vec<Change>, Document)> {
    let report = &s.report;
    let old_digests = state
        .get_document("plugin_digests")
        .cloned()
        .unwrap_or_default();
    let old_value = |name: &str| {
        olds.get_str(name)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    let mut changes: Vec<Change> = s.clock_change().into_iter().collect();
    let old_hostname = get_str(state, "hostname");
    if old_hostname != report.hostname {
        changes.push(Change {
            field: "hostname".into(),
            action: ChangeAction::Change,
            old: Some(Value::String(old_hostname)),
            new: Some(Value::String(report.hostname.clone())),
        });
    }
    let mut set = seen;
    let mut digests = Document::new();
    for (name, raw) in &report.plugins {
        let digest = s.digests.get(name).map(hex::encode).unwrap_or_default();
        digests.insert(name.clone(), digest.clone());
        let old = match old_digests.get_str(name) {
            Ok(d) if d == digest => continue,
            Ok(_) => old_value(name),
            Err(_) => None,
        };
        let new = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| StoreError::Invalid(format!("plugin {name}: {e}")))?;
        diff(
            &format!("plugins.{name}"),
            old.as_ref(),
            Some(&new),
            &mut changes,
        );
        set.insert(format!("plugins.{name}"), raw.get());
    }
    let mut unset = Document::new();
    for name in old_digests
        .keys()
        .filter(|n| !report.plugins.contains_key(n.as_str()))
    {
        diff(
            &format!("plugins.{name}"),
            old_value(name).as_ref(),
            None,
            &mut changes,
        );
        unset.insert(format!("plugins.{name}"), "");
    }
    set.insert("hostname", &report.hostname);
    set.insert("collected_at", to_bson_date(&report.collected_at));
    set.insert("submitted_at", to_bson_date(&s.meta.received_at));
    set.insert("last_report_id", &report.report_id);
    set.insert("agent_version", &report.agent_version);
    set.insert("facts_version", i64::from(report.facts_version));
    match &s.verdicts {
        Some(v) => set.insert("verdicts", v.as_str()),
        None => set.insert("verdicts", Bson::Null),
    };
    set.insert("plugin_digests", digests);
    let mut update = doc! {"$set": set};
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    Ok((changes, update))
}

/// A re-delivered report, or one older than what is stored. A new report
/// collected in the same millisecond as the stored one is not older: an
/// agent's reports arrive one after another.
pub(super) fn is_duplicate(s: &Submission, state: &Document) -> bool {
    state.get_str("last_report_id").ok() == Some(s.report.report_id.as_str())
        || from_bson_date(state.get("collected_at")).is_some_and(|c| c > s.report.collected_at)
}
