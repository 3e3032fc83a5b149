//! `agent`: the agent itself: its version and its last self-upgrade.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Timestamp};

/// The agent's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Agent {
    /// The agent's version.
    pub version: String,
    /// The installed package's version (`0.1.0-3`), when it runs from a
    /// package.
    #[serde(default)]
    pub package_version: Option<String>,
    /// The newest release the server announced.
    #[serde(default)]
    pub latest_release: Option<u64>,
    /// The last self-upgrade attempt.
    #[serde(default)]
    pub upgrade: Option<UpgradeOutcome>,
    /// The last time the agent refused the server's TLS certificate, for
    /// a week after it happened: the report that gets through afterwards
    /// tells the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_refused: Option<CertificateRefusal>,
}

/// A refused server certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateRefusal {
    /// When (the last time) it happened.
    pub at: Timestamp,
    /// The URL the agent tried.
    pub url: String,
    /// What was wrong with the certificate.
    pub error: String,
}

impl Fact for Agent {
    const NAME: &'static str = "agent";
}

/// How the last self-upgrade went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpgradeOutcome {
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// The package manager it used.
    #[serde(default)]
    pub package_manager: Option<String>,
    /// Version before.
    #[serde(default)]
    pub from_version: Option<String>,
    /// Version after.
    #[serde(default)]
    pub to_version: Option<String>,
    /// Why it failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}
