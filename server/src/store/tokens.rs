//! Enrollment tokens as the stores keep them: the SHA-256 of the secret,
//! never the secret, with how often and until when it may enroll.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::StoreError;
use super::diff::{Change, ChangeAction};

/// A token to store (`pdome-admin tokens create`).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Public id, 16 hex characters.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// What the administrator calls it.
    pub label: String,
    /// Enrollments it allows.
    pub max_uses: u32,
    /// After this it enrolls nothing.
    pub expires_at: DateTime<Utc>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The Unix user who made it.
    pub created_by: String,
}

/// A stored token and what it was used for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: String,
    /// SHA-256 of the secret, hex (`tokens list` leaves it out).
    pub secret_sha256: String,
    /// Label.
    pub label: String,
    /// Enrollments it allows.
    pub max_uses: u32,
    /// Enrollments made with it.
    pub uses: u32,
    /// Expiry.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub expires_at: DateTime<Utc>,
    /// Creation.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// When an administrator revoked it.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its latest enrollment.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The token an enrollment presents.
#[derive(Debug, Clone)]
pub struct TokenClaim {
    /// Its id.
    pub id: String,
    /// SHA-256 of the secret presented, hex.
    pub secret_sha256: String,
}

impl TokenRecord {
    /// `active`, `used-up`, `expired` or `revoked`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else if self.uses >= self.max_uses {
            "used-up"
        } else {
            "active"
        }
    }

    /// Whether `secret_sha256` (hex) is this token's, in constant time.
    pub fn secret_matches(&self, secret_sha256: &str) -> bool {
        bool::from(
            self.secret_sha256
                .as_bytes()
                .ct_eq(secret_sha256.as_bytes()),
        )
    }

    /// Why it cannot enroll now, if it cannot.
    pub fn refusal(&self, secret_sha256: &str, now: DateTime<Utc>) -> Option<StoreError> {
        if !self.secret_matches(secret_sha256) {
            return Some(StoreError::TokenRefused(format!(
                "enrollment token {} is not valid",
                self.id
            )));
        }
        match self.state(now) {
            "active" => None,
            state => Some(StoreError::TokenRefused(format!(
                "enrollment token {} is {state}",
                self.id
            ))),
        }
    }

    /// Whether it may fetch the repositories (the bootstrap does, before
    /// the agent is installed): the same conditions as enrolling.
    pub fn opens_repositories(&self, secret_sha256: &str, now: DateTime<Utc>) -> bool {
        self.refusal(secret_sha256, now).is_none()
    }
}

/// The refusal for a token id the store does not have.
pub fn unknown_token(id: &str) -> StoreError {
    StoreError::TokenRefused(format!("enrollment token {id} is not valid"))
}

/// The audit-trail change naming the token a client enrolled with.
pub fn enrolled_with(claim: &TokenClaim) -> Change {
    Change {
        field: "enrollment_token".into(),
        action: ChangeAction::Add,
        old: None,
        new: Some(Value::String(claim.id.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        let now = Utc::now();
        TokenRecord {
            id: "0123456789abcdef".into(),
            secret_sha256: "aa".repeat(32),
            label: String::new(),
            max_uses: 2,
            uses: 1,
            expires_at: now + chrono::Duration::hours(1),
            created_at: now,
            created_by: "root".into(),
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn tokens_refuse_for_the_first_reason_that_applies() {
        let now = Utc::now();
        let good = "aa".repeat(32);
        let mut t = record();
        assert!(t.refusal(&good, now).is_none());
        assert!(t.refusal(&"bb".repeat(32), now).is_some());
        t.uses = 2;
        assert_eq!(t.state(now), "used-up");
        t.expires_at = now;
        assert_eq!(t.state(now), "expired");
        t.revoked_at = Some(now);
        let e = t.refusal(&good, now).unwrap().to_string();
        assert!(e.contains("revoked"), "{e}");
        assert!(!t.opens_repositories(&good, now));
    }
}
