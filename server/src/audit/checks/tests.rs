//! Each check on fixtures built with the facts types (the audit tests run
//! them end to end over the stores), and on reports of the previous facts
//! version, as agents one release behind send them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use penguindome_protocol::facts::{self, FACTS_VERSION, Fact, Known};
use serde_json::{Value, json};

use super::*;
use crate::store::{ClientDocument, ClientSummary};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn doc(plugins: Value, facts_version: u32) -> ClientDocument {
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
        facts_version,
        keys: Vec::new(),
        plugins: plugins
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A report's plugins holding one collector's facts.
fn with<F: Fact>(fact: &F) -> Value {
    json!({ F::NAME: facts::to_value(fact) })
}

/// The verdict of the check `name` on these plugin outputs (current facts
/// version).
fn judge(name: &str, plugins: Value) -> Finding {
    judge_version(name, plugins, FACTS_VERSION)
}

/// The verdict of the check `name` on outputs of facts version `version`.
fn judge_version(name: &str, plugins: Value, version: u32) -> Finding {
    let hours = BusinessHours::new(Some("UTC"), None, None).unwrap();
    let cx = Context {
        now: now(),
        hours: &hours,
        not_reporting_after: Duration::from_secs(8 * 3600),
        screenlock_max_delay: Duration::from_secs(900),
        deprecated_listeners: &["old".to_string()],
    };
    let d = doc(plugins, version);
    let facts = Facts::of_client(&d, 0, None);
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

use penguindome_protocol::facts::fixtures::*;
use penguindome_protocol::facts::{auto_updates, firewall, software, sshd};

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
    let unknown = firewall(
        firewall::Status::Unknown,
        "cannot run nft: permission denied",
    );
    let d = raised(judge("firewall-disabled", with(&unknown)));
    assert!(
        d.contains("could not tell") && d.contains("permission denied"),
        "{d}"
    );
    let only_unknown = disks(vec![filesystem("/", Known::UNKNOWN)], vec![]);
    let d = raised(judge("unencrypted-hard-drive", with(&only_unknown)));
    assert!(d.contains("could not tell"), "{d}");
}

#[test]
fn output_of_another_shape_says_so_instead_of_passing() {
    // A renamed field: the contract breaks loudly, not as "could not tell".
    let renamed = json!({"firewall": {"state": "on", "evidence": []}});
    let d = raised(judge("firewall-disabled", renamed));
    assert!(
        d.contains("cannot read the latest report") && d.contains("firewall"),
        "{d}"
    );
    let future = json!({"firewall": facts::to_value(&firewall(firewall::Status::On, "x"))});
    let d = raised(judge_version(
        "firewall-disabled",
        future,
        FACTS_VERSION + 1,
    ));
    assert!(d.contains("not readable here"), "{d}");
}

#[test]
fn disk_encryption_names_the_plain_filesystems() {
    let d = disks(
        vec![
            filesystem("/", Known::Value(true)),
            filesystem("/home", Known::Value(false)),
            filesystem("/srv", Known::UNKNOWN),
        ],
        vec![swap("/dev/sda3", Known::Value(false))],
    );
    assert_eq!(
        raised(judge("unencrypted-hard-drive", with(&d))),
        "not encrypted: /home, /dev/sda3; cannot tell: /srv"
    );
    let fine = disks(vec![filesystem("/", Known::Value(true))], vec![]);
    assert_eq!(judge("unencrypted-hard-drive", with(&fine)), Finding::Clear);
}

#[test]
fn screenlock_needs_every_session_to_lock_soon_enough() {
    let judge_sessions = |s| judge("screenlock-disabled", with(&screenlock(s)));
    assert_eq!(judge_sessions(vec![]), Finding::Clear, "no sessions");
    assert_eq!(
        judge_sessions(vec![session("a", Known::Value(true), Some(600))]),
        Finding::Clear
    );
    let d = raised(judge_sessions(vec![
        session("a", Known::Value(true), Some(3600)),
        session("b", Known::Value(false), None),
        session("c", Known::UNKNOWN, None),
    ]));
    assert_eq!(
        d,
        "a locks only after 60 min (at most 15 min allowed); b never locks; c: cannot tell whether the screen locks"
    );
}

#[test]
fn ssh_matters_only_while_sshd_can_be_reached() {
    use sshd::Status::*;
    let s = |status, pa, root| {
        with(&penguindome_protocol::facts::fixtures::sshd(
            status, pa, root,
        ))
    };
    let raises = |f| matches!(f, Finding::Raise(_));
    assert!(raises(judge(
        "ssh-password-authentication",
        s(Running, "yes", "no")
    )));
    assert!(raises(judge(
        "ssh-password-authentication",
        s(SocketActivated, "yes", "no")
    )));
    assert_eq!(
        judge("ssh-password-authentication", s(Stopped, "yes", "yes")),
        Finding::Clear
    );
    assert_eq!(
        judge("ssh-password-authentication", s(Running, "no", "yes")),
        Finding::Clear
    );
    assert!(raises(judge(
        "ssh-root-password-authentication",
        s(Running, "no", "yes")
    )));
    assert_eq!(
        judge(
            "ssh-root-password-authentication",
            s(Running, "no", "prohibit-password")
        ),
        Finding::Clear
    );
}

#[test]
fn the_other_checks_read_their_collectors() {
    let lightdm = guest(Known::Value(true), "lightdm", "allow-guest=true");
    assert_eq!(
        raised(judge("guest-session-enabled", with(&lightdm))),
        "lightdm allows logging in without a password: allow-guest=true"
    );
    let off = guest(Known::Value(false), "gdm", "");
    assert_eq!(judge("guest-session-enabled", with(&off)), Finding::Clear);
    let accounts = users(Known::Value(vec!["games".into(), "bob".into()]));
    assert_eq!(
        raised(judge("account-without-password", with(&accounts))),
        "no password: games, bob"
    );
    let dnf = auto_updates::AutoUpdates {
        enabled: Known::Value(false),
        mechanism: Some(auto_updates::Mechanism::DnfAutomatic),
        applies: Some(auto_updates::Applies::None),
        installed: Some(false),
        timers: vec![],
        settings: None,
        evidence: vec!["dnf-automatic is not installed".into()],
    };
    assert_eq!(
        raised(judge("auto-updates-disabled", with(&dnf))),
        "dnf-automatic is not enabled (not installed)"
    );
    let required = software::Software {
        compliant: false,
        packages: vec![software::Package {
            name: "falcon-sensor".into(),
            installed: Known::Value(false),
            version: None,
        }],
        services: vec![software::Service {
            name: "falcon-sensor.service".into(),
            installed: false,
            enabled: false,
            running: Known::Value(false),
            state: "inactive".into(),
        }],
        evidence: vec![],
    };
    assert_eq!(
        raised(judge("required-software-missing", with(&required))),
        "package falcon-sensor not installed; service falcon-sensor.service is inactive"
    );
    let failing = penguindome_protocol::facts::fixtures::agent(None, 3, Some("Hash Sum mismatch"));
    assert_eq!(
        raised(judge("agent-upgrade-failing", with(&failing))),
        "upgrade to release 3 failed: Hash Sum mismatch"
    );
    assert_eq!(
        judge("agent-upgrade-failing", json!({})),
        Finding::Clear,
        "not packaged"
    );
    let mut reboot = updates(0, Known::Value(0));
    reboot.reboot_required = Known::Value(true);
    assert!(matches!(
        judge("reboot-required", with(&reboot)),
        Finding::Raise(_)
    ));
    reboot.reboot_required = Known::UNKNOWN;
    assert_eq!(judge("reboot-required", with(&reboot)), Finding::Clear);
    let here = facts::geolocation::Location {
        lat: 1.0,
        lng: 2.0,
        accuracy: None,
    };
    assert_eq!(
        judge("no-location", with(&location(Known::Value(here)))),
        Finding::Clear
    );
    assert!(matches!(
        judge("no-location", with(&location(Known::UNKNOWN))),
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
fn security_updates_are_named() {
    let mut u = updates(3, Known::Value(2));
    u.pending = vec![
        pending("libc6", true),
        pending("vim", false),
        pending("openssl", true),
    ];
    assert_eq!(
        raised(judge("os-security-updates", with(&u))),
        "2 security update(s) pending: libc6, openssl"
    );
    assert_eq!(
        judge("os-security-updates", with(&updates(4, Known::Value(0)))),
        Finding::Clear
    );
}

#[test]
fn updates_that_cannot_be_classified_all_count() {
    let mut pacman = updates(3, Known::UNKNOWN);
    pacman.backend = "pacman".into();
    pacman.security_evidence = "Arch security advisories are not fetched".into();
    let d = raised(judge("os-security-updates", with(&pacman)));
    assert!(
        d.starts_with("3 update(s) pending, and none can be told") && d.contains("advisories"),
        "{d}"
    );
    let none = updates(0, Known::UNKNOWN);
    assert_eq!(judge("os-security-updates", with(&none)), Finding::Clear);
}

#[test]
fn an_upgrade_error_from_before_the_installed_release_is_forgotten() {
    let agent = |installed| {
        with(&penguindome_protocol::facts::fixtures::agent(
            Some(installed),
            3,
            Some("Hash Sum mismatch"),
        ))
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

/// Outputs exactly as agents of facts version 1 (the release before the
/// typed contract) wrote them: evidence as sentences and maps, apt's timer
/// as one state, dnf without `installed`.
fn version_1_report() -> Value {
    json!({
        "hd_encryption": {"encrypted": false, "filesystems": [
            {"mountpoint": "/", "device": "/dev/sda2", "fstype": "ext4", "encrypted": false,
             "layers": ["partition", "disk"], "evidence": "no dm-crypt layer below /dev/sda2"}],
            "swap": [], "exempt": [{"mountpoint": "/boot", "device": "/dev/sda1", "reason": "boot"}],
            "remote": [], "removable": [], "notes": [],
            "evidence": "judged from /proc/self/mounts: not encrypted: /"},
        "auto_updates": {"enabled": false, "mechanism": "dnf-automatic", "applies": "none",
            "evidence": ["dnf-automatic is not installed (no /etc/dnf/automatic.conf)"]},
        "os_info": {"id": "debian", "id_like": [], "name": "Debian GNU/Linux",
            "pretty_name": "Debian GNU/Linux 12 (bookworm)", "version_id": "12",
            "version_codename": "bookworm", "kernel": "6.1.0-27-amd64",
            "architecture": "x86_64", "hostname": "h", "booted_at": "2026-11-24T08:00:00.000Z",
            "evidence": {"distribution": "/etc/os-release", "kernel": "/proc/sys/kernel/osrelease"}},
        "firewall": {"status": "off", "ipv4": {"filtered": false, "by": []},
            "ipv6": {"filtered": false, "by": [], "disabled": false}, "managers": [],
            "evidence": ["no input chain drops by default"]},
        "os_updates": {"backend": "apt", "counts": {"pending": 1, "security": 1, "held": 0, "broken": 0},
            "pending": [{"name": "openssl", "arch": "amd64", "installed": "3.0.14-1", "candidate": "3.0.15-1",
                "security": true, "source": "bookworm-security", "first_seen_at": "2026-11-20T08:00:00.000Z"}],
            "lists_refreshed_at": null, "reboot_required": "unknown", "reboot_evidence": "",
            "broken": [], "security_evidence": "bookworm-security", "evidence": ["/var/lib/dpkg/status"]},
    })
}

#[test]
fn an_agent_one_release_behind_keeps_its_checks() {
    let v1 = version_1_report();
    assert_eq!(
        raised(judge_version("unencrypted-hard-drive", v1.clone(), 1)),
        "not encrypted: /"
    );
    assert_eq!(
        raised(judge_version("auto-updates-disabled", v1.clone(), 1)),
        "dnf-automatic is not enabled (not installed)"
    );
    assert_eq!(
        raised(judge_version("firewall-disabled", v1.clone(), 1)),
        "firewall off: no input chain drops by default"
    );
    assert_eq!(
        raised(judge_version("os-security-updates", v1.clone(), 1)),
        "1 security update(s) pending: openssl"
    );
    let info =
        penguindome_protocol::facts::read::<facts::os_info::OsInfo>(v1.get("os_info"), 1).unwrap();
    assert_eq!(info.evidence[0], "distribution: /etc/os-release");
    // Read as the current version, the same text is refused: the version
    // decides how a report is read.
    let d = raised(judge("unencrypted-hard-drive", v1));
    assert!(d.contains("cannot read the latest report"), "{d}");
}

#[test]
fn releases_past_support_or_behind_the_newest_are_issues() {
    let current = fixtures_os("2028-08-09", None);
    assert_eq!(judge("os-end-of-life", current.clone()), Finding::Clear);
    assert_eq!(judge("os-update-available", current), Finding::Clear);
    let old = fixtures_os("2026-06-10", Some("14 (forky)"));
    assert_eq!(
        raised(judge("os-end-of-life", old.clone())),
        "Debian GNU/Linux 13 (trixie) has had no security support since 2026-06-10; upgrade to 14 (forky)"
    );
    assert_eq!(
        raised(judge("os-update-available", old)),
        "Debian GNU/Linux 13 (trixie) is installed; 14 (forky) is out"
    );
}

#[test]
fn the_servers_release_table_answers_for_agents_that_cannot_tell() {
    // An agent one release behind says nothing about its release: Debian
    // 11's regular support ended 2024-08-14, by the server's table.
    let v1 = json!({"os_info": {"id": "debian", "id_like": [], "name": "Debian GNU/Linux",
        "pretty_name": "Debian GNU/Linux 11 (bullseye)", "version_id": "11",
        "version_codename": "bullseye", "kernel": "5.10.0-30-amd64", "architecture": "x86_64",
        "hostname": "h", "booted_at": null, "evidence": {"distribution": "/etc/os-release"}}});
    let d = raised(judge_version("os-end-of-life", v1.clone(), 1));
    assert!(
        d.contains("since 2024-08-14") && d.contains("upgrade to 13 (trixie)"),
        "{d}"
    );
    assert!(matches!(
        judge_version("os-update-available", v1, 1),
        Finding::Raise(_)
    ));
    // A current agent that could not tell (no distro-info-data).
    let mut os = penguindome_protocol::facts::fixtures::os_info("2028-08-09", None);
    os.version_id = Some("11".into());
    os.version_codename = Some("bullseye".into());
    os.release = Some(facts::os_info::ReleaseSupport {
        support_ends: Known::UNKNOWN,
        newer_release: Known::UNKNOWN,
        evidence: vec!["no distro-info-data".into()],
    });
    assert!(matches!(
        judge("os-end-of-life", with(&os)),
        Finding::Raise(_)
    ));
    // A distribution neither knows: nothing to say.
    os.id = Some("gentoo".into());
    assert_eq!(judge("os-end-of-life", with(&os)), Finding::Clear);
}

fn fixtures_os(support_ends: &str, newer: Option<&str>) -> Value {
    with(&penguindome_protocol::facts::fixtures::os_info(
        support_ends,
        newer,
    ))
}

#[test]
fn a_refused_server_certificate_is_an_issue_for_a_week() {
    let mut agent = penguindome_protocol::facts::fixtures::agent(None, 0, None);
    let refused_at = now() - chrono::Duration::days(2);
    agent.certificate_refused = Some(facts::agent::CertificateRefusal {
        at: facts::Timestamp::from(refused_at),
        url: "https://pd.example.com:8443/penguindome/v1/update".into(),
        error: "invalid peer certificate: UnknownIssuer".into(),
    });
    let d = raised(judge("server-certificate-refused", with(&agent)));
    assert!(
        d.contains("UnknownIssuer") && d.contains("pd.example.com"),
        "{d}"
    );
    agent.certificate_refused.as_mut().unwrap().at =
        facts::Timestamp::from(now() - chrono::Duration::days(8));
    assert_eq!(
        judge("server-certificate-refused", with(&agent)),
        Finding::Clear
    );
}

#[test]
fn a_client_on_a_deprecated_listener_is_told_to_move() {
    let hours = BusinessHours::new(Some("UTC"), None, None).unwrap();
    let deprecated = ["old".to_string()];
    let cx = Context {
        now: now(),
        hours: &hours,
        not_reporting_after: Duration::from_secs(8 * 3600),
        screenlock_max_delay: Duration::from_secs(900),
        deprecated_listeners: &deprecated,
    };
    let check = all()
        .into_iter()
        .find(|c| c.name() == "deprecated-port")
        .unwrap();
    let mut d = doc(json!({}), FACTS_VERSION);
    // The fixture's listener is "l".
    assert_eq!(
        check.evaluate(&Facts::of_client(&d, 0, None), &cx),
        Finding::Clear
    );
    d.summary.last_listener = "old".into();
    let why = raised(check.evaluate(&Facts::of_client(&d, 0, None), &cx));
    assert!(
        why.contains("\"old\"") && why.contains("deprecated"),
        "{why}"
    );
    assert!(!check.decided_by_report(), "the periodic audit judges it");
}
