//! The PenguinDome agent: collects facts about this machine and submits
//! them, signed with its own key, to the site's server.

pub mod actions;
pub mod collectors;
pub mod enroll;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod host;
pub mod moved;
pub mod repo_access;
pub mod repo_keys;
pub mod run;
pub mod sealing;
pub mod server_keys;
pub mod server_trust;
pub mod session;
pub mod shell;
pub mod spool;
pub mod state;
pub mod transport;
pub mod upgrade;
