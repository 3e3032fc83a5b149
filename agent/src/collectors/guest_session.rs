//! guest_session: can someone sit down at this machine and get a desktop
//! without a password? Either through a guest session (LightDM's
//! allow-guest, Fedora's xguest account) or through automatic login
//! (GDM, LightDM, SDDM, greetd, LXDM, nodm, or a getty that logs a user in
//! on the console).
//!
//! The display manager is the one systemd starts (the
//! display-manager.service alias), else Debian's
//! /etc/X11/default-display-manager. Only its configuration counts: a
//! leftover gdm custom.conf does nothing while LightDM runs.

use std::collections::BTreeMap;

use penguindome_protocol::facts::guest_session::{self as facts, Autologin};
use penguindome_protocol::facts::{Known, to_value};
use serde_json::Value;

use super::{CollectError, Collector, Context};
use crate::host::Host;

/// The collector.
pub struct GuestSession;

/// Directories LightDM (started by systemd) searches for its guest script.
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// What the display manager allows.
struct DmAnswer {
    /// `None` when this display manager is not understood.
    guest: Option<bool>,
    /// `Err` when not understood.
    autologin: Result<Option<Autologin>, ()>,
}

/// An INI file's sections and keys, later files overriding earlier ones;
/// each value remembers the file it came from.
#[derive(Default)]
struct Ini(BTreeMap<String, BTreeMap<String, (String, String)>>);

impl Ini {
    fn merge(&mut self, path: &str, text: &str, alias: &dyn Fn(&str) -> String) {
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = alias(s.trim());
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                self.0.entry(section.clone()).or_default().insert(
                    k.trim().to_string(),
                    (v.trim().to_string(), path.to_string()),
                );
            }
        }
    }

    fn get(&self, section: &str, key: &str) -> Option<&(String, String)> {
        self.0.get(section)?.get(key)
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// Reads `files` in order into one INI view, noting which were read.
fn read_ini(
    host: &Host,
    files: &[String],
    alias: &dyn Fn(&str) -> String,
    evidence: &mut Vec<String>,
) -> Ini {
    let mut ini = Ini::default();
    for f in files {
        if let Ok(text) = host.read_to_string(f) {
            evidence.push(format!("read {f}"));
            ini.merge(f, &text, alias);
        }
    }
    ini
}

/// `dir/*.conf`, sorted.
fn conf_dir(host: &Host, dir: &str) -> Vec<String> {
    host.list_dir(dir)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("{dir}/{n}"))
        .collect()
}

/// The display manager systemd starts, and how that was found.
fn display_manager(host: &Host) -> (String, String) {
    const ALIAS: &str = "/etc/systemd/system/display-manager.service";
    if let Ok(target) = host.read_link(ALIAS) {
        let unit = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = unit.trim_end_matches(".service").to_string();
        return (name, format!("{ALIAS} -> {}", target.display()));
    }
    const DEBIAN: &str = "/etc/X11/default-display-manager";
    if let Ok(text) = host.read_to_string(DEBIAN) {
        let path = text.trim();
        if !path.is_empty() {
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            return (name, format!("{DEBIAN}: {path}"));
        }
    }
    (
        "none".into(),
        format!(
            "no display manager ({ALIAS} and {DEBIAN} absent): graphical sessions only through startx/xinit or a compositor started from a console"
        ),
    )
}

/// Normalises unit names: gdm3 is GDM.
fn canonical(dm: &str) -> &str {
    match dm {
        "gdm3" => "gdm",
        other => other,
    }
}

/// LightDM: guest sessions need allow-guest (default true) and the
/// guest-account script in PATH (LightDM itself checks both).
fn lightdm(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    let mut files = Vec::new();
    for dir in [
        "/usr/share/lightdm/lightdm.conf.d",
        "/usr/local/share/lightdm/lightdm.conf.d",
        "/etc/xdg/lightdm/lightdm.conf.d",
        "/etc/lightdm/lightdm.conf.d",
    ] {
        files.extend(conf_dir(host, dir));
    }
    files.push("/etc/lightdm/lightdm.conf".into());
    // [SeatDefaults] is the old name of [Seat:*].
    let alias = |s: &str| {
        if s == "SeatDefaults" {
            "Seat:*".to_string()
        } else {
            s.to_string()
        }
    };
    let ini = read_ini(host, &files, &alias, evidence);
    let seat = |key: &str| {
        ini.get("Seat:seat0", key)
            .or_else(|| ini.get("Seat:*", key))
    };
    let mut describe = |key: &str, default: &str| -> String {
        match seat(key) {
            Some((v, from)) => {
                evidence.push(format!("{key}={v} ({from})"));
                v.clone()
            }
            None => {
                evidence.push(format!("{key}={default} (LightDM default)"));
                default.to_string()
            }
        }
    };
    let allow_guest = truthy(&describe("allow-guest", "true"));
    let autologin_guest = truthy(&describe("autologin-guest", "false"));
    let autologin_user = describe("autologin-user", "");
    let timeout: u64 = describe("autologin-user-timeout", "0").parse().unwrap_or(0);
    let script = ini
        .get("LightDM", "guest-account-script")
        .map(|(v, _)| v.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| "guest-account".into());
    let installed = if script.starts_with('/') {
        host.exists(&script).then(|| script.clone())
    } else {
        SYSTEM_PATH
            .iter()
            .map(|d| format!("{d}/{script}"))
            .find(|p| host.exists(p))
    };
    match &installed {
        Some(p) => evidence.push(format!("guest account script {p} is installed")),
        None => evidence.push(format!(
            "guest account script {script:?} is not installed: LightDM offers no guest session"
        )),
    }
    let guest = allow_guest && installed.is_some();
    let autologin = if !autologin_user.is_empty() {
        Some(Autologin {
            user: autologin_user,
            kind: if timeout > 0 { "timed" } else { "automatic" }.into(),
            delay_seconds: Some(timeout),
            session: seat("autologin-session").map(|(v, _)| v.clone()),
        })
    } else if autologin_guest && guest {
        Some(Autologin {
            user: "guest".into(),
            kind: "automatic".into(),
            delay_seconds: Some(timeout),
            session: None,
        })
    } else {
        None
    };
    DmAnswer {
        guest: Some(guest),
        autologin: Ok(autologin),
    }
}

/// GDM: no guest session since GDM 3; automatic or timed login in
/// custom.conf (Debian's gdm3 reads daemon.conf).
fn gdm(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    let files: Vec<String> = [
        "/etc/gdm3/daemon.conf",
        "/etc/gdm3/custom.conf",
        "/etc/gdm/custom.conf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ini = read_ini(host, &files, &|s: &str| s.to_string(), evidence);
    let get = |k: &str| ini.get("daemon", k);
    let mut autologin = None;
    if let Some((v, from)) = get("AutomaticLoginEnable") {
        evidence.push(format!("AutomaticLoginEnable={v} ({from})"));
        if truthy(v)
            && let Some((user, _)) = get("AutomaticLogin").filter(|(u, _)| !u.is_empty())
        {
            evidence.push(format!("AutomaticLogin={user}"));
            autologin = Some(Autologin {
                user: user.clone(),
                kind: "automatic".into(),
                delay_seconds: None,
                session: None,
            });
        }
    }
    if autologin.is_none()
        && let Some((v, from)) = get("TimedLoginEnable")
    {
        evidence.push(format!("TimedLoginEnable={v} ({from})"));
        if truthy(v)
            && let Some((user, _)) = get("TimedLogin").filter(|(u, _)| !u.is_empty())
        {
            let delay = get("TimedLoginDelay")
                .and_then(|(d, _)| d.parse().ok())
                .unwrap_or(30);
            evidence.push(format!("TimedLogin={user} after {delay} s"));
            autologin = Some(Autologin {
                user: user.clone(),
                kind: "timed".into(),
                delay_seconds: Some(delay),
                session: None,
            });
        }
    }
    if autologin.is_none() {
        evidence.push("GDM: no automatic or timed login".into());
    }
    evidence.push("GDM has no guest session".into());
    DmAnswer {
        guest: Some(false),
        autologin: Ok(autologin),
    }
}

/// SDDM: `[Autologin] User=`; no guest feature.
fn sddm(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    let mut files = conf_dir(host, "/usr/lib/sddm/sddm.conf.d");
    files.extend(conf_dir(host, "/etc/sddm.conf.d"));
    files.push("/etc/sddm.conf".into());
    let ini = read_ini(host, &files, &|s: &str| s.to_string(), evidence);
    let autologin = match ini.get("Autologin", "User").filter(|(u, _)| !u.is_empty()) {
        Some((user, from)) => {
            let session = ini.get("Autologin", "Session").map(|(s, _)| s.clone());
            evidence.push(format!(
                "[Autologin] User={user} Session={} ({from})",
                session.as_deref().unwrap_or("")
            ));
            Some(Autologin {
                user: user.clone(),
                kind: "automatic".into(),
                delay_seconds: None,
                session,
            })
        }
        None => {
            evidence.push("SDDM: no [Autologin] User".into());
            None
        }
    };
    evidence.push("SDDM has no guest session".into());
    DmAnswer {
        guest: Some(false),
        autologin: Ok(autologin),
    }
}

/// A TOML table's string keys (greetd's config is flat and simple).
fn toml_tables(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = t.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.split_once('"').map(|(s, _)| s))
                .or_else(|| {
                    v.strip_prefix('\'')
                        .and_then(|v| v.split_once('\'').map(|(s, _)| s))
                })
                .unwrap_or_else(|| v.split('#').next().unwrap_or("").trim());
            out.entry(table.clone())
                .or_default()
                .insert(k.trim().to_string(), v.to_string());
        }
    }
    out
}

/// greetd: `[initial_session]` logs a user in at boot; a
/// `[default_session]` that is not a greeter logs one in every time.
fn greetd(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    const PATH: &str = "/etc/greetd/config.toml";
    let Ok(text) = host.read_to_string(PATH) else {
        evidence.push(format!("{PATH} is not readable"));
        return DmAnswer {
            guest: Some(false),
            autologin: Err(()),
        };
    };
    evidence.push(format!("read {PATH}"));
    let t = toml_tables(&text);
    let mut autologin = None;
    if let Some(init) = t.get("initial_session")
        && let Some(user) = init.get("user").filter(|u| !u.is_empty())
    {
        let cmd = init.get("command").cloned().unwrap_or_default();
        evidence.push(format!(
            "[initial_session] user={user} command={cmd:?}: logged in without a password at boot"
        ));
        autologin = Some(Autologin {
            user: user.clone(),
            kind: "initial".into(),
            delay_seconds: None,
            session: Some(cmd),
        });
    }
    if let Some(def) = t.get("default_session") {
        let cmd = def.get("command").cloned().unwrap_or_default();
        let user = def.get("user").cloned().unwrap_or_else(|| "greeter".into());
        let is_greeter = cmd.contains("greet")
            || cmd.contains("nwg-hello")
            || user == "greeter"
            || user == "_greetd";
        evidence.push(format!("[default_session] user={user} command={cmd:?}"));
        if !is_greeter && autologin.is_none() {
            evidence
                .push("the default session is not a greeter: it starts without a password".into());
            autologin = Some(Autologin {
                user,
                kind: "automatic".into(),
                delay_seconds: None,
                session: Some(cmd),
            });
        }
    }
    DmAnswer {
        guest: Some(false),
        autologin: Ok(autologin),
    }
}

/// LXDM: `[base] autologin=`.
fn lxdm(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    let ini = read_ini(
        host,
        &["/etc/lxdm/lxdm.conf".to_string()],
        &|s: &str| s.to_string(),
        evidence,
    );
    let autologin = ini
        .get("base", "autologin")
        .filter(|(u, _)| !u.is_empty())
        .map(|(u, from)| {
            evidence.push(format!("[base] autologin={u} ({from})"));
            Autologin {
                user: u.clone(),
                kind: "automatic".into(),
                delay_seconds: None,
                session: None,
            }
        });
    DmAnswer {
        guest: Some(false),
        autologin: Ok(autologin),
    }
}

/// nodm exists to log one user in automatically.
fn nodm(host: &Host, evidence: &mut Vec<String>) -> DmAnswer {
    const PATH: &str = "/etc/default/nodm";
    let text = host.read_to_string(PATH).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .next_back()
    };
    let enabled = get("NODM_ENABLED").is_none_or(|v| truthy(&v));
    let user = get("NODM_USER").unwrap_or_else(|| "root".into());
    evidence.push(format!("{PATH}: NODM_ENABLED={enabled} NODM_USER={user}"));
    DmAnswer {
        guest: Some(false),
        autologin: Ok(enabled.then_some(Autologin {
            user,
            kind: "automatic".into(),
            delay_seconds: None,
            session: None,
        })),
    }
}

/// Fedora's xguest: a passwordless account made for guest logins.
/// `None` when that cannot be told (the evidence says why).
fn xguest(host: &Host, evidence: &mut Vec<String>) -> Option<bool> {
    let passwd = host.read_to_string("/etc/passwd").unwrap_or_default();
    let Some(line) = passwd.lines().find(|l| l.starts_with("xguest:")) else {
        return Some(false);
    };
    let shell = line.rsplit(':').next().unwrap_or("");
    if shell.ends_with("nologin") || shell.ends_with("/false") || shell.is_empty() {
        evidence.push(format!(
            "/etc/passwd has xguest with shell {shell}: cannot log in"
        ));
        return Some(false);
    }
    let shadow = match host.read_to_string("/etc/shadow") {
        Ok(text) => text,
        Err(e) => {
            evidence.push(format!(
                "/etc/passwd has xguest (shell {shell}), but /etc/shadow cannot be read ({e}): whether it has a password is unknown; run the agent as root"
            ));
            return None;
        }
    };
    let state = shadow
        .lines()
        .find(|l| l.starts_with("xguest:"))
        .and_then(|l| l.split(':').nth(1).map(String::from));
    match state.as_deref() {
        Some(h) if !h.is_empty() && !h.starts_with('!') && !h.starts_with('*') => {
            evidence.push("/etc/passwd has xguest, but it has a password set".into());
            Some(false)
        }
        _ => {
            evidence.push(format!(
                "/etc/passwd has xguest (shell {shell}): Fedora's guest account, no password"
            ));
            Some(true)
        }
    }
}

/// Console autologin: `agetty --autologin USER` in a getty drop-in.
fn getty_autologin(host: &Host, evidence: &mut Vec<String>) -> Option<Autologin> {
    const DIR: &str = "/etc/systemd/system";
    for unit in host.list_dir(DIR) {
        let is_getty = (unit.starts_with("getty@") || unit.starts_with("serial-getty@"))
            && unit.ends_with(".d");
        if !is_getty {
            continue;
        }
        let d = format!("{DIR}/{unit}");
        for f in conf_dir(host, &d) {
            let text = host.read_to_string(&f).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("ExecStart="))
            {
                let words: Vec<&str> = line.split_whitespace().collect();
                let user = words.iter().enumerate().find_map(|(i, w)| {
                    if *w == "--autologin" || *w == "-a" {
                        words.get(i + 1).map(|u| u.to_string())
                    } else {
                        w.strip_prefix("--autologin=").map(String::from)
                    }
                });
                if let Some(user) = user {
                    evidence.push(format!(
                        "{f}: {} logs {user} in on the console without a password",
                        line.trim()
                    ));
                    return Some(Autologin {
                        user,
                        kind: "console".into(),
                        delay_seconds: None,
                        session: Some(unit.trim_end_matches(".d").to_string()),
                    });
                }
            }
        }
    }
    None
}

impl Collector for GuestSession {
    fn name(&self) -> &'static str {
        "guest_session"
    }

    fn collect(&self, ctx: &Context<'_>) -> Result<Value, CollectError> {
        let host = ctx.host;
        let (dm, how) = display_manager(host);
        let mut evidence = vec![how];
        let answer = match canonical(&dm) {
            "lightdm" => lightdm(host, &mut evidence),
            "gdm" => gdm(host, &mut evidence),
            "sddm" => sddm(host, &mut evidence),
            "greetd" => greetd(host, &mut evidence),
            "lxdm" => lxdm(host, &mut evidence),
            "nodm" => nodm(host, &mut evidence),
            // These have neither guest sessions nor automatic login.
            "none" | "xdm" | "wdm" => DmAnswer {
                guest: Some(false),
                autologin: Ok(None),
            },
            other => {
                evidence.push(format!(
                    "display manager {other:?}: its guest and automatic login settings are not known to this collector"
                ));
                DmAnswer {
                    guest: None,
                    autologin: Err(()),
                }
            }
        };
        let xguest = xguest(host, &mut evidence);
        let console = getty_autologin(host, &mut evidence);
        let guest = match (answer.guest, xguest) {
            (Some(true), _) | (_, Some(true)) => Known::Value(true),
            (Some(false), Some(false)) => Known::Value(false),
            _ => Known::UNKNOWN,
        };
        let autologin = match (answer.autologin, console) {
            (Ok(Some(a)), _) => Known::Value(Some(a)),
            (_, Some(c)) => Known::Value(Some(c)),
            (Ok(None), None) => Known::Value(None),
            (Err(()), None) => Known::UNKNOWN,
        };
        Ok(to_value(&facts::GuestSession {
            enabled: enabled(guest.clone(), &autologin),
            display_manager: canonical(&dm).to_string(),
            guest,
            autologin,
            evidence,
        }))
    }
}

/// Passwordless use is possible when either way in is open; unknown when
/// neither is known open and one of them is unknown.
fn enabled(guest: Known<bool>, autologin: &Known<Option<Autologin>>) -> Known<bool> {
    match (guest, autologin) {
        (Known::Value(true), _) | (_, Known::Value(Some(_))) => Known::Value(true),
        (Known::Value(false), Known::Value(None)) => Known::Value(false),
        _ => Known::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::NoCache;

    struct Machine(tempfile::TempDir);

    impl Machine {
        fn new(dm_unit: Option<&str>) -> Self {
            let m = Self(tempfile::tempdir().unwrap());
            m.file(
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\nlightdm:x:110:116:Light Display Manager:/var/lib/lightdm:/bin/false\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
            );
            if let Some(unit) = dm_unit {
                let link =
                    m.0.path()
                        .join("etc/systemd/system/display-manager.service");
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(unit, link).unwrap();
            }
            m
        }

        fn file(&self, path: &str, content: &str) -> &Self {
            let p = self.0.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
            self
        }

        /// The answer as JSON, as the agent sends it.
        fn json(&self) -> Value {
            GuestSession
                .collect(&Context::new(
                    &Host::fixture(self.0.path(), vec![]),
                    &NoCache,
                ))
                .unwrap()
        }

        /// The answer read back as the typed contract.
        fn collect(&self) -> facts::GuestSession {
            serde_json::from_value(self.json()).unwrap()
        }
    }

    fn evidence_has(v: &facts::GuestSession, needle: &str) -> bool {
        v.evidence.iter().any(|e| e.contains(needle))
    }

    fn autologin(user: &str, kind: &str) -> Autologin {
        Autologin {
            user: user.into(),
            kind: kind.into(),
            delay_seconds: None,
            session: None,
        }
    }

    const YES: Known<bool> = Known::Value(true);
    const NO: Known<bool> = Known::Value(false);

    /// Ubuntu's LightDM turns guests off in /usr/share; the admin's
    /// lightdm.conf.d turns them back on, and the script is installed.
    #[test]
    fn lightdm_allow_guest_true() {
        let m = Machine::new(Some("/lib/systemd/system/lightdm.service"));
        m.file(
            "/usr/share/lightdm/lightdm.conf.d/50-ubuntu.conf",
            "[Seat:*]\nuser-session=ubuntu\nallow-guest=false\n",
        )
        .file(
            "/usr/share/lightdm/lightdm.conf.d/50-greeter-wrapper.conf",
            "[Seat:*]\ngreeter-wrapper=/usr/lib/lightdm/lightdm-greeter-session\n",
        )
        .file(
            "/etc/lightdm/lightdm.conf.d/90-guest.conf",
            "# guests welcome\n[SeatDefaults]\nallow-guest=true\n",
        )
        .file(
            "/etc/lightdm/lightdm.conf",
            "[LightDM]\n#allow-guest=true\n",
        )
        .file("/usr/sbin/guest-account", "#!/bin/sh\n");
        let v = m.collect();
        assert_eq!(v.display_manager, "lightdm");
        assert_eq!(v.guest, YES, "{v:#?}");
        assert_eq!(v.enabled, YES);
        assert_eq!(v.autologin, Known::Value(None));
        assert!(evidence_has(
            &v,
            "allow-guest=true (/etc/lightdm/lightdm.conf.d/90-guest.conf)"
        ));
        assert!(evidence_has(
            &v,
            "guest account script /usr/sbin/guest-account is installed"
        ));
    }

    /// LightDM's default is allow-guest=true, but without the guest
    /// account script there is no guest session.
    #[test]
    fn lightdm_default() {
        let m = Machine::new(Some("/lib/systemd/system/lightdm.service"));
        m.file(
            "/etc/lightdm/lightdm.conf",
            "[LightDM]\n\n[Seat:*]\n#allow-guest=true\ngreeter-session=lightdm-gtk-greeter\n",
        );
        let v = m.collect();
        assert_eq!(v.guest, NO);
        assert_eq!(v.enabled, NO);
        assert!(evidence_has(&v, "allow-guest=true (LightDM default)"));
        assert!(evidence_has(&v, "\"guest-account\" is not installed"));

        // With the script the default lets guests in.
        m.file("/usr/bin/guest-account", "#!/bin/sh\n");
        assert_eq!(m.collect().guest, YES);

        // Automatic login is as bad.
        m.file(
            "/etc/lightdm/lightdm.conf.d/50-kiosk.conf",
            "[Seat:*]\nallow-guest=false\nautologin-user=alice\nautologin-user-timeout=0\n",
        );
        let v = m.collect();
        assert_eq!(v.guest, NO);
        assert_eq!(v.enabled, YES);
        assert_eq!(
            v.autologin,
            Known::Value(Some(Autologin {
                delay_seconds: Some(0),
                ..autologin("alice", "automatic")
            }))
        );
    }

    #[test]
    fn gdm_automatic_login() {
        let m = Machine::new(Some("/lib/systemd/system/gdm3.service"));
        m.file(
            "/etc/gdm3/custom.conf",
            "# GDM configuration storage\n\n[daemon]\n# Uncomment the line below to force the login screen to use Xorg\n#WaylandEnable=false\n\n# Enabling automatic login\nAutomaticLoginEnable = true\nAutomaticLogin = alice\n\n[security]\n\n[xdmcp]\n",
        );
        // A leftover of another display manager changes nothing.
        m.file("/etc/sddm.conf", "[Autologin]\nUser=root\n");
        let v = m.collect();
        assert_eq!(v.display_manager, "gdm");
        assert_eq!(v.guest, NO);
        assert_eq!(v.enabled, YES);
        assert_eq!(
            v.autologin,
            Known::Value(Some(autologin("alice", "automatic")))
        );
        assert!(evidence_has(
            &v,
            "AutomaticLoginEnable=true (/etc/gdm3/custom.conf)"
        ));

        // Timed login only.
        m.file(
            "/etc/gdm3/custom.conf",
            "[daemon]\nAutomaticLoginEnable=false\nAutomaticLogin=alice\nTimedLoginEnable=true\nTimedLogin=alice\nTimedLoginDelay=10\n",
        );
        let v = m.json();
        assert_eq!(
            v["autologin"],
            serde_json::json!({"user": "alice", "kind": "timed", "delay_seconds": 10}),
            "no session key when the configuration names none"
        );

        // Commented out: nothing.
        m.file(
            "/etc/gdm3/custom.conf",
            "[daemon]\n#  AutomaticLoginEnable = true\n#  AutomaticLogin = user1\n",
        );
        let v = m.collect();
        assert_eq!(v.enabled, NO);
        assert_eq!(v.autologin, Known::Value(None));
    }

    #[test]
    fn sddm_autologin() {
        let m = Machine::new(Some("/usr/lib/systemd/system/sddm.service"));
        m.file(
            "/usr/lib/sddm/sddm.conf.d/default.conf",
            "[Autologin]\nRelogin=false\nSession=\nUser=\n\n[General]\nHaltCommand=/usr/bin/systemctl poweroff\n",
        )
        .file(
            "/etc/sddm.conf.d/kde_settings.conf",
            "[Autologin]\nRelogin=false\nSession=plasma\nUser=alice\n\n[General]\nHaltCommand=\nRebootCommand=\n\n[Theme]\nCurrent=breeze\n",
        );
        let v = m.collect();
        assert_eq!(v.display_manager, "sddm");
        assert_eq!(v.enabled, YES);
        assert_eq!(
            v.autologin,
            Known::Value(Some(Autologin {
                session: Some("plasma".into()),
                ..autologin("alice", "automatic")
            }))
        );
        assert!(evidence_has(&v, "/etc/sddm.conf.d/kde_settings.conf"));

        // The main file overrides the drop-ins.
        m.file("/etc/sddm.conf", "[Autologin]\nUser=\n");
        assert_eq!(m.collect().enabled, NO);
    }

    /// Fedora with GDM and the xguest package.
    #[test]
    fn xguest_account() {
        let m = Machine::new(Some("/usr/lib/systemd/system/gdm.service"));
        m.file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nxguest:x:989:985:Guest:/home/xguest:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        )
        .file("/etc/shadow", "root:!::0:99999:7:::\nxguest:::::::\nalice:$y$j9T$x$y:19000:0:99999:7:::\n");
        let v = m.collect();
        assert_eq!(v.display_manager, "gdm");
        assert_eq!(v.guest, YES);
        assert_eq!(v.enabled, YES);
        assert_eq!(v.autologin, Known::Value(None));
        assert!(evidence_has(&v, "xguest"));
    }

    /// xguest without a readable /etc/shadow: whether it has a password
    /// is unknown, so is whether a guest can log in.
    #[test]
    fn xguest_without_shadow_is_unknown() {
        let m = Machine::new(Some("/usr/lib/systemd/system/gdm.service"));
        m.file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nxguest:x:989:985:Guest:/home/xguest:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        );
        let v = m.collect();
        assert_eq!(v.display_manager, "gdm");
        assert!(v.guest.is_unknown(), "{v:#?}");
        assert!(v.enabled.is_unknown());
        assert!(evidence_has(&v, "/etc/shadow cannot be read"));

        // A getty autologin still answers the question.
        m.file(
            "/etc/systemd/system/getty@tty1.service.d/autologin.conf",
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin alice %I $TERM\n",
        );
        let v = m.collect();
        assert!(v.guest.is_unknown());
        assert_eq!(v.enabled, YES);
    }

    /// No display manager: startx only. A getty autologin still counts.
    #[test]
    fn no_display_manager() {
        let m = Machine::new(None);
        let v = m.collect();
        assert_eq!(v.display_manager, "none");
        assert_eq!(v.enabled, NO);
        assert_eq!(v.guest, NO);
        assert_eq!(v.autologin, Known::Value(None));
        assert!(evidence_has(&v, "startx"));

        m.file(
            "/etc/systemd/system/getty@tty1.service.d/autologin.conf",
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty -o '-p -f -- \\\\u' --noclear --autologin alice %I $TERM\n",
        );
        let v = m.collect();
        assert_eq!(v.enabled, YES);
        assert_eq!(
            v.autologin,
            Known::Value(Some(Autologin {
                session: Some("getty@tty1.service".into()),
                ..autologin("alice", "console")
            }))
        );
    }

    /// Debian's pointer file when systemd's alias is absent; greetd's
    /// initial session.
    #[test]
    fn greetd_initial_session() {
        let m = Machine::new(None);
        m.file("/etc/X11/default-display-manager", "/usr/sbin/greetd\n").file(
            "/etc/greetd/config.toml",
            "[terminal]\nvt = 1\n\n[default_session]\ncommand = \"tuigreet --cmd sway\"\nuser = \"greeter\"\n\n[initial_session]\ncommand = \"sway\"\nuser = \"alice\"\n",
        );
        let v = m.collect();
        assert_eq!(v.display_manager, "greetd");
        assert_eq!(v.enabled, YES);
        assert_eq!(
            v.autologin,
            Known::Value(Some(Autologin {
                session: Some("sway".into()),
                ..autologin("alice", "initial")
            }))
        );
    }

    #[test]
    fn unknown_display_manager() {
        let m = Machine::new(Some("/usr/lib/systemd/system/entrance.service"));
        let v = m.collect();
        assert_eq!(v.display_manager, "entrance");
        assert!(v.enabled.is_unknown());
        assert!(v.autologin.is_unknown());
        assert_eq!(m.json()["autologin"], "unknown");
        assert!(evidence_has(&v, "not known to this collector"));
    }
}
