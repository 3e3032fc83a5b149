//! `account-without-password`: a login account anyone can enter.

use penguindome_protocol::facts::Known;
use penguindome_protocol::facts::users::Users;

use super::{Check, Context, Facts, Finding, cannot_tell, fact};

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
        let u = match fact::<Users>(facts) {
            Ok(u) => u,
            Err(f) => return f,
        };
        match &u.without_password {
            Known::Value(names) if names.is_empty() => Finding::Clear,
            Known::Value(names) => Finding::Raise(format!("no password: {}", names.join(", "))),
            Known::Unknown(_) => cannot_tell("which accounts have no password", &u.evidence),
            // Sealed: the administrators chose not to let the server judge it.
            Known::Sealed(_) => Finding::Clear,
        }
    }
}
