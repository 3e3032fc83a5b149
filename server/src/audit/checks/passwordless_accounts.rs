//! `account-without-password`: a login account anyone can enter.

use serde_json::Value;

use super::{Check, Context, Facts, Finding, cannot_tell, plugin};

/// An account has an empty password.
pub struct PasswordlessAccounts;

impl Check for PasswordlessAccounts {
    fn name(&self) -> &'static str {
        "account-without-password"
    }

    fn describe(&self) -> &'static str {
        "an account has an empty password"
    }

    fn evaluate(&self, facts: &Facts<'_>, _cx: &Context<'_>) -> Finding {
        let v = match plugin(facts, "users") {
            Ok(v) => v,
            Err(f) => return f,
        };
        match &v["without_password"] {
            Value::Array(names) if names.is_empty() => Finding::Clear,
            Value::Array(names) => Finding::Raise(format!(
                "no password: {}",
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => cannot_tell("which accounts have no password", v),
        }
    }
}
