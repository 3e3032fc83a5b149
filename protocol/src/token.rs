//! Enrollment tokens: `pdome-admin tokens create` makes one, the bootstrap
//! and `penguindome-agent enroll URL TOKEN` spend it.
//!
//! Text form: `pdt1.<id>.<secret>.<certificate pin>.<key fingerprint>`.
//! The id names the token in lists and the audit trail; the secret (256
//! bits, base64url) is what the server keeps only a SHA-256 of. The last two
//! fields pin the server on first contact: the SHA-256 of its TLS
//! certificate (DER, base64url; `-` when the site uses a publicly trusted
//! certificate) and its OpenPGP key's fingerprint, so the token alone is
//! enough to trust the right server.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// The prefix naming the format's version.
pub const PREFIX: &str = "pdt1";

/// Why a token's text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not five dot-separated fields starting with `pdt1`.
    #[error(
        "this is not an enrollment token (expected pdt1.ID.SECRET.CERT.KEY, as `pdome-admin tokens create` prints it)"
    )]
    Shape,
    /// A field has the wrong length or characters.
    #[error("the enrollment token's {0} is damaged; copy the whole token again")]
    Field(&'static str),
}

/// An enrollment token with the pins it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id: 16 lower-case hex characters.
    pub id: String,
    /// The secret, base64url without padding (43 characters).
    pub secret: String,
    /// SHA-256 of the server's TLS certificate (DER), when pinned.
    pub certificate_sha256: Option<[u8; 32]>,
    /// The server key's fingerprint (upper-case hex).
    pub key_fingerprint: String,
}

// The secret never appears in debug output or logs.
impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("id", &self.id)
            .field("key_fingerprint", &self.key_fingerprint)
            .finish_non_exhaustive()
    }
}

impl EnrollmentToken {
    /// A new token with a random id and secret.
    pub fn generate(certificate_sha256: Option<[u8; 32]>, key_fingerprint: &str) -> Self {
        let mut id = [0u8; 8];
        crate::envelope::random_bytes(&mut id);
        let mut secret = [0u8; 32];
        crate::envelope::random_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret: URL_SAFE_NO_PAD.encode(secret),
            certificate_sha256,
            key_fingerprint: key_fingerprint.to_ascii_uppercase(),
        }
    }

    /// What the server stores instead of the secret.
    pub fn secret_sha256(&self) -> [u8; 32] {
        secret_sha256(&self.secret)
    }

    /// The HTTP Basic user a token fetches the repositories with.
    pub fn repo_user(&self) -> String {
        repo_user(&self.id)
    }
}

/// SHA-256 of a token's secret text.
pub fn secret_sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The HTTP Basic user for token `id`: `pdt1.<id>`.
pub fn repo_user(id: &str) -> String {
    format!("{PREFIX}.{id}")
}

/// The token id in an HTTP Basic user name, if it names one.
pub fn id_from_repo_user(user: &str) -> Option<&str> {
    user.strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .filter(|id| is_valid_id(id))
}

/// Whether `id` has a token id's shape.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pin of the first certificate in `pem`: SHA-256 of its DER.
pub fn certificate_pin(pem: &str) -> Option<[u8; 32]> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(Sha256::digest(der.as_ref()).into())
}

/// Only the certificates of a PEM text, re-encoded: whatever else the file
/// held (a private key, above all) never travels or lands in agent.toml.
/// `None` when it holds no readable certificate.
pub fn certificates_only(pem: &str) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    let ders: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    if ders.is_empty() {
        return None;
    }
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(der.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    Some(out)
}

/// A pin as the token writes it.
pub fn pin_text(pin: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(pin)
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cert = self
            .certificate_sha256
            .as_ref()
            .map_or_else(|| "-".to_string(), pin_text);
        write!(
            f,
            "{PREFIX}.{}.{}.{cert}.{}",
            self.id, self.secret, self.key_fingerprint
        )
    }
}

impl FromStr for EnrollmentToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let fields: Vec<&str> = text.trim().split('.').collect();
        let [PREFIX, id, secret, cert, key] = fields[..] else {
            return Err(TokenError::Shape);
        };
        if !is_valid_id(id) {
            return Err(TokenError::Field("id"));
        }
        let secret_ok = URL_SAFE_NO_PAD.decode(secret).is_ok_and(|b| b.len() == 32);
        if !secret_ok {
            return Err(TokenError::Field("secret"));
        }
        let certificate_sha256 = match cert {
            "-" => None,
            c => Some(
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or(TokenError::Field("certificate pin"))?,
            ),
        };
        let key_ok = matches!(key.len(), 40 | 64) && key.bytes().all(|b| b.is_ascii_hexdigit());
        if !key_ok {
            return Err(TokenError::Field("key fingerprint"));
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
            certificate_sha256,
            key_fingerprint: key.to_ascii_uppercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificates_survive() {
        let cert = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";
        let both = format!("{key}{cert}");
        let kept = certificates_only(&both).unwrap();
        assert_eq!(kept, cert);
        assert!(!kept.contains("PRIVATE"));
        assert_eq!(certificates_only(key), None);
        assert_eq!(certificates_only("junk"), None);
    }

    #[test]
    fn tokens_survive_their_text_form() {
        let t =
            EnrollmentToken::generate(Some([7; 32]), "ab12cd34ab12cd34ab12cd34ab12cd34ab12cd34");
        let back: EnrollmentToken = t.to_string().parse().unwrap();
        assert_eq!(back, t);
        assert_eq!(
            back.key_fingerprint,
            "AB12CD34AB12CD34AB12CD34AB12CD34AB12CD34"
        );
        let unpinned = EnrollmentToken::generate(None, &"F".repeat(64));
        assert!(unpinned.to_string().contains(".-."));
        assert_eq!(
            unpinned.to_string().parse::<EnrollmentToken>().unwrap(),
            unpinned
        );
    }

    #[test]
    fn damaged_tokens_say_which_part() {
        let t = EnrollmentToken::generate(None, &"A".repeat(40)).to_string();
        assert_eq!(
            "nonsense".parse::<EnrollmentToken>(),
            Err(TokenError::Shape)
        );
        let short = t.replacen('.', ".0", 1);
        assert_eq!(
            short.parse::<EnrollmentToken>(),
            Err(TokenError::Field("id"))
        );
        let cut = &t[..t.len() - 1];
        assert_eq!(
            cut.parse::<EnrollmentToken>(),
            Err(TokenError::Field("key fingerprint"))
        );
        assert!(!format!("{:?}", t.parse::<EnrollmentToken>().unwrap()).contains("secret"));
    }

    #[test]
    fn repo_users_name_token_ids() {
        assert_eq!(
            id_from_repo_user("pdt1.0123456789abcdef"),
            Some("0123456789abcdef")
        );
        assert_eq!(id_from_repo_user("pdt1.0123"), None);
        assert_eq!(id_from_repo_user("agent"), None);
    }
}
