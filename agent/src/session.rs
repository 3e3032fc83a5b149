//! The signed conversations with the server: enroll, update, submit,
//! report on an action.

use std::time::Duration;

use chrono::Utc;
use penguindome_protocol::actions::ActionReport;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::key_rotation::SignedKeyCertification;
use penguindome_protocol::token::{self, EnrollmentToken};
use penguindome_protocol::wire::{
    Ack, EnrollRequest, EnrollResponse, Message, Problem, RepoCredential, RepoCredentialRequest,
    Report, UpdateRequest, UpdateResponse, paths,
};
use penguindome_protocol::{Envelope, EnvelopeError, Freshness, PublicKey, SecretKey};
use serde::Serialize;

use crate::server_keys::ServerKeys;
use crate::transport::{Reply, Transport, TransportError};

/// How a server response may differ from our clock before we refuse it.
const REPLY_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What went wrong in a conversation.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The server could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server does not know our key (database reset, or never enrolled).
    #[error("the server does not know this client's key: {0}")]
    NotEnrolled(String),
    /// The server cannot serve right now (its database is down, say).
    #[error("the server is temporarily unavailable: {0}")]
    Unavailable(String),
    /// An administrator revoked this client.
    #[error("the server refuses this client: {0}; ask an administrator")]
    Revoked(String),
    /// The server refused this particular request's content.
    #[error("the server rejected the data: {0}")]
    Rejected(String),
    /// The enrollment token was refused (unknown, used up, expired,
    /// revoked), or the server wants one.
    #[error("enrollment refused: {0}")]
    TokenRefused(String),
    /// Any other refusal.
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// A server answer that failed verification: never acted upon.
    #[error("the server's answer failed verification: {0}")]
    BadAnswer(String),
    /// Local signing failure.
    #[error("cannot sign the request: {0}")]
    Sign(#[from] EnvelopeError),
}

impl SessionError {
    /// True when the failure is the network's, so the run is not a failure
    /// of the agent itself (laptops are often offline).
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            Self::Transport(TransportError::Unreachable { .. }) | Self::Unavailable(_)
        )
    }
}

/// What lets a key enroll.
#[derive(Debug, Clone, Copy)]
pub enum Authority<'a> {
    /// An enrollment token (`penguindome-agent enroll`).
    Token(&'a EnrollmentToken),
    /// The deprecated site-wide credential of older site packages.
    SiteCredential(&'a str),
}

/// Result of one submission.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// Stored (or already stored) by the server, with what its checks find
    /// wrong in the report (nothing for one it already had).
    Delivered(Vec<Problem>),
    /// The server will never accept this report; set it aside.
    Rejected(String),
}

/// A client talking to its server.
pub struct Session<'a> {
    transport: &'a Transport,
    key: &'a SecretKey,
    server_keys: ServerKeys,
    client_id: String,
}

/// A verified `/update` answer and the server key that signed it.
#[derive(Debug)]
pub struct Answer {
    /// What the server says.
    pub update: UpdateResponse,
    /// The key whose signature verified.
    pub signer: PublicKey,
}

fn classify(reply: &Reply) -> SessionError {
    let code = reply.api_error().map(|e| e.code).unwrap_or_default();
    let text = reply.describe();
    match (reply.status, code.as_str()) {
        (401, "unknown_key") => SessionError::NotEnrolled(text),
        (400 | 403, "bad_token" | "bad_credential") => {
            SessionError::TokenRefused(reply.api_error().map(|e| e.error).unwrap_or(text))
        }
        (403, _) => SessionError::Revoked(text),
        (502..=504, _) => SessionError::Unavailable(text),
        // Only what the server itself calls unusable is set aside: a 400
        // from a proxy, or one a newer server version would not give, is
        // retried.
        (400, "invalid_data") | (413, "body_too_large") => SessionError::Rejected(text),
        _ => SessionError::Refused(text),
    }
}

impl<'a> Session<'a> {
    /// Prepares a session.
    pub fn new(
        config: &AgentConfig,
        transport: &'a Transport,
        key: &'a SecretKey,
        client_id: String,
    ) -> anyhow::Result<Self> {
        let server_key = PublicKey::from_bytes(config.server_public_key.as_bytes())?;
        Ok(Self {
            transport,
            key,
            server_keys: ServerKeys::pinned(server_key),
            client_id,
        })
    }

    /// The server keys this session accepts.
    pub fn server_keys(&self) -> &ServerKeys {
        &self.server_keys
    }

    /// Accepts the server keys `keys` names instead of the pinned one only.
    pub fn trusting(mut self, keys: ServerKeys) -> Self {
        self.server_keys = keys;
        self
    }

    /// Signs and posts `body`; returns the request's nonce and the reply.
    fn post<T: Serialize + Message>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(String, Reply), SessionError> {
        let nonce = new_nonce();
        let envelope = Envelope::seal_at(
            self.key,
            &self.client_id,
            Utc::now(),
            nonce.clone(),
            None,
            body,
        )?;
        let reply = self.transport.post(path, &envelope)?;
        Ok((nonce, reply))
    }

    /// Enrolls this client's key with a token or the site's credential.
    pub fn enroll(
        &self,
        hostname: &str,
        authority: Authority<'_>,
    ) -> Result<EnrollResponse, SessionError> {
        let (credential, token) = match authority {
            Authority::Token(t) => (
                String::new(),
                Some(format!("{}.{}.{}", token::PREFIX, t.id, t.secret)),
            ),
            Authority::SiteCredential(c) => (c.to_string(), None),
        };
        let body = EnrollRequest {
            machine_id: self.client_id.clone(),
            hostname: hostname.to_string(),
            public_key: self
                .key
                .public()
                .to_armored()
                .map_err(|e| SessionError::Sign(e.into()))?,
            credential,
            token,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let (_, reply) = self.post(paths::ENROLL, &body)?;
        if reply.status != 200 {
            return Err(classify(&reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| SessionError::BadAnswer(e.to_string()))
    }

    /// Asks for a new repository credential (the previous one stops
    /// working when the server answers).
    pub fn repo_credential(&self, hostname: &str) -> Result<RepoCredential, SessionError> {
        let body = RepoCredentialRequest {
            hostname: hostname.to_string(),
        };
        let (_, reply) = self.post(paths::REPO_CREDENTIAL, &body)?;
        if reply.status != 200 {
            return Err(classify(&reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| SessionError::BadAnswer(e.to_string()))
    }

    /// Asks for updates; the answer is verified against a server key this
    /// agent accepts (see [`ServerKeys`]) and must answer this very request.
    pub fn update(&self, hostname: &str) -> Result<Answer, SessionError> {
        let body = UpdateRequest {
            hostname: hostname.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let (request_nonce, reply) = self.post(paths::UPDATE, &body)?;
        if reply.status != 200 {
            return Err(classify(&reply));
        }
        let bad = |e: EnvelopeError| SessionError::BadAnswer(e.to_string());
        let envelope = Envelope::from_wire(reply.body, reply.signature.as_deref()).map_err(bad)?;
        let signer = self.signer_of(&envelope)?;
        let answer = envelope
            .open_reply::<UpdateResponse>(&signer, &request_nonce, &Freshness::now(REPLY_WINDOW))
            .map_err(bad)?;
        Ok(Answer {
            update: answer.body,
            signer,
        })
    }

    /// The accepted key that made the answer's signature, walking the
    /// certifications the answer offers (each one signed on its own, so
    /// reading them before the answer verifies trusts nothing unchecked).
    fn signer_of(&self, envelope: &Envelope) -> Result<PublicKey, SessionError> {
        #[derive(serde::Deserialize)]
        struct Offered {
            #[serde(default)]
            server_keys: Vec<SignedKeyCertification>,
        }
        #[derive(serde::Deserialize)]
        struct Peek {
            body: Offered,
        }
        let issuer = envelope
            .issuer()
            .ok_or_else(|| SessionError::BadAnswer("the answer's signature names no key".into()))?;
        let offered = serde_json::from_slice::<Peek>(envelope.payload())
            .map(|p| p.body.server_keys)
            .unwrap_or_default();
        self.server_keys
            .key_for(issuer, &offered)
            .map_err(SessionError::BadAnswer)
    }

    /// Submits one report.
    pub fn submit(&self, report: &Report) -> Result<Delivery, SessionError> {
        let (_, reply) = self.post(paths::SUBMIT, report)?;
        match reply.status {
            200 => {
                let ack: Ack = serde_json::from_slice(&reply.body)
                    .map_err(|e| SessionError::BadAnswer(e.to_string()))?;
                if ack.status == "duplicate" {
                    log::info!("the server already had report {}", report.report_id);
                }
                Ok(Delivery::Delivered(ack.problems))
            }
            _ => match classify(&reply) {
                SessionError::Rejected(why) => Ok(Delivery::Rejected(why)),
                other => Err(other),
            },
        }
    }

    /// Reports where an action stands. `Ok(false)` when the server does
    /// not know the action for this client (it will never take the report).
    pub fn report_action(&self, report: &ActionReport) -> Result<bool, SessionError> {
        let (_, reply) = self.post(paths::ACTION_REPORT, report)?;
        let code = reply.api_error().map(|e| e.code).unwrap_or_default();
        match (reply.status, code.as_str()) {
            (200, _) => Ok(true),
            (404, "no_such_action") => Ok(false),
            _ => Err(classify(&reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            signature: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_the_servers_own_refusals_set_a_report_aside() {
        let invalid = r#"{"code":"invalid_data","error":"plugin name \"../x\" is not allowed"}"#;
        assert!(matches!(
            classify(&reply(400, invalid)),
            SessionError::Rejected(_)
        ));
        let large = r#"{"code":"body_too_large","error":"too large"}"#;
        assert!(matches!(
            classify(&reply(413, large)),
            SessionError::Rejected(_)
        ));
        // A proxy's page, or a payload an older server cannot parse.
        let proxy = "<html><body>400 Bad Request</body></html>";
        assert!(matches!(
            classify(&reply(400, proxy)),
            SessionError::Refused(_)
        ));
        let newer = r#"{"code":"malformed_payload","error":"unknown variant"}"#;
        assert!(matches!(
            classify(&reply(400, newer)),
            SessionError::Refused(_)
        ));
    }
}
