//! Idle lockers outside the big desktops, found in the user's processes:
//! xautolock, xidlehook, xss-lock, swayidle, hypridle, xscreensaver and light-locker,
//! with their arguments and configuration files.

use super::procs::Proc;
use super::{Finding, Tri};
use crate::host::Host;

/// Programs that lock the screen when run.
const LOCKERS: &[&str] = &[
    "swaylock",
    "hyprlock",
    "gtklock",
    "waylock",
    "i3lock",
    "i3lock-fancy",
    "slock",
    "xsecurelock",
    "xlock",
    "physlock",
    "betterlockscreen",
    "multilockscreen",
    "xtrlock",
    "xflock4",
    "sxlock",
    "alock",
];

/// Program and argument pairs that lock the screen.
const LOCK_COMMANDS: &[(&str, &str)] = &[
    ("dm-tool", "lock"),
    ("xdg-screensaver", "lock"),
    ("xscreensaver-command", "-lock"),
    ("light-locker-command", "-l"),
    ("light-locker-command", "--lock"),
    ("gnome-screensaver-command", "-l"),
    ("gnome-screensaver-command", "--lock"),
    ("mate-screensaver-command", "-l"),
    ("mate-screensaver-command", "--lock"),
    ("cinnamon-screensaver-command", "-l"),
    ("cinnamon-screensaver-command", "--lock"),
    ("xfce4-screensaver-command", "-l"),
    ("xfce4-screensaver-command", "--lock"),
];

/// Splits a command line as a POSIX shell would (quotes and backslashes;
/// no expansion). A `#` at the start of a word starts a comment.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The words of a command, split further at shell operators.
fn command_words(cmd: &str) -> Vec<String> {
    shell_words(cmd)
        .iter()
        .flat_map(|w| {
            w.split([';', '|', '&'])
                .flat_map(|p| p.split_whitespace())
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// True when running `cmd` locks the screen by itself.
pub fn is_locker(cmd: &str) -> bool {
    let words = command_words(cmd);
    words.iter().any(|w| LOCKERS.contains(&w.as_str()))
        || words.windows(2).any(|p| {
            LOCK_COMMANDS
                .iter()
                .any(|(prog, arg)| p[0] == *prog && p[1] == *arg)
        })
}

/// True when `cmd` asks logind to lock the session (someone else must
/// answer logind's Lock signal).
pub fn asks_logind(cmd: &str) -> bool {
    command_words(cmd)
        .windows(2)
        .any(|p| p[0] == "loginctl" && (p[1] == "lock-session" || p[1] == "lock-sessions"))
}

/// Everything the tools look at for one session.
pub struct Scope<'a> {
    /// The machine.
    pub host: &'a Host,
    /// The user's processes.
    pub procs: &'a [&'a Proc],
    /// The user's home directory.
    pub home: &'a str,
    /// The user (files are read only as far as they could read them).
    pub uid: u32,
    /// Who answers logind's Lock signal besides the tools themselves (the
    /// desktop's locker, xss-lock), if anyone.
    pub lock_handler: Option<String>,
    /// Seconds until X's screen saver activates (`None` when the setting
    /// is out of range), and from where.
    pub x_timeout: Option<(Option<u64>, String)>,
}

impl Scope<'_> {
    fn running(&self, name: &str) -> Vec<&Proc> {
        self.procs
            .iter()
            .copied()
            .filter(|p| p.name == name)
            .collect()
    }
}

/// What a timed command does: locks, asks logind to, or neither.
fn judge(cmd: &str, own_handler: Option<&str>, scope: &Scope<'_>) -> Result<String, String> {
    if is_locker(cmd) {
        return Ok(format!("runs locker {cmd:?}"));
    }
    if asks_logind(cmd) {
        if let Some(h) = own_handler.filter(|h| is_locker(h)) {
            return Ok(format!("asks logind to lock; lock handler {h:?}"));
        }
        if let Some(h) = &scope.lock_handler {
            return Ok(format!("asks logind to lock; {h} answers"));
        }
        return Err(format!(
            "{cmd:?} asks logind to lock, but nothing found answers logind's Lock signal"
        ));
    }
    Err(format!("{cmd:?} is not a known screen locker"))
}

/// Findings of every idle locker the user runs.
pub fn findings(scope: &Scope<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in scope.running("xautolock") {
        out.push(xautolock(p, scope));
    }
    for p in scope.running("xidlehook") {
        out.push(xidlehook(p, scope));
    }
    for p in scope.running("xss-lock") {
        out.push(xss_lock(p, scope));
    }
    for p in scope.running("swayidle") {
        out.push(swayidle(p, scope));
    }
    for p in scope.running("hypridle") {
        out.push(hypridle(p, scope));
    }
    for p in scope.running("xscreensaver") {
        out.push(xscreensaver(p, scope));
    }
    out
}

fn xautolock(p: &Proc, scope: &Scope<'_>) -> Finding {
    let arg = |flag: &str| {
        p.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| p.args.get(i + 1))
    };
    let minutes = arg("-time")
        .and_then(|t| super::parse_count(t))
        .unwrap_or(10);
    // xautolock's default locker is xlock.
    let locker = arg("-locker").map(String::as_str).unwrap_or("xlock");
    let what = format!("xautolock -time {minutes} -locker {locker:?}");
    match judge(locker, None, scope) {
        Ok(how) => Finding::locks_after(&[(minutes, 60)], vec![format!("{what}: {how}")]),
        Err(why) => Finding::unknown(vec![format!("{what}: {why}")]),
    }
}

/// xidlehook's timers (`--timer SECONDS ACTIVATION ABORT`) are chained:
/// each counts from the one before it, so a locker runs after the sum of
/// the durations up to its own timer.
fn xidlehook(p: &Proc, scope: &Scope<'_>) -> Finding {
    let mut evidence = vec![format!("xidlehook {}", p.args.join(" "))];
    let mut timeouts = Vec::new();
    let mut elapsed: u64 = 0;
    let mut i = 0;
    while i < p.args.len() {
        if p.args[i] != "--timer" {
            i += 1;
            continue;
        }
        let secs = p.args.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (secs, p.args.get(i + 2)) {
            (Some(secs), Some(cmd)) => {
                elapsed = elapsed.saturating_add(secs);
                timeouts.push((elapsed, cmd.clone()));
            }
            _ => evidence.push(format!(
                "--timer at argument {} is not `--timer SECONDS COMMAND ABORT`",
                i + 1
            )),
        }
        i += 4;
    }
    timed(timeouts, None, evidence, scope)
}

fn xss_lock(p: &Proc, scope: &Scope<'_>) -> Finding {
    let locker = p
        .args
        .iter()
        .position(|a| a == "--")
        .map(|i| p.args[i + 1..].join(" "))
        .unwrap_or_default();
    let what = format!("xss-lock locks with {locker:?} when the X screen saver activates");
    match &scope.x_timeout {
        Some((Some(0), from)) => {
            Finding::no(vec![what, format!("X screen saver disabled ({from})")])
        }
        Some((Some(secs), from)) => {
            Finding::yes(*secs, vec![what, format!("after {secs} s ({from})")])
        }
        Some((None, from)) => Finding::unknown(vec![
            what,
            format!("the X screen saver timeout is negative or longer than a week ({from})"),
        ]),
        None => Finding {
            enabled: Tri::Yes,
            delay: None,
            evidence: vec![
                what,
                "the X screen saver timeout (`xset s`; X starts with 600 s) is not in any file"
                    .into(),
            ],
        },
    }
}

/// swayidle's events from its arguments, else from its config file.
fn swayidle(p: &Proc, scope: &Scope<'_>) -> Finding {
    let mut config = None;
    let mut events = Vec::new();
    let mut i = 0;
    while i < p.args.len() {
        match p.args[i].as_str() {
            "-C" => {
                config = p.args.get(i + 1).cloned();
                i += 2;
            }
            "-S" => i += 2,
            a if a.starts_with('-') => i += 1,
            _ => {
                events.extend_from_slice(&p.args[i..]);
                break;
            }
        }
    }
    let mut evidence = vec![format!("swayidle {}", p.args.join(" "))];
    if config.is_some() || events.is_empty() {
        let home = scope.home.trim_end_matches('/');
        let paths: Vec<String> = match &config {
            Some(c) => vec![c.clone()],
            None => vec![
                format!("{home}/.config/swayidle/config"),
                "/etc/swayidle/config".into(),
            ],
        };
        match paths.iter().find_map(|path| {
            super::read_user_text(scope.host, path, scope.uid, scope.home)
                .ok()
                .map(|t| (path, t))
        }) {
            Some((path, text)) => {
                evidence.push(format!("config {path}"));
                for line in text.lines() {
                    events.extend(shell_words(line));
                }
            }
            None => evidence.push(format!("no config file ({})", paths.join(", "))),
        }
    }
    let mut timeouts = Vec::new();
    let mut lock_cmd = None;
    let mut it = events.iter();
    while let Some(ev) = it.next() {
        match ev.as_str() {
            "timeout" => {
                let secs = it.next().and_then(|s| s.parse::<u64>().ok());
                if let (Some(secs), Some(cmd)) = (secs, it.next()) {
                    timeouts.push((secs, cmd.clone()));
                }
            }
            "lock" => lock_cmd = it.next().cloned(),
            "before-sleep" | "after-resume" | "unlock" | "resume" | "idlehint" => {
                it.next();
            }
            _ => {}
        }
    }
    timed(timeouts, lock_cmd.as_deref(), evidence, scope)
}

/// The answer for timed commands: the shortest one that locks.
fn timed(
    timeouts: Vec<(u64, String)>,
    lock_cmd: Option<&str>,
    mut evidence: Vec<String>,
    scope: &Scope<'_>,
) -> Finding {
    let mut best: Option<u64> = None;
    let mut implausible = false;
    for (secs, cmd) in timeouts {
        match judge(&cmd, lock_cmd, scope) {
            Ok(how) if secs > super::MAX_DELAY => {
                evidence.push(format!(
                    "timeout {secs} s {how}, but longer than a week: not a usable setting"
                ));
                implausible = true;
            }
            Ok(how) => {
                evidence.push(format!("timeout {secs} s {how}"));
                best = Some(best.map_or(secs, |b| b.min(secs)));
            }
            Err(why) => evidence.push(format!("timeout {secs} s: {why}")),
        }
    }
    match best {
        Some(secs) => Finding::yes(secs, evidence),
        None if implausible => Finding::unknown(evidence),
        None => {
            evidence.push("no timeout runs a screen locker".into());
            Finding::no(evidence)
        }
    }
}

/// Listener blocks and the `general` lock command of a hypridle config.
fn hypridle(p: &Proc, scope: &Scope<'_>) -> Finding {
    let path = p
        .args
        .iter()
        .position(|a| a == "-c" || a == "--config")
        .and_then(|i| p.args.get(i + 1).cloned())
        .unwrap_or_else(|| {
            format!(
                "{}/.config/hypr/hypridle.conf",
                scope.home.trim_end_matches('/')
            )
        });
    let mut evidence = vec![format!("hypridle with config {path}")];
    let Ok(text) = super::read_user_text(scope.host, &path, scope.uid, scope.home) else {
        // hypridle refuses to start without a config; say so rather than guess.
        evidence.push(format!("{path} is not readable"));
        return Finding::unknown(evidence);
    };
    let mut section: Vec<String> = Vec::new();
    let mut lock_cmd = None;
    let mut timeouts = Vec::new();
    let mut current: (Option<u64>, Option<String>) = (None, None);
    for raw in text.lines() {
        // `##` is a literal `#` in hyprlang; a single `#` starts a comment.
        let line = raw.replace("##", "\u{0}");
        let line = line.split('#').next().unwrap_or("").replace('\u{0}', "#");
        let line = line.trim();
        if let Some(name) = line.strip_suffix('{') {
            section.push(name.trim().to_string());
            current = (None, None);
            continue;
        }
        if line == "}" {
            if section.pop().as_deref() == Some("listener")
                && let (Some(secs), Some(cmd)) = current.clone()
            {
                timeouts.push((secs, cmd));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match (section.last().map(String::as_str), k) {
            (Some("general"), "lock_cmd") => lock_cmd = Some(v),
            (Some("listener"), "timeout") => current.0 = v.parse().ok(),
            (Some("listener"), "on-timeout") => current.1 = Some(v),
            _ => {}
        }
    }
    if let Some(l) = &lock_cmd {
        evidence.push(format!("lock_cmd = {l}"));
    }
    timed(timeouts, lock_cmd.as_deref(), evidence, scope)
}

/// `H:MM:SS`, `MM:SS` or plain minutes, as xscreensaver writes times;
/// `None` also for times out of range (see [`super::delay_seconds`]).
fn xscreensaver_time(v: &str) -> Option<u64> {
    let parts: Vec<i128> = v
        .split(':')
        .map(|p| p.trim().parse::<u64>().ok().map(i128::from))
        .collect::<Option<_>>()?;
    super::delay_seconds(&match parts.as_slice() {
        [m] => vec![(*m, 60)],
        [m, s] => vec![(*m, 60), (*s, 1)],
        [h, m, s] => vec![(*h, 3600), (*m, 60), (*s, 1)],
        _ => return None,
    })
}

/// True for text shaped like an xscreensaver time (digits and colons),
/// whatever its size.
fn looks_like_time(v: &str) -> bool {
    let v = v.trim();
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b' ')
}

fn xscreensaver(_: &Proc, scope: &Scope<'_>) -> Finding {
    let path = format!("{}/.xscreensaver", scope.home.trim_end_matches('/'));
    let text = super::read_user_text(scope.host, &path, scope.uid, scope.home).unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let src = |found: bool| {
        if found {
            path.as_str()
        } else {
            "xscreensaver default"
        }
    };
    let mode = get("mode");
    let lock = get("lock");
    let (timeout_text, lock_timeout_text) = (get("timeout"), get("lockTimeout"));
    let timeout = timeout_text.as_deref().and_then(xscreensaver_time);
    let lock_timeout = lock_timeout_text.as_deref().and_then(xscreensaver_time);
    // A time too large to use is not the same as no time: say so.
    let out_of_range: Vec<String> = [
        ("timeout", &timeout_text, timeout),
        ("lockTimeout", &lock_timeout_text, lock_timeout),
    ]
    .into_iter()
    .filter_map(|(key, text, value)| {
        let text = text.as_deref()?;
        (value.is_none() && looks_like_time(text))
            .then(|| format!("{key}: {text} ({path}) is longer than a week: not a usable setting"))
    })
    .collect();
    let mut evidence = vec![
        "xscreensaver is running".to_string(),
        format!(
            "mode: {} ({})",
            mode.as_deref().unwrap_or("random"),
            src(mode.is_some())
        ),
        format!(
            "lock: {} ({})",
            lock.as_deref().unwrap_or("False"),
            src(lock.is_some())
        ),
        format!(
            "timeout: {} s ({})",
            timeout.unwrap_or(600),
            src(timeout.is_some())
        ),
        format!(
            "lockTimeout: {} s ({})",
            lock_timeout.unwrap_or(0),
            src(lock_timeout.is_some())
        ),
    ];
    let locks = lock
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case("true"));
    if mode.as_deref() == Some("off") || !locks {
        evidence.push("xscreensaver does not lock on idle".into());
        return Finding::no(evidence);
    }
    if !out_of_range.is_empty() {
        evidence.extend(out_of_range);
        return Finding::unknown(evidence);
    }
    Finding::locks_after(
        &[
            (timeout.unwrap_or(600).into(), 1),
            (lock_timeout.unwrap_or(0).into(), 1),
        ],
        evidence,
    )
}

/// light-locker locks when X's screen saver activates (after
/// `lock-after-screensaver` seconds; 0 turns that off).
pub fn light_locker(scope: &Scope<'_>, lock_after: Option<(i64, String)>) -> Finding {
    let mut evidence = vec!["light-locker is running".to_string()];
    let after = match lock_after {
        Some((n, ev)) => {
            evidence.push(ev);
            n
        }
        None => 5,
    };
    if after <= 0 {
        evidence.push("locking after the screen saver is off".into());
        return Finding::no(evidence);
    }
    match &scope.x_timeout {
        Some((Some(0), from)) => {
            evidence.push(format!("screen blanking is off ({from})"));
            Finding::no(evidence)
        }
        Some((Some(secs), from)) => {
            evidence.push(format!("screen saver after {secs} s ({from})"));
            Finding::locks_after(&[((*secs).into(), 1), (after.into(), 1)], evidence)
        }
        Some((None, from)) => {
            evidence.push(format!(
                "the screen saver timeout is negative or longer than a week ({from})"
            ));
            Finding::unknown(evidence)
        }
        None => {
            evidence.push("the X screen saver timeout is not in any file".into());
            Finding {
                enabled: Tri::Yes,
                delay: None,
                evidence,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_lockers() {
        assert_eq!(
            shell_words(
                r#"timeout 300 'swaylock -f -c 000000' resume "swaymsg \"output * dpms on\"" # c"#
            ),
            [
                "timeout",
                "300",
                "swaylock -f -c 000000",
                "resume",
                r#"swaymsg "output * dpms on""#
            ]
        );
        assert!(is_locker("pidof hyprlock || hyprlock"));
        assert!(is_locker("/usr/bin/i3lock -n"));
        assert!(is_locker("dm-tool lock"));
        assert!(!is_locker("systemctl suspend"));
        assert!(!is_locker("swaymsg 'output * dpms off'"));
        assert!(asks_logind("loginctl lock-session"));
        assert!(!asks_logind("loginctl list-sessions"));
        assert_eq!(xscreensaver_time("0:10:00"), Some(600));
        assert_eq!(xscreensaver_time("5"), Some(300));
        assert_eq!(xscreensaver_time("x"), None);
    }
}
