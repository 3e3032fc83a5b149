//! Actions: what an administrator tells one client to do, and what the
//! client reports back.
//!
//! An action reaches the agent inside the server-signed `/update` answer,
//! which answers that very request's nonce. Each action is carried as its
//! exact JSON text ([`SealedAction::action`]) next to a list of
//! endorsements over those bytes: today the server's signature on the whole
//! answer is the only one required, and a later release can also require
//! signatures by administrators' own keys (several for a wipe, say) by
//! filling `endorsements`, which agents of this release ignore.
//!
//! The agent runs an action at most once: it refuses one addressed to
//! another client or past its expiry, and journals the id durably before
//! it starts. Every action ends in one [`ActionReport`] with a final state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::Message;

/// Longest a patch's content may be, decoded (the whole `/update` answer
/// must stay well below the agent's response cap).
pub const MAX_PATCH_BYTES: usize = 4 * 1024 * 1024;

/// The most of each of a command's stdout and stderr kept; the rest is
/// counted and dropped.
pub const MAX_COMMAND_OUTPUT: usize = 1024 * 1024;

/// One action as the server hands it out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SealedAction {
    /// The [`Action`] as JSON text: endorsements sign these exact bytes.
    pub action: String,
    /// Detached signatures over `action` by administrators' keys. None are
    /// made yet; agents that do not require them ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endorsements: Vec<Endorsement>,
}

/// An administrator's signature over an action's text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endorsement {
    /// Fingerprint of the signing key.
    pub signer: String,
    /// Base64 of the binary detached OpenPGP signature.
    pub signature: String,
}

/// What every action says about itself, whatever its kind. An agent reads
/// this first, so it can refuse (and report) a kind it does not know.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionHeader {
    /// 128 random bits, hex; the agent's journal key.
    pub id: String,
    /// The one client that may run it.
    pub client_id: String,
    /// When an administrator queued it.
    #[serde(with = "crate::envelope::utc")]
    pub created_at: DateTime<Utc>,
    /// After this the agent refuses it.
    #[serde(with = "crate::envelope::utc")]
    pub expires_at: DateTime<Utc>,
    /// The Unix user who ran pdome-admin.
    pub queued_by: String,
    /// The task's kind, e.g. `patch`.
    pub kind: String,
}

/// An action: its header and its task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    /// 128 random bits, hex.
    pub id: String,
    /// The one client that may run it.
    pub client_id: String,
    /// When an administrator queued it.
    #[serde(with = "crate::envelope::utc")]
    pub created_at: DateTime<Utc>,
    /// After this the agent refuses it.
    #[serde(with = "crate::envelope::utc")]
    pub expires_at: DateTime<Utc>,
    /// The Unix user who ran pdome-admin.
    pub queued_by: String,
    /// What to do; its `kind` travels next to the header's fields.
    #[serde(flatten)]
    pub task: Task,
}

/// What an action does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    /// Write or delete one file below the agent's patch roots.
    Patch(PatchTask),
    /// Run a shell script once, as root or a given user.
    Command(CommandTask),
    /// End every human account: sessions, processes, home, account.
    Wipe(WipeTask),
    /// Move to another server address or certificate, keeping the old
    /// configuration unless the new one answers.
    Configure(ConfigureTask),
    /// Open a root shell for an administrator, relayed end to end sealed.
    Shell(crate::shell::ShellTask),
}

impl Task {
    /// The kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Patch(_) => "patch",
            Task::Command(_) => "command",
            Task::Wipe(_) => "wipe",
            Task::Configure(_) => "configure",
            Task::Shell(_) => "shell",
        }
    }
}

/// Write (or, with mode 0, delete) one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchTask {
    /// Absolute path on the client, below one of its patch roots.
    pub path: String,
    /// Permission bits (e.g. 0o755); 0 deletes the file.
    pub mode: u32,
    /// Owner by name; absent: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group by name; absent: the owner's primary group (root's: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The content, base64 (empty when deleting).
    #[serde(default)]
    pub content: String,
    /// SHA-256 of the decoded content, hex, checked before writing.
    #[serde(default)]
    pub sha256: String,
}

/// Run a script with `/bin/sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandTask {
    /// What lists call it.
    pub name: String,
    /// The script.
    pub script: String,
    /// Run as this user; absent: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Longest it may run; then it is killed with everything it started.
    pub timeout_secs: u64,
}

/// Wipe the machine's human accounts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WipeTask {
    /// Only say what would go.
    pub dry_run: bool,
}

/// Where the agent should reach its server from now on. The agent makes
/// one signed request there first and keeps its configuration if it fails.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigureTask {
    /// The server's new URL; absent: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// The certificate to pin (PEM), or the platform's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PinnedCertificate>,
}

/// What a moved agent trusts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum PinnedCertificate {
    /// This certificate (or bundle), PEM.
    Pem(String),
    /// The certificate authorities the system trusts.
    SystemCas,
}

/// What a command did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandOutput {
    /// Its exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// True when it ran past its timeout and was killed.
    #[serde(default)]
    pub timed_out: bool,
    /// Standard output, base64, at most [`MAX_COMMAND_OUTPUT`] bytes.
    pub stdout: String,
    /// Standard error, base64, at most [`MAX_COMMAND_OUTPUT`] bytes.
    pub stderr: String,
    /// Bytes of standard output dropped past the cap.
    #[serde(default)]
    pub stdout_dropped: u64,
    /// Bytes of standard error dropped past the cap.
    #[serde(default)]
    pub stderr_dropped: u64,
    /// When it started.
    #[serde(with = "crate::envelope::utc")]
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(with = "crate::envelope::utc")]
    pub finished_at: DateTime<Utc>,
}

impl PatchTask {
    /// True for a deletion.
    pub fn deletes(&self) -> bool {
        self.mode == 0
    }
}

impl Action {
    /// The action as the JSON text that travels and is signed.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("actions serialize")
    }
}

/// Where an action stands on one client.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    /// Queued, not yet handed to the client.
    Queued,
    /// Handed out in an `/update` answer; not reported on yet.
    Delivered,
    /// The agent journaled it and began.
    Started,
    /// Done.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Refused before it started (another client's, expired, outside the
    /// roots, unknown kind...): nothing was done.
    Refused,
    /// The agent died while it ran; it is never re-run.
    Interrupted,
    /// Cancelled by an administrator before delivery.
    Cancelled,
    /// Expired before the client reported on it.
    Expired,
}

impl ActionState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Delivered,
            Self::Started,
            Self::Succeeded,
            Self::Failed,
            Self::Refused,
            Self::Interrupted,
            Self::Cancelled,
            Self::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// True once nothing more will happen.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Delivered | Self::Started)
    }

    /// True for what an agent may report.
    pub fn is_reportable(self) -> bool {
        matches!(
            self,
            Self::Started | Self::Succeeded | Self::Failed | Self::Refused | Self::Interrupted
        )
    }
}

/// What the agent reports about one action (signed, like every request).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionReport {
    /// The action.
    pub action_id: String,
    /// Where it stands: started, or a final state.
    pub state: ActionState,
    /// When the agent reached that state.
    #[serde(with = "crate::envelope::utc")]
    pub at: DateTime<Utc>,
    /// Why it failed or was refused, or what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A command's output and exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CommandOutput>,
}

impl Message for ActionReport {
    const KIND: &'static str = "action-report";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> Action {
        Action {
            id: "0123456789abcdef0123456789abcdef".into(),
            client_id: "fedcba9876543210fedcba9876543210".into(),
            created_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            expires_at: "2026-12-31T10:00:00Z".parse().unwrap(),
            queued_by: "alice".into(),
            task: Task::Patch(PatchTask {
                path: "/etc/penguindome/patches.d/x".into(),
                mode: 0o644,
                owner: None,
                group: None,
                content: "aGk=".into(),
                sha256: String::new(),
            }),
        }
    }

    #[test]
    fn the_header_reads_any_kind() {
        let text = patch().to_text();
        let header: ActionHeader = serde_json::from_str(&text).unwrap();
        assert_eq!(header.kind, "patch");
        assert_eq!(header.queued_by, "alice");
        let back: Action = serde_json::from_str(&text).unwrap();
        assert_eq!(back, patch());
        // A kind from a later release: the header still reads, the task not.
        let later = text.replace("\"kind\":\"patch\"", "\"kind\":\"teleport\"");
        let header: ActionHeader = serde_json::from_str(&later).unwrap();
        assert_eq!(header.kind, "teleport");
        assert!(serde_json::from_str::<Action>(&later).is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in [
            ActionState::Queued,
            ActionState::Started,
            ActionState::Interrupted,
            ActionState::Expired,
        ] {
            assert_eq!(ActionState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!(!ActionState::Delivered.is_reportable());
        assert!(ActionState::Refused.is_final());
    }
}
