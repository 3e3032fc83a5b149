//! `screenlock`: whether each graphical session locks its screen when
//! idle, and after how long.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known, Timestamp};

/// Screen locking per graphical session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScreenLock {
    /// Where the sessions come from.
    pub source: Source,
    /// Graphical sessions, sorted by user, desktop and type.
    pub sessions: Vec<Session>,
    /// Sessions, settings and programs the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for ScreenLock {
    const NAME: &'static str = "screenlock";
}

/// Where the sessions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Sessions running now.
    Live,
    /// Nobody is logged in: each user's last seen answer.
    Cache,
    /// No graphical session now or remembered.
    None,
}

/// One graphical session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    /// The user.
    pub user: String,
    /// The desktop (`GNOME`, `KDE`, `XFCE`, `sway`...).
    pub desktop: String,
    /// logind's session type (`x11`, `wayland`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the session is remote.
    pub remote: bool,
    /// Whether the screen locks when idle.
    pub enabled: Known<bool>,
    /// After how many idle seconds it locks, when known.
    #[serde(default)]
    pub delay_seconds: Option<u64>,
    /// Settings and programs read for this session.
    pub evidence: Vec<String>,
    /// For an answer from the cache: when it was last seen live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_at: Option<Timestamp>,
}
