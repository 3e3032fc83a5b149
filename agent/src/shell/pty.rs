//! The shell on its PTY: root's login shell (or the site's command), in a
//! session of its own with the PTY as controlling terminal and a clean
//! environment.

use anyhow::Context as _;
use penguindome_protocol::shell::ShellTask;

/// A running shell and the PTY it talks through.
pub struct Shell {
    /// The PTY's controlling side.
    pub pty: pty_process::Pty,
    /// The shell process (its own session leader).
    pub child: tokio::process::Child,
}

/// Starts the task's command, or root's login shell, at the task's size.
pub fn spawn(task: &ShellTask) -> anyhow::Result<Shell> {
    let (pty, pts) = pty_process::open().context("cannot open a PTY")?;
    pty.resize(pty_process::Size::new(task.rows.max(1), task.cols.max(1)))
        .context("cannot size the PTY")?;
    let root = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .ok()
        .flatten();
    let home = root
        .as_ref()
        .map_or_else(|| "/root".into(), |u| u.dir.clone());
    let login_shell = root
        .as_ref()
        .map(|u| u.shell.clone())
        .filter(|s| s.is_file())
        .unwrap_or_else(|| "/bin/sh".into());
    let (program, args): (std::ffi::OsString, Vec<String>) = match task.command.split_first() {
        Some((program, args)) => (program.into(), args.to_vec()),
        None => (login_shell.clone().into(), vec!["-l".into()]),
    };
    let command = pty_process::Command::new(&program)
        .args(&args)
        .env_clear()
        .env("HOME", &home)
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", &login_shell)
        .env("TERM", &task.term)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .current_dir(if home.is_dir() {
            home.as_path()
        } else {
            std::path::Path::new("/")
        })
        .kill_on_drop(true);
    let child = command
        .spawn(pts)
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    Ok(Shell { pty, child })
}

/// The status a shell's end becomes: its exit code, or 128 + its signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// Hangs up on everything left in the shell's session, then kills it.
pub async fn hang_up(child: &mut tokio::process::Child) {
    use nix::sys::signal::{Signal, killpg};
    let Some(pid) = child.id() else { return };
    let group = nix::unistd::Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGHUP);
    if tokio::time::timeout(std::time::Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}
