//! Request and response bodies exchanged under `/penguindome/v1/`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Path prefix of every endpoint.
pub const API_PREFIX: &str = "/penguindome/v1";

/// Endpoint paths, relative to the server URL.
pub mod paths {
    /// Enroll a new client key (self-signed, with the enrollment credential).
    pub const ENROLL: &str = "/penguindome/v1/enroll";
    /// Submit one collected report.
    pub const SUBMIT: &str = "/penguindome/v1/submit";
    /// Ask for releases, patches and commands; the answer is server-signed.
    pub const UPDATE: &str = "/penguindome/v1/update";
    /// Report where an action stands (started, done, failed, refused).
    pub const ACTION_REPORT: &str = "/penguindome/v1/action_report";
    /// Unsigned liveness and store health.
    pub const HEALTH: &str = "/penguindome/v1/health";
    /// The signed package repositories (apt/, rpm/, arch/, key.asc).
    pub const REPO: &str = "/penguindome/v1/repo";
    /// The newest package of a family, or a bootstrap script.
    pub const DOWNLOAD_RELEASE: &str = "/penguindome/v1/download_release";
    /// The token bootstrap script of a family (`?format=deb|rpm|arch`).
    pub const BOOTSTRAP: &str = "/penguindome/v1/bootstrap";
    /// A new repository credential for the signing client.
    pub const REPO_CREDENTIAL: &str = "/penguindome/v1/repo_credential";
    /// WebSocket where an agent meets its shell session (signed hello).
    pub const SHELL_AGENT: &str = "/penguindome/v1/shell/agent";
    /// WebSocket where an administrator opens a shell (the server's Unix
    /// socket; over HTTPS only where access rules allow it).
    pub const SHELL_ADMIN: &str = "/penguindome/v1/shell/admin";
}

/// Checks that a client id is a machine id: 32 lower-case hex characters.
pub fn is_valid_client_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A body that travels signed. Its kind is signed with it, so a signature
/// made for one kind of message is never accepted as another (a report's
/// fields would otherwise also read as an update request).
pub trait Message {
    /// The name signed with the body; never reused for another type.
    const KIND: &'static str;
}

/// One collection: what every collector found, at one moment.
///
/// `P` is the type of one collector's output: `serde_json::Value` on the
/// agent; the server reads it as raw JSON text to avoid rebuilding trees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report<P = serde_json::Value> {
    /// Random id of this collection, to recognise a re-delivery.
    pub report_id: String,
    /// Host name at collection time (data, not identity).
    pub hostname: String,
    /// When the collection finished.
    #[serde(with = "crate::envelope::utc")]
    pub collected_at: DateTime<Utc>,
    /// Version of the agent that collected it.
    pub agent_version: String,
    /// The [`crate::facts`] version the built-in collectors' outputs
    /// follow; reports of agents from before versions were named are 1.
    #[serde(default = "first_facts_version")]
    pub facts_version: u32,
    /// Output of each collector, by collector name.
    pub plugins: BTreeMap<String, P>,
}

fn first_facts_version() -> u32 {
    1
}

/// Body of an enrollment request, signed by the new key itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnrollRequest {
    /// The machine id the client claims.
    pub machine_id: String,
    /// Its host name.
    pub hostname: String,
    /// Its new public certificate, armored.
    pub public_key: String,
    /// The site-wide enrollment credential of agent.toml (deprecated:
    /// empty when the client enrolls with a token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
    /// An enrollment token's `pdt1.<id>.<secret>`, without its pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Agent version.
    pub agent_version: String,
}

/// What the server says to an accepted enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnrollResponse {
    /// The id the client is known by from now on.
    pub client_id: String,
    /// Fingerprint of the enrolled key.
    pub fingerprint: String,
    /// `enrolled`, or `already-enrolled` when the same key enrolled before.
    pub status: String,
}

/// Body of an update request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpdateRequest {
    /// Host name, for the server's records.
    pub hostname: String,
    /// Agent version running now.
    pub agent_version: String,
}

/// The server-signed answer to an update request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpdateResponse {
    /// `current` when there is nothing to do.
    pub status: String,
    /// Server time, so the agent can warn about clock skew.
    #[serde(with = "crate::envelope::utc")]
    pub server_time: DateTime<Utc>,
    /// Actions for this client, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<crate::actions::SealedAction>,
    /// The newest release in the site's repositories; an agent whose
    /// installed package revision is lower upgrades through its package
    /// manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_release: Option<u64>,
    /// The server holds no repository credential of this client (never
    /// made, or rotated by an administrator): ask for one at
    /// [`paths::REPO_CREDENTIAL`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_repo_credential: bool,
    /// Self-signed certificates (PEM) the server's listeners present or
    /// will present after a renewal: an agent that pins agent.toml's
    /// certificate trusts these too, so a renewal strands no client. Empty
    /// when the server publishes none (CA-signed certificates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_certificates: Vec<String>,
    /// Every certification of a server key by the key before it: an agent
    /// walks it from the key it pins to the key that signs this answer.
    /// Empty until the site first rotates its key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_keys: Vec<crate::key_rotation::SignedKeyCertification>,
    /// The fields to seal before a report is spooled, and the key to seal
    /// them to; absent when the site seals nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing: Option<crate::sealing::SealingPolicy>,
}

/// Body of a request for a new repository credential; the signature says
/// who asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepoCredentialRequest {
    /// Host name, for the server's records.
    pub hostname: String,
}

/// A new repository credential: HTTP Basic user and password for the
/// site's repositories. The server keeps only a SHA-256 of the password,
/// and the previous one stops working.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct RepoCredential {
    /// The user: the client id.
    pub user: String,
    /// The password: 256 random bits, base64url.
    pub password: String,
}

impl std::fmt::Debug for RepoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCredential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The plain JSON answer to a submission or acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ack {
    /// `ok`, or `duplicate` when the report was already stored.
    pub status: String,
    /// What the server's checks find wrong in the report just stored, so
    /// the machine hears it at once rather than at the next audit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// A check that fails on the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// The check's name, e.g. `firewall-disabled`.
    pub check: String,
    /// What it found.
    pub detail: String,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `bad_signature`.
    pub code: String,
    /// What failed and what to do about it.
    pub error: String,
}

impl<P> Message for Report<P> {
    const KIND: &'static str = "report";
}

impl Message for EnrollRequest {
    const KIND: &'static str = "enroll-request";
}

impl Message for UpdateRequest {
    const KIND: &'static str = "update-request";
}

impl Message for RepoCredentialRequest {
    const KIND: &'static str = "repo-credential-request";
}

impl Message for UpdateResponse {
    const KIND: &'static str = "update-response";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_machine_ids() {
        assert!(is_valid_client_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_client_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_valid_client_id("0123456789abcdef"));
        assert!(!is_valid_client_id("../../etc/passwd0123456789abcdef"));
    }

    #[test]
    fn report_reads_plugins_as_raw_json() {
        let text = r#"{"report_id":"r","hostname":"h","collected_at":"2026-01-01T00:00:00Z",
            "agent_version":"1","plugins":{"a":{"x":[1,2]},"b":"unknown"}}"#;
        let r: Report<Box<serde_json::value::RawValue>> = serde_json::from_str(text).unwrap();
        assert_eq!(r.plugins["a"].get(), r#"{"x":[1,2]}"#);
        assert_eq!(
            r.facts_version, 1,
            "reports without a version are version 1"
        );
        assert_eq!(r.plugins["b"].get(), r#""unknown""#);
    }
}
