//! The remote shell: the action that asks an agent to open one, the
//! messages on the server's relay, and the end-to-end sealed frames.
//!
//! The administrator's side makes an ephemeral X25519 key; its public half
//! travels in the server-signed action ([`ShellTask::admin_key`]). The agent
//! makes its own and sends the public half in a [`ShellHello`] signed with
//! its client key over a fresh challenge from the relay. Both sides derive
//! one key per direction ([`SessionKeys`]) with HKDF-SHA256; every frame is
//! sealed with ChaCha20-Poly1305 under a counter that must be exactly the
//! next one, so a dropped, reordered, replayed or altered frame ends the
//! session. The relay sees only ciphertext.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{EphemeralSecret, PublicKey as XPublicKey};
use zeroize::Zeroizing;

use crate::wire::Message;

/// Ties derived keys to this protocol and version.
const KDF_LABEL: &[u8] = b"penguindome shell v1";

/// Largest sealed frame either side accepts (a terminal write rarely
/// exceeds a few KiB; the agent reads its PTY in 16 KiB pieces).
pub const MAX_FRAME: usize = 64 * 1024;

/// The counter's bytes before each ciphertext.
const COUNTER_BYTES: usize = 8;

/// Ask the agent to open a shell and meet the administrator on the relay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShellTask {
    /// 128 random bits, hex; names the session on the relay, once.
    pub session_id: String,
    /// The administrator's ephemeral X25519 public key, base64.
    pub admin_key: String,
    /// What to run on the PTY; empty: root's login shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `TERM` for the shell.
    pub term: String,
    /// Initial window size.
    pub cols: u16,
    /// Initial window size.
    pub rows: u16,
    /// The session ends after this long without a frame either way.
    pub idle_timeout_secs: u64,
    /// The session ends after this long whatever happens.
    pub max_duration_secs: u64,
    /// The certificate (armored) the agent seals the session's keys to for
    /// the transcript: the site's secret-keeping key, or the server's own
    /// transcript key where the site keeps no secrets.
    pub transcript_to: String,
}

/// The relay's first word to an agent: sign this.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShellChallenge {
    /// 256 random bits, hex, made for this connection only.
    pub challenge: String,
}

/// The query of the agent's WebSocket request: which session it comes
/// for, so that a server of the site that does not hold the session can
/// pass the connection to the one that does. Only routing: the server
/// holding the session still checks the signed hello.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShellAgentQuery {
    /// The session the action named (older agents send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Set by a server passing the connection on, so that it is passed on
    /// at most once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relayed: bool,
}

impl ShellAgentQuery {
    /// The query for `session_id`'s agent, as the URL's query string.
    pub fn for_session(session_id: &str) -> Self {
        Self {
            session: Some(session_id.to_string()),
            relayed: false,
        }
    }

    /// The URL query string (without `?`); a session id that is not a
    /// nonce is left out, so nothing here ever needs escaping.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = self.session.as_deref().filter(|id| Self::is_session_id(id)) {
            parts.push(format!("session={id}"));
        }
        if self.relayed {
            parts.push("relayed=true".to_string());
        }
        parts.join("&")
    }

    /// Whether `id` can be a session id (a nonce: 32 lower-case hex
    /// characters); anything else is never looked up.
    pub fn is_session_id(id: &str) -> bool {
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// The agent's answer to a challenge, signed with its client key (the
/// envelope's `in_reply_to` is the challenge).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShellHello {
    /// The session the action named.
    pub session_id: String,
    /// The action that asked for it.
    pub action_id: String,
    /// The administrator's key as the action carried it: the admin's side
    /// checks it is its own.
    pub admin_key: String,
    /// The agent's ephemeral X25519 public key, base64.
    pub agent_key: String,
    /// The session's keys ([`TranscriptKeys`] as JSON) encrypted to the
    /// task's `transcript_to`, armored: what opens the relay's recording.
    pub transcript_keys: String,
}

impl Message for ShellHello {
    const KIND: &'static str = "shell-hello";
}

/// A signed message carried in one WebSocket text message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignedText {
    /// The signed JSON, as text.
    pub payload: String,
    /// The detached signature, base64 (as the HTTP signature header).
    pub signature: String,
}

/// What an administrator's side asks of the relay, first thing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenShell {
    /// A client id or host name.
    pub host: String,
    /// The administrator's ephemeral X25519 public key, base64.
    pub admin_key: String,
    /// How long the request may wait for the client, in seconds.
    pub wait_secs: u64,
    /// `TERM` for the shell.
    pub term: String,
    /// Window size.
    pub cols: u16,
    /// Window size.
    pub rows: u16,
    /// Who pdome-admin says runs it (`alice (via sudo)`); the relay trusts
    /// it only to name the person behind a root connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// What the relay tells the administrator's side, as text messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RelayEvent {
    /// The request is queued; the client picks it up on its next run.
    Queued {
        /// The session.
        session_id: String,
        /// The action carrying it.
        action_id: String,
        /// The client.
        client_id: String,
        /// Its host name.
        hostname: String,
        /// When the request lapses unless the client came.
        #[serde(with = "crate::envelope::utc")]
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// The agent came and proved who it is; sealed frames follow.
    Attached {
        /// The agent's signed [`ShellHello`].
        hello: SignedText,
        /// The client's certificate, armored, to check the hello with.
        certificate: String,
    },
    /// The session ended or never started, and why.
    Ended {
        /// For people.
        reason: String,
    },
}

/// What travels inside a sealed frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Terminal bytes: keystrokes one way, output the other.
    Data(Vec<u8>),
    /// The administrator's window changed size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The shell exited with this status (a signal `n` is `128 + n`).
    Exit(i32),
    /// The sender ends the session (the administrator typed `~.`).
    Close,
}

/// Why a frame was refused; every one ends the session.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    /// Too short, too long or of an unknown type.
    #[error("a shell frame is malformed")]
    Malformed,
    /// Not the next counter: a frame was dropped, reordered or replayed.
    #[error("a shell frame arrived out of order (counter {got}, expected {expected})")]
    OutOfOrder {
        /// What came.
        got: u64,
        /// What should have.
        expected: u64,
    },
    /// Authentication failed: the frame was altered or made by someone else.
    #[error("a shell frame failed authentication: it was altered in transit")]
    Forged,
    /// The key agreement produced no secret (a degenerate public key).
    #[error("the peer's key is unusable for key agreement")]
    WeakKey,
    /// A key in a message is not 32 bytes of base64.
    #[error("a shell key is not 32 bytes of base64")]
    BadKey,
}

impl Frame {
    /// The plaintext encoding: a type byte, then its fields.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Data(d) => [&[0u8][..], d].concat(),
            Frame::Resize { cols, rows } => {
                let mut v = vec![1u8];
                v.extend_from_slice(&cols.to_be_bytes());
                v.extend_from_slice(&rows.to_be_bytes());
                v
            }
            Frame::Exit(code) => [&[2u8][..], &code.to_be_bytes()].concat(),
            Frame::Close => vec![3u8],
        }
    }

    /// Reads a plaintext frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (&kind, rest) = bytes.split_first().ok_or(FrameError::Malformed)?;
        match (kind, rest.len()) {
            (0, _) => Ok(Frame::Data(rest.to_vec())),
            (1, 4) => Ok(Frame::Resize {
                cols: u16::from_be_bytes([rest[0], rest[1]]),
                rows: u16::from_be_bytes([rest[2], rest[3]]),
            }),
            (2, 4) => Ok(Frame::Exit(i32::from_be_bytes([
                rest[0], rest[1], rest[2], rest[3],
            ]))),
            (3, 0) => Ok(Frame::Close),
            _ => Err(FrameError::Malformed),
        }
    }
}

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The administrator's pdome-admin.
    Admin,
    /// The agent on the client.
    Agent,
}

/// One side's ephemeral key pair, before the peer's key is known.
pub struct Ephemeral {
    secret: EphemeralSecret,
    public: XPublicKey,
}

impl Default for Ephemeral {
    fn default() -> Self {
        Self::new()
    }
}

impl Ephemeral {
    /// A fresh key pair from the system's random source.
    pub fn new() -> Self {
        let secret = EphemeralSecret::random();
        let public = XPublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public half, base64, as messages carry it.
    pub fn public_b64(&self) -> String {
        b64_encode(self.public.as_bytes())
    }

    /// Agrees on the session's keys with the peer's public key (base64);
    /// `side` is who we are. Consumes the secret.
    pub fn agree(
        self,
        side: Side,
        peer_b64: &str,
        session_id: &str,
    ) -> Result<SessionKeys, FrameError> {
        let peer = XPublicKey::from(decode_key(peer_b64)?);
        let shared = self.secret.diffie_hellman(&peer);
        if !shared.was_contributory() {
            return Err(FrameError::WeakKey);
        }
        let (admin, agent) = match side {
            Side::Admin => (self.public, peer),
            Side::Agent => (peer, self.public),
        };
        let mut info = KDF_LABEL.to_vec();
        info.extend_from_slice(admin.as_bytes());
        info.extend_from_slice(agent.as_bytes());
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(session_id.as_bytes()), shared.as_bytes());
        let mut okm = Zeroizing::new([0u8; 64]);
        hk.expand(&info, okm.as_mut())
            .expect("64 bytes is a valid HKDF-SHA256 length");
        let to_agent = Key::clone_from_slice(&okm[..32]);
        let to_admin = Key::clone_from_slice(&okm[32..]);
        let transcript = TranscriptKeys {
            to_agent: b64_encode(&okm[..32]),
            to_admin: b64_encode(&okm[32..]),
        };
        let (send, receive) = match side {
            Side::Admin => (to_agent, to_admin),
            Side::Agent => (to_admin, to_agent),
        };
        Ok(SessionKeys {
            transcript,
            sealer: Sealer {
                cipher: ChaCha20Poly1305::new(&send),
                next: 0,
            },
            opener: Opener {
                cipher: ChaCha20Poly1305::new(&receive),
                next: 0,
            },
        })
    }
}

/// Both directions' keys, base64: sealed for the transcript, they let its
/// reader open every frame the relay recorded.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TranscriptKeys {
    /// Seals what the administrator sends.
    pub to_agent: String,
    /// Seals what the agent sends.
    pub to_admin: String,
}

impl std::fmt::Debug for TranscriptKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TranscriptKeys(..)")
    }
}

impl TranscriptKeys {
    /// Openers for what each side sent: (the administrator's keystrokes,
    /// the agent's output).
    pub fn openers(&self) -> Result<(Opener, Opener), FrameError> {
        let opener = |b64: &str| -> Result<Opener, FrameError> {
            let key = Zeroizing::new(decode_key(b64)?);
            Ok(Opener {
                cipher: ChaCha20Poly1305::new(Key::from_slice(key.as_ref())),
                next: 0,
            })
        };
        Ok((opener(&self.to_agent)?, opener(&self.to_admin)?))
    }
}

/// Both directions of one session.
pub struct SessionKeys {
    /// What the transcript's reader needs; seal it, never send it bare.
    pub transcript: TranscriptKeys,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the peer sends.
    pub opener: Opener,
}

/// Seals outgoing frames, counting them.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    next: u64,
}

/// Opens incoming frames, insisting on the next counter.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    next: u64,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

impl Sealer {
    /// The wire bytes of `frame`: its counter, then the ciphertext (the
    /// counter is also authenticated as associated data).
    pub fn seal(&mut self, frame: &Frame) -> Vec<u8> {
        let counter = self.next;
        self.next += 1;
        let header = counter.to_be_bytes();
        let sealed = self
            .cipher
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: &frame.encode(),
                    aad: &header,
                },
            )
            .expect("ChaCha20-Poly1305 seals any length we send");
        [&header[..], &sealed].concat()
    }
}

impl Opener {
    /// Opens the next frame from the wire.
    pub fn open(&mut self, wire: &[u8]) -> Result<Frame, FrameError> {
        if wire.len() < COUNTER_BYTES + 16 || wire.len() > MAX_FRAME + COUNTER_BYTES + 17 {
            return Err(FrameError::Malformed);
        }
        let (header, sealed) = wire.split_at(COUNTER_BYTES);
        let counter = u64::from_be_bytes(header.try_into().expect("split at 8"));
        if counter != self.next {
            return Err(FrameError::OutOfOrder {
                got: counter,
                expected: self.next,
            });
        }
        let plain = self
            .cipher
            .decrypt(
                &nonce(counter),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| FrameError::Forged)?;
        self.next += 1;
        Frame::decode(&plain)
    }
}

/// A frame's counter as the relay sees it (for transcripts and tests).
pub fn frame_counter(wire: &[u8]) -> Option<u64> {
    wire.get(..COUNTER_BYTES)
        .map(|h| u64::from_be_bytes(h.try_into().expect("8 bytes")))
}

fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_key(b64: &str) -> Result<[u8; 32], FrameError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or(FrameError::BadKey)
}

/// Checks a key is 32 bytes of base64 (for requests the relay queues).
pub fn is_valid_key(b64: &str) -> bool {
    decode_key(b64).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_query_carries_only_a_nonce() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            ShellAgentQuery::for_session(id).to_query(),
            format!("session={id}")
        );
        let passed = ShellAgentQuery {
            relayed: true,
            ..ShellAgentQuery::for_session(id)
        };
        assert_eq!(passed.to_query(), format!("session={id}&relayed=true"));
        let odd = ShellAgentQuery::for_session("a&relayed=true");
        assert_eq!(odd.to_query(), "");
        assert!(!ShellAgentQuery::is_session_id(&id.to_uppercase()));
    }

    fn pair() -> (SessionKeys, SessionKeys) {
        let admin = Ephemeral::new();
        let agent = Ephemeral::new();
        let (admin_pub, agent_pub) = (admin.public_b64(), agent.public_b64());
        let sid = "00112233445566778899aabbccddeeff";
        (
            admin.agree(Side::Admin, &agent_pub, sid).unwrap(),
            agent.agree(Side::Agent, &admin_pub, sid).unwrap(),
        )
    }

    #[test]
    fn frames_round_trip_both_ways() {
        let (mut admin, mut agent) = pair();
        for f in [
            Frame::Data(b"id -u\r".to_vec()),
            Frame::Resize { cols: 91, rows: 17 },
            Frame::Close,
        ] {
            let wire = admin.sealer.seal(&f);
            assert!(!wire.windows(5).any(|w| w == b"id -u"), "sealed");
            assert_eq!(agent.opener.open(&wire).unwrap(), f);
        }
        let wire = agent.sealer.seal(&Frame::Exit(3));
        assert_eq!(admin.opener.open(&wire).unwrap(), Frame::Exit(3));
    }

    #[test]
    fn altered_dropped_replayed_and_reflected_frames_end_it() {
        let (mut admin, mut agent) = pair();
        let first = admin.sealer.seal(&Frame::Data(b"a".to_vec()));
        let second = admin.sealer.seal(&Frame::Data(b"b".to_vec()));
        // Dropped: the second arrives first.
        assert!(matches!(
            agent.opener.open(&second),
            Err(FrameError::OutOfOrder {
                got: 1,
                expected: 0
            })
        ));
        let mut altered = first.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(agent.opener.open(&altered), Err(FrameError::Forged));
        assert!(agent.opener.open(&first).is_ok());
        // Replayed.
        assert!(agent.opener.open(&first).is_err());
        // Reflected back to its sender: the other direction's key.
        let reflected = agent.sealer.seal(&Frame::Data(b"x".to_vec()));
        let (mut a2, _) = pair();
        assert_eq!(a2.opener.open(&reflected), Err(FrameError::Forged));
        let own = admin.sealer.seal(&Frame::Close);
        let mut fresh_admin = pair().0;
        assert!(fresh_admin.opener.open(&own).is_err());
    }

    #[test]
    fn transcript_keys_open_both_directions() {
        let (mut admin, mut agent) = pair();
        let typed = admin.sealer.seal(&Frame::Data(b"id\r".to_vec()));
        let shown = agent.sealer.seal(&Frame::Data(b"uid=0".to_vec()));
        let (mut keystrokes, mut output) = agent.transcript.openers().unwrap();
        assert_eq!(admin.transcript, agent.transcript);
        assert_eq!(
            keystrokes.open(&typed).unwrap(),
            Frame::Data(b"id\r".to_vec())
        );
        assert_eq!(output.open(&shown).unwrap(), Frame::Data(b"uid=0".to_vec()));
        assert!(agent.opener.open(&typed).is_ok());
    }

    #[test]
    fn bad_frames_and_keys_are_errors_not_panics() {
        for bytes in [&[][..], &[1, 0], &[2, 0, 0, 0], &[3, 0], &[9]] {
            assert_eq!(Frame::decode(bytes), Err(FrameError::Malformed));
        }
        let (_, mut agent) = pair();
        assert_eq!(agent.opener.open(&[0; 5]), Err(FrameError::Malformed));
        assert!(!is_valid_key("AAAA"));
        let zero = b64_encode(&[0u8; 32]);
        assert!(matches!(
            Ephemeral::new().agree(Side::Admin, &zero, "s"),
            Err(FrameError::WeakKey)
        ));
    }
}
