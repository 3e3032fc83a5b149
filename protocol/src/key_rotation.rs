//! Rotating the server's signing key without stranding agents. The old key
//! certifies the new one in a signed statement; the server hands out the
//! chain of these statements in every `/update` answer, so an agent that
//! trusts any key of the chain, even one offline through every rotation,
//! can walk it to the key that signs today.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::{DetachedSignature, KeyError, PublicKey, SecretKey, SignatureError};

/// Errors from checking one certification.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The statement is not the JSON of a [`KeyCertification`].
    #[error("the key certification is not readable: {0}")]
    Statement(#[source] serde_json::Error),
    /// The new key in it is not a usable key.
    #[error("the certified key is not usable: {0}")]
    Key(#[source] KeyError),
    /// The new key's fingerprint is not the one the statement names.
    #[error("the certified key is {found}, but the statement names {named}")]
    Fingerprint {
        /// What the key is.
        found: String,
        /// What the statement says.
        named: String,
    },
    /// The signature is not the named old key's over the statement.
    #[error("the certification of {to} is not signed by {from}: {source}")]
    Signature {
        /// The key said to certify.
        from: String,
        /// The key certified.
        to: String,
        /// Why the signature fails.
        #[source]
        source: SignatureError,
    },
}

/// What an old server key says about the key that follows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyCertification {
    /// The certifying (old) key's fingerprint.
    pub from: String,
    /// The certified (new) key's fingerprint.
    pub to: String,
    /// The new key, armored.
    pub key: String,
    /// When the administrator started the rotation.
    #[serde(with = "crate::envelope::utc")]
    pub made_at: DateTime<Utc>,
}

/// A [`KeyCertification`] as exact JSON text with the old key's armored
/// detached signature over those bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignedKeyCertification {
    /// The statement's JSON text (the signed bytes).
    pub statement: String,
    /// The old key's armored detached signature.
    pub signature: String,
}

impl SignedKeyCertification {
    /// `old` certifies `new`.
    pub fn make(
        old: &SecretKey,
        new: &PublicKey,
        made_at: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let statement = KeyCertification {
            from: old.fingerprint().to_string(),
            to: new.fingerprint().to_string(),
            key: new.to_armored()?,
            made_at,
        };
        let text =
            serde_json::to_string(&statement).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let signature = old.sign_armored(text.as_bytes())?;
        Ok(Self {
            statement: text,
            signature: String::from_utf8_lossy(&signature).into_owned(),
        })
    }

    /// The statement, unchecked (to see which key it claims to come from).
    pub fn claims(&self) -> Result<KeyCertification, RotationError> {
        serde_json::from_str(&self.statement).map_err(RotationError::Statement)
    }

    /// Checks the statement against `old` and returns the key it certifies.
    pub fn verify(&self, old: &PublicKey) -> Result<PublicKey, RotationError> {
        let claims = self.claims()?;
        let signature_error = |source| RotationError::Signature {
            from: old.fingerprint().to_string(),
            to: claims.to.clone(),
            source,
        };
        let sig =
            DetachedSignature::from_bytes(self.signature.as_bytes()).map_err(signature_error)?;
        old.verify(&sig, self.statement.as_bytes())
            .map_err(signature_error)?;
        let key = PublicKey::from_bytes(claims.key.as_bytes()).map_err(RotationError::Key)?;
        if !key.fingerprint().eq_ignore_ascii_case(&claims.to) {
            return Err(RotationError::Fingerprint {
                found: key.fingerprint().to_string(),
                named: claims.to,
            });
        }
        Ok(key)
    }
}

/// The keys reachable from `pinned` through `chain`, in order: `pinned`
/// first, then each key certified by the one before it. Statements that
/// do not verify, or do not continue the walk, are skipped.
pub fn walk(pinned: &PublicKey, chain: &[SignedKeyCertification]) -> Vec<PublicKey> {
    let mut keys = vec![pinned.clone()];
    // Each pass extends the walk by one key; a chain is short (one entry
    // per rotation), so the quadratic cost does not matter.
    loop {
        let last = keys.last().expect("starts with the pinned key").clone();
        let next = chain.iter().find_map(|c| {
            let claims = c.claims().ok()?;
            if !claims.from.eq_ignore_ascii_case(last.fingerprint()) {
                return None;
            }
            let key = c.verify(&last).ok()?;
            let seen = keys.iter().any(|k| k.fingerprint() == key.fingerprint());
            (!seen).then_some(key)
        });
        match next {
            Some(k) => keys.push(k),
            None => return keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey::generate(&format!("{name} <{name}@example.test>")).unwrap()
    }

    #[test]
    fn a_chain_is_walked_from_any_key_on_it() {
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let now = Utc::now();
        let ab = SignedKeyCertification::make(&a, &b.public(), now).unwrap();
        let bc = SignedKeyCertification::make(&b, &c.public(), now).unwrap();
        // Out of order, with a stranger's statement mixed in.
        let (x, y) = (key("x"), key("y"));
        let xy = SignedKeyCertification::make(&x, &y.public(), now).unwrap();
        let chain = [bc.clone(), xy, ab.clone()];
        let fps = |keys: Vec<PublicKey>| -> Vec<String> {
            keys.iter().map(|k| k.fingerprint().to_string()).collect()
        };
        assert_eq!(
            fps(walk(&a.public(), &chain)),
            [a.fingerprint(), b.fingerprint(), c.fingerprint()]
        );
        assert_eq!(
            fps(walk(&b.public(), &chain)),
            [b.fingerprint(), c.fingerprint()]
        );
        assert_eq!(fps(walk(&c.public(), &chain)), [c.fingerprint()]);
        assert_eq!(
            ab.verify(&a.public()).unwrap().fingerprint(),
            b.fingerprint()
        );
    }

    #[test]
    fn a_forged_or_altered_certification_is_refused() {
        let (a, b, m) = (key("a"), key("b"), key("mallory"));
        let now = Utc::now();
        // Mallory signs a statement that claims to come from a.
        let mut forged = SignedKeyCertification::make(&m, &m.public(), now).unwrap();
        let mut claims = forged.claims().unwrap();
        claims.from = a.fingerprint().to_string();
        forged.statement = serde_json::to_string(&claims).unwrap();
        assert!(matches!(
            forged.verify(&a.public()),
            Err(RotationError::Signature { .. })
        ));
        assert_eq!(walk(&a.public(), &[forged]).len(), 1);
        // The right signer, but the key swapped after signing.
        let mut swapped = SignedKeyCertification::make(&a, &b.public(), now).unwrap();
        swapped.statement = swapped.statement.replace(b.fingerprint(), m.fingerprint());
        assert!(swapped.verify(&a.public()).is_err());
        // A signed statement whose key is not the one it names.
        let statement = KeyCertification {
            from: a.fingerprint().into(),
            to: b.fingerprint().into(),
            key: m.public().to_armored().unwrap(),
            made_at: now,
        };
        let text = serde_json::to_string(&statement).unwrap();
        let lying = SignedKeyCertification {
            signature: String::from_utf8(a.sign_armored(text.as_bytes()).unwrap()).unwrap(),
            statement: text,
        };
        assert!(matches!(
            lying.verify(&a.public()),
            Err(RotationError::Fingerprint { .. })
        ));
        let junk = SignedKeyCertification {
            statement: "{".into(),
            signature: "x".into(),
        };
        assert!(matches!(
            junk.verify(&a.public()),
            Err(RotationError::Statement(_))
        ));
    }
}
