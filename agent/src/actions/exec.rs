//! Where an action's work runs. Under systemd it runs in a transient unit
//! of its own (`penguindome-action-ID.service`, started with systemd-run),
//! outside the agent's sandbox, which keeps /usr and /etc read-only and
//! homes out of reach; the unit's cgroup is what a timeout or a crash
//! recovery stops. Elsewhere (a shell, a container without systemd) it
//! runs in the agent's own process.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use penguindome_protocol::actions::{Action, ActionState, CommandOutput, Task};
use serde::{Deserialize, Serialize};

use super::command;
use super::journal::Leftover;
use super::{patch, wipe};

/// What `penguindome-agent act` reads on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The (already checked and journaled) action.
    pub action: Action,
    /// Directories patches may write below.
    pub patch_roots: Vec<PathBuf>,
}

/// How an action ended, as `act` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// Its final state.
    pub state: ActionState,
    /// What happened, in a line.
    pub detail: String,
    /// A command's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CommandOutput>,
}

/// Where actions run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Executor {
    /// In this process.
    Here,
    /// In a transient systemd unit.
    Unit,
}

impl Executor {
    /// A transient unit when this run is itself a systemd service run as
    /// root (the packaged timer's); here otherwise.
    pub fn detect() -> Self {
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some()
            && std::path::Path::new("/run/systemd/system").is_dir()
            && nix::unistd::geteuid().is_root();
        if under_systemd {
            Self::Unit
        } else {
            Self::Here
        }
    }

    /// Runs a journaled action; `running` hears where it lives.
    pub fn run(&self, req: &Request, running: &dyn Fn(Leftover)) -> Outcome {
        match self {
            Self::Here => perform(req, &|pgid| running(Leftover::ProcessGroup(pgid))),
            Self::Unit => in_unit(req, running),
        }
    }
}

/// Does the work of an action in this process.
pub fn perform(req: &Request, started: &dyn Fn(i32)) -> Outcome {
    match &req.action.task {
        Task::Patch(task) => {
            let (state, detail) = match patch::apply(task, &req.patch_roots) {
                Ok(done) => (ActionState::Succeeded, done),
                Err(e) if e.is_refusal() => (ActionState::Refused, e.to_string()),
                Err(e) => (ActionState::Failed, e.to_string()),
            };
            Outcome {
                state,
                detail,
                output: None,
            }
        }
        Task::Command(task) => {
            let (state, detail, output) = command::run(task, started);
            Outcome {
                state,
                detail,
                output,
            }
        }
        Task::Wipe(task) => {
            let (state, detail, output) = wipe::run(task);
            Outcome {
                state,
                detail,
                output,
            }
        }
        // The runner hands these to the agent itself.
        Task::Configure(_) => super::no_mover("", &Default::default()),
        Task::Shell(_) => Outcome {
            state: ActionState::Refused,
            detail: "shell sessions run in a process of their own".into(),
            output: None,
        },
    }
}

/// The unit an action runs in.
pub fn unit_name(id: &str) -> String {
    format!("penguindome-action-{id}.service")
}

/// Longest the unit may live: the command's timeout and a margin, so the
/// agent's own timeout fires first and reports it.
fn unit_limit(action: &Action) -> u64 {
    match &action.task {
        Task::Command(c) => c.timeout_secs.max(1) + 60,
        Task::Patch(_) => 600,
        Task::Wipe(_) => 3600,
        Task::Configure(_) | Task::Shell(_) => 60,
    }
}

/// Runs `penguindome-agent act` in a transient unit and reads its outcome.
fn in_unit(req: &Request, running: &dyn Fn(Leftover)) -> Outcome {
    let failed = |detail: String| Outcome {
        state: ActionState::Failed,
        detail,
        output: None,
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot find the agent's own binary: {e}")),
    };
    let unit = unit_name(&req.action.id);
    let mut child = match Command::new("systemd-run")
        .args([
            "--quiet",
            "--wait",
            "--pipe",
            "--collect",
            "--service-type=exec",
        ])
        .arg(format!("--unit={unit}"))
        .arg(format!(
            "--description=PenguinDome action {}",
            req.action.id
        ))
        .arg(format!(
            "--property=RuntimeMaxSec={}",
            unit_limit(&req.action)
        ))
        .arg("--")
        .arg(exe)
        .arg("act")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run systemd-run: {e}")),
    };
    running(Leftover::Unit(unit.clone()));
    let request = serde_json::to_vec(req).expect("requests serialize");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&request);
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return failed(format!("cannot wait for {unit}: {e}")),
    };
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        failed(format!(
            "{unit} ended without an outcome ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// Stops what a crashed run left behind.
pub fn stop_leftover(l: &Leftover) {
    match l {
        Leftover::ProcessGroup(pgid) => command::kill_leftover(*pgid),
        Leftover::Unit(unit) => {
            let _ = Command::new("systemctl")
                .args(["stop", unit.as_str()])
                .output();
        }
    }
}

/// `penguindome-agent act`: performs the action read from stdin and
/// prints its outcome (what the transient unit runs).
pub fn act_from_stdin() -> anyhow::Result<()> {
    let req: Request = serde_json::from_reader(std::io::stdin().lock())?;
    let outcome = perform(&req, &|_| {});
    serde_json::to_writer(std::io::stdout().lock(), &outcome)?;
    Ok(())
}
