//! `auto_updates`: whether the distribution's unattended upgrades install
//! updates without anyone's help.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known};

/// The unattended upgrade mechanism and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AutoUpdates {
    /// Whether updates are installed automatically.
    pub enabled: Known<bool>,
    /// The mechanism; absent when no package manager was recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Mechanism>,
    /// What it installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies: Option<Applies>,
    /// Whether the mechanism's package is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<bool>,
    /// Its timers, as `unit: state`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<String>,
    /// The settings that decide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    /// Files and units the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for AutoUpdates {
    const NAME: &'static str = "auto_updates";
}

/// How a distribution installs updates unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// Debian and Ubuntu.
    UnattendedUpgrades,
    /// Fedora, RHEL and relatives (dnf 4 and 5).
    DnfAutomatic,
    /// None exists (Arch).
    None,
}

/// What an unattended upgrade installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Applies {
    /// Nothing.
    None,
    /// Updates are downloaded, not installed.
    DownloadOnly,
    /// Security updates only.
    Security,
    /// Every update.
    All,
    /// Whatever unattended-upgrades' configured origins offer.
    AllConfiguredOrigins,
}

/// The settings an unattended upgrade depends on (those of its
/// mechanism).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// apt: `APT::Periodic::Update-Package-Lists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_package_lists: Option<bool>,
    /// apt: `APT::Periodic::Unattended-Upgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattended_upgrade: Option<bool>,
    /// dnf-automatic: `apply_updates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_updates: Option<bool>,
    /// dnf-automatic: `upgrade_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_type: Option<String>,
}
