//! `sshd`: whether an ssh server runs and its effective settings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Fact;

/// The ssh server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sshd {
    /// Whether it runs.
    pub status: Status,
    /// Effective settings, lower-case keys as `sshd -T` prints them
    /// (`passwordauthentication`, `permitrootlogin`...).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Processes, units and files the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for Sshd {
    const NAME: &'static str = "sshd";
}

impl Sshd {
    /// Whether someone can connect now.
    pub fn reachable(&self) -> bool {
        matches!(self.status, Status::Running | Status::SocketActivated)
    }
}

/// Whether sshd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// An sshd process runs.
    Running,
    /// Started by systemd on the first connection.
    SocketActivated,
    /// Installed, not running.
    Stopped,
    /// Not installed.
    Missing,
}
