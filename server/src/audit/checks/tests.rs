//! Each check on hand-made outputs shaped like the collectors' (the audit
//! tests run them end to end over the stores).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::store::{ClientDocument, ClientSummary};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn doc(plugins: Value) -> ClientDocument {
    ClientDocument {
        summary: ClientSummary {
            client_id: "c1".into(),
            hostname: "h".into(),
            first_seen_at: now(),
            last_seen_at: now(),
            collected_at: Some(now()),
            last_address: "127.0.0.1".into(),
            last_listener: "l".into(),
            revoked_at: None,
        },
        enrolled_at: now(),
        submitted_at: Some(now()),
        agent_version: None,
        keys: Vec::new(),
        plugins: plugins
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The verdict of the check `name` on these plugin outputs.
fn judge(name: &str, plugins: Value) -> Finding {
    let hours = BusinessHours::new(Some("UTC"), None, None).unwrap();
    let cx = Context {
        now: now(),
        hours: &hours,
        not_reporting_after: Duration::from_secs(8 * 3600),
        screenlock_max_delay: Duration::from_secs(900),
    };
    let d = doc(plugins);
    let facts = Facts {
        client: &d,
        pending_patches: 0,
        peer_seen_at: None,
    };
    all()
        .into_iter()
        .find(|c| c.name() == name)
        .unwrap()
        .evaluate(&facts, &cx)
}

fn raised(f: Finding) -> String {
    match f {
        Finding::Raise(d) => d,
        Finding::Clear => panic!("expected an issue"),
    }
}

#[test]
fn names_are_unique_and_described() {
    let checks = all();
    let mut names: Vec<&str> = checks.iter().map(|c| c.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), checks.len());
    assert!(checks.iter().all(|c| !c.describe().is_empty()));
}

#[test]
fn a_missing_collector_or_an_unknown_answer_is_an_issue() {
    let d = raised(judge("firewall-disabled", json!({})));
    assert!(d.contains("no firewall output"), "{d}");
    let d = raised(judge(
        "firewall-disabled",
        json!({"firewall": {"status": "unknown", "evidence": ["cannot run nft: permission denied"]}}),
    ));
    assert!(
        d.contains("could not tell") && d.contains("permission denied"),
        "{d}"
    );
    let d = raised(judge(
        "unencrypted-hard-drive",
        json!({"hd_encryption": {"encrypted": "unknown"}}),
    ));
    assert!(d.contains("could not tell"), "{d}");
}

#[test]
fn disk_encryption_names_the_plain_filesystems() {
    let v = json!({"hd_encryption": {"encrypted": false, "filesystems": [
        {"mountpoint": "/", "encrypted": true}, {"mountpoint": "/home", "encrypted": false}],
        "swap": [{"device": "/dev/sda3", "encrypted": false}]}});
    assert_eq!(
        raised(judge("unencrypted-hard-drive", v)),
        "not encrypted: /home, /dev/sda3"
    );
}

#[test]
fn screenlock_needs_every_session_to_lock_soon_enough() {
    let s = |sessions: Value| json!({"screenlock": {"sessions": sessions}});
    assert_eq!(
        judge("screenlock-disabled", s(json!([]))),
        Finding::Clear,
        "no sessions"
    );
    assert_eq!(
        judge(
            "screenlock-disabled",
            s(json!([{"user": "a", "enabled": true, "delay_seconds": 600}]))
        ),
        Finding::Clear
    );
    let d = raised(judge(
        "screenlock-disabled",
        s(
            json!([{"user": "a", "enabled": true, "delay_seconds": 3600},
                 {"user": "b", "enabled": false}, {"user": "c", "enabled": "unknown"}]),
        ),
    ));
    assert_eq!(
        d,
        "a locks only after 60 min (at most 15 min allowed); b never locks; c: cannot tell whether the screen locks"
    );
}

#[test]
fn ssh_matters_only_while_sshd_can_be_reached() {
    let s = |status: &str, pa: &str, root: &str| json!({"sshd": {"status": status, "config": {"passwordauthentication": pa, "permitrootlogin": root}}});
    assert!(matches!(
        judge("ssh-password-authentication", s("running", "yes", "no")),
        Finding::Raise(_)
    ));
    assert!(matches!(
        judge(
            "ssh-password-authentication",
            s("socket-activated", "yes", "no")
        ),
        Finding::Raise(_)
    ));
    assert_eq!(
        judge("ssh-password-authentication", s("stopped", "yes", "yes")),
        Finding::Clear
    );
    assert_eq!(
        judge("ssh-password-authentication", s("running", "no", "yes")),
        Finding::Clear
    );
    assert!(matches!(
        judge(
            "ssh-root-password-authentication",
            s("running", "no", "yes")
        ),
        Finding::Raise(_)
    ));
    assert_eq!(
        judge(
            "ssh-root-password-authentication",
            s("running", "no", "prohibit-password")
        ),
        Finding::Clear
    );
}

#[test]
fn the_other_checks_read_their_collectors() {
    assert_eq!(
        raised(judge(
            "guest-session-enabled",
            json!({"guest_session": {"enabled": true, "display_manager": "lightdm", "evidence": ["allow-guest=true"]}})
        )),
        "lightdm allows logging in without a password: allow-guest=true"
    );
    assert_eq!(
        judge(
            "guest-session-enabled",
            json!({"guest_session": {"enabled": false}})
        ),
        Finding::Clear
    );
    assert_eq!(
        raised(judge(
            "account-without-password",
            json!({"users": {"without_password": ["games", "bob"]}})
        )),
        "no password: games, bob"
    );
    assert_eq!(
        raised(judge(
            "auto-updates-disabled",
            json!({"auto_updates": {"enabled": false, "mechanism": "dnf-automatic", "applies": "none",
                "evidence": ["dnf-automatic is not installed (no /etc/dnf/automatic.conf or /etc/dnf/dnf5-plugins/automatic.conf)"]}})
        )),
        "dnf-automatic is not enabled (not installed)"
    );
    assert_eq!(
        raised(judge(
            "required-software-missing",
            json!({"software": {"compliant": false,
            "packages": [{"name": "falcon-sensor", "installed": false}],
            "services": [{"name": "falcon-sensor.service", "installed": false, "enabled": false, "running": false, "state": "inactive"}]}})
        )),
        "package falcon-sensor not installed; service falcon-sensor.service is inactive"
    );
    assert_eq!(
        raised(judge(
            "agent-upgrade-failing",
            json!({"agent": {"latest_release": 3, "upgrade": {"error": "Hash Sum mismatch"}}})
        )),
        "upgrade to release 3 failed: Hash Sum mismatch"
    );
    assert_eq!(
        judge("agent-upgrade-failing", json!({})),
        Finding::Clear,
        "not packaged"
    );
    assert!(matches!(
        judge(
            "reboot-required",
            json!({"os_updates": {"reboot_required": true}})
        ),
        Finding::Raise(_)
    ));
    assert_eq!(
        judge(
            "reboot-required",
            json!({"os_updates": {"reboot_required": "unknown"}})
        ),
        Finding::Clear
    );
    assert_eq!(
        judge(
            "no-location",
            json!({"geolocation": {"location": {"lat": 1.0, "lng": 2.0}}})
        ),
        Finding::Clear
    );
    assert!(matches!(
        judge(
            "no-location",
            json!({"geolocation": {"location": "unknown"}})
        ),
        Finding::Raise(_)
    ));
}

#[test]
fn a_failed_collector_is_not_a_pass() {
    let d = raised(judge(
        "ssh-password-authentication",
        json!({"sshd": {"error": "sshd -T timed out"}}),
    ));
    assert_eq!(d, "the sshd collector failed: sshd -T timed out");
    let d = raised(judge(
        "screenlock-disabled",
        json!({"screenlock": {"error": "the collector crashed"}}),
    ));
    assert!(d.contains("screenlock collector failed"), "{d}");
}

#[test]
fn updates_that_cannot_be_classified_all_count() {
    let pacman = json!({"os_updates": {"backend": "pacman", "counts": {"pending": 3, "security": "unknown"},
        "security_evidence": "Arch security advisories are not fetched"}});
    let d = raised(judge("os-security-updates", pacman));
    assert!(
        d.starts_with("3 update(s) pending, and none can be told") && d.contains("advisories"),
        "{d}"
    );
    let none = json!({"os_updates": {"backend": "pacman", "counts": {"pending": 0, "security": "unknown"}}});
    assert_eq!(judge("os-security-updates", none), Finding::Clear);
}

#[test]
fn an_upgrade_error_from_before_the_installed_release_is_forgotten() {
    let agent = |installed: &str| {
        json!({"agent": {"package_version": installed, "latest_release": 3,
            "upgrade": {"error": "Hash Sum mismatch"}}})
    };
    assert!(matches!(
        judge("agent-upgrade-failing", agent("0.1.0-2")),
        Finding::Raise(_)
    ));
    assert_eq!(
        judge("agent-upgrade-failing", agent("0.1.0-3")),
        Finding::Clear
    );
}
