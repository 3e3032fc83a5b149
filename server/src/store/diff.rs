//! What changed between two versions of a client's data, for the audit trail.
//!
//! Objects are compared key by key; anything else, lists included, is one
//! value. A subtree that appears or disappears is one record, not one per
//! leaf, so a new plugin costs one row.

use penguindome_protocol::sealing::sealed_digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// The field is new.
    Add,
    /// The field's value changed.
    Change,
    /// The field is gone.
    Delete,
}

impl ChangeAction {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Change => "change",
            Self::Delete => "delete",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(Self::Add),
            "change" => Some(Self::Change),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// One changed field.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dotted path.
    pub field: String,
    /// What happened.
    pub action: ChangeAction,
    /// Value before (None for add).
    pub old: Option<Value>,
    /// Value after (None for delete).
    pub new: Option<Value>,
}

/// Appends the changes from `old` to `new` under `path` to `out`.
pub fn diff(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => out.push(Change {
            field: path.to_string(),
            action: ChangeAction::Add,
            old: None,
            new: Some(n.clone()),
        }),
        (Some(o), None) => out.push(Change {
            field: path.to_string(),
            action: ChangeAction::Delete,
            old: Some(o.clone()),
            new: None,
        }),
        (Some(o), Some(n)) if sealed_digest(o).is_some() || sealed_digest(n).is_some() => {
            // A sealed value is one value, compared by its digest: each
            // report seals anew, so the ciphertexts always differ.
            if sealed_digest(o) != sealed_digest(n) || sealed_digest(o).is_none() {
                out.push(Change {
                    field: path.to_string(),
                    action: ChangeAction::Change,
                    old: Some(o.clone()),
                    new: Some(n.clone()),
                });
            }
        }
        (Some(Value::Object(o)), Some(Value::Object(n))) => {
            for (k, ov) in o {
                diff(&join(path, k), Some(ov), n.get(k), out);
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    diff(&join(path, k), None, Some(nv), out);
                }
            }
        }
        (Some(o), Some(n)) => {
            if o != n {
                out.push(Change {
                    field: path.to_string(),
                    action: ChangeAction::Change,
                    old: Some(o.clone()),
                    new: Some(n.clone()),
                });
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(old: Value, new: Value) -> Vec<Change> {
        let mut out = Vec::new();
        diff("plugins.x", Some(&old), Some(&new), &mut out);
        out
    }

    #[test]
    fn sealed_values_change_when_their_digest_does() {
        let sealed =
            |d: &str, c: &str| json!({"sealed": {"key": "K", "digest": d, "ciphertext": c}});
        let c = changes(
            json!({"loc": sealed("d1", "c1")}),
            json!({"loc": sealed("d1", "c2")}),
        );
        assert!(
            c.is_empty(),
            "a new ciphertext of the same value is no change"
        );
        let c = changes(
            json!({"loc": sealed("d1", "c1")}),
            json!({"loc": sealed("d2", "c3")}),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "plugins.x.loc");
        assert_eq!(c[0].new, Some(sealed("d2", "c3")));
        // From plain to sealed: one record for the field, not one per leaf.
        let c = changes(
            json!({"loc": {"lat": 1}}),
            json!({"loc": sealed("d1", "c1")}),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "plugins.x.loc");
    }

    #[test]
    fn identical_values_make_no_records() {
        assert!(changes(json!({"a": 1, "b": [1, 2]}), json!({"b": [1, 2], "a": 1})).is_empty());
    }

    #[test]
    fn leaves_are_compared_by_path() {
        let c = changes(
            json!({"a": 1, "n": {"k": "v", "gone": true}}),
            json!({"a": 2, "n": {"k": "v", "new": [1]}}),
        );
        let summary: Vec<_> = c.iter().map(|c| (c.field.as_str(), c.action)).collect();
        assert_eq!(
            summary,
            vec![
                ("plugins.x.a", ChangeAction::Change),
                ("plugins.x.n.gone", ChangeAction::Delete),
                ("plugins.x.n.new", ChangeAction::Add),
            ]
        );
        assert_eq!(c[0].old, Some(json!(1)));
        assert_eq!(c[0].new, Some(json!(2)));
    }

    #[test]
    fn lists_are_one_value_and_type_changes_are_changes() {
        let c = changes(json!({"l": [1, 2]}), json!({"l": [2, 1]}));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].action, ChangeAction::Change);
        let c = changes(json!({"s": {"a": 1}}), json!({"s": "unknown"}));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].new, Some(json!("unknown")));
    }

    #[test]
    fn new_subtree_is_one_record() {
        let mut out = Vec::new();
        diff(
            "plugins.p",
            None,
            Some(&json!({"a": {"b": 1}, "c": 2})),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, ChangeAction::Add);
    }
}
