//! Actions as the stores keep them: one row per action (its task, who
//! queued it, when it expires) and one per target client (where it stands
//! there). The stores never read a task: they keep its JSON text.

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::{Action, ActionState, CommandOutput, SealedAction, Task};
use serde::{Deserialize, Serialize};

use super::diff::{Change, ChangeAction};
use super::{StoreError, StoreResult};

/// An action to queue for several clients (each gets its own copy, bound
/// to it, under the same id).
#[derive(Debug, Clone)]
pub struct NewAction {
    /// 128 random bits, hex.
    pub id: String,
    /// `patch`, ...
    pub kind: String,
    /// What lists show: the patch's path, the command's name.
    pub summary: String,
    /// The [`Task`] as JSON text.
    pub task: String,
    /// The Unix user who queued it.
    pub queued_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// After this no client runs it.
    pub expires_at: DateTime<Utc>,
    /// The clients: id and host name (for the audit trail).
    pub targets: Vec<(String, String)>,
}

/// An action and where it stands on each of its clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// What lists show.
    pub summary: String,
    /// The task, JSON text.
    pub task: String,
    /// Who queued it.
    pub queued_by: String,
    /// When.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub created_at: DateTime<Utc>,
    /// Its expiry.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub expires_at: DateTime<Utc>,
    /// Its clients, by client id.
    pub targets: Vec<TargetRecord>,
}

/// Where an action stands on one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The client.
    pub client_id: String,
    /// Its host name when the action was queued.
    pub hostname: String,
    /// As stored: queued and delivered ones past the expiry read as
    /// expired through [`TargetRecord::state_at`].
    pub state: ActionState,
    /// When the server first handed it out.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the agent started it.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final state.
    #[serde(with = "penguindome_protocol::envelope::utc::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What the agent said (or why it was cancelled).
    pub detail: Option<String>,
    /// A command's output and exit, as the agent reported them.
    #[serde(default)]
    pub output: Option<CommandOutput>,
}

impl TargetRecord {
    /// The state as it reads at `now`.
    pub fn state_at(&self, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> ActionState {
        match self.state {
            ActionState::Queued | ActionState::Delivered if now > expires_at => {
                ActionState::Expired
            }
            s => s,
        }
    }
}

/// What an update request learns: its actions and whether it should ask
/// for a repository password, read in the write that records the request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delivered {
    /// Actions to run, oldest first.
    pub actions: Vec<Delivery>,
    /// The client holds no repository password yet (or it was rotated).
    pub needs_repo_credential: bool,
}

/// An action handed to its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Id.
    pub id: String,
    /// Who queued it.
    pub queued_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
    /// The task, JSON text.
    pub task: String,
}

impl Delivery {
    /// The action bound to `client_id`, as it travels.
    pub fn seal_for(&self, client_id: &str) -> StoreResult<SealedAction> {
        let task: Task = serde_json::from_str(&self.task).map_err(|e| {
            StoreError::Backend(format!("stored action {} is damaged: {e}", self.id))
        })?;
        let action = Action {
            id: self.id.clone(),
            client_id: client_id.to_string(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            queued_by: self.queued_by.clone(),
            task,
        };
        Ok(SealedAction {
            action: action.to_text(),
            endorsements: Vec::new(),
        })
    }
}

/// Which actions to list.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// One action.
    pub id: Option<String>,
    /// Of one kind.
    pub kind: Option<String>,
    /// Targeting one client.
    pub client_id: Option<String>,
}

/// The audit record of an action's state change on one client.
pub fn state_change(id: &str, old: ActionState, new: ActionState, detail: Option<&str>) -> Change {
    Change {
        field: audit_field(id),
        action: ChangeAction::Change,
        old: Some(serde_json::json!({"state": old.as_str()})),
        new: Some(serde_json::json!({"state": new.as_str(), "detail": detail})),
    }
}

/// The audit-trail field of an action.
pub fn audit_field(id: &str) -> String {
    format!("actions.{id}")
}
