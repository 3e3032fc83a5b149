//! `users`: accounts people log in with, their password state, who
//! administers the machine, and who is logged in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Fact, Known};

/// Accounts and sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Users {
    /// Accounts in the UID range of people (login.defs), sorted by name.
    pub accounts: Vec<Account>,
    /// root's password state.
    pub root_password: Password,
    /// Every account, system ones included, that logs in without a
    /// password; unknown when /etc/shadow is unreadable.
    pub without_password: Known<Vec<String>>,
    /// Members of the administrators' groups (sudo, wheel, admin), by group.
    #[serde(default)]
    pub admin_groups: BTreeMap<String, Vec<String>>,
    /// Sessions now; unknown without logind or utmp.
    pub logged_in: Known<Vec<Session>>,
    /// Files the answer rests on.
    pub evidence: Vec<String>,
}

impl Fact for Users {
    const NAME: &'static str = "users";
}

/// One account of a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Whether the shell lets it log in.
    pub login_shell: bool,
    /// Its password state.
    pub password: Password,
    /// Whether it is in an administrators' group.
    pub admin: bool,
}

/// A password's state in /etc/shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Password {
    /// A password is set.
    Set,
    /// Empty: anyone can log in.
    None,
    /// Locked: no password login.
    Locked,
    /// /etc/shadow is unreadable, or the account is not in it.
    Unknown,
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    /// Who.
    pub user: String,
    /// logind's session type (`x11`, `wayland`, `tty`...), or
    /// `unspecified` from utmp.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it is remote.
    pub remote: bool,
}
