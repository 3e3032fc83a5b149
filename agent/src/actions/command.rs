//! Running a one-time command: `/bin/sh -c SCRIPT` as root or a given user,
//! in a process group of its own that is killed whole at the timeout, with
//! stdout and stderr kept up to a cap each.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use penguindome_protocol::actions::{ActionState, CommandOutput, CommandTask, MAX_COMMAND_OUTPUT};

/// The PATH commands get.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the command; its final state, a one-line summary and its output.
/// `started` is told the process group as soon as it exists, so that a
/// crash of the agent can still kill it.
pub fn run(
    task: &CommandTask,
    started: &dyn Fn(i32),
) -> (ActionState, String, Option<CommandOutput>) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&task.script)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Err(why) = as_user(&mut cmd, task.user.as_deref()) {
        return (ActionState::Refused, why, None);
    }
    let started_at = Utc::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                ActionState::Failed,
                format!("cannot start /bin/sh: {e}"),
                None,
            );
        }
    };
    started(child.id() as i32);
    let (status, out, err) = wait_capped(child, Duration::from_secs(task.timeout_secs.max(1)));
    let mut output = CommandOutput {
        stdout: base64::engine::general_purpose::STANDARD.encode(&out.kept),
        stderr: base64::engine::general_purpose::STANDARD.encode(&err.kept),
        stdout_dropped: out.dropped,
        stderr_dropped: err.dropped,
        started_at,
        finished_at: Utc::now(),
        ..Default::default()
    };
    let (state, summary) = judge(status, task.timeout_secs, &mut output);
    (state, summary, Some(output))
}

/// Sets user, group, HOME and USER for a named user.
fn as_user(cmd: &mut Command, user: Option<&str>) -> Result<(), String> {
    let Some(name) = user else {
        cmd.env("HOME", "/root").env("USER", "root");
        return Ok(());
    };
    let u = User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| format!("no user named {name:?} on this machine"))?;
    cmd.uid(u.uid.as_raw())
        .gid(u.gid.as_raw())
        .env("HOME", &u.dir)
        .env("USER", &u.name)
        .current_dir(if u.dir.is_dir() {
            u.dir.as_path()
        } else {
            std::path::Path::new("/")
        });
    Ok(())
}

/// What was kept of one stream, and how much was dropped.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

fn capture(mut stream: impl Read) -> Captured {
    let mut kept = Vec::new();
    let _ = (&mut stream)
        .take(MAX_COMMAND_OUTPUT as u64)
        .read_to_end(&mut kept);
    // Count and drop the rest, so the command never blocks on a full pipe.
    let dropped = std::io::copy(&mut stream, &mut std::io::sink()).unwrap_or(0);
    Captured { kept, dropped }
}

/// Waits up to `timeout`, then kills the whole process group.
fn wait_capped(
    mut child: std::process::Child,
    timeout: Duration,
) -> (Option<std::io::Result<ExitStatus>>, Captured, Captured) {
    let pgid = Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let out = scope.spawn(move || capture(stdout));
        let err = scope.spawn(move || capture(stderr));
        scope.spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        let status = match done_rx.recv_timeout(timeout) {
            Ok(status) => Some(status),
            Err(_) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = done_rx.recv();
                None
            }
        };
        // The shell may be gone while its children still hold the pipes.
        let _ = killpg(pgid, Signal::SIGKILL);
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    })
}

fn judge(
    status: Option<std::io::Result<ExitStatus>>,
    timeout_secs: u64,
    output: &mut CommandOutput,
) -> (ActionState, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => {
            output.timed_out = true;
            output.signal = Some(Signal::SIGKILL as i32);
            (
                ActionState::Failed,
                format!("timed out after {timeout_secs} s; killed with everything it started"),
            )
        }
        Some(Err(e)) => (
            ActionState::Failed,
            format!("cannot wait for the command: {e}"),
        ),
        Some(Ok(st)) => {
            output.exit_status = st.code();
            output.signal = st.signal();
            match (st.code(), st.signal()) {
                (Some(0), _) => (ActionState::Succeeded, "exited with status 0".into()),
                (Some(c), _) => (ActionState::Failed, format!("exited with status {c}")),
                (None, Some(s)) => (ActionState::Failed, format!("killed by signal {s}")),
                (None, None) => (ActionState::Failed, "ended without a status".into()),
            }
        }
    }
}

/// Kills what is left of a command a crashed run started.
pub fn kill_leftover(pgid: i32) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(script: &str, timeout_secs: u64) -> CommandTask {
        CommandTask {
            name: "t".into(),
            script: script.into(),
            user: None,
            timeout_secs,
        }
    }

    fn decode(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn status_and_output_are_kept() {
        let (state, summary, out) = run(&task("echo out; echo err >&2; exit 3", 10), &|_| {});
        let out = out.unwrap();
        assert_eq!(
            (state, summary.as_str()),
            (ActionState::Failed, "exited with status 3")
        );
        assert_eq!(decode(&out.stdout), b"out\n");
        assert_eq!(decode(&out.stderr), b"err\n");
        assert_eq!(out.exit_status, Some(3));
        let (state, _, _) = run(&task("true", 10), &|_| {});
        assert_eq!(state, ActionState::Succeeded);
    }

    #[test]
    fn output_past_the_cap_is_counted_and_dropped() {
        let (state, _, out) = run(&task("head -c 5242880 /dev/zero", 30), &|_| {});
        let out = out.unwrap();
        assert_eq!(state, ActionState::Succeeded);
        assert_eq!(decode(&out.stdout).len(), MAX_COMMAND_OUTPUT);
        assert_eq!(
            out.stdout_dropped,
            5 * 1024 * 1024 - MAX_COMMAND_OUTPUT as u64
        );
    }

    #[test]
    fn the_timeout_kills_the_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 3; touch {}) & sleep 60", marker.display());
        let t = std::time::Instant::now();
        let (state, summary, out) = run(&task(&script, 1), &|_| {});
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(state, ActionState::Failed);
        assert!(summary.contains("timed out"), "{summary}");
        assert!(out.unwrap().timed_out);
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "a child outlived the timeout");
    }

    #[test]
    fn an_unknown_user_is_refused() {
        let mut t = task("true", 5);
        t.user = Some("no-such-user-pd".into());
        assert_eq!(run(&t, &|_| {}).0, ActionState::Refused);
    }
}
