//! The signed envelope: one JSON payload plus one detached OpenPGP signature.
//!
//! The same type travels both ways. A request is signed by a client's own
//! key; what the server sends back for the agent to act on is signed by the
//! server's key and names the request's nonce in `in_reply_to`, so that an
//! old answer cannot be replayed against a new question.

use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{DetachedSignature, KeyError, PublicKey, SecretKey, SignatureError};
use crate::wire::{EnrollRequest, Message};

/// HTTP header carrying the base64 of the binary detached signature.
pub const SIGNATURE_HEADER: &str = "penguindome-signature";

/// Largest signature header accepted (an Ed25519 signature is ~260 chars).
const MAX_SIGNATURE_B64: usize = 4096;

/// Sender name the server uses in its own payloads.
pub const SERVER_SENDER: &str = "server";

/// Errors from opening an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The signature header is missing.
    #[error("the request has no {SIGNATURE_HEADER} header; every request must be signed")]
    MissingSignature,
    /// The signature header is not base64 or too long.
    #[error("the {SIGNATURE_HEADER} header is not base64 of a binary OpenPGP signature")]
    SignatureEncoding,
    /// The signature failed to verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signed payload is not the JSON expected.
    #[error("the signed payload is not valid: {0}")]
    Payload(#[from] serde_json::Error),
    /// The payload names another sender than the key belongs to.
    #[error("the payload claims to come from {claimed}, but the key belongs to {actual}")]
    SenderMismatch {
        /// Sender named in the payload.
        claimed: String,
        /// Sender the verifying key belongs to.
        actual: String,
    },
    /// The timestamp is outside the accepted window.
    #[error(
        "the payload was issued at {issued_at}, {skew_seconds} s away from now; \
         the limit is {window_seconds} s (check the clock on both machines)"
    )]
    Stale {
        /// When the payload says it was issued.
        issued_at: String,
        /// Distance from now, in seconds.
        skew_seconds: i64,
        /// The accepted distance, in seconds.
        window_seconds: i64,
    },
    /// The nonce is empty or not hex of at least 128 bits.
    #[error("the nonce must be at least 32 hex characters")]
    BadNonce,
    /// The payload was signed as another kind of message than the one
    /// expected here.
    #[error("the payload was signed as a {got:?} message, not a {expected:?} one")]
    WrongKind {
        /// The kind this endpoint takes.
        expected: &'static str,
        /// The kind the payload names.
        got: String,
    },
    /// A response answers another request.
    #[error("the response answers request {got:?}, not {expected}")]
    NotOurReply {
        /// Nonce of the request sent.
        expected: String,
        /// What the response names.
        got: Option<String>,
    },
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The header of every signed payload, followed by the body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Signed<T> {
    /// Client id (machine id) of the sender, or [`SERVER_SENDER`].
    pub sender: String,
    /// When the sender signed it (UTC).
    #[serde(with = "utc")]
    pub issued_at: DateTime<Utc>,
    /// 128 random bits, hex; never reused.
    pub nonce: String,
    /// For responses: the nonce of the request answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// What kind of message the body is ([`Message::KIND`]); absent from
    /// what agents and servers signed before kinds were named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The message itself.
    pub body: T,
}

/// A payload and its parsed detached signature.
#[derive(Debug, Clone)]
pub struct Envelope {
    payload: Vec<u8>,
    signature: DetachedSignature,
    signature_bytes: Vec<u8>,
}

/// Fills `buf` from the system's cryptographic random source.
pub fn random_bytes(buf: &mut [u8]) {
    sequoia_openpgp::crypto::random(buf).expect("the system random source works");
}

/// Returns 128 random bits as 32 hex characters.
pub fn new_nonce() -> String {
    let mut buf = [0u8; 16];
    random_bytes(&mut buf);
    hex::encode(buf)
}

/// A request's signature header, parsed before its body is read, so the
/// server can refuse an unknown signer without reading what it sent.
#[derive(Debug)]
pub struct WireSignature {
    signature: DetachedSignature,
    signature_bytes: Vec<u8>,
}

impl WireSignature {
    /// Parses the signature header's value.
    pub fn from_header(header: Option<&[u8]>) -> Result<Self, EnvelopeError> {
        let header = header.ok_or(EnvelopeError::MissingSignature)?;
        if header.len() > MAX_SIGNATURE_B64 {
            return Err(EnvelopeError::SignatureEncoding);
        }
        let signature_bytes = base64::engine::general_purpose::STANDARD
            .decode(header.trim_ascii())
            .map_err(|_| EnvelopeError::SignatureEncoding)?;
        let signature = DetachedSignature::from_bytes(&signature_bytes)?;
        Ok(Self {
            signature,
            signature_bytes,
        })
    }

    /// Fingerprint of the key that made the signature, as the signature
    /// claims it (verified only with the payload).
    pub fn issuer(&self) -> Option<&str> {
        self.signature.issuer()
    }

    /// The envelope the signature and `payload` make.
    pub fn with_payload(self, payload: Vec<u8>) -> Envelope {
        Envelope {
            payload,
            signature: self.signature,
            signature_bytes: self.signature_bytes,
        }
    }
}

impl Envelope {
    /// Signs `body` as `sender`, with a fresh nonce and the current time.
    pub fn seal<T: Serialize + Message>(
        key: &SecretKey,
        sender: &str,
        in_reply_to: Option<&str>,
        body: &T,
    ) -> Result<Self, EnvelopeError> {
        Self::seal_at(key, sender, Utc::now(), new_nonce(), in_reply_to, body)
    }

    /// Signs `body` with an explicit time and nonce (tests, load generators).
    pub fn seal_at<T: Serialize + Message>(
        key: &SecretKey,
        sender: &str,
        issued_at: DateTime<Utc>,
        nonce: String,
        in_reply_to: Option<&str>,
        body: &T,
    ) -> Result<Self, EnvelopeError> {
        let signed = Signed {
            sender: sender.to_string(),
            issued_at,
            nonce,
            in_reply_to: in_reply_to.map(str::to_string),
            kind: Some(T::KIND.to_string()),
            body,
        };
        let payload = serde_json::to_vec(&signed)?;
        let signature_bytes = key.sign(&payload)?;
        let signature = DetachedSignature::from_bytes(&signature_bytes)?;
        Ok(Self {
            payload,
            signature,
            signature_bytes,
        })
    }

    /// Rebuilds an envelope from a received body and signature header value.
    pub fn from_wire(
        payload: Vec<u8>,
        signature_header: Option<&[u8]>,
    ) -> Result<Self, EnvelopeError> {
        Ok(WireSignature::from_header(signature_header)?.with_payload(payload))
    }

    /// The exact bytes that were signed: the HTTP body.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload out (to send it without a copy).
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The value of the signature header.
    pub fn signature_header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.signature_bytes)
    }

    /// Fingerprint of the key the signature claims, to look the key up.
    pub fn issuer(&self) -> Option<&str> {
        self.signature.issuer()
    }

    /// Verifies the signature with `key` only, without reading the payload.
    pub fn verify(&self, key: &PublicKey) -> Result<(), EnvelopeError> {
        key.verify(&self.signature, &self.payload)?;
        Ok(())
    }

    /// Verifies, parses and checks the header: sender, time window, nonce.
    pub fn open<T: DeserializeOwned + Message>(
        &self,
        key: &PublicKey,
        expected_sender: &str,
        check: &Freshness,
    ) -> Result<Signed<T>, EnvelopeError> {
        self.verify(key)?;
        let signed: Signed<T> = parse_kind(&self.payload)?;
        check_header(
            &signed.sender,
            signed.issued_at,
            &signed.nonce,
            expected_sender,
            check,
        )?;
        Ok(signed)
    }

    /// Like [`Envelope::open`] for a response: it must answer `request_nonce`.
    pub fn open_reply<T: DeserializeOwned + Message>(
        &self,
        key: &PublicKey,
        request_nonce: &str,
        check: &Freshness,
    ) -> Result<Signed<T>, EnvelopeError> {
        let signed: Signed<T> = self.open(key, SERVER_SENDER, check)?;
        if signed.in_reply_to.as_deref() != Some(request_nonce) {
            return Err(EnvelopeError::NotOurReply {
                expected: request_nonce.to_string(),
                got: signed.in_reply_to,
            });
        }
        Ok(signed)
    }

    /// Opens an enrollment request: the key inside the body verifies the
    /// signature, so the sender proves it holds the key it enrolls.
    pub fn open_enrollment(
        &self,
        check: &Freshness,
    ) -> Result<(Signed<EnrollRequest>, PublicKey), EnvelopeError> {
        let signed: Signed<EnrollRequest> = parse_kind(&self.payload)?;
        let key = PublicKey::from_bytes(signed.body.public_key.as_bytes())?;
        self.verify(&key)?;
        check_header(
            &signed.sender,
            signed.issued_at,
            &signed.nonce,
            &signed.body.machine_id,
            check,
        )?;
        Ok((signed, key))
    }
}

/// Checks the sender, the clock window and the nonce's form.
/// Parses a signed payload, refusing one signed as another kind of
/// message. A payload without a kind (signed before kinds were) passes;
/// callers that require one check [`Signed::kind`].
fn parse_kind<T: DeserializeOwned + Message>(payload: &[u8]) -> Result<Signed<T>, EnvelopeError> {
    // The kind is checked before the body is typed: a body of another kind
    // may not even parse as this one, and that error would hide the cause.
    #[derive(Deserialize)]
    struct Kind {
        #[serde(default)]
        kind: Option<String>,
    }
    let Kind { kind } = serde_json::from_slice(payload)?;
    if let Some(got) = kind
        && got != T::KIND
    {
        return Err(EnvelopeError::WrongKind {
            expected: T::KIND,
            got,
        });
    }
    Ok(serde_json::from_slice(payload)?)
}

fn check_header(
    sender: &str,
    issued_at: DateTime<Utc>,
    nonce: &str,
    expected_sender: &str,
    check: &Freshness,
) -> Result<(), EnvelopeError> {
    if sender != expected_sender {
        return Err(EnvelopeError::SenderMismatch {
            claimed: sender.to_string(),
            actual: expected_sender.to_string(),
        });
    }
    if nonce.len() < 32 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EnvelopeError::BadNonce);
    }
    check.check(issued_at)
}

/// The accepted distance between a payload's timestamp and now.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    now: DateTime<Utc>,
    window: Duration,
}

impl Freshness {
    /// A window around the current time.
    pub fn now(window: std::time::Duration) -> Self {
        Self::at(Utc::now(), window)
    }

    /// A window around a given time (tests, a settable clock).
    pub fn at(now: DateTime<Utc>, window: std::time::Duration) -> Self {
        let window = Duration::from_std(window).unwrap_or(Duration::MAX);
        Self { now, window }
    }

    /// Accepts `issued_at` within the window on either side of now.
    pub fn check(&self, issued_at: DateTime<Utc>) -> Result<(), EnvelopeError> {
        let skew = (self.now - issued_at).abs();
        if skew > self.window {
            return Err(EnvelopeError::Stale {
                issued_at: issued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                skew_seconds: skew.num_seconds(),
                window_seconds: self.window.num_seconds(),
            });
        }
        Ok(())
    }

    /// When a nonce seen now can be forgotten: after the window has passed.
    pub fn nonce_expiry(&self, issued_at: DateTime<Utc>) -> DateTime<Utc> {
        issued_at + self.window
    }
}

/// Serde helpers: RFC 3339 UTC with milliseconds and a `Z`.
///
/// Milliseconds, because that is what MongoDB's dates hold: a timestamp then
/// reads back the same from every store.
pub mod utc {
    use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats a timestamp the one way the project writes them.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Drops what is finer than a millisecond.
    pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
        t.trunc_subsecs(3)
    }

    /// Serializes as RFC 3339 UTC.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// Accepts any RFC 3339 time and converts it to UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| truncate(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::*;

        /// Serializes `Some` as RFC 3339 UTC and `None` as null.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Accepts null or an RFC 3339 time.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            s.map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| truncate(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    const WINDOW: StdDuration = StdDuration::from_secs(900);

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Body {
        value: u32,
    }

    impl Message for Body {
        const KIND: &'static str = "body";
    }

    /// The same fields under another kind, as a report and an update
    /// request share theirs.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Lookalike {
        value: u32,
    }

    impl Message for Lookalike {
        const KIND: &'static str = "lookalike";
    }

    fn key() -> SecretKey {
        SecretKey::generate("client").unwrap()
    }

    fn wire(e: &Envelope) -> Envelope {
        Envelope::from_wire(e.payload().to_vec(), Some(e.signature_header().as_bytes())).unwrap()
    }

    #[test]
    fn a_signature_made_for_one_kind_is_refused_as_another() {
        let k = key();
        let env = wire(&Envelope::seal(&k, "abc", None, &Body { value: 7 }).unwrap());
        let err = env
            .open::<Lookalike>(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap_err();
        assert!(
            matches!(&err, EnvelopeError::WrongKind { expected: "lookalike", got } if got == "body"),
            "{err}"
        );
        let opened: Signed<Body> = env
            .open(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap();
        assert_eq!(opened.kind.as_deref(), Some("body"));
    }

    #[test]
    fn a_payload_signed_before_kinds_opens_without_one() {
        let k = key();
        let legacy = serde_json::json!({
            "sender": "abc", "issued_at": utc::format(&Utc::now()),
            "nonce": new_nonce(), "body": {"value": 3}
        });
        let payload = serde_json::to_vec(&legacy).unwrap();
        let sig = base64::engine::general_purpose::STANDARD.encode(k.sign(&payload).unwrap());
        let env = Envelope::from_wire(payload, Some(sig.as_bytes())).unwrap();
        let opened: Signed<Lookalike> = env
            .open(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap();
        assert_eq!((opened.kind, opened.body.value), (None, 3));
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let k = key();
        let env = Envelope::seal(&k, "abc", None, &Body { value: 7 }).unwrap();
        let received = wire(&env);
        assert_eq!(received.issuer(), Some(k.public().signing_fingerprint()));
        let opened: Signed<Body> = received
            .open(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap();
        assert_eq!(opened.body, Body { value: 7 });
        assert_eq!(opened.sender, "abc");
        assert_eq!(opened.nonce.len(), 32);
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let k = key();
        let env = Envelope::seal(&k, "abc", None, &Body { value: 7 }).unwrap();
        let mut payload = env.payload().to_vec();
        let pos = payload.iter().position(|&b| b == b'7').unwrap();
        payload[pos] = b'8';
        let tampered =
            Envelope::from_wire(payload, Some(env.signature_header().as_bytes())).unwrap();
        let err = tampered
            .open::<Body>(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Signature(SignatureError::Mismatch)),
            "{err}"
        );
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let k = key();
        let env = Envelope::seal(&k, "abc", None, &Body { value: 7 }).unwrap();
        let mut sig = base64::engine::general_purpose::STANDARD
            .decode(env.signature_header())
            .unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 0x01;
        let header = base64::engine::general_purpose::STANDARD.encode(&sig);
        let result = Envelope::from_wire(env.payload().to_vec(), Some(header.as_bytes()))
            .and_then(|e| e.open::<Body>(&k.public(), "abc", &Freshness::now(WINDOW)));
        assert!(result.is_err());
    }

    #[test]
    fn wrong_key_is_rejected() {
        let k = key();
        let other = key();
        let env = Envelope::seal(&k, "abc", None, &Body { value: 7 }).unwrap();
        let err = wire(&env)
            .open::<Body>(&other.public(), "abc", &Freshness::now(WINDOW))
            .unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::Signature(SignatureError::WrongKey { .. })
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let k = key();
        let now = Utc::now();
        for offset in [-16i64, 16] {
            let at = now + Duration::minutes(offset);
            let env =
                Envelope::seal_at(&k, "abc", at, new_nonce(), None, &Body { value: 1 }).unwrap();
            let err = wire(&env)
                .open::<Body>(&k.public(), "abc", &Freshness::at(now, WINDOW))
                .unwrap_err();
            assert!(matches!(err, EnvelopeError::Stale { .. }), "{err}");
        }
        let at = now - Duration::minutes(14);
        let env = Envelope::seal_at(&k, "abc", at, new_nonce(), None, &Body { value: 1 }).unwrap();
        wire(&env)
            .open::<Body>(&k.public(), "abc", &Freshness::at(now, WINDOW))
            .unwrap();
    }

    #[test]
    fn sender_must_match_key_owner() {
        let k = key();
        let env = Envelope::seal(&k, "mallory", None, &Body { value: 1 }).unwrap();
        let err = wire(&env)
            .open::<Body>(&k.public(), "abc", &Freshness::now(WINDOW))
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::SenderMismatch { .. }));
    }

    #[test]
    fn reply_must_answer_our_nonce() {
        let server = key();
        let env = Envelope::seal(
            &server,
            SERVER_SENDER,
            Some("aa".repeat(16).as_str()),
            &Body { value: 1 },
        )
        .unwrap();
        let f = Freshness::now(WINDOW);
        wire(&env)
            .open_reply::<Body>(&server.public(), &"aa".repeat(16), &f)
            .unwrap();
        let err = wire(&env)
            .open_reply::<Body>(&server.public(), &"bb".repeat(16), &f)
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::NotOurReply { .. }));
    }

    #[test]
    fn missing_or_garbled_header_is_rejected() {
        assert!(matches!(
            Envelope::from_wire(b"{}".to_vec(), None),
            Err(EnvelopeError::MissingSignature)
        ));
        assert!(matches!(
            Envelope::from_wire(b"{}".to_vec(), Some(b"***")),
            Err(EnvelopeError::SignatureEncoding)
        ));
        assert!(matches!(
            Envelope::from_wire(b"{}".to_vec(), Some(b"aGVsbG8=")),
            Err(EnvelopeError::Signature(SignatureError::Malformed))
        ));
    }

    #[test]
    fn short_nonce_is_rejected() {
        let k = key();
        let env = Envelope::seal_at(
            &k,
            "abc",
            Utc::now(),
            "abcd".into(),
            None,
            &Body { value: 1 },
        )
        .unwrap();
        assert!(matches!(
            wire(&env).open::<Body>(&k.public(), "abc", &Freshness::now(WINDOW)),
            Err(EnvelopeError::BadNonce)
        ));
    }
}
