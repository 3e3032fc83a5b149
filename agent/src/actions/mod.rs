//! Acting on what the server's signed `/update` answer asks: each action is
//! checked (this client's, not expired, a kind this release knows),
//! journaled durably, run at most once, and its outcome kept until the
//! server has stored it.

pub mod command;
pub mod exec;
pub mod journal;
pub mod patch;
pub mod wipe;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::{
    Action, ActionHeader, ActionReport, ActionState, ConfigureTask, SealedAction, Task,
};
use penguindome_protocol::wire::is_valid_client_id;

use journal::{Claim, Journal};

/// Where actions are checked and run.
pub struct Runner<'a> {
    /// The durable journal.
    pub journal: Journal,
    /// This client's id: actions for anyone else are refused.
    pub client_id: &'a str,
    /// Directories patches may write below.
    pub patch_roots: Vec<PathBuf>,
    /// Where the work runs.
    pub executor: exec::Executor,
    /// Hears that an action started (to tell the server at once).
    pub started: &'a dyn Fn(&ActionReport),
    /// Moves the agent to another server address (a `configure` action),
    /// which only the agent's own process can try: it needs its key.
    pub mover: &'a dyn Fn(&str, &ConfigureTask) -> exec::Outcome,
    /// Starts a shell session on its own (it outlives this run); says
    /// where it runs, or why it could not start.
    pub shell: &'a dyn Fn(&Action) -> Result<journal::Leftover, String>,
}

/// A shell starter for runners that only report: it starts nothing.
pub fn no_shell(_: &Action) -> Result<journal::Leftover, String> {
    Err("this runner does not open shells".into())
}

/// A mover for runners that only report: it runs nothing.
pub fn no_mover(_: &str, _: &ConfigureTask) -> exec::Outcome {
    exec::Outcome {
        state: ActionState::Refused,
        detail: "this runner does not move the agent".into(),
        output: None,
    }
}

/// What one action came to in this run.
#[derive(Debug, PartialEq)]
pub enum Handled {
    /// Run now, with its final state and what happened.
    Ran(ActionState, String),
    /// Refused before anything was done (and journaled so).
    Refused(String),
    /// Its id is journaled already: not run again.
    AlreadySeen(ActionState),
    /// Started on its own; a later run reports how it ended.
    Detached,
    /// Not for this client or unreadable: dropped without a trace.
    Dropped(String),
}

impl Runner<'_> {
    /// Handles every action of an answer, in order.
    pub fn handle_all(&self, actions: &[SealedAction], now: DateTime<Utc>) -> Vec<Handled> {
        actions
            .iter()
            .map(|a| {
                let handled = self.handle(a, now).unwrap_or_else(|e| {
                    Handled::Dropped(format!("the action journal failed: {e}"))
                });
                log_handled(&handled, &a.action);
                handled
            })
            .collect()
    }

    /// Checks, journals and runs one action.
    pub fn handle(&self, sealed: &SealedAction, now: DateTime<Utc>) -> std::io::Result<Handled> {
        let header: ActionHeader = match serde_json::from_str(&sealed.action) {
            Ok(h) => h,
            Err(e) => return Ok(Handled::Dropped(format!("unreadable action: {e}"))),
        };
        if !is_valid_client_id(&header.id) {
            return Ok(Handled::Dropped(format!(
                "action id {:?} is malformed",
                header.id
            )));
        }
        if header.client_id != self.client_id {
            return Ok(Handled::Dropped(format!(
                "action {} is addressed to client {}, not this one",
                header.id, header.client_id
            )));
        }
        if let Some(why) = refusal(&header, &sealed.action, now) {
            return self.refuse(&header, why);
        }
        let action: Action = serde_json::from_str(&sealed.action).expect("checked by refusal()");
        match self
            .journal
            .claim(&header.id, header.expires_at, ActionState::Started, None)?
        {
            Claim::Seen(e) => return Ok(Handled::AlreadySeen(e.state)),
            Claim::New => {}
        }
        if let Some(started) = self.journal.get(&header.id)? {
            (self.started)(&started.report());
        }
        let outcome = match &action.task {
            Task::Configure(task) => (self.mover)(&header.id, task),
            Task::Shell(_) => match (self.shell)(&action) {
                Ok(leftover) => {
                    self.journal.detached_in(&header.id, leftover)?;
                    return Ok(Handled::Detached);
                }
                Err(detail) => exec::Outcome {
                    state: ActionState::Failed,
                    detail,
                    output: None,
                },
            },
            _ => self.execute(action, &header.id),
        };
        self.journal.finish_with(
            &header.id,
            outcome.state,
            Some(outcome.detail.clone()),
            outcome.output,
        )?;
        Ok(Handled::Ran(outcome.state, outcome.detail))
    }

    /// Runs a task's work where the executor puts it.
    fn execute(&self, action: Action, id: &str) -> exec::Outcome {
        let request = exec::Request {
            action,
            patch_roots: self.patch_roots.clone(),
        };
        self.executor.run(&request, &|leftover| {
            if let Err(e) = self.journal.running_in(id, leftover) {
                log::error!("cannot note where action {id} runs: {e}");
            }
        })
    }

    fn refuse(&self, header: &ActionHeader, why: String) -> std::io::Result<Handled> {
        match self.journal.claim(
            &header.id,
            header.expires_at,
            ActionState::Refused,
            Some(why.clone()),
        )? {
            Claim::Seen(e) => Ok(Handled::AlreadySeen(e.state)),
            Claim::New => Ok(Handled::Refused(why)),
        }
    }
}

/// Why an action for this client must not run, if it must not.
fn refusal(header: &ActionHeader, text: &str, now: DateTime<Utc>) -> Option<String> {
    if now > header.expires_at {
        return Some(format!(
            "the action expired at {}",
            header.expires_at.to_rfc3339()
        ));
    }
    match serde_json::from_str::<Action>(text) {
        Ok(_) => None,
        Err(_) if !KNOWN_KINDS.contains(&header.kind.as_str()) => Some(format!(
            "this agent (version {}) cannot run {:?} actions; upgrade it",
            env!("CARGO_PKG_VERSION"),
            header.kind
        )),
        Err(e) => Some(format!("the {} action is malformed: {e}", header.kind)),
    }
}

/// The kinds this release runs.
const KNOWN_KINDS: &[&str] = &["patch", "command", "wipe", "configure", "shell"];

fn log_handled(handled: &Handled, text: &str) {
    let id = serde_json::from_str::<ActionHeader>(text)
        .map(|h| h.id)
        .unwrap_or_default();
    match handled {
        Handled::Ran(ActionState::Succeeded, done) => {
            log::info!(action_id:% = id; "action {id} succeeded: {done}")
        }
        Handled::Ran(state, why) => {
            log::warn!(action_id:% = id; "action {id} {}: {why}", state.as_str())
        }
        Handled::Refused(why) => log::warn!(action_id:% = id; "action {id} refused: {why}"),
        Handled::AlreadySeen(state) => {
            log::info!(action_id:% = id; "action {id} was handled before ({}); not running it again", state.as_str())
        }
        Handled::Detached => {
            log::info!(action_id:% = id; "action {id} started on its own; a later run reports how it ended")
        }
        Handled::Dropped(why) => log::error!("an action was dropped: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use penguindome_protocol::actions::{PatchTask, Task};

    const ME: &str = "fedcba9876543210fedcba9876543210";

    fn sealed(id: &str, client: &str, expires: DateTime<Utc>, path: &str) -> SealedAction {
        let action = Action {
            id: id.into(),
            client_id: client.into(),
            created_at: Utc::now(),
            expires_at: expires,
            queued_by: "alice".into(),
            task: Task::Patch(PatchTask {
                path: path.into(),
                mode: 0o644,
                owner: None,
                group: None,
                content: base64::engine::general_purpose::STANDARD.encode(b"hello"),
                sha256: String::new(),
            }),
        };
        SealedAction {
            action: action.to_text(),
            endorsements: vec![],
        }
    }

    fn runner(dir: &std::path::Path) -> Runner<'static> {
        Runner {
            journal: Journal::open(&dir.join("journal")).unwrap(),
            client_id: ME,
            patch_roots: vec![dir.join("root")],
            executor: exec::Executor::Here,
            started: &|_| {},
            mover: &no_mover,
            shell: &no_shell,
        }
    }

    #[test]
    fn an_action_runs_once_and_others_are_refused_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(dir.path());
        let later = Utc::now() + chrono::Duration::hours(1);
        let target = dir.path().join("root/f");
        let a = sealed(&"a".repeat(32), ME, later, &target.display().to_string());
        assert!(matches!(
            r.handle(&a, Utc::now()).unwrap(),
            Handled::Ran(ActionState::Succeeded, _)
        ));
        std::fs::remove_file(&target).unwrap();
        assert_eq!(
            r.handle(&a, Utc::now()).unwrap(),
            Handled::AlreadySeen(ActionState::Succeeded)
        );
        assert!(!target.exists(), "a replay does not run again");

        let other = sealed(
            &"b".repeat(32),
            "0".repeat(32).as_str(),
            later,
            &target.display().to_string(),
        );
        assert!(matches!(
            r.handle(&other, Utc::now()).unwrap(),
            Handled::Dropped(_)
        ));
        let past = Utc::now() - chrono::Duration::seconds(1);
        let expired = sealed(&"c".repeat(32), ME, past, &target.display().to_string());
        assert!(
            matches!(r.handle(&expired, Utc::now()).unwrap(), Handled::Refused(w) if w.contains("expired"))
        );
        assert!(!target.exists());

        let mut later_kind = sealed(&"d".repeat(32), ME, later, &target.display().to_string());
        later_kind.action = later_kind
            .action
            .replace("\"kind\":\"patch\"", "\"kind\":\"teleport\"");
        assert!(
            matches!(r.handle(&later_kind, Utc::now()).unwrap(), Handled::Refused(w) if w.contains("upgrade"))
        );
        let bad_id = sealed("../../etc/x", ME, later, &target.display().to_string());
        assert!(matches!(
            r.handle(&bad_id, Utc::now()).unwrap(),
            Handled::Dropped(_)
        ));
        let reports: Vec<_> = r
            .journal
            .unreported()
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            reports,
            vec![
                ActionState::Succeeded,
                ActionState::Refused,
                ActionState::Refused
            ]
        );
    }
}
