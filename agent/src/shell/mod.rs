//! Remote shells. The runner hands a `shell` action to a process of its own
//! (a transient unit under systemd, outside the collectors' sandbox; a
//! detached process elsewhere), so the timer's run ends as usual while the
//! session lasts. That process reads its request file, meets the
//! administrator on the server's relay, and writes a result file the next
//! run reports.

pub mod connect;
mod pty;
mod session;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use penguindome_protocol::SecretKey;
use penguindome_protocol::actions::{Action, ActionState, Task};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::files::write_atomic;
use penguindome_protocol::sealing::Recipient;
use penguindome_protocol::shell::{Ephemeral, ShellHello, Side};
use serde::{Deserialize, Serialize};

use crate::actions::exec::{Executor, Outcome};
use crate::actions::journal::{Leftover, Settled};

/// What the session process reads: everything it needs, so it does not
/// depend on how the agent that started it was invoked.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The journaled `shell` action.
    pub action: Action,
    /// The agent's configuration as the run used it (after a move).
    pub config: AgentConfig,
    /// This client's id.
    pub machine_id: String,
    /// The client key.
    pub key_path: PathBuf,
}

/// Where a session's request waits for its process.
pub fn request_path(actions_dir: &Path, id: &str) -> PathBuf {
    actions_dir.join(format!("{id}.shell-request"))
}

/// Where a session leaves its outcome for the next run.
pub fn result_path(actions_dir: &Path, id: &str) -> PathBuf {
    actions_dir.join(format!("{id}.shell-result"))
}

/// The unit a session runs in.
pub fn unit_name(id: &str) -> String {
    format!("penguindome-shell-{id}.service")
}

/// Starts the session's process; says where it runs.
pub fn start(
    executor: Executor,
    actions_dir: &Path,
    request: &SessionRequest,
) -> Result<Leftover, String> {
    let id = &request.action.id;
    let path = request_path(actions_dir, id);
    let bytes = serde_json::to_vec(request).expect("requests serialize");
    write_atomic(&path, &bytes, 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the agent's own binary: {e}"))?;
    let limit = match &request.action.task {
        Task::Shell(t) => t.max_duration_secs + 60,
        _ => 60,
    };
    let started = match executor {
        Executor::Unit => in_unit(&exe, id, &path, limit),
        Executor::Here => detached(&exe, &path),
    };
    started.map_err(|e| {
        let _ = std::fs::remove_file(&path);
        format!("cannot start the shell session: {e:#}")
    })
}

fn in_unit(exe: &Path, id: &str, request: &Path, limit: u64) -> anyhow::Result<Leftover> {
    let unit = unit_name(id);
    let out = Command::new("systemd-run")
        .args(["--quiet", "--collect", "--service-type=exec"])
        .arg(format!("--unit={unit}"))
        .arg(format!("--description=PenguinDome remote shell {id}"))
        .arg(format!("--property=RuntimeMaxSec={limit}"))
        .arg("--")
        .arg(exe)
        .arg("shell-session")
        .arg(request)
        .stdin(Stdio::null())
        .output()
        .context("cannot run systemd-run")?;
    anyhow::ensure!(
        out.status.success(),
        "systemd-run failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(Leftover::Unit(unit))
}

fn detached(exe: &Path, request: &Path) -> anyhow::Result<Leftover> {
    use std::os::unix::process::CommandExt as _;
    let child = Command::new(exe)
        .arg("shell-session")
        .arg(request)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Whoever ran the agent may wait for its output to end.
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the session process")?;
    Ok(Leftover::ProcessGroup(child.id() as i32))
}

/// Looks for a session's result, or whether it still runs.
pub fn settle(actions_dir: &Path, id: &str, leftover: Option<&Leftover>) -> Settled {
    let result = result_path(actions_dir, id);
    let read = || {
        std::fs::read(&result)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Outcome>(&bytes).ok())
    };
    if let Some(outcome) = read() {
        return Settled::Finished(outcome);
    }
    let alive = match leftover {
        Some(Leftover::Unit(unit)) => Command::new("systemctl")
            .args(["is-active", "--quiet", unit.as_str()])
            .status()
            .is_ok_and(|s| s.success()),
        Some(Leftover::ProcessGroup(pgid)) => {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*pgid), None).is_ok()
        }
        None => false,
    };
    // Looked at again: the session may have written it and gone meanwhile.
    match (alive, read()) {
        (_, Some(outcome)) => Settled::Finished(outcome),
        (true, None) => Settled::Running,
        (false, None) => Settled::Lost,
    }
}

/// Removes a settled session's files.
pub fn forget(actions_dir: &Path, id: &str) {
    let _ = std::fs::remove_file(result_path(actions_dir, id));
    let _ = std::fs::remove_file(request_path(actions_dir, id));
}

/// `penguindome-agent shell-session FILE`: runs one session and leaves its
/// outcome beside the request.
pub fn run_from_file(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // One use: the request goes before anything else happens.
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    let request: SessionRequest =
        serde_json::from_slice(&bytes).context("the request is malformed")?;
    let outcome = match run_session(&request) {
        Ok(done) => done,
        Err(e) => Outcome {
            state: ActionState::Failed,
            detail: format!("{e:#}"),
            output: None,
        },
    };
    log::info!(action_id:% = request.action.id; "shell session {}: {}", request.action.id, outcome.detail);
    let dir = path.parent().unwrap_or(Path::new("."));
    let result = result_path(dir, &request.action.id);
    write_atomic(&result, &serde_json::to_vec(&outcome)?, 0o600)
        .with_context(|| format!("cannot write {}", result.display()))?;
    Ok(())
}

fn run_session(request: &SessionRequest) -> anyhow::Result<Outcome> {
    let Task::Shell(task) = &request.action.task else {
        anyhow::bail!("the action is not a shell");
    };
    let key_bytes = std::fs::read(&request.key_path)
        .with_context(|| format!("cannot read the client key {}", request.key_path.display()))?;
    let key = SecretKey::from_bytes(&key_bytes).context("the client key is unreadable")?;
    let ephemeral = Ephemeral::new();
    let agent_key = ephemeral.public_b64();
    let keys = ephemeral
        .agree(Side::Agent, &task.admin_key, &task.session_id)
        .context("cannot agree on a session key with the administrator")?;
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&keys.transcript)?);
    let transcript_keys = Recipient::from_bytes(task.transcript_to.as_bytes())
        .and_then(|r| r.encrypt_armored(&plain))
        .context("cannot seal the session's keys for its transcript")?;
    let hello = ShellHello {
        session_id: task.session_id.clone(),
        action_id: request.action.id.clone(),
        admin_key: task.admin_key.clone(),
        agent_key,
        transcript_keys,
    };
    let started_at = chrono::Utc::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the session's runtime")?;
    let finished = runtime.block_on(async {
        let socket = connect::connect(&request.config, &key, &request.machine_id, &hello).await?;
        session::run(task, socket, keys.sealer, keys.opener).await
    })?;
    Ok(Outcome {
        state: ActionState::Succeeded,
        detail: finished.detail,
        output: Some(penguindome_protocol::actions::CommandOutput {
            exit_status: finished.exit_code,
            started_at,
            finished_at: chrono::Utc::now(),
            ..Default::default()
        }),
    })
}
