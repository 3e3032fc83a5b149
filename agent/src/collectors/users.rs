//! users: local human accounts, whether each has a usable password, who
//! may become root through the sudo/wheel/admin groups, and who is logged
//! in (logind's session files, else utmp).
//!
//! An empty password field in /etc/shadow lets anyone log in without one:
//! that is what "no password" means here, as distinct from a locked
//! account (`!` or `*`), which cannot log in with a password at all.

use std::collections::{BTreeMap, BTreeSet};

use penguindome_protocol::facts::users::{self as facts, Password};
use penguindome_protocol::facts::{Known, to_value};
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

/// Groups whose members may run anything as root on common distributions.
const ADMIN_GROUPS: &[&str] = &["sudo", "wheel", "admin"];

/// The collector.
pub struct Users;

#[derive(Debug, Clone)]
pub(crate) struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

pub(crate) fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// UID_MIN and UID_MAX from login.defs (1000 and 60000 by default).
pub(crate) fn uid_range(host: &Host) -> (u32, u32) {
    let text = host.read_to_string("/etc/login.defs").unwrap_or_default();
    let get = |key: &str, default: u32| {
        text.lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix(key))
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .filter_map(|rest| rest.trim().parse().ok())
            .next_back()
            .unwrap_or(default)
    };
    (get("UID_MIN", 1000), get("UID_MAX", 60000))
}

/// Password state per account from /etc/shadow, or why it can't be read.
pub(crate) fn shadow(host: &Host) -> Result<BTreeMap<String, Password>, String> {
    let text = host
        .read_to_string("/etc/shadow")
        .map_err(|e| format!("/etc/shadow is not readable ({e}); run as root"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let hash = f.next()?;
            let state = if hash.is_empty() {
                Password::None
            } else if hash.starts_with('!') || hash.starts_with('*') {
                Password::Locked
            } else {
                Password::Set
            };
            Some((name.to_string(), state))
        })
        .collect())
}

/// Members of each group: listed members plus users whose primary group it is.
fn group_members(host: &Host, accounts: &[Account]) -> BTreeMap<String, BTreeSet<String>> {
    let text = host.read_to_string("/etc/group").unwrap_or_default();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let members = out.entry(f[0].to_string()).or_default();
        members.extend(
            f[3].split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from),
        );
        if let Ok(gid) = f[2].parse::<u32>() {
            members.extend(
                accounts
                    .iter()
                    .filter(|a| a.gid == gid)
                    .map(|a| a.name.clone()),
            );
        }
    }
    out
}

/// One session per (user, type, remote), sorted.
fn sessions(seen: BTreeSet<(String, String, bool)>) -> Vec<facts::Session> {
    seen.into_iter()
        .map(|(user, kind, remote)| facts::Session { user, kind, remote })
        .collect()
}

/// Logged-in sessions from logind's state files.
fn logind_sessions(host: &Host) -> Option<Vec<facts::Session>> {
    if !host.exists("/run/systemd/sessions") {
        return None;
    }
    let mut seen = BTreeSet::new();
    for id in host.list_dir("/run/systemd/sessions") {
        if id.ends_with(".ref") {
            continue;
        }
        let Ok(text) = host.read_to_string(&format!("/run/systemd/sessions/{id}")) else {
            continue;
        };
        let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        if kv.get("CLASS").is_some_and(|c| *c != "user") || kv.get("STATE") == Some(&"closing") {
            continue;
        }
        let Some(user) = kv.get("USER") else { continue };
        seen.insert((
            user.to_string(),
            kv.get("TYPE").unwrap_or(&"unspecified").to_string(),
            kv.get("REMOTE") == Some(&"1"),
        ));
    }
    Some(sessions(seen))
}

/// Logged-in users from utmp records (glibc's 384-byte `struct utmp`).
fn utmp_sessions(host: &Host) -> Option<Vec<facts::Session>> {
    const RECORD: usize = 384;
    const USER_PROCESS: i16 = 7;
    let data = std::fs::read(host.path("/run/utmp"))
        .or_else(|_| std::fs::read(host.path("/var/run/utmp")))
        .ok()?;
    let mut seen = BTreeSet::new();
    for r in data.chunks_exact(RECORD) {
        if i16::from_ne_bytes([r[0], r[1]]) != USER_PROCESS {
            continue;
        }
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let user = cstr(&r[44..76]);
        let remote_host = cstr(&r[76..332]);
        if !user.is_empty() {
            let remote = !remote_host.is_empty() && !remote_host.starts_with(':');
            // utmp does not say what kind of session it is.
            seen.insert((user, "unspecified".to_string(), remote));
        }
    }
    Some(sessions(seen))
}

/// Who is logged in, and the source that says so.
fn logged_in(host: &Host) -> (Known<Vec<facts::Session>>, &'static str) {
    match logind_sessions(host) {
        Some(s) => (Known::Value(s), "/run/systemd/sessions"),
        None => match utmp_sessions(host) {
            Some(s) => (Known::Value(s), "/run/utmp"),
            None => (Known::UNKNOWN, "neither logind nor utmp"),
        },
    }
}

/// Whether `shell` lets an account log in.
fn can_log_in(shell: &str) -> bool {
    !shell.is_empty() && !shell.ends_with("/nologin") && !shell.ends_with("/false")
}

impl Collector for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let passwd = host
            .read_to_string("/etc/passwd")
            .map_err(|e| CollectError(format!("cannot read /etc/passwd: {e}")))?;
        let accounts = parse_passwd(&passwd);
        let (uid_min, uid_max) = uid_range(host);
        let shadow = shadow(host);
        let groups = group_members(host, &accounts);
        let password = |name: &str| match &shadow {
            Ok(s) => s.get(name).copied().unwrap_or(Password::Unknown),
            Err(_) => Password::Unknown,
        };
        let humans = people(&accounts, (uid_min, uid_max), &groups, &password);
        // Any account, system ones included, that logs in with no password.
        let mut without_password: Vec<String> = accounts
            .iter()
            .filter(|a| password(&a.name) == Password::None)
            .map(|a| a.name.clone())
            .collect();
        without_password.sort();
        let admin_groups = ADMIN_GROUPS
            .iter()
            .filter_map(|g| {
                groups
                    .get(*g)
                    .map(|m| (g.to_string(), m.iter().cloned().collect()))
            })
            .collect();
        let (logged_in, session_source) = logged_in(host);
        let mut evidence = vec![
            "/etc/passwd".to_string(),
            "/etc/group".to_string(),
            format!("/etc/login.defs (UID_MIN {uid_min}, UID_MAX {uid_max})"),
            session_source.to_string(),
        ];
        match &shadow {
            Ok(_) => evidence.push("/etc/shadow".into()),
            Err(e) => evidence.push(e.clone()),
        }
        Ok(to_value(&facts::Users {
            accounts: humans,
            root_password: password("root"),
            without_password: if shadow.is_ok() {
                Known::Value(without_password)
            } else {
                Known::UNKNOWN
            },
            admin_groups,
            logged_in,
            evidence,
        }))
    }
}

/// The accounts of people (UIDs from UID_MIN to UID_MAX), sorted by name.
fn people(
    accounts: &[Account],
    (uid_min, uid_max): (u32, u32),
    groups: &BTreeMap<String, BTreeSet<String>>,
    password: &dyn Fn(&str) -> Password,
) -> Vec<facts::Account> {
    let admins: BTreeSet<&String> = ADMIN_GROUPS
        .iter()
        .filter_map(|g| groups.get(*g))
        .flatten()
        .collect();
    let mut humans: Vec<facts::Account> = accounts
        .iter()
        .filter(|a| a.uid >= uid_min && a.uid <= uid_max)
        .map(|a| facts::Account {
            name: a.name.clone(),
            uid: a.uid,
            home: a.home.clone(),
            shell: a.shell.clone(),
            login_shell: can_log_in(&a.shell),
            password: password(&a.name),
            admin: admins.contains(&a.name),
        })
        .collect();
    humans.sort_by(|a, b| a.name.cmp(&b.name));
    humans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::NoCache;
    use crate::collectors::fixture::tree;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
games:x:5:60:games:/usr/games:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/bin/zsh
svc:x:1002:1002::/srv/svc:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

    /// The collector's answer, read back as the typed contract.
    fn collect(d: &tempfile::TempDir) -> facts::Users {
        let v = Users
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    fn session(user: &str, kind: &str, remote: bool) -> facts::Session {
        facts::Session {
            user: user.into(),
            kind: kind.into(),
            remote,
        }
    }

    #[test]
    fn debian_desktop() {
        let d = tree(&[
            ("/etc/passwd", PASSWD.as_bytes()),
            ("/etc/shadow", b"root:*:19000:0:99999:7:::\ndaemon:*:1::::::\ngames::19000::::::\nalice:$y$j9T$abc:19000:0:99999:7:::\nbob:!$y$j9T$def:19000::::::\nsvc:!*:1::::::\n"),
            ("/etc/group", b"root:x:0:\nsudo:x:27:alice\nalice:x:1000:\nbob:x:1001:\nwheel:x:10:bob\n"),
            ("/etc/login.defs", b"# comment\nUID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n"),
            ("/run/systemd/sessions/3", b"# This is private data.\nUID=1000\nUSER=alice\nACTIVE=1\nIS_DISPLAY=1\nSTATE=active\nTYPE=wayland\nCLASS=user\nSEAT=seat0\nDESKTOP=GNOME\n"),
            ("/run/systemd/sessions/3.ref", b""),
            ("/run/systemd/sessions/7", b"USER=bob\nSTATE=online\nTYPE=tty\nCLASS=user\nREMOTE=1\nREMOTE_HOST=10.0.0.9\n"),
            ("/run/systemd/sessions/c1", b"USER=gdm\nSTATE=online\nTYPE=wayland\nCLASS=greeter\n"),
        ]);
        let u = collect(&d);
        assert_eq!(
            u.accounts[0],
            facts::Account {
                name: "alice".into(),
                uid: 1000,
                home: "/home/alice".into(),
                shell: "/bin/bash".into(),
                login_shell: true,
                password: Password::Set,
                admin: true,
            }
        );
        let names: Vec<&str> = u.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "svc"]);
        assert_eq!(u.accounts[1].password, Password::Locked);
        assert!(u.accounts[1].admin, "wheel counts");
        assert!(!u.accounts[2].login_shell);
        assert_eq!(u.root_password, Password::Locked);
        assert_eq!(u.without_password, Known::Value(vec!["games".to_string()]));
        assert_eq!(u.admin_groups["sudo"], ["alice"]);
        assert_eq!(u.admin_groups["wheel"], ["bob"]);
        assert!(!u.admin_groups.contains_key("admin"), "no such group");
        assert_eq!(
            u.logged_in,
            Known::Value(vec![
                session("alice", "wayland", false),
                session("bob", "tty", true),
            ])
        );
        assert!(u.evidence.contains(&"/etc/shadow".to_string()));
    }

    #[test]
    fn without_shadow_or_logind() {
        let mut utmp = vec![0u8; 384 * 2];
        utmp[0..2].copy_from_slice(&7i16.to_ne_bytes());
        utmp[44..49].copy_from_slice(b"carol");
        utmp[76..78].copy_from_slice(b":0");
        utmp[384..386].copy_from_slice(&8i16.to_ne_bytes()); // DEAD_PROCESS
        utmp[384 + 44..384 + 47].copy_from_slice(b"dan");
        let d = tree(&[
            ("/etc/passwd", PASSWD.as_bytes()),
            ("/etc/group", b"wheel:x:10:\n"),
            ("/run/utmp", &utmp),
        ]);
        let u = collect(&d);
        assert!(u.without_password.is_unknown());
        assert_eq!(u.accounts[0].password, Password::Unknown);
        assert_eq!(
            u.logged_in,
            Known::Value(vec![session("carol", "unspecified", false)])
        );
        assert!(u.evidence.iter().any(|e| e.contains("run as root")));
        assert!(u.evidence.contains(&"/run/utmp".to_string()));
    }

    /// Neither logind nor utmp: who is logged in is unknown, on the wire
    /// the string, and the evidence says why.
    #[test]
    fn nobody_to_ask_about_sessions() {
        let d = tree(&[("/etc/passwd", PASSWD.as_bytes())]);
        let v = Users
            .collect(&Context::new(&Host::fixture(d.path(), vec![]), &NoCache))
            .unwrap();
        assert_eq!(v["logged_in"], "unknown");
        assert_eq!(v["without_password"], "unknown");
        let u: facts::Users = serde_json::from_value(v).unwrap();
        assert!(u.logged_in.is_unknown());
        assert!(u.evidence.contains(&"neither logind nor utmp".to_string()));
    }
}
