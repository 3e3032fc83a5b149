//! OpenPGP keys: generation, storage, signing and verification.
//!
//! Every key is a single Ed25519 primary key that can certify and sign. The
//! self-signatures are rebuilt with their Key Flags, Primary User ID and
//! Embedded Signature subpackets marked non-critical, because rpm 4.18's
//! OpenPGP parser refuses to import certificates where they are critical
//! (and the server key must be importable by rpm, apt and pacman).

use std::sync::Arc;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::KeyPair;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::signature::subpacket::{Subpacket, SubpacketArea, SubpacketTag};
use openpgp::packet::{Key, Packet, Signature, key};
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, StandardPolicy};
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{HashAlgorithm, KeyFlags, SignatureType};

/// Errors from key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not an OpenPGP certificate or key.
    #[error("not a usable OpenPGP key: {0}")]
    Parse(String),
    /// The certificate has no valid, unexpired signing-capable key.
    #[error("the OpenPGP certificate {0} has no valid signing key")]
    NoSigningKey(String),
    /// The key file holds a public certificate where a secret key is needed.
    #[error("the OpenPGP key {0} has no secret key material")]
    NoSecret(String),
    /// Generation or serialisation failed inside sequoia.
    #[error("OpenPGP operation failed: {0}")]
    Crypto(String),
}

/// Errors from checking a detached signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature bytes do not parse as one OpenPGP signature packet.
    #[error("the signature is not a valid OpenPGP signature packet")]
    Malformed,
    /// The signature names no issuer fingerprint.
    #[error("the signature does not name the key that made it")]
    NoIssuer,
    /// The signature was made by another key.
    #[error("the signature was made by key {found}, expected {expected}")]
    WrongKey {
        /// Fingerprint the signature claims.
        found: String,
        /// Fingerprint of the key checked against.
        expected: String,
    },
    /// The signature uses a type or algorithm the policy rejects.
    #[error("the signature uses a rejected type or algorithm: {0}")]
    Policy(String),
    /// The cryptographic check failed: the data or signature was altered.
    #[error("the signature does not match the data")]
    Mismatch,
}

fn policy() -> &'static StandardPolicy<'static> {
    static POLICY: StandardPolicy<'static> = StandardPolicy::new();
    &POLICY
}

fn crypto_err(e: anyhow_like::Error) -> KeyError {
    KeyError::Crypto(e.to_string())
}

// sequoia returns anyhow::Error; name it without depending on anyhow here.
mod anyhow_like {
    pub type Error = sequoia_openpgp::anyhow::Error;
}

/// The certificate's valid, unexpired, unrevoked signing-capable key.
fn signing_key(cert: &Cert) -> Result<Key<key::PublicParts, key::UnspecifiedRole>, KeyError> {
    let no_key = || KeyError::NoSigningKey(fingerprint_hex(cert));
    let valid = cert.with_policy(policy(), None).map_err(|_| no_key())?;
    let key = valid
        .keys()
        .for_signing()
        .alive()
        .revoked(false)
        .next()
        .ok_or_else(no_key)?;
    Ok(key.key().clone())
}

/// Upper-case hex fingerprint of a certificate.
pub fn fingerprint_hex(cert: &Cert) -> String {
    cert.fingerprint().to_hex()
}

/// A secret signing key: the server's, or one client's.
#[derive(Clone)]
pub struct SecretKey {
    cert: Cert,
    keypair: KeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Generates a new Ed25519 key with one user ID, importable by rpm 4.18.
    pub fn generate(userid: &str) -> Result<Self, KeyError> {
        let (cert, _revocation) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .add_userid(userid)
            .generate()
            .map_err(crypto_err)?;
        let cert = relax_critical_subpackets(cert).map_err(crypto_err)?;
        Self::from_cert(cert)
    }

    /// Reads a transferable secret key, armored or binary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let cert = Cert::from_bytes(bytes).map_err(|e| KeyError::Parse(e.to_string()))?;
        Self::from_cert(cert)
    }

    fn from_cert(cert: Cert) -> Result<Self, KeyError> {
        let fingerprint = fingerprint_hex(&cert);
        let keypair = signing_key(&cert)?
            .parts_into_secret()
            .map_err(|_| KeyError::NoSecret(fingerprint.clone()))?
            .into_keypair()
            .map_err(crypto_err)?;
        Ok(Self {
            cert,
            keypair,
            fingerprint,
        })
    }

    /// The armored transferable secret key, for a 0600 file.
    pub fn to_armored(&self) -> Result<Vec<u8>, KeyError> {
        let mut out = Vec::new();
        self.cert
            .as_tsk()
            .armored()
            .serialize(&mut out)
            .map_err(crypto_err)?;
        Ok(out)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_cert(self.cert.clone().strip_secret_key_material())
            .expect("a secret key that signs has a public key that verifies")
    }

    /// Upper-case hex fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A 32-byte key for `purpose`, derived from the secret key material
    /// (HMAC-SHA256 keyed by it): stable for this key, unguessable
    /// without it, and different for every purpose.
    pub fn derive_key(&self, purpose: &str) -> Result<[u8; 32], KeyError> {
        use hmac::{Hmac, Mac};
        let secret = zeroize::Zeroizing::new(
            self.keypair
                .secret()
                .map(openpgp::serialize::MarshalInto::to_vec)
                .map_err(crypto_err)?,
        );
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    /// Makes a binary detached signature over `data`.
    ///
    /// SHA-256 rather than sequoia's default SHA-512: CPUs with SHA
    /// extensions hash it several times faster, and the verifier hashes
    /// every request body.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signer = self.keypair.clone();
        let sig = SignatureBuilder::new(SignatureType::Binary)
            .set_hash_algo(HashAlgorithm::SHA256)
            .sign_message(&mut signer, data)
            .map_err(crypto_err)?;
        Packet::from(sig).to_vec().map_err(crypto_err)
    }

    /// Makes an armored detached signature (for repository metadata).
    pub fn sign_armored(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let binary = self.sign(data)?;
        armor(&binary, openpgp::armor::Kind::Signature)
    }

    /// Makes a binary detached signature over a stream, dated `created`
    /// (rpm dates a package's signature with its build time).
    pub fn sign_stream_at(
        &self,
        data: &mut dyn std::io::Read,
        created: std::time::SystemTime,
    ) -> Result<Vec<u8>, KeyError> {
        use openpgp::serialize::stream::{Message, Signer};
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let mut w = Signer::new(message, self.keypair.clone())
            .map_err(crypto_err)?
            .detached()
            .hash_algo(HashAlgorithm::SHA256)
            .map_err(crypto_err)?
            .creation_time(created)
            .build()
            .map_err(crypto_err)?;
        std::io::copy(data, &mut w).map_err(|e| KeyError::Crypto(e.to_string()))?;
        w.finalize().map_err(crypto_err)?;
        Ok(out)
    }

    /// Makes a cleartext-signed copy of a text (an apt InRelease file).
    pub fn sign_cleartext(&self, text: &[u8]) -> Result<Vec<u8>, KeyError> {
        use openpgp::serialize::stream::{Message, Signer};
        use std::io::Write;
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let mut w = Signer::new(message, self.keypair.clone())
            .map_err(crypto_err)?
            .cleartext()
            .hash_algo(HashAlgorithm::SHA256)
            .map_err(crypto_err)?
            .build()
            .map_err(crypto_err)?;
        w.write_all(text)
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        w.finalize().map_err(crypto_err)?;
        Ok(out)
    }
}

/// Wraps binary OpenPGP data in ASCII armor.
fn armor(binary: &[u8], kind: openpgp::armor::Kind) -> Result<Vec<u8>, KeyError> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut w =
        openpgp::armor::Writer::new(&mut out, kind).map_err(|e| KeyError::Crypto(e.to_string()))?;
    w.write_all(binary)
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
    w.finalize().map_err(|e| KeyError::Crypto(e.to_string()))?;
    Ok(out)
}

/// A public certificate with its signing key resolved once, so that each
/// verification costs only the signature check.
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<PublicInner>,
}

struct PublicInner {
    cert: Cert,
    signing: Key<key::PublicParts, key::UnspecifiedRole>,
    fingerprint: String,
    signing_fingerprint: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("fingerprint", &self.inner.fingerprint)
            .finish()
    }
}

impl PublicKey {
    /// Reads a certificate, armored or binary, and checks that it can sign.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let cert = Cert::from_bytes(bytes).map_err(|e| KeyError::Parse(e.to_string()))?;
        Self::from_cert(cert.strip_secret_key_material())
    }

    fn from_cert(cert: Cert) -> Result<Self, KeyError> {
        let fingerprint = fingerprint_hex(&cert);
        let signing = signing_key(&cert)?;
        let signing_fingerprint = signing.fingerprint().to_hex();
        Ok(Self {
            inner: Arc::new(PublicInner {
                cert,
                signing,
                fingerprint,
                signing_fingerprint,
            }),
        })
    }

    /// Upper-case hex fingerprint of the certificate.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// Upper-case hex fingerprint of the key that signs (what signatures name).
    pub fn signing_fingerprint(&self) -> &str {
        &self.inner.signing_fingerprint
    }

    /// The certificate, armored.
    pub fn to_armored(&self) -> Result<String, KeyError> {
        let bytes = self.inner.cert.armored().to_vec().map_err(crypto_err)?;
        String::from_utf8(bytes).map_err(|e| KeyError::Crypto(e.to_string()))
    }

    /// The certificate's first user ID, if it has one.
    pub fn user_id(&self) -> Option<String> {
        self.inner
            .cert
            .userids()
            .next()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
    }

    /// The certificate, binary.
    pub fn to_binary(&self) -> Result<Vec<u8>, KeyError> {
        self.inner.cert.to_vec().map_err(crypto_err)
    }

    /// Checks a parsed detached signature over `data`.
    pub fn verify(&self, sig: &DetachedSignature, data: &[u8]) -> Result<(), SignatureError> {
        let issuer = sig.issuer().ok_or(SignatureError::NoIssuer)?;
        if !issuer.eq_ignore_ascii_case(&self.inner.signing_fingerprint) {
            return Err(SignatureError::WrongKey {
                found: issuer.to_string(),
                expected: self.inner.signing_fingerprint.clone(),
            });
        }
        use openpgp::policy::Policy;
        policy()
            .signature(&sig.sig, HashAlgoSecurity::CollisionResistance)
            .map_err(|e| SignatureError::Policy(e.to_string()))?;
        sig.sig
            .verify_message(&self.inner.signing, data)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Several certificates as one armored keyring (one armor block, which
/// apt, sqv, rpm and pacman-key all read whole).
pub fn armored_keyring(keys: &[PublicKey]) -> Result<String, KeyError> {
    let mut binary = Vec::new();
    for k in keys {
        binary.extend(k.to_binary()?);
    }
    let armored = armor(&binary, openpgp::armor::Kind::PublicKey)?;
    String::from_utf8(armored).map_err(|e| KeyError::Crypto(e.to_string()))
}

/// One parsed binary (or armored) detached signature.
#[derive(Clone, Debug)]
pub struct DetachedSignature {
    sig: Signature,
    issuer: Option<String>,
}

impl DetachedSignature {
    /// Parses exactly one signature packet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let packet = Packet::from_bytes(bytes).map_err(|_| SignatureError::Malformed)?;
        let Packet::Signature(sig) = packet else {
            return Err(SignatureError::Malformed);
        };
        if sig.typ() != SignatureType::Binary {
            return Err(SignatureError::Policy(format!(
                "signature type {} is not a binary document signature",
                sig.typ()
            )));
        }
        let issuer = sig.get_issuers().into_iter().find_map(|h| match h {
            openpgp::KeyHandle::Fingerprint(fp) => Some(fp.to_hex()),
            openpgp::KeyHandle::KeyID(_) => None,
        });
        Ok(Self { sig, issuer })
    }

    /// Fingerprint of the key the signature claims to be made by.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }
}

/// Rebuilds every self-signature with the subpackets rpm 4.18 rejects as
/// critical (Key Flags, Primary User ID, Embedded Signature) made non-critical.
fn relax_critical_subpackets(cert: Cert) -> openpgp::Result<Cert> {
    let primary = cert.primary_key().key().clone().parts_into_secret()?;
    let mut signer = primary.clone().into_keypair()?;
    let public_primary = primary.parts_as_public().clone();

    fn relaxed(area: SubpacketArea) -> openpgp::Result<SubpacketArea> {
        let mut out = Vec::new();
        for sp in area.iter() {
            let critical = sp.critical()
                && !matches!(
                    sp.tag(),
                    SubpacketTag::KeyFlags
                        | SubpacketTag::PrimaryUserID
                        | SubpacketTag::EmbeddedSignature
                );
            out.push(Subpacket::new(sp.value().clone(), critical)?);
        }
        SubpacketArea::new(out)
    }

    let mut packets: Vec<Packet> = Vec::new();
    packets.push(Packet::from(primary.clone()));
    for sig in cert.primary_key().self_signatures() {
        let new = SignatureBuilder::from(sig.clone())
            .preserve_signature_creation_time()?
            .modify_hashed_area(relaxed)?
            .sign_direct_key(&mut signer, &public_primary)?;
        packets.push(new.into());
    }
    for ua in cert.userids() {
        packets.push(ua.userid().clone().into());
        for sig in ua.self_signatures() {
            let new = SignatureBuilder::from(sig.clone())
                .preserve_signature_creation_time()?
                .modify_hashed_area(relaxed)?
                .sign_userid_binding(&mut signer, &public_primary, ua.userid())?;
            packets.push(new.into());
        }
    }
    if cert.keys().subkeys().next().is_some() {
        return Err(openpgp::anyhow::anyhow!(
            "subkeys are not supported by the rpm-compatible key generator"
        ));
    }
    Cert::from_packets(packets.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_verifies() {
        let key = SecretKey::generate("test <test@example.invalid>").unwrap();
        let public = key.public();
        let sig = key.sign(b"hello").unwrap();
        let parsed = DetachedSignature::from_bytes(&sig).unwrap();
        assert_eq!(parsed.issuer(), Some(public.signing_fingerprint()));
        public.verify(&parsed, b"hello").unwrap();
        assert_eq!(
            public.verify(&parsed, b"hellO"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_critical_flags_rpm_rejects() {
        let key = SecretKey::generate("test").unwrap();
        let public = key.public();
        for sig in public.inner.cert.primary_key().self_signatures().chain(
            public
                .inner
                .cert
                .userids()
                .flat_map(|u| u.self_signatures()),
        ) {
            for sp in sig.hashed_area().iter() {
                if matches!(
                    sp.tag(),
                    SubpacketTag::KeyFlags
                        | SubpacketTag::PrimaryUserID
                        | SubpacketTag::EmbeddedSignature
                ) {
                    assert!(!sp.critical(), "{:?} is critical", sp.tag());
                }
            }
        }
    }

    #[test]
    fn secret_key_round_trips_through_armor() {
        let key = SecretKey::generate("test").unwrap();
        let armored = key.to_armored().unwrap();
        assert!(armored.starts_with(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        let again = SecretKey::from_bytes(&armored).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        let public_armored = key.public().to_armored().unwrap();
        assert!(!public_armored.contains("PRIVATE"));
        assert!(matches!(
            SecretKey::from_bytes(public_armored.as_bytes()),
            Err(KeyError::NoSecret(_))
        ));
    }

    #[test]
    fn wrong_key_is_named() {
        let a = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("b").unwrap();
        let sig = DetachedSignature::from_bytes(&a.sign(b"x").unwrap()).unwrap();
        assert!(matches!(
            b.public().verify(&sig, b"x"),
            Err(SignatureError::WrongKey { .. })
        ));
    }

    #[test]
    fn garbage_is_not_a_signature() {
        assert_eq!(
            DetachedSignature::from_bytes(b"not a signature").unwrap_err(),
            SignatureError::Malformed
        );
        assert!(PublicKey::from_bytes(b"garbage").is_err());
    }
}

#[cfg(test)]
mod rpm_tests {
    use super::*;

    /// rpm 4.18 refuses sequoia's default certificates; ours must import.
    #[test]
    fn rpm_imports_the_generated_certificate() {
        let key = SecretKey::generate("PenguinDome test <repo@example.invalid>").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("key.asc");
        std::fs::write(&cert, key.public().to_armored().unwrap()).unwrap();
        let out = std::process::Command::new("rpmkeys")
            .arg("--root")
            .arg(dir.path())
            .arg("--import")
            .arg(&cert)
            .output()
            .expect("rpmkeys must be installed (scripts/test installs the rpm package)");
        assert!(
            out.status.success(),
            "rpmkeys --import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let q = std::process::Command::new("rpm")
            .arg("--root")
            .arg(dir.path())
            .args(["-q", "gpg-pubkey", "--qf", "%{VERSION}\n"])
            .output()
            .unwrap();
        let short_id = key.fingerprint()[32..].to_ascii_lowercase();
        assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), short_id);
    }
}
