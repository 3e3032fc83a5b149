//! The durable journal of actions: one small file per action id, written
//! (and fsync'd, with its directory) before the action starts. An id found
//! here is never run again; an action still `started` when a run begins
//! was cut short by a crash and is reported as interrupted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use penguindome_protocol::actions::{ActionReport, ActionState, CommandOutput};
use penguindome_protocol::files::write_atomic;
use serde::{Deserialize, Serialize};

/// How long past its expiry an entry is kept, so that clock corrections
/// cannot make an old action look new again.
const KEEP_AFTER_EXPIRY: chrono::Duration = chrono::Duration::days(7);

/// What the journal knows of one action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The action.
    pub id: String,
    /// Its expiry, to know when the entry may go.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub state: ActionState,
    /// When it got there.
    #[serde(with = "penguindome_protocol::envelope::utc")]
    pub at: DateTime<Utc>,
    /// Why, or what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A command's output and exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CommandOutput>,
    /// What to kill should the agent die while the action runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftover: Option<Leftover>,
    /// Runs on its own past the run that started it (a shell session):
    /// a later run asks whether it finished rather than stopping it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
    /// The latest state the server acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<ActionState>,
}

/// Where a running action lives, to stop it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Leftover {
    /// A process group started here.
    ProcessGroup(i32),
    /// A transient systemd unit.
    Unit(String),
}

impl Entry {
    /// The report of the entry's current state.
    pub fn report(&self) -> ActionReport {
        ActionReport {
            action_id: self.id.clone(),
            state: self.state,
            at: self.at,
            detail: self.detail.clone(),
            output: self.output.clone(),
        }
    }
}

/// Where a detached action stands when a run looks.
pub enum Settled {
    /// Still running: leave it.
    Running,
    /// Done: this is how.
    Finished(super::exec::Outcome),
    /// Gone without a result.
    Lost,
}

/// The journal directory.
pub struct Journal {
    dir: PathBuf,
}

/// Whether an action was new to the journal.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// Journaled now: run it.
    New,
    /// Seen before: never run again.
    Seen(Box<Entry>),
}

impl Journal {
    /// Opens (creating) the journal in `dir`, private to root.
    pub fn open(dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Reads one entry; None when the id is unknown.
    pub fn get(&self, id: &str) -> io::Result<Option<Entry>> {
        match fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes an entry durably (file and directory fsync'd).
    pub fn put(&self, entry: &Entry) -> io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        write_atomic(&self.path(&entry.id), &bytes, 0o600)
    }

    /// Records `state` for an action unless its id is journaled already;
    /// only a [`Claim::New`] may be run.
    pub fn claim(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
        state: ActionState,
        detail: Option<String>,
    ) -> io::Result<Claim> {
        if let Some(seen) = self.get(id)? {
            return Ok(Claim::Seen(Box::new(seen)));
        }
        self.put(&Entry {
            id: id.to_string(),
            expires_at,
            state,
            at: Utc::now(),
            detail,
            output: None,
            leftover: None,
            detached: false,
            reported: None,
        })?;
        Ok(Claim::New)
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Entry)) -> io::Result<()> {
        let mut entry = self
            .get(id)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("action {id}")))?;
        change(&mut entry);
        self.put(&entry)
    }

    /// Moves an action to a new state.
    pub fn finish(&self, id: &str, state: ActionState, detail: Option<String>) -> io::Result<()> {
        self.finish_with(id, state, detail, None)
    }

    /// Moves an action to its final state, with a command's output.
    pub fn finish_with(
        &self,
        id: &str,
        state: ActionState,
        detail: Option<String>,
        output: Option<CommandOutput>,
    ) -> io::Result<()> {
        self.update(id, |e| {
            e.state = state;
            e.at = Utc::now();
            e.detail = detail;
            e.output = output;
            e.leftover = None;
        })
    }

    /// Notes where a running action lives.
    pub fn running_in(&self, id: &str, leftover: Leftover) -> io::Result<()> {
        self.update(id, |e| e.leftover = Some(leftover))
    }

    /// Notes that an action runs on past this run, in `leftover`.
    pub fn detached_in(&self, id: &str, leftover: Leftover) -> io::Result<()> {
        self.update(id, |e| {
            e.leftover = Some(leftover);
            e.detached = true;
        })
    }

    /// Every entry, in id order. Damaged files are skipped with a warning
    /// (never deleted: their id must stay taken).
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for item in fs::read_dir(&self.dir)? {
            let path = item?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match self.get(id) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(e) => log::warn!("action journal entry {} is damaged: {e}", path.display()),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Marks actions a crashed run left `started` as interrupted, after
    /// stopping what is left of them (`stop`). Runs hold the run lock and
    /// finish their actions, so none is running now, except detached ones:
    /// `settle` says where those stand, and only a lost one is interrupted.
    pub fn recover(
        &self,
        stop: &dyn Fn(&Leftover),
        settle: &dyn Fn(&Entry) -> Settled,
    ) -> io::Result<Vec<String>> {
        let mut interrupted = Vec::new();
        for e in self.entries()? {
            if e.state != ActionState::Started {
                continue;
            }
            if e.detached {
                match settle(&e) {
                    Settled::Running => continue,
                    Settled::Finished(o) => {
                        self.finish_with(&e.id, o.state, Some(o.detail), o.output)?;
                        continue;
                    }
                    Settled::Lost => {}
                }
            } else if let Some(l) = &e.leftover {
                stop(l);
            }
            let why = if e.detached {
                "its process ended without leaving a result (killed, or the machine restarted)"
            } else {
                "the agent stopped while the action ran; it is not run again"
            };
            self.finish(&e.id, ActionState::Interrupted, Some(why.into()))?;
            interrupted.push(e.id);
        }
        Ok(interrupted)
    }

    /// Entries whose current state the server has not acknowledged.
    pub fn unreported(&self) -> io::Result<Vec<Entry>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.reported != Some(e.state))
            .collect())
    }

    /// Notes that the server stored `state` for `id`.
    pub fn mark_reported(&self, id: &str, state: ActionState) -> io::Result<()> {
        if let Some(mut entry) = self.get(id)? {
            entry.reported = Some(state);
            self.put(&entry)?;
        }
        Ok(())
    }

    /// Forgets final, reported entries long past their expiry (the agent
    /// refuses the action by then anyway). Returns how many.
    pub fn prune(&self, now: DateTime<Utc>) -> io::Result<usize> {
        let mut n = 0;
        for e in self.entries()? {
            if e.state.is_final()
                && e.reported == Some(e.state)
                && e.expires_at + KEEP_AFTER_EXPIRY < now
            {
                fs::remove_file(self.path(&e.id))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn an_id_is_claimed_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("actions")).unwrap();
        let expires = Utc::now() + chrono::Duration::days(1);
        assert_eq!(
            j.claim(ID, expires, ActionState::Started, None).unwrap(),
            Claim::New
        );
        let again = Journal::open(&dir.path().join("actions")).unwrap();
        let Claim::Seen(e) = again
            .claim(ID, expires, ActionState::Started, None)
            .unwrap()
        else {
            panic!("claimed twice")
        };
        assert_eq!(e.state, ActionState::Started);
    }

    #[test]
    fn a_crash_while_started_reads_as_interrupted_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let expires = Utc::now() + chrono::Duration::days(1);
        j.claim(ID, expires, ActionState::Started, None).unwrap();
        j.running_in(ID, Leftover::ProcessGroup(4242)).unwrap();
        let stopped = std::cell::RefCell::new(Vec::new());
        let stop = |l: &Leftover| stopped.borrow_mut().push(l.clone());
        let never = |_: &Entry| -> Settled { unreachable!("not detached") };
        assert_eq!(j.recover(&stop, &never).unwrap(), vec![ID.to_string()]);
        assert_eq!(*stopped.borrow(), vec![Leftover::ProcessGroup(4242)]);
        let e = j.get(ID).unwrap().unwrap();
        assert_eq!(e.state, ActionState::Interrupted);
        assert_eq!(j.unreported().unwrap().len(), 1);
        j.mark_reported(ID, ActionState::Interrupted).unwrap();
        assert!(j.unreported().unwrap().is_empty());
        assert!(
            j.recover(&stop, &never).unwrap().is_empty(),
            "nothing left started"
        );
    }

    #[test]
    fn a_detached_action_is_left_running_then_finished_from_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let expires = Utc::now() + chrono::Duration::days(1);
        j.claim(ID, expires, ActionState::Started, None).unwrap();
        j.detached_in(ID, Leftover::Unit("penguindome-shell-x.service".into()))
            .unwrap();
        let stop = |_: &Leftover| panic!("a detached action is never stopped");
        assert!(j.recover(&stop, &|_| Settled::Running).unwrap().is_empty());
        assert_eq!(j.get(ID).unwrap().unwrap().state, ActionState::Started);
        let done = |_: &Entry| {
            Settled::Finished(super::super::exec::Outcome {
                state: ActionState::Succeeded,
                detail: "the shell exited with status 0".into(),
                output: None,
            })
        };
        assert!(j.recover(&stop, &done).unwrap().is_empty());
        let e = j.get(ID).unwrap().unwrap();
        assert_eq!(e.state, ActionState::Succeeded);
        assert_eq!(e.detail.as_deref(), Some("the shell exited with status 0"));

        j.claim(&"e".repeat(32), expires, ActionState::Started, None)
            .unwrap();
        j.detached_in(&"e".repeat(32), Leftover::ProcessGroup(1))
            .unwrap();
        assert_eq!(
            j.recover(&stop, &|_| Settled::Lost).unwrap(),
            vec!["e".repeat(32)]
        );
    }

    #[test]
    fn only_reported_final_entries_long_expired_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let past = Utc::now() - chrono::Duration::days(30);
        j.claim(ID, past, ActionState::Succeeded, None).unwrap();
        assert_eq!(j.prune(Utc::now()).unwrap(), 0, "not reported yet");
        j.mark_reported(ID, ActionState::Succeeded).unwrap();
        assert_eq!(j.prune(Utc::now()).unwrap(), 1);
        assert!(j.get(ID).unwrap().is_none());
    }
}
