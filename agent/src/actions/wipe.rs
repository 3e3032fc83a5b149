//! Wiping a lost machine's people: for every human account (UID_MIN to
//! UID_MAX from /etc/login.defs; never root or system accounts), end its
//! logind sessions, kill its processes, remove its home and delete the
//! account, and say what each step did. A dry run says what would go.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use penguindome_protocol::actions::{ActionState, CommandOutput, WipeTask};
use wait_timeout::ChildExt;

/// Longest one outside program (loginctl, systemctl, userdel) may take:
/// a wipe must end and report even when logind or systemd is stuck.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// login.defs' defaults when it says nothing.
const UID_MIN: u32 = 1000;
const UID_MAX: u32 = 60000;

/// Homes never removed, whoever owns them.
const KEPT_HOMES: &[&str] = &[
    "/",
    "/root",
    "/home",
    "/usr",
    "/etc",
    "/var",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/opt",
    "/srv",
    "/tmp",
    "/run",
    "/proc",
    "/sys",
    "/dev",
    "/nonexistent",
];

/// A human account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its home directory.
    pub home: PathBuf,
}

/// UID_MIN and UID_MAX from the login.defs text.
fn uid_range(login_defs: &str) -> (u32, u32) {
    let value = |key: &str| {
        login_defs.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(key))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
    };
    (
        value("UID_MIN").unwrap_or(UID_MIN),
        value("UID_MAX").unwrap_or(UID_MAX),
    )
}

/// The human accounts of the machine whose root is `root`.
pub fn human_accounts(root: &Path) -> std::io::Result<Vec<Account>> {
    let defs = std::fs::read_to_string(root.join("etc/login.defs")).unwrap_or_default();
    let (min, max) = uid_range(&defs);
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    Ok(passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            let account = Account {
                name: f[0].to_string(),
                uid,
                home: PathBuf::from(f.get(5)?),
            };
            (uid >= min.max(1) && uid <= max && account.name != "root").then_some(account)
        })
        .collect())
}

/// Wipes (or with `dry_run`, lists) every human account.
pub fn run(task: &WipeTask) -> (ActionState, String, Option<CommandOutput>) {
    let started_at = Utc::now();
    let accounts = match human_accounts(Path::new("/")) {
        Ok(a) => a,
        Err(e) => {
            return (
                ActionState::Failed,
                format!("cannot read /etc/passwd: {e}"),
                None,
            );
        }
    };
    let mut log = Vec::new();
    let mut failures = 0;
    for a in &accounts {
        let steps = if task.dry_run { plan(a) } else { wipe(a) };
        for (ok, line) in steps {
            failures += usize::from(!ok);
            log.push(format!("{} (uid {}): {line}", a.name, a.uid));
        }
    }
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    let summary = match (task.dry_run, accounts.is_empty(), failures) {
        (_, true, _) => "no human accounts: nothing to wipe".to_string(),
        (true, false, _) => format!("dry run: would wipe {}", names.join(", ")),
        (false, false, 0) => format!("wiped {}", names.join(", ")),
        (false, false, n) => format!("wiped {} with {n} failed step(s)", names.join(", ")),
    };
    let output = CommandOutput {
        stdout: base64::engine::general_purpose::STANDARD.encode(log.join("\n") + "\n"),
        started_at,
        finished_at: Utc::now(),
        exit_status: Some(i32::from(failures > 0)),
        ..Default::default()
    };
    let state = if failures == 0 {
        ActionState::Succeeded
    } else {
        ActionState::Failed
    };
    (state, summary, Some(output))
}

/// What a wipe of `a` would do.
fn plan(a: &Account) -> Vec<(bool, String)> {
    vec![
        (
            true,
            format!("would end {} session(s)", sessions(&a.name).len()),
        ),
        (
            true,
            format!("would kill {} process(es)", processes(a.uid).len()),
        ),
        (
            true,
            match removable_home(a) {
                Ok(home) => format!("would remove {}", home.display()),
                Err(why) => why,
            },
        ),
        (true, "would delete the account".to_string()),
    ]
}

/// Wipes one account, step by step.
fn wipe(a: &Account) -> Vec<(bool, String)> {
    let ended = sessions(&a.name);
    let end_sessions = if ended.is_empty() {
        (true, "no sessions".to_string())
    } else {
        match run_step("loginctl", &["terminate-user", &a.name]) {
            Ok(o) if o.status.success() => (true, format!("ended session(s) {}", ended.join(" "))),
            Ok(o) => (false, failed_step("loginctl terminate-user", &o)),
            Err(why) => (false, why),
        }
    };
    stop_user_units(a.uid);
    let mut kill = kill_all(a.uid);
    if kill.0 && !ended.is_empty() {
        kill = sessions_gone(&a.name, kill.1);
    }
    let remove_home = match removable_home(a) {
        Ok(home) => match std::fs::remove_dir_all(&home) {
            Ok(()) => (true, format!("removed {}", home.display())),
            Err(e) => (false, format!("cannot remove {}: {e}", home.display())),
        },
        Err(why) => (true, why),
    };
    let delete = match run_step("userdel", &[&a.name]) {
        Ok(o) if o.status.success() => (true, "deleted the account".to_string()),
        Ok(o) => (false, failed_step("userdel", &o)),
        Err(why) => (false, why),
    };
    vec![end_sessions, kill, remove_home, delete]
}

/// Runs one outside program of a wipe, killed after [`STEP_TIMEOUT`].
fn run_step(program: &str, args: &[&str]) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match child.wait_timeout(STEP_TIMEOUT) {
        Ok(Some(_)) => child
            .wait_with_output()
            .map_err(|e| format!("cannot read what {program} printed: {e}")),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{program} {} did not finish within {} s and was killed",
                args.join(" "),
                STEP_TIMEOUT.as_secs()
            ))
        }
        Err(e) => Err(format!("cannot wait for {program}: {e}")),
    }
}

/// The line for a program that ran and failed.
fn failed_step(what: &str, o: &Output) -> String {
    format!(
        "{what} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// Stops the user's systemd manager and slice, so nothing restarts what
/// the kill below ends. It waits for the stop (a queued stop races the
/// kill and can start the manager's exit units after it), but only for
/// [`STEP_TIMEOUT`]: a user manager slow to exit (seen in containers) must
/// not hold the wipe up, and the kill ends it then (best effort: absent
/// without systemd).
fn stop_user_units(uid: u32) {
    let _ = run_step(
        "systemctl",
        &[
            "stop",
            &format!("user@{uid}.service"),
            &format!("user-{uid}.slice"),
        ],
    );
}

/// The logind session ids of a user (none without logind).
fn sessions(name: &str) -> Vec<String> {
    run_step(
        "loginctl",
        &["show-user", name, "--property=Sessions", "--value"],
    )
    .ok()
    .filter(|o| o.status.success())
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Live processes whose real or effective uid is `uid` (zombies are dead
/// already: only their parent can make them go).
fn processes(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if zombie {
            return None;
        }
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        uids.iter().take(2).any(|u| *u == uid).then_some(pid)
    })
    .collect()
}

/// Kills every process of `uid`, again until none is left (a dying
/// parent may fork).
fn kill_all(uid: u32) -> (bool, String) {
    let mut killed = 0;
    for _ in 0..20 {
        let left = processes(uid);
        if left.is_empty() {
            return (true, format!("killed {killed} process(es)"));
        }
        for pid in left {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (
        false,
        format!("processes of uid {uid} keep appearing after {killed} were killed"),
    )
}

/// Waits until logind has closed the user's sessions, so an administrator
/// reading "succeeded" no longer sees them in `loginctl`. A session whose
/// scope still holds a process of another user (the root `su` or `sshd`
/// that opened it) stays "closing": after 5 s everything left in those
/// scopes is killed, then the wait goes on (10 s more at most).
fn sessions_gone(name: &str, killed: String) -> (bool, String) {
    if wait_for_no_sessions(name, 20) {
        return (true, killed);
    }
    for id in sessions(name) {
        let _ = run_step("loginctl", &["kill-session", &id, "--signal=SIGKILL"]);
        let _ = run_step("loginctl", &["terminate-session", &id]);
    }
    if wait_for_no_sessions(name, 40) {
        return (
            true,
            format!("{killed}; killed what was left in its sessions"),
        );
    }
    // Seen in containers: logind keeps listing a session as "closing" once
    // nothing is left in it. Only a session still active fails the step.
    let left = sessions(name);
    let active: Vec<&str> = left
        .iter()
        .map(String::as_str)
        .filter(|id| !closing(id))
        .collect();
    if active.is_empty() {
        return (
            true,
            format!(
                "{killed}; logind still lists closing session(s) {} with no process left",
                left.join(" ")
            ),
        );
    }
    (
        false,
        format!(
            "{killed}; session(s) {} still active after 15 s",
            active.join(" ")
        ),
    )
}

/// Whether logind says a session is closing (its processes are gone or
/// going).
fn closing(id: &str) -> bool {
    run_step(
        "loginctl",
        &["show-session", id, "--property=State", "--value"],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "closing")
    .unwrap_or(false)
}

/// Polls every 250 ms, `tries` times, until logind lists no session of
/// the user.
fn wait_for_no_sessions(name: &str, tries: u32) -> bool {
    for _ in 0..tries {
        if sessions(name).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    sessions(name).is_empty()
}

/// The home to remove, or why it stays.
fn removable_home(a: &Account) -> Result<PathBuf, String> {
    let home = &a.home;
    if !home.is_absolute() || KEPT_HOMES.iter().any(|k| Path::new(k) == home.as_path()) {
        return Err(format!("kept {}: not a personal home", home.display()));
    }
    match std::fs::symlink_metadata(home) {
        Ok(m) if m.is_dir() && m.uid() == a.uid => Ok(home.clone()),
        Ok(_) => Err(format!(
            "kept {}: not a directory {} owns",
            home.display(),
            a.name
        )),
        Err(_) => Err(format!("no home at {}", home.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_human_accounts_are_chosen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/login.defs"),
            "# comment\nUID_MIN\t\t 1000\nUID_MAX   2000\nSYS_UID_MAX 999\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n\
             daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice:/bin/bash\n\
             bob:x:1999:1999::/home/bob:/bin/bash\n\
             big:x:2001:2001::/home/big:/bin/bash\n\
             nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
             broken line\n",
        )
        .unwrap();
        let names: Vec<String> = human_accounts(dir.path())
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(uid_range(""), (1000, 60000));
    }

    #[test]
    fn system_homes_are_never_removed() {
        let a = Account {
            name: "odd".into(),
            uid: 1000,
            home: "/".into(),
        };
        assert!(removable_home(&a).is_err());
        let dir = tempfile::tempdir().unwrap();
        let other = Account {
            name: "x".into(),
            uid: 4242,
            home: dir.path().to_path_buf(),
        };
        assert!(
            removable_home(&other)
                .unwrap_err()
                .contains("not a directory")
        );
    }
}
