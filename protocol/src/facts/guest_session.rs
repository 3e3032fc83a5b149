//! `guest_session`: whether someone can use the machine without a
//! password: a guest session, or automatic login.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known};

/// The display manager's and console's login settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestSession {
    /// Whether a guest session or automatic login is possible.
    pub enabled: Known<bool>,
    /// The display manager (`gdm`, `lightdm`, `sddm`..., `none`).
    pub display_manager: String,
    /// Whether a guest account is offered.
    pub guest: Known<bool>,
    /// The automatic login, if one is set up (null when none is).
    pub autologin: Known<Option<Autologin>>,
    /// Files and units the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for GuestSession {
    const NAME: &'static str = "guest_session";
}

/// An automatic login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Autologin {
    /// The account logged in.
    pub user: String,
    /// `automatic`, `timed`, `console`, or `initial` (greetd's
    /// initial_session, run once at boot).
    pub kind: String,
    /// For a timed login, after how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u64>,
    /// The session started, when the configuration names one; for
    /// `console`, the getty unit (`getty@tty1.service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}
