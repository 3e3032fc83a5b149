//! Sealed fields: report values only a quorum of administrators can read.
//!
//! The server announces a [`SealingPolicy`] in its signed `/update` answer:
//! the site's secrets key (an OpenPGP certificate whose secret half exists
//! only as Shamir shares held by administrators) and the selectors of the
//! fields to seal. Before a report is spooled, the agent replaces each
//! selected value with a [`Sealed`] marker: the value encrypted to that key,
//! and a digest of it keyed by a key only this client holds, so the server
//! sees that a value changed without being able to guess it (a plain hash
//! of coordinates or a user name is easily brute-forced).

use std::collections::BTreeMap;
use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use openpgp::cert::prelude::*;
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::types::SymmetricAlgorithm;
use schemars::JsonSchema;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// What stands in a report where a sealed value was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The value, encrypted.
    pub sealed: SealedValue,
}

/// A value encrypted to the site's secrets key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedValue {
    /// Fingerprint of the secrets key it is encrypted to.
    pub key: String,
    /// HMAC-SHA256 (hex) of the selector and the value's JSON, under a key
    /// only the client that sealed it holds: equal values have equal
    /// digests on one client, and nobody else can test a guess.
    pub digest: String,
    /// The value's JSON text as a binary OpenPGP message, base64.
    pub ciphertext: String,
}

/// What the server asks agents to seal, and with which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingPolicy {
    /// The secrets key's certificate, armored.
    pub public_key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The fields to seal, as `<collector>.<field>[.<field>...]`.
    pub selectors: Vec<String>,
}

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The certificate or secret key does not read.
    #[error("the secrets key does not read: {0}")]
    Key(#[source] openpgp::anyhow::Error),
    /// Encryption failed.
    #[error("cannot encrypt a sealed field: {0}")]
    Encrypt(#[source] openpgp::anyhow::Error),
    /// Decryption failed: another key, or damaged ciphertext.
    #[error("cannot open a sealed field (sealed to key {key}): {source}")]
    Open {
        /// The key it names.
        key: String,
        /// What sequoia said.
        #[source]
        source: openpgp::anyhow::Error,
    },
    /// The password does not unlock the key.
    #[error("the password does not unlock key {key}")]
    Password {
        /// The key's fingerprint.
        key: String,
    },
    /// A selector that names no field.
    #[error("{0:?} is not a field selector: use <collector>.<field>[.<field>...]")]
    Selector(String),
}

/// A field selector: a collector (or site plugin) and a path inside its
/// output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    /// The collector's name, as under `plugins` in a report.
    pub plugin: String,
    /// Object keys from the collector's output down to the field.
    pub path: Vec<String>,
}

impl Selector {
    /// Parses `collector.field...`; a leading `plugins.` is allowed.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bad = || SealError::Selector(text.to_string());
        let rest = text.strip_prefix("plugins.").unwrap_or(text);
        let mut parts = rest.split('.');
        let plugin = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(Self {
            plugin: plugin.to_string(),
            path,
        })
    }

    /// The audit trail's name of the field: `plugins.<collector>.<path>`.
    pub fn audit_field(&self) -> String {
        format!("plugins.{self}")
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.plugin, self.path.join("."))
    }
}

/// The key a client's digests are made with, derived from its own secret
/// key (see [`crate::SecretKey::derive_key`]).
pub struct DigestKey(pub [u8; 32]);

impl DigestKey {
    /// The digest of one value of one field.
    pub fn digest(&self, selector: &str, value: &Value) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(selector.as_bytes());
        mac.update(&[0]);
        mac.update(&canonical_json(value));
        hex::encode(mac.finalize().into_bytes())
    }
}

/// JSON text with object keys sorted, so equal values digest alike
/// whatever order a map was built in.
fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(&crate::facts::sorted_keys(value.clone())).unwrap_or_default()
}

/// The public half of the secrets key, to seal with.
pub struct Recipient {
    cert: Cert,
    fingerprint: String,
}

impl Recipient {
    /// Reads an armored or binary certificate with an encryption subkey.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let cert = Cert::from_bytes(bytes).map_err(SealError::Key)?;
        let p = StandardPolicy::new();
        if cert
            .keys()
            .with_policy(&p, None)
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption()
            .next()
            .is_none()
        {
            return Err(SealError::Key(openpgp::anyhow::anyhow!(
                "certificate {} has no usable encryption key",
                cert.fingerprint()
            )));
        }
        let fingerprint = cert.fingerprint().to_hex();
        Ok(Self { cert, fingerprint })
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypts `data` to this key: a binary OpenPGP message.
    pub fn encrypt(&self, data: &[u8]) -> Result<Vec<u8>, SealError> {
        let p = StandardPolicy::new();
        let recipients = self
            .cert
            .keys()
            .with_policy(&p, None)
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let message = Encryptor::for_recipients(message, recipients)
            .build()
            .map_err(SealError::Encrypt)?;
        let mut w = LiteralWriter::new(message)
            .build()
            .map_err(SealError::Encrypt)?;
        w.write_all(data)
            .map_err(|e| SealError::Encrypt(e.into()))?;
        w.finalize().map_err(SealError::Encrypt)?;
        Ok(out)
    }

    /// Encrypts `data` to this key as an armored message (for a file).
    pub fn encrypt_armored(&self, data: &[u8]) -> Result<String, SealError> {
        let binary = self.encrypt(data)?;
        let mut out = Vec::new();
        let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Message)
            .map_err(|e| SealError::Encrypt(e.into()))?;
        w.write_all(&binary)
            .and_then(|()| w.finalize().map(|_| ()))
            .map_err(|e| SealError::Encrypt(e.into()))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Seals one value of the field `selector`.
    pub fn seal(
        &self,
        selector: &str,
        value: &Value,
        digests: &DigestKey,
    ) -> Result<Sealed, SealError> {
        let ciphertext = self.encrypt(&canonical_json(value))?;
        Ok(Sealed {
            sealed: SealedValue {
                key: self.fingerprint.clone(),
                digest: digests.digest(selector, value),
                ciphertext: B64.encode(ciphertext),
            },
        })
    }
}

/// Whether a JSON value is a sealed marker; its digest if so.
pub fn sealed_digest(value: &Value) -> Option<&str> {
    let inner = value.as_object().filter(|o| o.len() == 1)?.get("sealed")?;
    inner.get("digest")?.as_str()
}

/// Seals the fields of a report's collector outputs that `selectors` name.
/// Values that are absent, null or `"unknown"` stay as they are: whether a
/// value is known is not secret, and checks need it. Returns how many
/// values were sealed.
pub fn seal_plugins(
    plugins: &mut BTreeMap<String, Value>,
    selectors: &[Selector],
    recipient: &Recipient,
    digests: &DigestKey,
) -> Result<usize, SealError> {
    let mut sealed = 0;
    for sel in selectors {
        let Some(slot) = plugins
            .get_mut(&sel.plugin)
            .and_then(|v| field_mut(v, &sel.path))
        else {
            continue;
        };
        if slot.is_null() || slot == "unknown" || sealed_digest(slot).is_some() {
            continue;
        }
        let marker = recipient.seal(&sel.to_string(), slot, digests)?;
        *slot = serde_json::to_value(marker).map_err(|e| SealError::Encrypt(e.into()))?;
        sealed += 1;
    }
    Ok(sealed)
}

/// The value at `path` inside nested objects.
pub fn field_mut<'v>(mut value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    for key in path {
        value = value.as_object_mut()?.get_mut(key)?;
    }
    Some(value)
}

/// The secrets key with its secret half, rebuilt from shares: it opens
/// sealed values.
pub struct Opener {
    cert: Cert,
}

impl Opener {
    /// Reads a transferable secret key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let cert = Cert::from_bytes(bytes).map_err(SealError::Key)?;
        if !cert.is_tsk() {
            return Err(SealError::Key(openpgp::anyhow::anyhow!(
                "{} holds no secret key",
                cert.fingerprint()
            )));
        }
        Ok(Self { cert })
    }

    /// Decrypts an OpenPGP message encrypted to this key.
    pub fn decrypt(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = |source: openpgp::anyhow::Error| SealError::Open {
            key: self.cert.fingerprint().to_hex(),
            source,
        };
        let p = StandardPolicy::new();
        let helper = Helper {
            cert: &self.cert,
            policy: &p,
        };
        let mut d = DecryptorBuilder::from_bytes(message)
            .map_err(fail)?
            .with_policy(&p, None, helper)
            .map_err(fail)?;
        let mut out = Vec::new();
        std::io::copy(&mut d, &mut out).map_err(|e| fail(e.into()))?;
        Ok(out)
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// Whether some of its secret key material is password-protected.
    pub fn needs_password(&self) -> bool {
        self.cert
            .keys()
            .secret()
            .any(|ka| !ka.key().has_unencrypted_secret())
    }

    /// Decrypts its password-protected secret keys, in memory only.
    pub fn with_password(self, password: &str) -> Result<Self, SealError> {
        let password = openpgp::crypto::Password::from(password);
        let mut packets: Vec<openpgp::Packet> = Vec::new();
        for ka in self.cert.keys().secret() {
            if ka.key().has_unencrypted_secret() {
                continue;
            }
            let key =
                ka.key()
                    .clone()
                    .decrypt_secret(&password)
                    .map_err(|_| SealError::Password {
                        key: self.fingerprint(),
                    })?;
            packets.push(if ka.primary() {
                key.role_into_primary().into()
            } else {
                key.role_into_subordinate().into()
            });
        }
        let (cert, _) = self.cert.insert_packets(packets).map_err(SealError::Key)?;
        Ok(Self { cert })
    }

    /// Re-encrypts a sealed value to another key, keeping its digest (the
    /// value did not change).
    pub fn reseal_to(
        &self,
        sealed: &SealedValue,
        to: &Recipient,
    ) -> Result<SealedValue, SealError> {
        let bytes = B64
            .decode(&sealed.ciphertext)
            .map_err(|e| SealError::Open {
                key: sealed.key.clone(),
                source: e.into(),
            })?;
        let plain = self.decrypt(&bytes)?;
        Ok(SealedValue {
            key: to.fingerprint.clone(),
            digest: sealed.digest.clone(),
            ciphertext: B64.encode(to.encrypt(&plain)?),
        })
    }

    /// The value a marker holds.
    pub fn open(&self, sealed: &SealedValue) -> Result<Value, SealError> {
        let fail = |source: openpgp::anyhow::Error| SealError::Open {
            key: sealed.key.clone(),
            source,
        };
        let bytes = B64.decode(&sealed.ciphertext).map_err(|e| fail(e.into()))?;
        let text = self.decrypt(&bytes)?;
        serde_json::from_slice(&text).map_err(|e| fail(e.into()))
    }
}

struct Helper<'a> {
    cert: &'a Cert,
    policy: &'a StandardPolicy<'a>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    // Sealed values are not signed: the report's envelope is.
    fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for ka in self
            .cert
            .keys()
            .unencrypted_secret()
            .with_policy(self.policy, None)
            .for_transport_encryption()
        {
            let mut pair = ka.key().clone().into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, key)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &key)
                {
                    return Ok(None);
                }
            }
        }
        Err(openpgp::anyhow::anyhow!("no key here opens it"))
    }
}

/// Makes a new secrets key (Curve25519, encryption only); returns the
/// transferable secret key, binary.
pub fn generate_key(user_id: &str) -> Result<Vec<u8>, SealError> {
    use openpgp::serialize::MarshalInto;
    let (cert, _revocation) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid(user_id)
        .add_transport_encryption_subkey()
        .generate()
        .map_err(SealError::Key)?;
    cert.as_tsk().to_vec().map_err(SealError::Key)
}

/// The armored certificate of a transferable secret key.
pub fn public_armored(tsk: &[u8]) -> Result<(String, String), SealError> {
    use openpgp::serialize::SerializeInto;
    let cert = Cert::from_bytes(tsk).map_err(SealError::Key)?;
    let armored = cert.armored().to_vec().map_err(SealError::Key)?;
    Ok((
        String::from_utf8_lossy(&armored).into_owned(),
        cert.fingerprint().to_hex(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> (Recipient, Opener) {
        let tsk = generate_key("test secrets").unwrap();
        let (public, _) = public_armored(&tsk).unwrap();
        (
            Recipient::from_bytes(public.as_bytes()).unwrap(),
            Opener::from_bytes(&tsk).unwrap(),
        )
    }

    #[test]
    fn a_sealed_field_opens_with_the_secret_key_only() {
        let (recipient, opener) = key();
        let digests = DigestKey([7; 32]);
        let mut plugins = BTreeMap::from([(
            "geolocation".to_string(),
            json!({"location": {"lat": 48.85, "lng": 2.35}, "evidence": ["x"]}),
        )]);
        let sel = vec![Selector::parse("geolocation.location").unwrap()];
        assert_eq!(
            seal_plugins(&mut plugins, &sel, &recipient, &digests).unwrap(),
            1
        );
        let text = serde_json::to_string(&plugins).unwrap();
        assert!(!text.contains("48.85"), "{text}");
        let marker: Sealed =
            serde_json::from_value(plugins["geolocation"]["location"].clone()).unwrap();
        assert_eq!(
            opener.open(&marker.sealed).unwrap(),
            json!({"lat": 48.85, "lng": 2.35})
        );
        let (_, other) = key();
        assert!(matches!(
            other.open(&marker.sealed),
            Err(SealError::Open { .. })
        ));
        // Moved to another key, it opens there with the same digest.
        let (recipient2, opener2) = key();
        let moved = opener.reseal_to(&marker.sealed, &recipient2).unwrap();
        assert_eq!(moved.digest, marker.sealed.digest);
        assert_eq!(moved.key, recipient2.fingerprint());
        assert_eq!(
            opener2.open(&moved).unwrap(),
            json!({"lat": 48.85, "lng": 2.35})
        );
        // Sealing again leaves the marker alone.
        assert_eq!(
            seal_plugins(&mut plugins, &sel, &recipient, &digests).unwrap(),
            0
        );
    }

    #[test]
    fn a_password_protected_key_opens_after_its_password() {
        use openpgp::serialize::MarshalInto;
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_transport_encryption_subkey()
            .set_password(Some("right".into()))
            .generate()
            .unwrap();
        let tsk = cert.as_tsk().to_vec().unwrap();
        let recipient = Recipient::from_bytes(&cert.armored().to_vec().unwrap()).unwrap();
        let message = recipient.encrypt(b"share").unwrap();
        let locked = Opener::from_bytes(&tsk).unwrap();
        assert!(locked.needs_password());
        assert!(locked.decrypt(&message).is_err());
        let locked = Opener::from_bytes(&tsk).unwrap();
        assert!(matches!(
            locked.with_password("wrong"),
            Err(SealError::Password { .. })
        ));
        let open = Opener::from_bytes(&tsk)
            .unwrap()
            .with_password("right")
            .unwrap();
        assert!(!open.needs_password());
        assert_eq!(open.decrypt(&message).unwrap(), b"share");
    }

    #[test]
    fn digests_are_keyed_stable_and_per_field() {
        let a = DigestKey([1; 32]);
        let b = DigestKey([2; 32]);
        let v = json!({"lng": 2.35, "lat": 48.85});
        let same_in_other_order = json!({"lat": 48.85, "lng": 2.35});
        assert_eq!(a.digest("g.l", &v), a.digest("g.l", &same_in_other_order));
        assert_ne!(a.digest("g.l", &v), b.digest("g.l", &v));
        assert_ne!(a.digest("g.l", &v), a.digest("g.m", &v));
        assert_ne!(a.digest("g.l", &v), a.digest("g.l", &json!(1)));
    }

    #[test]
    fn unknown_and_absent_values_stay_readable() {
        let (recipient, _) = key();
        let mut plugins = BTreeMap::from([
            ("geolocation".to_string(), json!({"location": "unknown"})),
            ("site".to_string(), json!({"error": "boom"})),
        ]);
        let sel = vec![
            Selector::parse("geolocation.location").unwrap(),
            Selector::parse("plugins.site.owner").unwrap(),
            Selector::parse("missing.field").unwrap(),
        ];
        let before = plugins.clone();
        assert_eq!(
            seal_plugins(&mut plugins, &sel, &recipient, &DigestKey([0; 32])).unwrap(),
            0
        );
        assert_eq!(plugins, before);
    }

    #[test]
    fn selectors_parse_strictly() {
        let s = Selector::parse("plugins.asset.owner.name").unwrap();
        assert_eq!(s.plugin, "asset");
        assert_eq!(s.to_string(), "asset.owner.name");
        assert_eq!(s.audit_field(), "plugins.asset.owner.name");
        for bad in ["", "geolocation", "a..b", ".a", "a.", "plugins."] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
