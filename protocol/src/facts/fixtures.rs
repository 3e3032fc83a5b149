//! Facts as agents send them, for tests: one plausible answer per
//! collector, which a test changes where it judges. Built with the types,
//! so a renamed field breaks the fixtures at compile time.

use std::collections::BTreeMap;

use super::*;

/// A firewall in `status`, saying `evidence`.
pub fn firewall(status: firewall::Status, evidence: &str) -> firewall::Firewall {
    let family = |filtered| firewall::Family {
        filtered,
        by: vec![],
        disabled: None,
    };
    let on = status == firewall::Status::On;
    firewall::Firewall {
        status,
        ipv4: family(on),
        ipv6: family(on),
        managers: vec![],
        evidence: vec![evidence.into()],
    }
}

/// A filesystem on dm-crypt, or not.
pub fn filesystem(mountpoint: &str, encrypted: Known<bool>) -> hd_encryption::Filesystem {
    hd_encryption::Filesystem {
        mountpoint: mountpoint.into(),
        device: "/dev/mapper/x".into(),
        fstype: "ext4".into(),
        encrypted,
        layers: vec!["luks2".into(), "partition".into(), "disk".into()],
        evidence: vec!["dm-crypt below".into()],
    }
}

/// A swap partition.
pub fn swap(device: &str, encrypted: Known<bool>) -> hd_encryption::Swap {
    hd_encryption::Swap {
        device: device.into(),
        kind: "partition".into(),
        encrypted,
        layers: vec!["partition".into(), "disk".into()],
        evidence: vec!["no dm-crypt below".into()],
    }
}

/// Disks made of these, encrypted when all of them are.
pub fn disks(
    filesystems: Vec<hd_encryption::Filesystem>,
    swap: Vec<hd_encryption::Swap>,
) -> hd_encryption::HdEncryption {
    let encrypted = filesystems
        .iter()
        .map(|f| f.encrypted.clone())
        .chain(swap.iter().map(|s| s.encrypted.clone()))
        .all(|e| e == Known::Value(true));
    hd_encryption::HdEncryption {
        encrypted,
        filesystems,
        swap,
        exempt: vec![],
        remote: vec![],
        removable: vec![],
        notes: vec![],
        evidence: vec!["judged from /proc/self/mounts".into()],
    }
}

/// One graphical session.
pub fn session(user: &str, enabled: Known<bool>, delay: Option<u64>) -> screenlock::Session {
    screenlock::Session {
        user: user.into(),
        desktop: "GNOME".into(),
        kind: "wayland".into(),
        remote: false,
        enabled,
        delay_seconds: delay,
        evidence: vec![],
        cached_at: None,
    }
}

/// Live graphical sessions.
pub fn screenlock(sessions: Vec<screenlock::Session>) -> screenlock::ScreenLock {
    screenlock::ScreenLock {
        source: screenlock::Source::Live,
        sessions,
        evidence: vec![],
    }
}

/// sshd with these two settings.
pub fn sshd(status: sshd::Status, password: &str, root: &str) -> sshd::Sshd {
    sshd::Sshd {
        status,
        config: BTreeMap::from([
            ("passwordauthentication".into(), password.into()),
            ("permitrootlogin".into(), root.into()),
        ]),
        evidence: vec![],
    }
}

/// A display manager whose guest session is `enabled` or not.
pub fn guest(enabled: Known<bool>, dm: &str, evidence: &str) -> guest_session::GuestSession {
    guest_session::GuestSession {
        enabled: enabled.clone(),
        display_manager: dm.into(),
        guest: enabled,
        autologin: Known::Value(None),
        evidence: vec![evidence.into()],
    }
}

/// Accounts, and which of them have no password.
pub fn users(without_password: Known<Vec<String>>) -> users::Users {
    users::Users {
        accounts: vec![],
        root_password: users::Password::Locked,
        without_password,
        admin_groups: BTreeMap::new(),
        logged_in: Known::Value(vec![]),
        evidence: vec!["/etc/shadow".into()],
    }
}

/// apt with this many pending and security updates.
pub fn updates(pending: u64, security: Known<u64>) -> os_updates::OsUpdates {
    os_updates::OsUpdates {
        backend: "apt".into(),
        counts: Some(os_updates::Counts {
            pending,
            security,
            held: 0,
            broken: 0,
        }),
        pending: vec![],
        lists_refreshed_at: None,
        reboot_required: Known::Value(false),
        reboot_evidence: String::new(),
        broken: vec![],
        security_evidence: String::new(),
        evidence: vec![],
    }
}

/// One pending update.
pub fn pending(name: &str, security: bool) -> os_updates::PendingUpdate {
    os_updates::PendingUpdate {
        name: name.into(),
        arch: None,
        installed: "1".into(),
        candidate: "2".into(),
        security,
        held: false,
        source: "bookworm-security".into(),
        first_seen_at: None,
    }
}

/// The agent, its installed package and its last upgrade error.
pub fn agent(installed: Option<&str>, latest: u64, error: Option<&str>) -> agent::Agent {
    agent::Agent {
        version: "0.1.0".into(),
        package_version: installed.map(str::to_string),
        latest_release: Some(latest),
        upgrade: Some(agent::UpgradeOutcome {
            finished_at: None,
            package_manager: Some("apt".into()),
            from_version: None,
            to_version: None,
            error: error.map(str::to_string),
        }),
        certificate_refused: None,
    }
}

/// A located machine, or not.
pub fn location(location: Known<geolocation::Location>) -> geolocation::Geolocation {
    geolocation::Geolocation {
        location,
        located_at: None,
        evidence: vec!["geolocation is off".into()],
    }
}

/// Debian 13, supported until `support_ends`, with `newer` out.
pub fn os_info(support_ends: &str, newer: Option<&str>) -> os_info::OsInfo {
    let date = chrono::NaiveDate::parse_from_str(support_ends, "%Y-%m-%d").ok();
    os_info::OsInfo {
        id: Some("debian".into()),
        id_like: vec![],
        name: Some("Debian GNU/Linux".into()),
        pretty_name: Some("Debian GNU/Linux 13 (trixie)".into()),
        version_id: Some("13".into()),
        version_codename: Some("trixie".into()),
        kernel: "6.12.48+deb13-amd64".into(),
        architecture: "x86_64".into(),
        hostname: "h".into(),
        booted_at: None,
        release: Some(os_info::ReleaseSupport {
            support_ends: Known::Value(date),
            newer_release: Known::Value(newer.map(str::to_string)),
            evidence: vec!["13 (trixie) in /usr/share/distro-info/debian.csv".into()],
        }),
        evidence: vec!["distribution: /etc/os-release".into()],
    }
}

/// A report's plugins every default check passes.
pub fn compliant() -> serde_json::Value {
    let mut v = serde_json::json!({});
    let mut add = |name: &str, value: serde_json::Value| v[name] = value;
    add("os_updates", to_value(&updates(0, Known::Value(0))));
    add(
        "auto_updates",
        to_value(&auto_updates::AutoUpdates {
            enabled: Known::Value(true),
            mechanism: Some(auto_updates::Mechanism::UnattendedUpgrades),
            applies: Some(auto_updates::Applies::Security),
            installed: Some(true),
            timers: vec!["apt-daily-upgrade.timer: enabled".into()],
            settings: None,
            evidence: vec![],
        }),
    );
    let root = filesystem("/", Known::Value(true));
    add("hd_encryption", to_value(&disks(vec![root], vec![])));
    add("firewall", to_value(&firewall(firewall::Status::On, "nft")));
    let alice = session("alice", Known::Value(true), Some(300));
    add("screenlock", to_value(&screenlock(vec![alice])));
    add(
        "guest_session",
        to_value(&guest(Known::Value(false), "gdm", "")),
    );
    let ssh = sshd(sshd::Status::Running, "no", "prohibit-password");
    add("sshd", to_value(&ssh));
    add("users", to_value(&users(Known::Value(vec![]))));
    add(
        "software",
        to_value(&software::Software {
            compliant: true,
            packages: vec![],
            services: vec![],
            evidence: vec![],
        }),
    );
    add("agent", to_value(&agent(None, 0, None)));
    add("os_info", to_value(&os_info("2028-08-09", None)));
    v
}
