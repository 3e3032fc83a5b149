//! screenlock: for each graphical login session, does the screen lock by
//! itself when the user walks away, and after how long.
//!
//! Sessions come from logind (D-Bus, else its session files). Each
//! session's desktop decides where the answer lives: GSettings in dconf
//! databases (GNOME and relatives, Cinnamon, MATE, light-locker),
//! kscreenlockerrc (KDE Plasma), xfconf (XFCE), or the arguments and
//! configuration of an idle daemon the user runs (xautolock, xss-lock,
//! swayidle, hypridle, xscreensaver). Everything is read from files; no
//! program is started. With nobody logged in graphically the last answer
//! per user is reported from the cache, marked `cached_at`, so reports do
//! not flap between "locked down" and "nothing to say".

use std::collections::BTreeMap;

use penguindome_protocol::facts::screenlock::{self as facts, Source};
use penguindome_protocol::facts::{Known, Timestamp, to_value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CollectError, Collector, Context};
use crate::host::Host;

pub(crate) mod dconf;
pub(crate) mod desktops;
pub(crate) mod gvdb;
mod logind;
mod procs;
#[cfg(test)]
pub(crate) mod tests;
mod tools;

use logind::Session;
use procs::Proc;

/// Largest user file read (settings files are a few KiB).
const MAX_USER_FILE: u64 = 16 << 20;

/// Reads a file on a user's behalf: a regular file the user could read
/// too (their own, or readable by all), at most [`MAX_USER_FILE`] bytes.
/// Home directories and process arguments are the user's to choose, so a
/// symlink or `-c PATH` must not make the root agent read (and quote) a
/// file the user may not see, or open a FIFO or a device (opening
/// /dev/watchdog arms it). So the path is resolved and stat'ed before
/// anything is opened, and what is opened must be the file stat'ed. A path
/// through a symlink may lead out of `home` only to a file root owns.
pub(crate) fn read_user_file(
    host: &Host,
    path: &str,
    uid: u32,
    home: &str,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |kind: ErrorKind, why: String| Err(Error::new(kind, why));
    let lexical = host.path(path);
    // realpath(3) reads links and stats directories; it opens nothing.
    let real = std::fs::canonicalize(&lexical)?;
    let meta = std::fs::metadata(&real)?;
    if !meta.is_file() {
        return refuse(
            ErrorKind::InvalidInput,
            format!("{path} is not a regular file"),
        );
    }
    if real != lexical {
        let inside = std::fs::canonicalize(host.path(home)).is_ok_and(|h| real.starts_with(h));
        if !inside && meta.uid() != 0 {
            return refuse(
                ErrorKind::PermissionDenied,
                format!("{path} leads through a symlink out of {home} to a file not owned by root"),
            );
        }
    }
    if meta.uid() != uid && meta.mode() & 0o004 == 0 {
        return refuse(
            ErrorKind::PermissionDenied,
            format!("{path} is not readable by uid {uid}"),
        );
    }
    if meta.len() > MAX_USER_FILE {
        return refuse(
            ErrorKind::InvalidData,
            format!("{path} is too large ({} bytes)", meta.len()),
        );
    }
    // Should the path change after the stat (a file swapped for a link or
    // a FIFO), these flags keep the open harmless and the inode check
    // refuses what was opened.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&real)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) || !opened.is_file() {
        return refuse(
            ErrorKind::InvalidData,
            format!("{path} changed while being read"),
        );
    }
    let mut data = Vec::new();
    file.take(MAX_USER_FILE).read_to_end(&mut data)?;
    Ok(data)
}

/// [`read_user_file`] as text.
pub(crate) fn read_user_text(
    host: &Host,
    path: &str,
    uid: u32,
    home: &str,
) -> std::io::Result<String> {
    read_user_file(host, path, uid, home).map(|d| String::from_utf8_lossy(&d).into_owned())
}

/// Longest idle delay believed: a week. Larger values, negative ones and
/// sums that would overflow come from typos or hostile files.
pub(crate) const MAX_DELAY: u64 = 7 * 24 * 3600;

/// Seconds of `Σ value × unit`, when every value is non-negative and the
/// total at most [`MAX_DELAY`]; `None` otherwise. Never overflows.
pub(crate) fn delay_seconds(terms: &[(i128, u64)]) -> Option<u64> {
    let mut total: u64 = 0;
    for &(value, unit) in terms {
        let value = u64::try_from(value).ok()?;
        total = total.checked_add(value.checked_mul(unit)?)?;
    }
    (total <= MAX_DELAY).then_some(total)
}

/// A whole number as written in a setting or argument; one too long for
/// any integer type saturates (so it reads as out of range, not absent).
pub(crate) fn parse_count(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i128>() {
        return Some(n);
    }
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => (-1, d),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(if sign < 0 {
        i128::MIN
    } else {
        i128::MAX
    })
}

impl Finding {
    /// Locks after the delay `terms` add up to (see [`delay_seconds`]);
    /// "unknown", saying why, when that delay is out of range.
    pub fn locks_after(terms: &[(i128, u64)], mut evidence: Vec<String>) -> Self {
        match delay_seconds(terms) {
            Some(secs) => Finding::yes(secs, evidence),
            None => {
                let sum: Vec<String> = terms
                    .iter()
                    .map(|(v, unit)| match unit {
                        1 => format!("{v} s"),
                        u => format!("{v} × {u} s"),
                    })
                    .collect();
                evidence.push(format!(
                    "the delay ({}) is negative or longer than a week: not a usable setting",
                    sum.join(" + ")
                ));
                Finding::unknown(evidence)
            }
        }
    }
}

/// Cache key of the last answers per user.
const CACHE_KEY: &str = "screenlock.last_sessions";

/// The collector.
pub struct ScreenLock;

/// Yes, no, or cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    /// Locks on idle.
    Yes,
    /// Does not.
    No,
    /// Cannot tell (the evidence says why).
    Unknown,
}

/// What one source (a desktop's settings, an idle daemon) says.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Whether it locks on idle.
    pub enabled: Tri,
    /// After how many seconds of idleness, when known.
    pub delay: Option<u64>,
    /// Files, keys and processes that say so.
    pub evidence: Vec<String>,
}

/// Desktops and what locks them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Family {
    Gnome,
    Cinnamon,
    Mate,
    Kde,
    Xfce,
    /// A compositor or window manager with no idle locking of its own.
    Bare(String),
    /// Something this collector does not know.
    Unknown(String),
}

impl Family {
    /// A short name for the report.
    fn name(&self) -> String {
        match self {
            Family::Gnome => "gnome".into(),
            Family::Cinnamon => "cinnamon".into(),
            Family::Mate => "mate".into(),
            Family::Kde => "kde".into(),
            Family::Xfce => "xfce".into(),
            Family::Bare(n) | Family::Unknown(n) => n.clone(),
        }
    }
}

/// Window managers and compositors that never lock by themselves.
const BARE: &[&str] = &[
    "sway",
    "hyprland",
    "i3",
    "openbox",
    "bspwm",
    "awesome",
    "dwm",
    "herbstluftwm",
    "qtile",
    "river",
    "wayfire",
    "labwc",
    "niri",
    "fluxbox",
    "icewm",
    "xmonad",
    "spectrwm",
    "jwm",
    "fvwm",
    "windowmaker",
    "cwm",
    "dwl",
    "weston",
    "cage",
];

/// The family a desktop name (XDG_SESSION_DESKTOP or a
/// XDG_CURRENT_DESKTOP list) belongs to.
fn family_of(desktop: &str) -> Option<Family> {
    for token in desktop
        .split([':', ';'])
        .map(|t| t.trim().to_ascii_lowercase())
    {
        let t = token.trim_start_matches("x-");
        let f = match t {
            "" => continue,
            t if t.starts_with("gnome") || t.starts_with("ubuntu") || t.starts_with("budgie") => {
                Family::Gnome
            }
            "pop" | "zorin" | "unity" => Family::Gnome,
            t if t.starts_with("cinnamon") => Family::Cinnamon,
            "mate" => Family::Mate,
            t if t == "kde" || t.starts_with("plasma") || t == "kde-plasma" => Family::Kde,
            "xfce" | "xfce4" | "xubuntu" => Family::Xfce,
            t if BARE.contains(&t) => Family::Bare(t.to_string()),
            t => Family::Unknown(t.to_string()),
        };
        return Some(f);
    }
    None
}

/// The family from the user's processes, when logind has no desktop name.
fn family_from_procs(procs: &[&Proc]) -> Option<(Family, String)> {
    const SHELLS: &[(&str, &str)] = &[
        ("gnome-shell", "gnome"),
        ("cinnamon", "cinnamon"),
        ("mate-session", "mate"),
        ("plasmashell", "kde"),
        ("ksmserver", "kde"),
        ("kwin_wayland", "kde"),
        ("kwin_x11", "kde"),
        ("xfce4-session", "xfce"),
        ("sway", "sway"),
        ("Hyprland", "hyprland"),
    ];
    if let Some((p, d)) = SHELLS
        .iter()
        .find(|(p, _)| procs.iter().any(|x| x.name == *p))
    {
        return Some((family_of(d)?, format!("desktop {d} from process {p}")));
    }
    let b = BARE.iter().find(|b| procs.iter().any(|x| x.name == **b))?;
    Some((
        Family::Bare(b.to_string()),
        format!("desktop {b} from process {b}"),
    ))
}

/// Graphical servers a tty session may have started (startx, a compositor).
const GRAPHICAL_SERVERS: &[&str] = &[
    "xinit",
    "Xorg",
    "X",
    "Xwayland",
    "sway",
    "Hyprland",
    "river",
    "wayfire",
    "labwc",
    "niri",
    "weston",
    "kwin_wayland",
    "gnome-shell",
];

/// True for a session whose screen someone could walk away from.
fn is_graphical(s: &Session, procs: &[&Proc]) -> bool {
    if !s.class.starts_with("user") || s.state == "closing" {
        return false;
    }
    match s.kind.as_str() {
        "x11" | "wayland" | "mir" => true,
        // startx or a compositor from a text console: logind still says tty.
        "tty" | "unspecified" | "" => {
            !s.remote
                && procs
                    .iter()
                    .any(|p| GRAPHICAL_SERVERS.contains(&p.name.as_str()))
        }
        _ => false,
    }
}

/// Uid to (name, home) from /etc/passwd.
fn passwd(host: &Host) -> BTreeMap<u32, (String, String)> {
    let text = host.read_to_string("/etc/passwd").unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        if let Ok(uid) = f[2].parse() {
            out.entry(uid)
                .or_insert_with(|| (f[0].to_string(), f[5].to_string()));
        }
    }
    out
}

/// The X screen saver timeout from an X server's `-s MINUTES` argument
/// (`None` seconds when out of range).
fn x_server_timeout(all: &[Proc]) -> Option<(Option<u64>, String)> {
    all.iter()
        .filter(|p| matches!(p.name.as_str(), "Xorg" | "X" | "Xorg.wrap" | "Xwayland"))
        .find_map(|p| {
            let i = p.args.iter().position(|a| a == "-s")?;
            let arg = p.args.get(i + 1)?;
            let minutes = parse_count(arg)?;
            Some((
                delay_seconds(&[(minutes, 60)]),
                format!("{} -s {}", p.name, arg.trim()),
            ))
        })
}

/// Merges findings: locks if any source locks (soonest delay wins).
fn combine(findings: Vec<Finding>) -> Finding {
    let enabled = if findings.iter().any(|f| f.enabled == Tri::Yes) {
        Tri::Yes
    } else if findings.iter().any(|f| f.enabled == Tri::Unknown) {
        Tri::Unknown
    } else {
        Tri::No
    };
    let delay = findings
        .iter()
        .filter(|f| f.enabled == Tri::Yes)
        .filter_map(|f| f.delay)
        .min();
    Finding {
        enabled,
        delay,
        evidence: findings.into_iter().flat_map(|f| f.evidence).collect(),
    }
}

/// The answer for one graphical session.
fn evaluate(
    host: &Host,
    s: &Session,
    uid: u32,
    home: &str,
    procs: &[&Proc],
    all: &[Proc],
) -> (String, Finding) {
    let (family, desktop, mut evidence) = match family_of(&s.desktop) {
        Some(f) => (
            f,
            s.desktop.clone(),
            vec![format!("desktop {:?} from logind", s.desktop)],
        ),
        None => match family_from_procs(procs) {
            Some((f, why)) => (f.clone(), f.name(), vec![why]),
            None => (
                Family::Unknown(String::new()),
                String::new(),
                vec!["logind has no desktop name and no known desktop process runs".into()],
            ),
        },
    };
    let builtin_locker = matches!(
        family,
        Family::Gnome | Family::Cinnamon | Family::Mate | Family::Kde | Family::Xfce
    );
    let xss = procs.iter().any(|p| p.name == "xss-lock");
    let lock_handler = if builtin_locker {
        Some(format!("the {desktop} desktop's locker"))
    } else if xss {
        Some("xss-lock".to_string())
    } else {
        None
    };
    let running = |n: &str| procs.iter().any(|p| p.name == n);
    let x_timeout = if family == Family::Xfce {
        desktops::xfce_blank(host, home, uid).or_else(|| x_server_timeout(all))
    } else {
        x_server_timeout(all)
    };
    let scope = tools::Scope {
        host,
        procs,
        home,
        uid,
        lock_handler,
        x_timeout,
    };
    let needs_dconf = matches!(family, Family::Gnome | Family::Cinnamon | Family::Mate)
        || running("light-locker");
    let dconf = needs_dconf.then(|| dconf::Dconf::load(host, uid, home, desktops::DCONF_SCHEMAS));
    let mut findings = Vec::new();
    match (&family, &dconf) {
        (Family::Gnome, Some(d)) => findings.push(desktops::gnome(host, d)),
        (Family::Cinnamon, Some(d)) => findings.push(desktops::cinnamon(host, d)),
        (Family::Mate, Some(d)) => {
            findings.push(desktops::mate(host, d, running("mate-screensaver")))
        }
        (Family::Kde, _) => findings.push(desktops::kde(host, home, uid)),
        (Family::Xfce, _) if running("xfce4-screensaver") => {
            findings.push(desktops::xfce_screensaver(host, home, uid))
        }
        _ => {}
    }
    if running("light-locker")
        && let Some(d) = &dconf
    {
        let after = d
            .get(host, &desktops::LIGHT_LOCKER, "lock-after-screensaver")
            .and_then(|s| Some((s.as_int()?, s.evidence)));
        findings.push(tools::light_locker(&scope, after));
    }
    findings.extend(tools::findings(&scope));
    let looked_for =
        "xautolock, xidlehook, xss-lock, swayidle, hypridle, xscreensaver, light-locker";
    if findings.is_empty() {
        findings.push(match &family {
            Family::Xfce => Finding::no(vec![format!(
                "XFCE locks only through xfce4-screensaver or light-locker; neither runs (looked for {looked_for}, xfce4-screensaver)"
            )]),
            Family::Bare(n) => Finding::no(vec![format!(
                "{n} does not lock by itself and no idle locker runs for this user (looked for {looked_for})"
            )]),
            Family::Unknown(n) => Finding::unknown(vec![format!(
                "unknown desktop {n:?}: no settings known, no idle locker runs for this user (looked for {looked_for})"
            )]),
            _ => Finding::unknown(vec!["no settings could be read".into()]),
        });
    }
    let mut f = combine(findings);
    evidence.append(&mut f.evidence);
    f.evidence = evidence;
    (desktop, f)
}

impl Tri {
    /// The reported `enabled`.
    fn known(self) -> Known<bool> {
        match self {
            Tri::Yes => Known::Value(true),
            Tri::No => Known::Value(false),
            Tri::Unknown => Known::UNKNOWN,
        }
    }
}

/// Sorts sessions by user, desktop and type.
fn sort(sessions: &mut [facts::Session]) {
    sessions.sort_by(|a, b| (&a.user, &a.desktop, &a.kind).cmp(&(&b.user, &b.desktop, &b.kind)));
}

/// The graphical sessions logind lists, each judged, sorted.
fn live_sessions(
    host: &Host,
    listing: &logind::Listing,
    accounts: &BTreeMap<u32, (String, String)>,
) -> Vec<facts::Session> {
    let all = procs::list(host);
    let mut sessions = Vec::new();
    for s in &listing.sessions {
        let uid = s.uid.or_else(|| {
            accounts
                .iter()
                .find(|(_, (name, _))| *name == s.user)
                .map(|(u, _)| *u)
        });
        let user_procs: Vec<&Proc> = all.iter().filter(|p| Some(p.uid) == uid).collect();
        if !is_graphical(s, &user_procs) {
            continue;
        }
        let user = if s.user.is_empty() {
            uid.and_then(|u| accounts.get(&u))
                .map(|a| a.0.clone())
                .unwrap_or_default()
        } else {
            s.user.clone()
        };
        let (desktop, f) = match uid.and_then(|u| accounts.get(&u).map(|a| (u, a.1.clone()))) {
            Some((uid, home)) => evaluate(host, s, uid, &home, &user_procs, &all),
            None => (
                s.desktop.clone(),
                Finding::unknown(vec![format!(
                    "user {user:?} is not in /etc/passwd: no home directory to read settings from"
                )]),
            ),
        };
        sessions.push(facts::Session {
            user,
            desktop,
            kind: s.kind.clone(),
            remote: s.remote,
            enabled: f.enabled.known(),
            delay_seconds: f.delay,
            evidence: f.evidence,
            cached_at: None,
        });
    }
    sort(&mut sessions);
    sessions
}

impl Collector for ScreenLock {
    fn name(&self) -> &'static str {
        "screenlock"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let listing = logind::sessions(ctx.host);
        let accounts = passwd(ctx.host);
        let mut evidence = listing.evidence.clone();
        let sessions = live_sessions(ctx.host, &listing, &accounts);
        if !sessions.is_empty() {
            remember(ctx, &sessions, &accounts);
            evidence.push(format!("{} graphical session(s)", sessions.len()));
            return Ok(to_value(&facts::ScreenLock {
                source: Source::Live,
                sessions,
                evidence,
            }));
        }
        let (source, sessions) = recall(ctx, &accounts);
        if !listing.available && sessions.is_empty() {
            evidence.push("no logind, so no graphical login sessions to examine".into());
        } else {
            evidence.push("no graphical sessions".into());
        }
        if source == Source::Cache {
            evidence
                .push("answers below are the last seen per user, from the agent's cache".into());
        }
        Ok(to_value(&facts::ScreenLock {
            source,
            sessions,
            evidence,
        }))
    }
}

/// One user's last live answer as the cache keeps it. Agents before the
/// typed contract wrote the same shape (`cached_at` to the second), and
/// their extra session keys (`locked`, `idle`) are ignored.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    /// When the answer was first seen live.
    cached_at: Timestamp,
    /// The user's sessions then, without `cached_at`.
    sessions: Vec<facts::Session>,
}

/// The cached answers per user, without users gone from /etc/passwd;
/// true when some were dropped.
fn cached(
    ctx: &Context<'_>,
    accounts: &BTreeMap<u32, (String, String)>,
) -> (Map<String, Value>, bool) {
    let mut stored = ctx
        .cache
        .get(CACHE_KEY)
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let before = stored.len();
    // An unreadable /etc/passwd says nothing about who is gone.
    if !accounts.is_empty() {
        stored.retain(|user, _| accounts.values().any(|(name, _)| name == user));
    }
    let pruned = stored.len() != before;
    (stored, pruned)
}

/// A cache entry read back; `None` for one that does not read.
fn entry(v: &Value) -> Option<Remembered> {
    serde_json::from_value(v.clone()).ok()
}

/// Stores this run's answers per user. A user's entry (and its
/// `cached_at`) changes only when their answer does, and the cache is
/// written only then, so a steady machine reports the same thing.
fn remember(
    ctx: &Context<'_>,
    sessions: &[facts::Session],
    accounts: &BTreeMap<u32, (String, String)>,
) {
    let (mut stored, mut changed) = cached(ctx, accounts);
    let mut by_user: BTreeMap<String, Vec<facts::Session>> = BTreeMap::new();
    for s in sessions {
        by_user.entry(s.user.clone()).or_default().push(s.clone());
    }
    for (user, list) in by_user {
        let same = stored
            .get(&user)
            .and_then(entry)
            .is_some_and(|e| e.sessions == list);
        if same {
            continue;
        }
        let fresh = Remembered {
            cached_at: ctx.now.into(),
            sessions: list,
        };
        // Plain data: serializing it cannot fail.
        if let Ok(v) = serde_json::to_value(&fresh) {
            stored.insert(user, v);
            changed = true;
        }
    }
    if changed {
        ctx.cache.put(CACHE_KEY, &Value::Object(stored));
    }
}

/// The cached answers, each marked with when it was seen.
fn recall(
    ctx: &Context<'_>,
    accounts: &BTreeMap<u32, (String, String)>,
) -> (Source, Vec<facts::Session>) {
    let (stored, pruned) = cached(ctx, accounts);
    if pruned {
        ctx.cache.put(CACHE_KEY, &Value::Object(stored.clone()));
    }
    let mut out = Vec::new();
    for e in stored.values().filter_map(entry) {
        out.extend(e.sessions.into_iter().map(|s| facts::Session {
            cached_at: Some(e.cached_at),
            ..s
        }));
    }
    sort(&mut out);
    let source = if out.is_empty() {
        Source::None
    } else {
        Source::Cache
    };
    (source, out)
}
