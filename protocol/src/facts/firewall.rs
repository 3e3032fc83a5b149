//! `firewall`: whether inbound traffic is filtered, per address family,
//! from the active ruleset.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Fact;

/// The active ruleset's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Firewall {
    /// On when both families filter (IPv6 may instead be disabled).
    pub status: Status,
    /// IPv4.
    pub ipv4: Family,
    /// IPv6.
    pub ipv6: Family,
    /// Programs that manage the rules (firewalld, ufw, docker...).
    #[serde(default)]
    pub managers: Vec<String>,
    /// Rulesets, files and reasons the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for Firewall {
    const NAME: &'static str = "firewall";
}

/// Whether the machine filters inbound traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Filtered.
    On,
    /// Not filtered.
    Off,
    /// Some rules could not be read.
    Unknown,
}

/// One address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Family {
    /// Whether inbound traffic of this family is filtered.
    pub filtered: bool,
    /// The chains or tables that filter it.
    #[serde(default)]
    pub by: Vec<String>,
    /// IPv6 only: disabled in the kernel (so nothing to filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}
