//! The lock settings of desktops with a built-in locker: GNOME and its
//! relatives (GSettings through dconf), Cinnamon, MATE, KDE Plasma
//! (kscreenlockerrc) and XFCE (xfce4-screensaver's xfconf channel).

use std::collections::BTreeMap;

use super::dconf::{Dconf, Schema, Setting};
use super::{Finding, Tri};
use crate::host::Host;

const GNOME_SAVER: Schema = Schema {
    id: "org.gnome.desktop.screensaver",
    path: "/org/gnome/desktop/screensaver/",
};
const GNOME_SESSION: Schema = Schema {
    id: "org.gnome.desktop.session",
    path: "/org/gnome/desktop/session/",
};
const GNOME_LOCKDOWN: Schema = Schema {
    id: "org.gnome.desktop.lockdown",
    path: "/org/gnome/desktop/lockdown/",
};
const CINNAMON_SAVER: Schema = Schema {
    id: "org.cinnamon.desktop.screensaver",
    path: "/org/cinnamon/desktop/screensaver/",
};
const CINNAMON_SESSION: Schema = Schema {
    id: "org.cinnamon.desktop.session",
    path: "/org/cinnamon/desktop/session/",
};
const CINNAMON_LOCKDOWN: Schema = Schema {
    id: "org.cinnamon.desktop.lockdown",
    path: "/org/cinnamon/desktop/lockdown/",
};
const MATE_SAVER: Schema = Schema {
    id: "org.mate.screensaver",
    path: "/org/mate/screensaver/",
};
const MATE_SESSION: Schema = Schema {
    id: "org.mate.session",
    path: "/org/mate/desktop/session/",
};
const MATE_LOCKDOWN: Schema = Schema {
    id: "org.mate.lockdown",
    path: "/org/mate/desktop/lockdown/",
};
/// light-locker's settings.
pub const LIGHT_LOCKER: Schema = Schema {
    id: "apps.light-locker",
    path: "/apps/light-locker/",
};

/// Every schema the desktops read from dconf.
pub const DCONF_SCHEMAS: &[&Schema] = &[
    &GNOME_SAVER,
    &GNOME_SESSION,
    &GNOME_LOCKDOWN,
    &CINNAMON_SAVER,
    &CINNAMON_SESSION,
    &CINNAMON_LOCKDOWN,
    &MATE_SAVER,
    &MATE_SESSION,
    &MATE_LOCKDOWN,
    &LIGHT_LOCKER,
];

/// Reads settings and collects their evidence.
struct Reader<'a> {
    host: &'a Host,
    dconf: &'a Dconf,
    evidence: Vec<String>,
    broken: bool,
}

impl Reader<'_> {
    fn setting(&mut self, schema: &Schema, key: &str) -> Option<Setting> {
        let s = self.dconf.get(self.host, schema, key);
        match &s {
            Some(s) => self.evidence.push(s.evidence.clone()),
            None => {
                self.evidence.push(format!(
                    "{}{key}: no value and no known default",
                    schema.path
                ));
                self.broken = true;
            }
        }
        s
    }

    fn bool(&mut self, schema: &Schema, key: &str) -> bool {
        let s = self.setting(schema, key);
        s.as_ref().and_then(Setting::as_bool).unwrap_or_else(|| {
            if s.is_some() {
                self.broken = true;
                self.evidence
                    .push(format!("{}{key} is not a boolean", schema.path));
            }
            false
        })
    }

    fn int(&mut self, schema: &Schema, key: &str) -> i64 {
        let s = self.setting(schema, key);
        s.as_ref().and_then(Setting::as_int).unwrap_or_else(|| {
            if s.is_some() {
                self.broken = true;
                self.evidence
                    .push(format!("{}{key} is not a number", schema.path));
            }
            0
        })
    }

    /// A delay setting as read by [`Self::int`]; a negative one makes the
    /// answer unknown (no desktop documents what it would do).
    fn delay(&mut self, schema: &Schema, key: &str) -> i64 {
        let n = self.int(schema, key);
        if n < 0 {
            self.broken = true;
            self.evidence.push(format!(
                "{}{key} = {n} is negative: not a usable delay",
                schema.path
            ));
        }
        n
    }

    /// The finding: locks after the sum of `delay` (value, unit in
    /// seconds) when `enabled`.
    fn finish(mut self, enabled: bool, delay: &[(i64, u64)], why_not: &str) -> Finding {
        let mut evidence = self.dconf.notes.clone();
        evidence.append(&mut self.evidence);
        if self.broken {
            return Finding::unknown(evidence);
        }
        if enabled {
            let terms: Vec<(i128, u64)> = delay.iter().map(|&(v, u)| (v.into(), u)).collect();
            Finding::locks_after(&terms, evidence)
        } else {
            evidence.push(why_not.to_string());
            Finding::no(evidence)
        }
    }
}

/// GNOME Shell and relatives that share its schemas (Unity, Budgie): locks
/// when the session goes idle (`idle-delay` s, 0 = never) if
/// `lock-enabled`, `lock-delay` s later; the lockdown key overrides both.
pub fn gnome(host: &Host, dconf: &Dconf) -> Finding {
    let mut r = Reader {
        host,
        dconf,
        evidence: vec![],
        broken: false,
    };
    let lock_enabled = r.bool(&GNOME_SAVER, "lock-enabled");
    let lock_delay = r.delay(&GNOME_SAVER, "lock-delay");
    let idle_delay = r.delay(&GNOME_SESSION, "idle-delay");
    let lockdown = r.bool(&GNOME_LOCKDOWN, "disable-lock-screen");
    let enabled = lock_enabled && idle_delay > 0 && !lockdown;
    r.finish(
        enabled,
        &[(idle_delay, 1), (lock_delay, 1)],
        why_not(lock_enabled, idle_delay, lockdown),
    )
}

fn why_not(lock_enabled: bool, idle_delay: i64, lockdown: bool) -> &'static str {
    if lockdown {
        "locking is disabled by disable-lock-screen"
    } else if !lock_enabled {
        "lock-enabled is false: the screen blanks without locking"
    } else if idle_delay <= 0 {
        "idle-delay 0: the session never goes idle"
    } else {
        ""
    }
}

/// Cinnamon's screensaver: the same model as GNOME with its own schemas
/// (and an `idle-activation-enabled` switch).
pub fn cinnamon(host: &Host, dconf: &Dconf) -> Finding {
    let mut r = Reader {
        host,
        dconf,
        evidence: vec![],
        broken: false,
    };
    let lock_enabled = r.bool(&CINNAMON_SAVER, "lock-enabled");
    let activation = r.bool(&CINNAMON_SAVER, "idle-activation-enabled");
    let lock_delay = r.delay(&CINNAMON_SAVER, "lock-delay");
    let idle_delay = r.delay(&CINNAMON_SESSION, "idle-delay");
    let lockdown = r.bool(&CINNAMON_LOCKDOWN, "disable-lock-screen");
    let enabled = lock_enabled && activation && idle_delay > 0 && !lockdown;
    let why = if !activation {
        "idle-activation-enabled is false: the screensaver never starts on idle"
    } else {
        why_not(lock_enabled, idle_delay, lockdown)
    };
    r.finish(enabled, &[(idle_delay, 1), (lock_delay, 1)], why)
}

/// mate-screensaver: idle after `org.mate.session idle-delay` minutes,
/// locks `lock-delay` minutes after it activates.
pub fn mate(host: &Host, dconf: &Dconf, running: bool) -> Finding {
    let mut r = Reader {
        host,
        dconf,
        evidence: vec![],
        broken: false,
    };
    let lock_enabled = r.bool(&MATE_SAVER, "lock-enabled");
    let activation = r.bool(&MATE_SAVER, "idle-activation-enabled");
    let lock_delay = r.delay(&MATE_SAVER, "lock-delay");
    let idle_delay = r.delay(&MATE_SESSION, "idle-delay");
    let lockdown = r.bool(&MATE_LOCKDOWN, "disable-lock-screen");
    if !running {
        r.evidence
            .push("mate-screensaver is not running: nothing locks on idle".into());
        return r.finish(false, &[], "");
    }
    let enabled = lock_enabled && activation && idle_delay > 0 && !lockdown;
    let why = if !activation {
        "idle-activation-enabled is false: the screensaver never starts on idle"
    } else {
        why_not(lock_enabled, idle_delay, lockdown)
    };
    r.finish(enabled, &[(idle_delay, 60), (lock_delay, 60)], why)
}

/// A KConfig file's groups: key to (value, immutable).
type KConfig = BTreeMap<String, BTreeMap<String, (String, bool)>>;

/// Merges a KConfig file into `into`; `[$i]` marks make keys, groups or
/// the whole file immutable for files read later.
fn kconfig_merge(text: &str, into: &mut KConfig) {
    let mut group = String::new();
    let mut group_locked = false;
    let mut file_locked = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[$i]" && group.is_empty() {
            file_locked = true;
            continue;
        }
        if line.starts_with('[') {
            let locked = line.ends_with("[$i]");
            let name = line.trim_end_matches("[$i]");
            group = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            group_locked = locked;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let (name, options) = match k.find('[') {
            Some(i) => (&k[..i], &k[i..]),
            None => (k, ""),
        };
        // Localised entries (`Key[de]`) are not settings.
        if !options.is_empty() && !options.starts_with("[$") {
            continue;
        }
        let entry = into.entry(group.clone()).or_default();
        if entry.get(name).is_some_and(|(_, immutable)| *immutable) {
            continue;
        }
        let immutable = file_locked || group_locked || options.contains("$i");
        entry.insert(name.to_string(), (v.trim().to_string(), immutable));
    }
}

fn kconfig_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// KDE Plasma's kscreenlocker: `[Daemon] Autolock` (default true) after
/// `Timeout` minutes (default 5), then `LockGrace` seconds (default 5)
/// during which no password is asked.
pub fn kde(host: &Host, home: &str, uid: u32) -> Finding {
    let mut cfg = KConfig::new();
    let mut evidence = Vec::new();
    // The admin's defaults first, so `[$i]` there wins over the user.
    for (path, user) in [
        ("/etc/xdg/kscreenlockerrc".to_string(), false),
        (
            format!("{}/.config/kscreenlockerrc", home.trim_end_matches('/')),
            true,
        ),
    ] {
        let text = if user {
            super::read_user_text(host, &path, uid, home)
        } else {
            host.read_to_string(&path)
        };
        match text {
            Ok(text) => {
                kconfig_merge(&text, &mut cfg);
                evidence.push(format!("read {path}"));
            }
            Err(_) => evidence.push(format!("{path} absent")),
        }
    }
    let daemon = cfg.get("Daemon").cloned().unwrap_or_default();
    let mut get = |key: &str, default: &str| -> String {
        match daemon.get(key) {
            Some((v, imm)) => {
                let lock = if *imm { " (immutable)" } else { "" };
                evidence.push(format!("[Daemon] {key}={v}{lock}"));
                v.clone()
            }
            None => {
                evidence.push(format!("[Daemon] {key}={default} (default)"));
                default.to_string()
            }
        }
    };
    let autolock = get("Autolock", "true");
    let timeout = get("Timeout", "5");
    let grace = get("LockGrace", "5");
    let resume = get("LockOnResume", "true");
    let (Some(autolock), Ok(timeout), Ok(grace), Some(_)) = (
        kconfig_bool(&autolock),
        timeout.parse::<i64>(),
        grace.parse::<i64>(),
        kconfig_bool(&resume),
    ) else {
        evidence.push("kscreenlockerrc has values that are not booleans or numbers".into());
        return Finding::unknown(evidence);
    };
    if !autolock {
        evidence.push("Autolock=false: the screen does not lock on idle".into());
        return Finding::no(evidence);
    }
    // kscreenlocker enforces at least one minute.
    Finding::locks_after(
        &[(timeout.max(1).into(), 60), (grace.clamp(0, 300).into(), 1)],
        evidence,
    )
}

/// Deepest xfconf property nesting read (channels nest three or four).
const XFCONF_DEPTH: usize = 32;
/// Longest xfconf property path read.
const XFCONF_PATH: usize = 1024;

/// An xfconf channel file: property path to (type, value). Properties
/// nested deeper than [`XFCONF_DEPTH`] or with paths longer than
/// [`XFCONF_PATH`] are skipped, so an unclosed tag per line costs no more
/// than a bounded stack.
pub fn xfconf(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<String> = Vec::new();
    // Open properties below the cap, counted but not kept.
    let mut skipped = 0usize;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if name.trim() == "property" {
                if skipped > 0 {
                    skipped -= 1;
                } else {
                    stack.pop();
                }
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let mut parts = tag.splitn(2, char::is_whitespace);
        if parts.next() != Some("property") {
            continue;
        }
        let attrs = xml_attrs(parts.next().unwrap_or(""));
        let name = attrs.get("name").map(String::as_str).unwrap_or_default();
        let parent = stack.last().map(String::as_str).unwrap_or("");
        if skipped > 0 || stack.len() >= XFCONF_DEPTH || parent.len() + 1 + name.len() > XFCONF_PATH
        {
            if !self_closing {
                skipped += 1;
            }
            continue;
        }
        let path = format!("{parent}/{name}");
        if let (Some(t), Some(v)) = (attrs.get("type"), attrs.get("value")) {
            out.insert(path.clone(), (t.clone(), v.clone()));
        }
        if !self_closing {
            stack.push(path);
        }
    }
    out
}

fn xml_attrs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(end) = after[1..].find(q) else {
            break;
        };
        let value = after[1..1 + end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&");
        out.insert(key, value);
        rest = &after[end + 2..];
    }
    out
}

/// The values of an xfconf channel: the admin's defaults, then the user's.
pub fn xfconf_channel(
    host: &Host,
    home: &str,
    uid: u32,
    channel: &str,
    evidence: &mut Vec<String>,
) -> BTreeMap<String, (String, String)> {
    let mut merged = BTreeMap::new();
    let system = format!("/etc/xdg/xfce4/xfconf/xfce4-perchannel-xml/{channel}.xml");
    let user = format!(
        "{}/.config/xfce4/xfconf/xfce4-perchannel-xml/{channel}.xml",
        home.trim_end_matches('/')
    );
    let texts = [
        (system.clone(), host.read_to_string(&system)),
        (user.clone(), super::read_user_text(host, &user, uid, home)),
    ];
    for (path, text) in texts {
        if let Ok(text) = text {
            evidence.push(format!("read {path}"));
            merged.extend(xfconf(&text));
        }
    }
    merged
}

/// xfce4-screensaver: idle after `/saver/idle-activation/delay` minutes,
/// locks `/lock/saver-activation/delay` minutes later.
pub fn xfce_screensaver(host: &Host, home: &str, uid: u32) -> Finding {
    let mut evidence = Vec::new();
    let props = xfconf_channel(host, home, uid, "xfce4-screensaver", &mut evidence);
    let mut broken = false;
    let mut get = |key: &str, default: &str| -> String {
        match props.get(key) {
            Some((_, v)) => {
                evidence.push(format!("xfce4-screensaver {key} = {v}"));
                v.clone()
            }
            None => {
                evidence.push(format!("xfce4-screensaver {key} = {default} (default)"));
                default.to_string()
            }
        }
    };
    let mut flag = |key: &str| {
        let v = get(key, "true");
        match v.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                broken = true;
                false
            }
        }
    };
    let saver = flag("/saver/enabled");
    let idle = flag("/saver/idle-activation/enabled");
    let lock = flag("/lock/enabled");
    let with_saver = flag("/lock/saver-activation/enabled");
    let idle_delay = get("/saver/idle-activation/delay", "5").parse::<i64>();
    let lock_delay = get("/lock/saver-activation/delay", "0").parse::<i64>();
    let (false, Ok(idle_delay), Ok(lock_delay)) = (broken, idle_delay, lock_delay) else {
        evidence.push("xfce4-screensaver settings have values of the wrong type".into());
        return Finding::unknown(evidence);
    };
    if saver && idle && lock && with_saver && idle_delay > 0 {
        Finding::locks_after(
            &[(idle_delay.into(), 60), (lock_delay.into(), 60)],
            evidence,
        )
    } else {
        evidence.push("xfce4-screensaver does not lock on idle with these settings".into());
        Finding::no(evidence)
    }
}

/// Seconds until XFCE's power manager blanks the screen (on AC power),
/// which is when light-locker locks (`None` seconds when out of range).
pub fn xfce_blank(host: &Host, home: &str, uid: u32) -> Option<(Option<u64>, String)> {
    let mut evidence = Vec::new();
    let props = xfconf_channel(host, home, uid, "xfce4-power-manager", &mut evidence);
    let (_, v) = props.get("/xfce4-power-manager/blank-on-ac")?;
    let minutes = super::parse_count(v)?;
    Some((
        super::delay_seconds(&[(minutes, 60)]),
        format!(
            "xfce4-power-manager /xfce4-power-manager/blank-on-ac = {} min",
            v.trim()
        ),
    ))
}

impl Finding {
    /// Locks after `delay` seconds.
    pub fn yes(delay: u64, evidence: Vec<String>) -> Self {
        Self {
            enabled: Tri::Yes,
            delay: Some(delay),
            evidence,
        }
    }
    /// Does not lock on idle.
    pub fn no(evidence: Vec<String>) -> Self {
        Self {
            enabled: Tri::No,
            delay: None,
            evidence,
        }
    }
    /// Cannot tell.
    pub fn unknown(evidence: Vec<String>) -> Self {
        Self {
            enabled: Tri::Unknown,
            delay: None,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kconfig_immutable_entries_win() {
        let mut cfg = KConfig::new();
        kconfig_merge("[Daemon]\nAutolock[$i]=true\nTimeout=10\n", &mut cfg);
        kconfig_merge(
            "[Daemon]\nAutolock=false\nTimeout=30\nName[de]=x\n",
            &mut cfg,
        );
        assert_eq!(cfg["Daemon"]["Autolock"], ("true".into(), true));
        assert_eq!(cfg["Daemon"]["Timeout"], ("30".into(), false));
        assert!(!cfg["Daemon"].contains_key("Name"));
        let mut locked = KConfig::new();
        kconfig_merge("[Daemon][$i]\nTimeout=2\n", &mut locked);
        kconfig_merge("[Daemon]\nTimeout=60\n", &mut locked);
        assert_eq!(locked["Daemon"]["Timeout"].0, "2");
    }

    #[test]
    fn xfconf_paths() {
        let p = xfconf(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="x" version="1.0">
  <property name="saver" type="empty">
    <property name="enabled" type="bool" value="false"/>
    <property name="idle-activation" type="empty">
      <property name="delay" type="int" value="12"/>
    </property>
  </property>
  <property name="lock" type="empty">
    <property name="enabled" type="bool" value="true"/>
  </property>
</channel>"#,
        );
        assert_eq!(p["/saver/enabled"].1, "false");
        assert_eq!(
            p["/saver/idle-activation/delay"],
            ("int".into(), "12".into())
        );
        assert_eq!(p["/lock/enabled"].1, "true");
        assert!(!p.contains_key("/saver"));
    }

    /// Thousands of unclosed properties: the path stack stays bounded and
    /// properties below the depth cap are skipped, the rest still read.
    #[test]
    fn xfconf_deep_nesting_is_bounded() {
        let mut text = String::from("<channel name=\"x\" version=\"1.0\">\n");
        text.push_str("<property name=\"lock\" type=\"empty\">\n");
        text.push_str("<property name=\"enabled\" type=\"bool\" value=\"true\"/>\n");
        for _ in 0..5000 {
            text.push_str("<property name=\"nnnnnnnnnnnnnnnn\" type=\"int\" value=\"1\">\n");
        }
        for _ in 0..5000 {
            text.push_str("</property>\n");
        }
        text.push_str("<property name=\"after\" type=\"int\" value=\"2\"/>\n");
        text.push_str("</property></channel>\n");
        let p = xfconf(&text);
        assert_eq!(p["/lock/enabled"].1, "true");
        assert_eq!(p["/lock/after"].1, "2", "nesting is tracked past the cap");
        assert!(p.len() <= XFCONF_DEPTH + 2, "{} properties", p.len());
        assert!(p.keys().all(|k| k.len() <= XFCONF_PATH));
        assert!(p.keys().all(|k| k.matches('/').count() <= XFCONF_DEPTH));

        // One very long name: skipped, not copied into every child.
        let long = "n".repeat(2 * XFCONF_PATH);
        let p = xfconf(&format!(
            "<property name=\"{long}\" type=\"int\" value=\"1\"><property name=\"c\" type=\"int\" value=\"3\"/></property><property name=\"ok\" type=\"int\" value=\"4\"/>"
        ));
        assert_eq!(p.len(), 1, "{:?}", p.keys().collect::<Vec<_>>());
        assert_eq!(p["/ok"].1, "4");
    }
}
