//! Fixture machines for the screenlock collector: one per desktop or idle
//! locker, with home directories, dconf databases, process lists and
//! recorded logind answers.
//!
//! dconf databases: `tests/fixtures/screenlock/dconf-user-gnome` was made
//! once with `dconf compile` (GLib's writer) from a keyfile with
//! `[org/gnome/desktop/session] idle-delay=uint32 600` and
//! `[org/gnome/desktop/screensaver] lock-delay=uint32 30` plus unrelated
//! keys; `dconf-db-local-locked` with `dconf update` from a `local.d`
//! keyfile setting idle-delay=uint32 300 and lock-enabled=true, both
//! listed in `local.d/locks/`. The other databases are written here with
//! the `gvdb` crate's writer.

use serde_json::{Value, json};
use zbus::zvariant;

use super::*;
use crate::collectors::{Cache, Context, MemoryCache, NoCache};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/screenlock");

/// A GVDB file with `entries` (full dconf paths), as dconf-service writes.
pub(crate) fn dconf_file(entries: &[(&str, zvariant::Value<'static>)]) -> Vec<u8> {
    dconf_file_with(entries, &[], false)
}

fn dconf_file_with(
    entries: &[(&str, zvariant::Value<'static>)],
    locks: &[&str],
    big_endian: bool,
) -> Vec<u8> {
    let mut table = ::gvdb::write::HashTableBuilder::new();
    for (k, v) in entries {
        table.insert_value(*k, v.clone()).unwrap();
    }
    if !locks.is_empty() {
        let mut l = ::gvdb::write::HashTableBuilder::with_path_separator(None);
        for k in locks {
            l.insert(*k, true).unwrap();
        }
        table.insert_table(".locks", l).unwrap();
    }
    let writer = if big_endian {
        ::gvdb::write::FileWriter::for_big_endian()
    } else {
        ::gvdb::write::FileWriter::new()
    };
    writer.write_to_vec_with_table(table).unwrap()
}

fn u32v(n: u32) -> zvariant::Value<'static> {
    zvariant::Value::from(n)
}
fn i32v(n: i32) -> zvariant::Value<'static> {
    zvariant::Value::from(n)
}
fn boolv(b: bool) -> zvariant::Value<'static> {
    zvariant::Value::from(b)
}

/// A fixture machine under construction.
struct Machine {
    dir: tempfile::TempDir,
    sessions: Vec<Value>,
    props: serde_json::Map<String, Value>,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
gdm:x:120:125:Gnome Display Manager:/var/lib/gdm3:/bin/false
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/bin/zsh
carol:x:1002:1002::/home/carol:/bin/bash
";

impl Machine {
    fn new() -> Self {
        let m = Self {
            dir: tempfile::tempdir().unwrap(),
            sessions: vec![],
            props: Default::default(),
        };
        m.file("/etc/passwd", PASSWD.as_bytes());
        m
    }

    fn file(&self, path: &str, content: &[u8]) -> &Self {
        let p = self.dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// A process: its command line and owner.
    fn process(&self, pid: u32, uid: u32, argv: &[&str]) -> &Self {
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        let name = argv[0].rsplit('/').next().unwrap();
        self.file(&format!("/proc/{pid}/cmdline"), cmdline.as_bytes());
        self.file(
            &format!("/proc/{pid}/status"),
            format!("Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n").as_bytes(),
        )
    }

    /// A logind session as ListSessions and GetAll report it.
    #[allow(clippy::too_many_arguments)]
    fn session(
        &mut self,
        id: &str,
        uid: u32,
        user: &str,
        kind: &str,
        class: &str,
        desktop: &str,
        locked: bool,
        idle: bool,
    ) -> &mut Self {
        let path = format!("/org/freedesktop/login1/session/_3{id}");
        self.sessions
            .push(json!([id, uid, user, "seat0", path.clone()]));
        self.props.insert(
            format!("org.freedesktop.login1 {path} org.freedesktop.DBus.Properties GetAll org.freedesktop.login1.Session"),
            json!({
                "Id": id, "Name": user, "User": [uid, format!("/org/freedesktop/login1/user/_{uid}")],
                "Timestamp": 1732600000000000u64, "TimestampMonotonic": 12000000u64,
                "VTNr": 2, "Seat": ["seat0", "/org/freedesktop/login1/seat/seat0"],
                "TTY": "tty2", "Display": if kind == "x11" { ":0" } else { "" },
                "Remote": false, "RemoteHost": "", "RemoteUser": "",
                "Service": "gdm-password", "Desktop": desktop, "Scope": format!("session-{id}.scope"),
                "Leader": 1500, "Audit": id.parse::<u32>().unwrap_or(0),
                "Type": kind, "Class": class, "Active": true, "State": "active",
                "IdleHint": idle, "IdleSinceHint": 1732600100000000u64,
                "IdleSinceHintMonotonic": 112000000u64, "CanIdle": true, "CanLock": true,
                "LockedHint": locked,
            }),
        );
        self
    }

    fn host(&self) -> Host {
        if !self.sessions.is_empty() {
            let mut calls = self.props.clone();
            calls.insert(
                "org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager ListSessions".into(),
                Value::Array(self.sessions.clone()),
            );
            self.file(
                "/.dbus.json",
                serde_json::to_string_pretty(&json!({"properties": {}, "calls": calls}))
                    .unwrap()
                    .as_bytes(),
            );
        }
        Host::fixture(self.dir.path(), vec![])
    }

    /// The answer as JSON, as the agent sends it.
    fn json(&self) -> Value {
        ScreenLock
            .collect(&Context::new(&self.host(), &NoCache))
            .unwrap()
    }

    /// The answer read back as the typed contract.
    fn collect(&self) -> facts::ScreenLock {
        typed(self.json())
    }
}

fn typed(v: Value) -> facts::ScreenLock {
    serde_json::from_value(v).unwrap()
}

fn evidence_has(evidence: &[String], needle: &str) -> bool {
    evidence.iter().any(|s| s.contains(needle))
}

const YES: Known<bool> = Known::Value(true);
const NO: Known<bool> = Known::Value(false);

/// The keys of the first session on the wire, sorted.
fn session_keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v["sessions"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// What a live session reports: no logind hints or ids, no `cached_at`.
const LIVE_KEYS: [&str; 7] = [
    "delay_seconds",
    "desktop",
    "enabled",
    "evidence",
    "remote",
    "type",
    "user",
];

#[test]
fn gnome_on_ubuntu_enabled() {
    let mut m = Machine::new();
    m.session("2", 1000, "alice", "wayland", "user", "ubuntu", false, true);
    m.session("c1", 120, "gdm", "wayland", "greeter", "gdm", false, false);
    // A real database written by `dconf compile`.
    m.file(
        "/home/alice/.config/dconf/user",
        &std::fs::read(format!("{FIXTURES}/dconf-user-gnome")).unwrap(),
    );
    m.process(1620, 1000, &["/usr/bin/gnome-shell"]);
    let v = m.collect();
    assert_eq!(v.source, Source::Live);
    let s = &v.sessions;
    assert_eq!(s.len(), 1, "the greeter is not a user session: {v:#?}");
    let s = &s[0];
    assert_eq!(s.user, "alice");
    assert_eq!(s.desktop, "ubuntu");
    assert_eq!(s.kind, "wayland");
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(630), "idle-delay 600 + lock-delay 30");
    assert!(evidence_has(
        &s.evidence,
        "/org/gnome/desktop/session/idle-delay = 600 (/home/alice/.config/dconf/user)"
    ));
    assert!(evidence_has(
        &s.evidence,
        "/org/gnome/desktop/screensaver/lock-enabled = true (schema default)"
    ));
    assert!(evidence_has(&v.evidence, "logind over D-Bus"));
    // logind's hints change whenever alice steps away, and per-login
    // values (session id, idle-since timestamps) would flap: not reported.
    let raw = m.json();
    assert_eq!(session_keys(&raw), LIVE_KEYS);
    assert!(!raw.to_string().contains("1732600100"));
}

#[test]
fn gnome_disabled_by_idle_delay_zero() {
    let mut m = Machine::new();
    m.session("3", 1001, "bob", "x11", "user", "GNOME", false, false);
    m.file(
        "/home/bob/.config/dconf/user",
        &dconf_file(&[
            ("/org/gnome/desktop/session/idle-delay", u32v(0)),
            (
                "/org/gnome/desktop/interface/gtk-theme",
                zvariant::Value::from("Adwaita-dark"),
            ),
        ]),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, NO);
    assert_eq!(s.delay_seconds, None);
    assert!(evidence_has(
        &s.evidence,
        "idle-delay 0: the session never goes idle"
    ));
}

/// An admin's locked system database beats the user's own setting, and a
/// distribution override changes a schema default.
#[test]
fn gnome_system_lock_wins_over_user() {
    let mut m = Machine::new();
    m.session("4", 1000, "alice", "wayland", "user", "gnome", true, true);
    m.file(
        "/etc/dconf/profile/user",
        b"user-db:user\nsystem-db:local\n",
    );
    m.file(
        "/etc/dconf/db/local",
        &std::fs::read(format!("{FIXTURES}/dconf-db-local-locked")).unwrap(),
    );
    // The user tries 0 (never) and no lock; the admin's locks win.
    m.file(
        "/home/alice/.config/dconf/user",
        &dconf_file(&[
            ("/org/gnome/desktop/session/idle-delay", u32v(0)),
            ("/org/gnome/desktop/screensaver/lock-enabled", boolv(false)),
        ]),
    );
    m.file(
        "/usr/share/glib-2.0/schemas/10_corp.gschema.override",
        b"[org.gnome.desktop.screensaver]\nlock-delay=uint32 60\n",
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(360));
    assert_eq!(
        session_keys(&m.json()),
        LIVE_KEYS,
        "a locked session reports the same"
    );
    assert!(evidence_has(
        &s.evidence,
        "idle-delay = 300 (/etc/dconf/db/local, locked)"
    ));
    assert!(evidence_has(
        &s.evidence,
        "default from /usr/share/glib-2.0/schemas/10_corp.gschema.override"
    ));
}

/// Uncompiled keyfiles are read (and said to be uncompiled); a big-endian
/// user database reads too.
#[test]
fn gnome_keyfiles_and_big_endian_user_db() {
    let mut m = Machine::new();
    m.session(
        "5",
        1002,
        "carol",
        "x11",
        "user",
        "gnome-xorg",
        false,
        false,
    );
    m.file(
        "/etc/dconf/profile/user",
        b"# corp\nuser-db:user\nsystem-db:site\n",
    );
    m.file(
        "/etc/dconf/db/site.d/00-lock",
        b"[org/gnome/desktop/session]\nidle-delay=uint32 900\n",
    );
    m.file(
        "/home/carol/.config/dconf/user",
        &dconf_file_with(
            &[("/org/gnome/desktop/session/idle-delay", u32v(120))],
            &[],
            true,
        ),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(
        s.delay_seconds,
        Some(120),
        "the user's value, nothing locked"
    );
    assert!(evidence_has(
        &s.evidence,
        "/etc/dconf/db/site is not compiled"
    ));
}

#[test]
fn kde_plasma() {
    let mut m = Machine::new();
    m.session("6", 1001, "bob", "wayland", "user", "KDE", false, false);
    m.file(
        "/home/bob/.config/kscreenlockerrc",
        b"[$Version]\nupdate_info=kscreenlocker.upd:0.1-autolock\n\n[Daemon]\nLockGrace=30\nTimeout=15\n",
    );
    m.process(2001, 1001, &["/usr/bin/plasmashell", "--no-respawn"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(15 * 60 + 30));
    assert!(evidence_has(
        &s.evidence,
        "[Daemon] Autolock=true (default)"
    ));
    assert!(evidence_has(&s.evidence, "[Daemon] Timeout=15"));

    // Autolock off in the user's file, unless the admin made it immutable.
    m.file(
        "/home/bob/.config/kscreenlockerrc",
        b"[Daemon]\nAutolock=false\n",
    );
    assert_eq!(m.collect().sessions[0].enabled, NO);
    m.file(
        "/etc/xdg/kscreenlockerrc",
        b"[Daemon]\nAutolock[$i]=true\nTimeout[$i]=5\n",
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(305));
}

#[test]
fn cinnamon() {
    let mut m = Machine::new();
    m.session("7", 1000, "alice", "x11", "user", "cinnamon", false, false);
    m.file(
        "/home/alice/.config/dconf/user",
        &dconf_file(&[
            ("/org/cinnamon/desktop/session/idle-delay", u32v(600)),
            ("/org/cinnamon/desktop/screensaver/lock-delay", u32v(15)),
            (
                "/org/cinnamon/desktop/interface/clock-show-date",
                boolv(true),
            ),
        ]),
    );
    m.process(1700, 1000, &["cinnamon", "--replace"]);
    m.process(
        1710,
        1000,
        &["/usr/bin/python3", "/usr/bin/cinnamon-screensaver"],
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(615));
    assert!(evidence_has(
        &s.evidence,
        "/org/cinnamon/desktop/screensaver/lock-enabled = true (schema default)"
    ));
}

#[test]
fn mate() {
    let mut m = Machine::new();
    m.session("8", 1002, "carol", "x11", "user", "mate", false, false);
    m.file(
        "/home/carol/.config/dconf/user",
        &dconf_file(&[
            ("/org/mate/desktop/session/idle-delay", i32v(10)),
            ("/org/mate/screensaver/lock-delay", i32v(2)),
        ]),
    );
    m.process(3001, 1002, &["mate-session"]);
    m.process(3050, 1002, &["mate-screensaver"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(12 * 60), "minutes in MATE's schemas");

    // Without mate-screensaver running nothing locks.
    std::fs::remove_dir_all(m.dir.path().join("proc/3050")).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, NO);
    assert!(evidence_has(&s.evidence, "mate-screensaver is not running"));
}

#[test]
fn xfce_screensaver() {
    let mut m = Machine::new();
    m.session("9", 1000, "alice", "x11", "user", "xfce", false, false);
    m.file(
        "/home/alice/.config/xfce4/xfconf/xfce4-perchannel-xml/xfce4-screensaver.xml",
        br#"<?xml version="1.0" encoding="UTF-8"?>

<channel name="xfce4-screensaver" version="1.0">
  <property name="saver" type="empty">
    <property name="mode" type="int" value="0"/>
    <property name="idle-activation" type="empty">
      <property name="delay" type="int" value="7"/>
    </property>
  </property>
  <property name="lock" type="empty">
    <property name="saver-activation" type="empty">
      <property name="delay" type="int" value="1"/>
    </property>
  </property>
</channel>
"#,
    );
    m.process(1800, 1000, &["xfce4-session"]);
    m.process(1850, 1000, &["xfce4-screensaver"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(8 * 60));
    assert!(evidence_has(
        &s.evidence,
        "xfce4-screensaver /saver/idle-activation/delay = 7"
    ));
    assert!(evidence_has(&s.evidence, "/lock/enabled = true (default)"));

    // light-locker instead: locks when the power manager blanks the screen.
    std::fs::remove_dir_all(m.dir.path().join("proc/1850")).unwrap();
    m.process(1851, 1000, &["light-locker"]);
    m.file(
        "/home/alice/.config/xfce4/xfconf/xfce4-perchannel-xml/xfce4-power-manager.xml",
        br#"<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-power-manager" version="1.0">
  <property name="xfce4-power-manager" type="empty">
    <property name="blank-on-ac" type="int" value="15"/>
    <property name="dpms-enabled" type="bool" value="true"/>
  </property>
</channel>
"#,
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(
        s.delay_seconds,
        Some(15 * 60 + 5),
        "lock-after-screensaver defaults to 5 s"
    );

    // Neither: XFCE has no locking of its own.
    std::fs::remove_dir_all(m.dir.path().join("proc/1851")).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, NO);
}

/// An i3 session started from logind's session files (no D-Bus), locked
/// by xautolock running slock.
#[test]
fn xautolock_with_slock_from_session_files() {
    let m = Machine::new();
    m.file(
        "/run/systemd/sessions/5",
        b"# This is private data. Do not parse.\nUID=1001\nUSER=bob\nACTIVE=1\nIS_DISPLAY=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nORIGINAL_TYPE=x11\nCLASS=user\nSCOPE=session-5.scope\nSEAT=seat0\nDISPLAY=:0\nSERVICE=lightdm\nDESKTOP=i3\nVTNR=7\nLEADER=1400\n",
    );
    m.file("/run/systemd/sessions/6", b"UID=1002\nUSER=carol\nSTATE=online\nREMOTE=1\nTYPE=tty\nCLASS=user\nREMOTE_HOST=10.0.0.9\n");
    m.process(1400, 0, &["lightdm", "--session-child", "12", "19"]);
    m.process(1450, 1001, &["i3"]);
    m.process(
        1460,
        1001,
        &[
            "xautolock",
            "-time",
            "5",
            "-locker",
            "slock",
            "-detectsleep",
        ],
    );
    let v = m.collect();
    assert!(evidence_has(
        &v.evidence,
        "/run/systemd/sessions (no lock or idle hints"
    ));
    let s = &v.sessions;
    assert_eq!(s.len(), 1, "carol's ssh session is not graphical: {v:#?}");
    assert_eq!(s[0].user, "bob");
    assert_eq!(s[0].desktop, "i3");
    assert_eq!(s[0].enabled, YES);
    assert_eq!(s[0].delay_seconds, Some(300));
    assert!(evidence_has(
        &s[0].evidence,
        "xautolock -time 5 -locker \"slock\": runs locker"
    ));
    assert_eq!(session_keys(&m.json()), LIVE_KEYS);
}

/// xidlehook's timers add up: dim after 60 s, lock 240 s after that.
#[test]
fn xidlehook_locks_after_its_chained_timers() {
    let m = Machine::new();
    m.file(
        "/run/systemd/sessions/5",
        b"UID=1001\nUSER=bob\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nCLASS=user\nDESKTOP=i3\nLEADER=1400\n",
    );
    m.process(1450, 1001, &["i3"]);
    m.process(
        1470,
        1001,
        &[
            "xidlehook",
            "--not-when-fullscreen",
            "--timer",
            "60",
            "xrandr --output eDP-1 --brightness .1",
            "xrandr --output eDP-1 --brightness 1",
            "--timer",
            "240",
            "i3lock -c 000000",
            "",
        ],
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(300));
    assert!(evidence_has(&s.evidence, "timeout 300 s runs locker"));

    // Timers that never lock: the session does not lock.
    m.process(
        1470,
        1001,
        &["xidlehook", "--timer", "60", "xset dpms force off", ""],
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, NO, "{s:#?}");
}

/// Sway with swayidle: one user passes events as arguments, another keeps
/// them in ~/.config/swayidle/config and locks through logind.
#[test]
fn sway_with_swayidle() {
    let mut m = Machine::new();
    m.session("10", 1001, "bob", "wayland", "user", "sway", false, false);
    m.session("11", 1002, "carol", "wayland", "user", "sway", false, true);
    m.process(2100, 1001, &["sway"]);
    m.process(
        2110,
        1001,
        &[
            "swayidle",
            "-w",
            "timeout",
            "600",
            "swaymsg \"output * power off\"",
            "resume",
            "swaymsg \"output * power on\"",
            "timeout",
            "300",
            "swaylock -f -c 000000",
            "before-sleep",
            "swaylock -f -c 000000",
        ],
    );
    m.process(2200, 1002, &["sway"]);
    m.process(2210, 1002, &["swayidle", "-w"]);
    m.file(
        "/home/carol/.config/swayidle/config",
        b"# idle\ntimeout 120 'loginctl lock-session'\ntimeout 180 'swaymsg \"output * dpms off\"' resume 'swaymsg \"output * dpms on\"'\nlock 'swaylock -f'\n",
    );
    let v = m.collect();
    let s = &v.sessions;
    assert_eq!(s[0].user, "bob");
    assert_eq!(s[0].enabled, YES);
    assert_eq!(s[0].delay_seconds, Some(300));
    assert_eq!(s[1].user, "carol");
    assert_eq!(s[1].enabled, YES, "{v:#?}");
    assert_eq!(s[1].delay_seconds, Some(120));
    assert!(evidence_has(
        &s[1].evidence,
        "asks logind to lock; lock handler \"swaylock -f\""
    ));

    // Sway alone locks nothing.
    std::fs::remove_dir_all(m.dir.path().join("proc/2110")).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, NO);
    assert!(evidence_has(&s.evidence, "sway does not lock by itself"));
}

#[test]
fn hyprland_with_hypridle() {
    let mut m = Machine::new();
    m.session(
        "12", 1000, "alice", "wayland", "user", "Hyprland", false, false,
    );
    m.process(2500, 1000, &["Hyprland"]);
    m.process(2510, 1000, &["hypridle"]);
    m.file(
        "/home/alice/.config/hypr/hypridle.conf",
        b"general {
    lock_cmd = pidof hyprlock || hyprlock       # avoid starting multiple hyprlock instances.
    before_sleep_cmd = loginctl lock-session    # lock before suspend.
    after_sleep_cmd = hyprctl dispatch dpms on
}

listener {
    timeout = 150                                # 2.5min.
    on-timeout = brightnessctl -s set 10
    on-resume = brightnessctl -r
}

listener {
    timeout = 420
    on-timeout = loginctl lock-session
}

listener {
    timeout = 480
    on-timeout = hyprctl dispatch dpms off
    on-resume = hyprctl dispatch dpms on
}
",
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.desktop, "Hyprland");
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(420));
    assert!(evidence_has(
        &s.evidence,
        "lock_cmd = pidof hyprlock || hyprlock"
    ));
}

#[test]
fn unknown_desktop() {
    let mut m = Machine::new();
    m.session(
        "13",
        1000,
        "alice",
        "x11",
        "user",
        "Enlightenment",
        false,
        false,
    );
    m.process(2600, 1000, &["enlightenment"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN);
    assert!(evidence_has(
        &s.evidence,
        "unknown desktop \"enlightenment\""
    ));
    assert!(evidence_has(
        &s.evidence,
        "looked for xautolock, xidlehook, xss-lock, swayidle, hypridle"
    ));

    // An idle locker the collector knows answers even there.
    m.process(
        2610,
        1000,
        &["xss-lock", "--transfer-sleep-lock", "--", "i3lock", "-n"],
    );
    m.process(
        900,
        0,
        &[
            "/usr/lib/xorg/Xorg",
            ":0",
            "-seat",
            "seat0",
            "-s",
            "10",
            "vt7",
        ],
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(600), "from Xorg -s 10");
}

/// Nobody logged in graphically: the last answers per user come from the
/// cache, marked with when they were seen.
#[test]
fn no_graphical_session_uses_cache() {
    let cache = MemoryCache::default();
    let mut m = Machine::new();
    m.session("2", 1000, "alice", "wayland", "user", "gnome", false, false);
    m.session("14", 1002, "carol", "wayland", "user", "sway", false, false);
    m.process(2200, 1002, &["sway"]);
    let host = m.host();
    let mut ctx = Context::new(&host, &cache);
    ctx.now = chrono::DateTime::parse_from_rfc3339("2024-11-26T08:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let first = typed(ScreenLock.collect(&ctx).unwrap());
    assert_eq!(first.sessions.len(), 2);
    assert!(first.sessions.iter().all(|s| s.cached_at.is_none()));

    let mut later = Machine::new();
    later.session("20", 1001, "bob", "tty", "user", "", false, false);
    let host = later.host();
    let raw = ScreenLock.collect(&Context::new(&host, &cache)).unwrap();
    assert_eq!(raw["sessions"][0]["cached_at"], "2024-11-26T08:00:00.000Z");
    let v = typed(raw);
    assert_eq!(v.source, Source::Cache);
    let s = &v.sessions;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].user, "alice");
    assert_eq!(s[0].enabled, YES);
    assert_eq!(s[0].delay_seconds, Some(300));
    assert_eq!(s[0].cached_at, Some(Timestamp::from(ctx.now)));
    assert_eq!(s[1].cached_at, s[0].cached_at);
    assert_eq!(s[1].user, "carol");
    assert_eq!(s[1].enabled, NO);
    assert!(evidence_has(&v.evidence, "no graphical sessions"));

    // Nothing cached and nobody logged in: an empty, honest answer.
    let v = typed(
        ScreenLock
            .collect(&Context::new(&later.host(), &NoCache))
            .unwrap(),
    );
    assert_eq!(v.source, Source::None);
    assert!(v.sessions.is_empty());
}

/// Answers cached by an agent before the typed contract (`cached_at` to
/// the second, logind's hints kept) still read; an entry that does not
/// read is left out.
#[test]
fn earlier_agents_cache_is_read() {
    let cache = MemoryCache::default();
    cache.put(
        CACHE_KEY,
        &json!({
            "alice": {"cached_at": "2024-11-26T08:00:00Z", "sessions": [{
                "user": "alice", "desktop": "gnome", "type": "wayland", "remote": false,
                "enabled": true, "delay_seconds": 300, "locked": null, "idle": null,
                "evidence": ["desktop \"gnome\" from logind"],
            }]},
            "bob": {"cached_at": "yesterday", "sessions": "?"},
        }),
    );
    let m = Machine::new();
    let raw = ScreenLock
        .collect(&Context::new(&m.host(), &cache))
        .unwrap();
    assert_eq!(raw["sessions"][0]["cached_at"], "2024-11-26T08:00:00.000Z");
    assert!(raw["sessions"][0].get("locked").is_none(), "{raw:#}");
    let v = typed(raw);
    assert_eq!(v.source, Source::Cache);
    assert_eq!(v.sessions.len(), 1, "bob's entry does not read: {v:#?}");
    assert_eq!(v.sessions[0].user, "alice");
    assert_eq!(v.sessions[0].enabled, YES);
    assert_eq!(v.sessions[0].delay_seconds, Some(300));
}

/// No D-Bus and no logind files (a container): no sessions, no error.
#[test]
fn no_logind_at_all() {
    let m = Machine::new();
    let v = m.collect();
    assert_eq!(v.source, Source::None);
    assert!(v.sessions.is_empty());
    assert!(evidence_has(&v.evidence, "logind is not running"));
}

/// A corrupt user database: GNOME's answer is from the defaults, and the
/// evidence says the file was unreadable.
#[test]
fn corrupt_dconf_database() {
    let mut m = Machine::new();
    m.session("2", 1000, "alice", "wayland", "user", "gnome", false, false);
    m.file("/home/alice/.config/dconf/user", b"GVariant\0\0\0\0garbage");
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(300));
    assert!(evidence_has(&s.evidence, "not a dconf database"));
}

/// startx from a text console: logind says tty, but an X server runs.
#[test]
fn startx_session_counts_as_graphical() {
    let mut m = Machine::new();
    m.session("3", 1001, "bob", "tty", "user", "", false, false);
    m.process(
        1300,
        1001,
        &[
            "xinit",
            "/home/bob/.xinitrc",
            "--",
            "/etc/X11/xinit/xserverrc",
            ":0",
            "vt1",
        ],
    );
    m.process(1310, 1001, &["openbox"]);
    m.process(1320, 1001, &["xscreensaver", "-no-splash"]);
    m.file("/home/bob/.xscreensaver", b"timeout:\t0:05:00\ncycle:\t\t0:10:00\nlock:\t\tTrue\nlockTimeout:\t0:01:00\nmode:\t\trandom\n");
    let s = &m.collect().sessions[0];
    assert_eq!(s.desktop, "openbox");
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(360));
}

/// Files a user points the agent at (a symlink in their home, `-c PATH`)
/// are read only if that user could read them, and never a device.
#[test]
fn user_files_are_read_as_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = Machine::new();
    m.session(
        "12", 1000, "alice", "wayland", "user", "Hyprland", false, false,
    );
    m.process(2500, 1000, &["Hyprland"]);
    m.process(2510, 1000, &["hypridle", "-c", "/dev/zero"]);
    std::fs::create_dir_all(m.dir.path().join("dev")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", m.dir.path().join("dev/zero")).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert!(evidence_has(&s.evidence, "/dev/zero is not readable"));

    // A root-only file behind a symlink in the user's home.
    m.file(
        "/etc/hypr-secret.conf",
        b"listener {\n timeout = 60\n on-timeout = hyprlock\n}\n",
    );
    let secret = m.dir.path().join("etc/hypr-secret.conf");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(m.dir.path().join("home/alice/.config/hypr")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../etc/hypr-secret.conf",
        m.dir.path().join("home/alice/.config/hypr/hypridle.conf"),
    )
    .unwrap();
    std::fs::remove_dir_all(m.dir.path().join("proc/2510")).unwrap();
    m.process(2511, 1000, &["hypridle"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");

    // Made readable to all, the same file is read.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES);
    assert_eq!(s.delay_seconds, Some(60));
}

/// A user's FIFO (here as `hypridle -c`, or behind a symlink) is never
/// opened: a writer blocked on it stays blocked. A symlink out of the home
/// to a file another user owns is refused even when all may read it.
#[test]
fn user_files_refuse_fifos_and_foreign_symlinks() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut m = Machine::new();
    m.session(
        "12", 1000, "alice", "wayland", "user", "Hyprland", false, false,
    );
    m.process(2500, 1000, &["Hyprland"]);
    m.process(2510, 1000, &["hypridle", "-c", "/home/alice/pipe"]);
    std::fs::create_dir_all(m.dir.path().join("home/alice/.config/hypr")).unwrap();
    let fifo = m.dir.path().join("home/alice/pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // Opening a FIFO to write blocks until someone opens it to read.
    let opened = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fifo, opened) = (fifo.clone(), opened.clone());
        std::thread::spawn(move || {
            let _w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            opened.store(true, Ordering::SeqCst);
        })
    };
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert!(evidence_has(
        &s.evidence,
        "/home/alice/pipe is not readable"
    ));

    // The same FIFO as the default config file, through a symlink.
    symlink(
        "../../pipe",
        m.dir.path().join("home/alice/.config/hypr/hypridle.conf"),
    )
    .unwrap();
    std::fs::remove_dir_all(m.dir.path().join("proc/2510")).unwrap();
    m.process(2511, 1000, &["hypridle"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!opened.load(Ordering::SeqCst), "the agent opened the FIFO");
    // Let the writer go.
    drop(std::fs::File::open(&fifo).unwrap());
    writer.join().unwrap();

    // bob's world-readable file, linked from alice's home: refused.
    m.file(
        "/home/bob/hypridle.conf",
        b"listener {\n timeout = 60\n on-timeout = hyprlock\n}\n",
    );
    let bobs = m.dir.path().join("home/bob/hypridle.conf");
    std::fs::set_permissions(&bobs, std::fs::Permissions::from_mode(0o644)).unwrap();
    nix::unistd::chown(&bobs, Some(nix::unistd::Uid::from_raw(1001)), None).unwrap();
    let link = m.dir.path().join("home/alice/.config/hypr/hypridle.conf");
    std::fs::remove_file(&link).unwrap();
    symlink("../../../bob/hypridle.conf", &link).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");

    // Copied into alice's home (so hers, inside it), it is read.
    std::fs::remove_file(&link).unwrap();
    std::fs::copy(&bobs, &link).unwrap();
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, YES, "{s:#?}");
    assert_eq!(s.delay_seconds, Some(60));
}

/// Settings that would overflow or make no sense (i64::MAX, negative
/// delays) give "unknown" with the reason, never a panic or a wrapped
/// "locks after 0 s".
#[test]
fn out_of_range_delays_are_unknown() {
    let mut m = Machine::new();
    m.session("2", 1000, "alice", "wayland", "user", "gnome", false, false);
    m.file(
        "/home/alice/.config/dconf/user",
        &dconf_file(&[
            (
                "/org/gnome/desktop/session/idle-delay",
                zvariant::Value::from(i64::MAX),
            ),
            ("/org/gnome/desktop/screensaver/lock-delay", u32v(30)),
        ]),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert_eq!(s.delay_seconds, None);
    assert!(evidence_has(&s.evidence, "longer than a week"));

    m.file(
        "/home/alice/.config/dconf/user",
        &dconf_file(&[("/org/gnome/desktop/screensaver/lock-delay", i32v(-5))]),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert!(evidence_has(&s.evidence, "lock-delay = -5 is negative"));

    // KDE: a Timeout of i64::MAX minutes.
    let mut m = Machine::new();
    m.session("6", 1001, "bob", "wayland", "user", "KDE", false, false);
    m.file(
        "/home/bob/.config/kscreenlockerrc",
        format!("[Daemon]\nTimeout={}\n", i64::MAX).as_bytes(),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");

    // XFCE: a huge idle delay and a negative lock delay.
    let mut m = Machine::new();
    m.session("9", 1000, "alice", "x11", "user", "xfce", false, false);
    m.process(1850, 1000, &["xfce4-screensaver"]);
    m.file(
        "/home/alice/.config/xfce4/xfconf/xfce4-perchannel-xml/xfce4-screensaver.xml",
        format!(
            r#"<channel name="xfce4-screensaver" version="1.0">
  <property name="saver" type="empty">
    <property name="idle-activation" type="empty">
      <property name="delay" type="int" value="{}"/>
    </property>
  </property>
  <property name="lock" type="empty">
    <property name="saver-activation" type="empty">
      <property name="delay" type="int" value="-1"/>
    </property>
  </property>
</channel>"#,
            i64::MAX
        )
        .as_bytes(),
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");

    // xscreensaver with a timeout of 2^64 hours, and xss-lock under an X
    // server started with `-s` of i64::MAX minutes.
    let mut m = Machine::new();
    m.session("3", 1001, "bob", "x11", "user", "openbox", false, false);
    m.process(1310, 1001, &["openbox"]);
    m.process(1320, 1001, &["xscreensaver", "-no-splash"]);
    m.file(
        "/home/bob/.xscreensaver",
        b"timeout:\t18446744073709551616:00:00\nlock:\t\tTrue\nlockTimeout:\t0:01:00\n",
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert!(evidence_has(
        &s.evidence,
        "timeout: 18446744073709551616:00:00"
    ));

    std::fs::remove_dir_all(m.dir.path().join("proc/1320")).unwrap();
    m.process(1330, 1001, &["xss-lock", "--", "i3lock", "-n"]);
    let max = i64::MAX.to_string();
    m.process(900, 0, &["/usr/lib/xorg/Xorg", ":0", "-s", &max, "vt7"]);
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
    assert!(evidence_has(&s.evidence, &format!("Xorg -s {max}")));

    // xautolock with a negative time.
    std::fs::remove_dir_all(m.dir.path().join("proc/1330")).unwrap();
    m.process(
        1340,
        1001,
        &["xautolock", "-time", "-5", "-locker", "slock"],
    );
    let s = &m.collect().sessions[0];
    assert_eq!(s.enabled, Known::UNKNOWN, "{s:#?}");
}

/// A cache that counts its writes.
#[derive(Default)]
struct CountingCache {
    inner: MemoryCache,
    puts: std::sync::atomic::AtomicUsize,
}

impl crate::collectors::Cache for CountingCache {
    fn get(&self, key: &str) -> Option<Value> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, value: &Value) {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put(key, value);
    }
}

/// A steady machine gives the same report every run: the same answer is
/// cached once (keeping its first time), locking and idling change
/// nothing, and users gone from /etc/passwd leave the cache.
#[test]
fn steady_machine_does_not_churn() {
    use std::sync::atomic::Ordering;
    let cache = CountingCache::default();
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let run = |m: &Machine, t: &str| {
        let host = m.host();
        let mut ctx = Context::new(&host, &cache);
        ctx.now = at(t);
        ScreenLock.collect(&ctx).unwrap()
    };
    let mut m = Machine::new();
    m.session("2", 1000, "alice", "wayland", "user", "gnome", false, false);
    m.session("14", 1002, "carol", "wayland", "user", "sway", false, false);
    m.process(2200, 1002, &["sway"]);
    let first = run(&m, "2024-11-26T08:00:00.123456Z");
    assert_eq!(cache.puts.load(Ordering::SeqCst), 1);

    // Later alice's screen is locked and carol is idle: same report.
    let mut m2 = Machine::new();
    m2.session("2", 1000, "alice", "wayland", "user", "gnome", true, false);
    m2.session("14", 1002, "carol", "wayland", "user", "sway", false, true);
    m2.process(2200, 1002, &["sway"]);
    let second = run(&m2, "2024-11-26T09:00:00Z");
    assert_eq!(first, second);
    assert_eq!(cache.puts.load(Ordering::SeqCst), 1, "nothing changed");

    // Nobody logged in, twice: identical, from the cache, no writes.
    let empty = Machine::new();
    let a = run(&empty, "2024-11-26T10:00:00Z");
    let b = run(&empty, "2024-11-27T10:00:00Z");
    assert_eq!(a, b);
    assert_eq!(a["sessions"][0]["cached_at"], "2024-11-26T08:00:00.123Z");
    let typed_a = typed(a.clone());
    assert_eq!(typed_a.source, Source::Cache);
    assert_eq!(
        typed_a.sessions[0].cached_at,
        Some(Timestamp::from(at("2024-11-26T08:00:00.123Z")))
    );
    assert_eq!(cache.puts.load(Ordering::SeqCst), 1);

    // carol's account is removed: her answer goes, once.
    empty.file(
        "/etc/passwd",
        PASSWD
            .lines()
            .filter(|l| !l.starts_with("carol:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let c = run(&empty, "2024-11-28T10:00:00Z");
    let users: Vec<String> = typed(c.clone())
        .sessions
        .into_iter()
        .map(|s| s.user)
        .collect();
    assert_eq!(users, ["alice"]);
    assert_eq!(cache.puts.load(Ordering::SeqCst), 2);
    assert_eq!(run(&empty, "2024-11-29T10:00:00Z"), c);
    assert_eq!(cache.puts.load(Ordering::SeqCst), 2);
}
