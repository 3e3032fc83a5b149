//! `os_updates`: pending updates, which of them fix security problems, how
//! fresh the package lists are and whether a reboot is needed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known, Timestamp};

/// What the package manager says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OsUpdates {
    /// `apt`, `pacman`, `dnf`, or `unknown` when none was found.
    pub backend: String,
    /// How many updates of each kind; absent when no backend was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// The pending updates, sorted by name and architecture.
    #[serde(default)]
    pub pending: Vec<PendingUpdate>,
    /// When the package lists were last refreshed, if known.
    #[serde(default)]
    pub lists_refreshed_at: Option<Timestamp>,
    /// Whether the machine waits for a reboot.
    #[serde(default)]
    pub reboot_required: Known<bool>,
    /// Why a reboot is (or is not) needed.
    #[serde(default)]
    pub reboot_evidence: String,
    /// Packages left half-installed or half-configured.
    #[serde(default)]
    pub broken: Vec<String>,
    /// How security updates were told apart, or why they could not be.
    #[serde(default)]
    pub security_evidence: String,
    /// Files and programs the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for OsUpdates {
    const NAME: &'static str = "os_updates";
}

/// Counts of pending updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Every pending update.
    pub pending: u64,
    /// Security fixes among them; unknown when the backend cannot tell
    /// security fixes apart (then any pending update may be one).
    pub security: Known<u64>,
    /// Held back by the administrator.
    pub held: u64,
    /// Broken (half-installed) packages.
    pub broken: u64,
}

/// One package with a newer version waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingUpdate {
    /// Package name.
    pub name: String,
    /// Architecture, where the package manager has several per name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The installed version.
    pub installed: String,
    /// The version the package manager would install.
    pub candidate: String,
    /// True when the candidate comes from a security source or advisory.
    pub security: bool,
    /// Held back by the administrator (apt-mark hold, IgnorePkg...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Where the candidate comes from (suite, repository).
    pub source: String,
    /// When the agent first saw this update pending for the installed
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<Timestamp>,
}
