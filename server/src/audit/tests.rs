//! The audit over real stores (SQLite, and MongoDB when the suite runs
//! through scripts/test), with the clock set by each test.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Report;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use penguindome_protocol::facts::firewall::Status as FirewallStatus;
use penguindome_protocol::facts::sshd::Status as SshdStatus;
use penguindome_protocol::facts::{FACTS_VERSION, Known, to_value};

use super::verdicts;
use super::*;
use crate::config::{AuditConfig, CheckConfig};
use crate::store::mongodb::tests::{fresh_store, test_uri};
use crate::store::sqlite::SqliteStore;
use crate::store::{Enrollment, Parameter, RequestMeta, Store, Submission};
use penguindome_protocol::facts::fixtures as fx;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Every backend the suite can reach (the tempdir keeps SQLite's file).
async fn stores() -> (tempfile::TempDir, Vec<Arc<dyn Store>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut out: Vec<Arc<dyn Store>> = vec![Arc::new(
        SqliteStore::open(&dir.path().join("s.db")).unwrap(),
    )];
    if let Some(uri) = test_uri() {
        out.push(Arc::new(fresh_store(&uri).await));
    }
    (dir, out)
}

/// Business hours Monday to Friday, 09:00-17:00 UTC, default checks.
fn settings() -> Settings {
    settings_with(AuditConfig {
        timezone: Some("UTC".into()),
        ..AuditConfig::default()
    })
}

fn settings_with(c: AuditConfig) -> Settings {
    Settings::from_config(&c).unwrap()
}

/// A report every default check passes, built with the facts types.
fn compliant() -> Value {
    fx::compliant()
}

fn with(mut v: Value, plugin: &str, output: Value) -> Value {
    v[plugin] = output;
    v
}

/// A report whose firewall is off, saying `why`.
fn firewall_says(why: &str) -> Value {
    let off = fx::firewall(FirewallStatus::Off, why);
    with(compliant(), "firewall", to_value(&off))
}

/// A report whose only problem is the firewall.
fn firewall_off() -> Value {
    firewall_says("no input chain drops by default")
}

/// A client "a-host" whose firewall is off, audited once at `at`, and the
/// issue that opened.
async fn firewall_issue(
    store: &Arc<dyn Store>,
    s: &Settings,
    at: DateTime<Utc>,
) -> (Client, Issue) {
    let a = enroll(store, "a-host", at).await;
    report(store, &a, firewall_off(), at).await;
    audit(store, s, at).await;
    let issue = open_issues(store, &a).await.remove(0);
    (a, issue)
}

struct Client {
    id: String,
    fp: String,
    host: String,
}

fn meta(c: &Client, at: DateTime<Utc>) -> RequestMeta {
    RequestMeta {
        client_id: c.id.clone(),
        fingerprint: c.fp.clone(),
        nonce: new_nonce(),
        nonce_expires_at: at + Duration::minutes(15),
        received_at: at,
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        listener: "test".into(),
    }
}

async fn enroll(store: &Arc<dyn Store>, host: &str, at: DateTime<Utc>) -> Client {
    let c = Client {
        id: new_nonce(),
        fp: new_nonce().to_uppercase(),
        host: host.into(),
    };
    let m = meta(&c, at);
    store
        .enroll(Enrollment {
            client_id: c.id.clone(),
            hostname: host.into(),
            fingerprint: c.fp.clone(),
            certificate: vec![1],
            nonce: m.nonce,
            nonce_expires_at: m.nonce_expires_at,
            received_at: at,
            address: m.address,
            listener: m.listener,
            token: None,
        })
        .await
        .unwrap();
    c
}

async fn report(store: &Arc<dyn Store>, c: &Client, plugins: Value, at: DateTime<Utc>) {
    submit_with(store, c, plugins, at, |_| None).await
}

/// Submits a report as the server does: judged on arrival, its verdicts
/// stored with it.
async fn report_judged(
    store: &Arc<dyn Store>,
    s: &Settings,
    c: &Client,
    plugins: Value,
    at: DateTime<Utc>,
) {
    let judge = |r: &Report<Box<RawValue>>| {
        Some(verdicts::judge(s, &checks::Facts::of_report(r, at), at).to_text())
    };
    submit_with(store, c, plugins, at, judge).await
}

async fn submit_with(
    store: &Arc<dyn Store>,
    c: &Client,
    plugins: Value,
    at: DateTime<Utc>,
    verdicts: impl Fn(&Report<Box<RawValue>>) -> Option<String>,
) {
    let report = Report::<Box<RawValue>> {
        report_id: new_nonce(),
        hostname: c.host.clone(),
        collected_at: at,
        agent_version: "test".into(),
        facts_version: FACTS_VERSION,
        plugins: plugins
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), RawValue::from_string(v.to_string()).unwrap()))
            .collect(),
    };
    let judged = verdicts(&report);
    let mut submission = Submission::new(meta(c, at), report);
    if let Some(v) = judged {
        submission = submission.with_verdicts(v);
    }
    store.submit(submission).await.unwrap();
}

async fn audit(store: &Arc<dyn Store>, s: &Settings, now: DateTime<Utc>) -> Outcome {
    run(store.as_ref(), s, Vec::new(), now, Options::default())
        .await
        .unwrap()
}

async fn audit_full(store: &Arc<dyn Store>, s: &Settings, now: DateTime<Utc>) -> Outcome {
    run(store.as_ref(), s, Vec::new(), now, Options { full: true })
        .await
        .unwrap()
}

/// (host, issue name) of every due issue.
fn due(o: &Outcome) -> Vec<(String, String)> {
    o.due
        .iter()
        .flat_map(|d| {
            d.issues
                .iter()
                .map(|i| (d.hostname.clone(), i.name.clone()))
        })
        .collect()
}

fn names(issues: &[Issue]) -> Vec<&str> {
    issues.iter().map(|i| i.name.as_str()).collect()
}

async fn open_issues(store: &Arc<dyn Store>, c: &Client) -> Vec<Issue> {
    store
        .issues(IssueFilter {
            client_id: Some(c.id.clone()),
            open_only: true,
        })
        .await
        .unwrap()
}

fn pair(host: &str, name: &str) -> (String, String) {
    (host.to_string(), name.to_string())
}

// Monday 2026-11-23 is a business day.
const MON_10: &str = "2026-11-23T10:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_open_alert_realert_and_close() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let a = enroll(store, "a-host", t1).await;
        let b = enroll(store, "b-host", t1).await;
        report(store, &a, firewall_says("no input chain"), t1).await;
        report(store, &b, compliant(), t1).await;

        let o = audit(store, &s, t1 + Duration::minutes(1)).await;
        assert_eq!(
            names(&o.opened),
            ["firewall-disabled"],
            "the compliant report passes every check"
        );
        assert_eq!(o.opened[0].client_id, a.id);
        assert_eq!(
            o.opened[0].detail.as_deref(),
            Some("firewall off: no input chain")
        );
        assert_eq!(due(&o), [pair("a-host", "firewall-disabled")]);
        mark_alerted(store.as_ref(), &o.due, t1 + Duration::minutes(1))
            .await
            .unwrap();

        // Told once: quiet until its re-alert time (one day) has passed.
        let o = audit(store, &s, t1 + Duration::hours(2)).await;
        assert!(o.opened.is_empty() && due(&o).is_empty(), "{:?}", due(&o));
        let o = audit(store, &s, t1 + Duration::days(1)).await;
        assert_eq!(
            due(&o),
            [pair("a-host", "firewall-disabled")],
            "told again after a day"
        );
        assert_eq!(
            open_issues(store, &a).await.len(),
            1,
            "still one open issue"
        );

        // Fixed: the next audit closes it, as the audit.
        report(
            store,
            &a,
            compliant(),
            t1 + Duration::days(1) + Duration::minutes(5),
        )
        .await;
        let o = audit(store, &s, t1 + Duration::days(1) + Duration::minutes(6)).await;
        assert_eq!(names(&o.closed), ["firewall-disabled"]);
        assert_eq!(o.closed[0].closed_by.as_deref(), Some(CLOSED_BY_AUDIT));
        assert!(open_issues(store, &a).await.is_empty());
        assert!(due(&o).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_counts_business_hours_only() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let fri_16 = t("2026-11-20T16:00:00Z");
        let a = enroll(store, "a-host", fri_16).await;
        let mut pending = fx::updates(2, Known::Value(2));
        pending.pending = vec![fx::pending("openssl", true), fx::pending("libc6", true)];
        let pending = to_value(&pending);
        report(store, &a, with(compliant(), "os_updates", pending), fri_16).await;

        let o = audit(store, &s, fri_16).await;
        assert_eq!(names(&o.opened), ["os-security-updates"]);
        assert_eq!(
            o.opened[0].detail.as_deref(),
            Some("2 security update(s) pending: openssl, libc6")
        );
        assert!(due(&o).is_empty(), "inside its grace of one business day");
        // A weekend later only two business hours have passed.
        assert!(due(&audit(store, &s, t("2026-11-23T10:00:00Z")).await).is_empty());
        // --full shows it anyway.
        assert_eq!(
            due(&audit_full(store, &s, t("2026-11-23T10:00:00Z")).await),
            [pair("a-host", "os-security-updates")]
        );
        // Not yet due when that Monday is a holiday.
        let off = settings_with(AuditConfig {
            timezone: Some("UTC".into()),
            holidays: vec!["2026-11-23".into()],
            ..AuditConfig::default()
        });
        assert!(due(&audit(store, &off, t("2026-11-23T16:01:00Z")).await).is_empty());
        // Eight business hours: Friday 16-17 and Monday 9-16:01.
        let o = audit(store, &s, t("2026-11-23T16:01:00Z")).await;
        assert_eq!(due(&o), [pair("a-host", "os-security-updates")]);
        // The silent weekend also opened not-reporting, still in its own grace.
        assert!(names(&open_issues(store, &a).await).contains(&"not-reporting"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_close_sticks_until_new_data_but_the_audits_does_not() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let (a, mut closed) = firewall_issue(store, &s, t1).await;
        closed.closed_at = Some(t1 + Duration::minutes(5));
        closed.closed_by = Some("alice".into());
        store.put_issues(vec![closed]).await.unwrap();

        let o = audit(store, &s, t1 + Duration::minutes(10)).await;
        assert!(
            o.opened.is_empty(),
            "closed by a person after the data: stays closed"
        );
        report(store, &a, firewall_off(), t1 + Duration::minutes(20)).await;
        let o = audit(store, &s, t1 + Duration::minutes(21)).await;
        assert_eq!(
            names(&o.opened),
            ["firewall-disabled"],
            "newer data reopens it"
        );

        // not-reporting: raised, closed by the audit when the client is
        // back, and raised again when it goes silent again.
        let b = enroll(store, "b-host", t1).await;
        report(store, &b, compliant(), t1).await;
        let tue_12 = t("2026-11-24T12:00:00Z");
        let of_b = |issues: &[Issue]| {
            issues
                .iter()
                .filter(|i| i.client_id == b.id)
                .map(|i| (i.name.clone(), i.detail.clone()))
                .collect::<Vec<_>>()
        };
        let o = audit(store, &s, tue_12).await;
        assert_eq!(
            of_b(&o.opened),
            [(
                "not-reporting".to_string(),
                Some("last report 2026-11-23 10:00 UTC (10 business hours ago)".to_string())
            )]
        );
        report(store, &b, compliant(), tue_12 + Duration::minutes(30)).await;
        let o = audit(store, &s, tue_12 + Duration::minutes(31)).await;
        assert_eq!(of_b(&o.closed).len(), 1, "back: closed");
        let o = audit(store, &s, t("2026-11-25T14:00:00Z")).await;
        assert_eq!(of_b(&o.opened).len(), 1, "silent again: reopened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoozed_and_suspended_hosts_are_quiet_until_they_should_not_be() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let (a, mut issue) = firewall_issue(store, &s, t1).await;
        issue.snoozed_at = Some(t1);
        issue.unsnooze_at = Some(t1 + Duration::hours(3));
        store.put_issues(vec![issue]).await.unwrap();
        assert!(
            due(&audit(store, &s, t1 + Duration::hours(1)).await).is_empty(),
            "snoozed"
        );
        assert_eq!(
            due(&audit(store, &s, t1 + Duration::hours(3)).await).len(),
            1,
            "snooze over"
        );

        let suspend = |at: DateTime<Utc>| Parameter {
            client_id: a.id.clone(),
            name: SUSPENDED_AT.into(),
            value: json!(penguindome_protocol::envelope::utc::format(&at)),
            updated_at: at,
        };
        store
            .put_parameter(suspend(t1 + Duration::hours(4)))
            .await
            .unwrap();
        let o = audit(store, &s, t1 + Duration::hours(5)).await;
        assert!(due(&o).is_empty(), "suspended");
        assert_eq!(
            open_issues(store, &a).await.len(),
            1,
            "suspending hides, it does not close"
        );
        report(store, &a, firewall_off(), t1 + Duration::hours(6)).await;
        assert_eq!(
            due(&audit(store, &s, t1 + Duration::hours(6)).await),
            [pair("a-host", "firewall-disabled")],
            "a new report ends the suspension"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_machine_of_the_same_user_excuses_silence() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let laptop = enroll(store, "laptop", t1).await;
        let desktop = enroll(store, "desktop", t1).await;
        report(store, &laptop, compliant(), t1).await;
        report(store, &desktop, compliant(), t("2026-11-24T11:59:00Z")).await;
        store
            .put_parameter(Parameter {
                client_id: laptop.id.clone(),
                name: USER_CLIENTS.into(),
                value: json!([desktop.id]),
                updated_at: t1,
            })
            .await
            .unwrap();
        let o = audit(store, &s, t("2026-11-24T12:00:00Z")).await;
        assert!(
            o.opened.is_empty(),
            "the user works on the desktop: {:?}",
            names(&o.opened)
        );
        store
            .put_parameter(Parameter {
                client_id: laptop.id.clone(),
                name: USER_CLIENTS.into(),
                value: Value::Null,
                updated_at: t1,
            })
            .await
            .unwrap();
        let o = audit(store, &s, t("2026-11-24T12:00:00Z")).await;
        assert_eq!(names(&o.opened), ["not-reporting"]);
        assert_eq!(o.opened[0].client_id, laptop.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_clients_disabled_checks_and_manual_issues() {
    let (_dir, stores) = stores().await;
    for store in &stores {
        let t1 = t(MON_10);
        let a = enroll(store, "a-host", t1).await;
        let b = enroll(store, "b-host", t1).await;
        let sshd = fx::sshd(SshdStatus::Running, "yes", "yes");
        let bad = with(firewall_off(), "sshd", to_value(&sshd));
        report(store, &a, bad.clone(), t1).await;
        report(store, &b, bad, t1).await;
        let o = audit(store, &settings(), t1).await;
        assert_eq!(o.opened.len(), 6, "{:?}", names(&o.opened));
        let manual = Issue::open(&a.id, "stolen-laptop", Some("reported by alice".into()), t1);
        store.put_issues(vec![manual]).await.unwrap();

        // Turning the ssh checks off closes their issues.
        let mut c = AuditConfig {
            timezone: Some("UTC".into()),
            ..AuditConfig::default()
        };
        for name in [
            "ssh-password-authentication",
            "ssh-root-password-authentication",
        ] {
            c.checks.insert(
                name.into(),
                CheckConfig {
                    enabled: Some(false),
                    ..CheckConfig::default()
                },
            );
        }
        let quiet = settings_with(c);
        store.revoke_client(&b.id, t1).await.unwrap();
        let o = audit(store, &quiet, t1 + Duration::minutes(1)).await;
        let closed_of = |c: &Client| o.closed.iter().filter(|i| i.client_id == c.id).count();
        assert_eq!(
            closed_of(&a),
            2,
            "a's two ssh issues: {:?}",
            names(&o.closed)
        );
        assert_eq!(closed_of(&b), 3, "all of the revoked b's issues");
        assert!(
            open_issues(store, &b).await.is_empty(),
            "a revoked client's issues end"
        );
        let mut left = names(&open_issues(store, &a).await)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        left.sort();
        assert_eq!(
            left,
            ["firewall-disabled", "stolen-laptop"],
            "manual names never auto-close"
        );
        let hosts: Vec<String> = due(&o).into_iter().map(|(h, _)| h).collect();
        assert!(hosts.iter().all(|h| h == "a-host"), "{hosts:?}");
        // A revoked client's hand-opened issue stays for a person to close.
        let lost = Issue::open(&b.id, "stolen-laptop", None, t1);
        store.put_issues(vec![lost]).await.unwrap();
        audit(store, &quiet, t1 + Duration::minutes(2)).await;
        assert_eq!(names(&open_issues(store, &b).await), ["stolen-laptop"]);
        assert!(due(&o).contains(&pair("a-host", "stolen-laptop")));
    }
}

#[test]
fn settings_are_validated() {
    let mut c = AuditConfig::default();
    c.checks
        .insert("firewall-disbled".into(), CheckConfig::default());
    let e = Settings::from_config(&c).err().unwrap().to_string();
    assert!(
        e.contains("firewall-disbled") && e.contains("firewall-disabled"),
        "{e}"
    );
    let mut c = AuditConfig::default();
    c.checks.insert(
        "firewall-disabled".into(),
        CheckConfig {
            grace: Some("often".into()),
            ..CheckConfig::default()
        },
    );
    assert!(Settings::from_config(&c).is_err());
    let c = AuditConfig {
        holidays: vec!["christmas".into()],
        ..AuditConfig::default()
    };
    let e = Settings::from_config(&c).err().unwrap().to_string();
    assert!(e.contains("holidays") && e.contains("christmas"), "{e}");
    // Off by default: the location check needs a geolocation service.
    let s = Settings::from_config(&AuditConfig::default()).unwrap();
    assert!(s.disabled.contains(&"no-location"));
    assert!(
        s.checks
            .iter()
            .any(|c| c.check.name() == "firewall-disabled")
    );
}

#[test]
fn certificates_are_judged_by_their_expiry() {
    let make = |days: i64| {
        let mut params = rcgen::CertificateParams::new(vec!["pd.example".into()]).unwrap();
        let end = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(400);
        params.not_after = end;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    };
    let now = Utc::now();
    assert_eq!(
        certificates::judge(make(365).as_bytes(), now, "c"),
        Finding::Clear
    );
    match certificates::judge(make(10).as_bytes(), now, "c") {
        Finding::Raise(d) => assert!(d.contains("expires on"), "{d}"),
        f => panic!("{f:?}"),
    }
    match certificates::judge(make(-1).as_bytes(), now, "c") {
        Finding::Raise(d) => assert!(d.contains("expired"), "{d}"),
        f => panic!("{f:?}"),
    }
    assert!(matches!(
        certificates::judge(b"junk", now, "c"),
        Finding::Raise(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_issues_and_duplicates() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let finding = |listener: &str, as_of: DateTime<Utc>| ServerFinding {
            client_id: format!("server:pd1/{listener}"),
            name: certificates::NAME,
            finding: Finding::Raise("expires soon".into()),
            as_of: Some(as_of),
        };
        let run_with = |f: Vec<ServerFinding>, now: DateTime<Utc>| {
            let store = store.clone();
            let s = &s;
            async move {
                run(store.as_ref(), s, f, now, Options::default())
                    .await
                    .unwrap()
            }
        };
        let o = run_with(vec![finding("main", t1), finding("old", t1)], t1).await;
        assert_eq!(o.opened.len(), 2);
        assert_eq!(due(&o).len(), 2, "no grace for certificates");

        // A person closes main's: it stays closed until the file changes.
        let mut main = store
            .issues(IssueFilter {
                client_id: Some("server:pd1/main".into()),
                open_only: true,
            })
            .await
            .unwrap()
            .remove(0);
        main.closed_at = Some(t1 + Duration::minutes(1));
        main.closed_by = Some("alice".into());
        store.put_issues(vec![main]).await.unwrap();
        // The "old" listener is gone from the configuration: its issue closes.
        let o = run_with(vec![finding("main", t1)], t1 + Duration::hours(1)).await;
        assert!(o.opened.is_empty(), "{:?}", names(&o.opened));
        assert_eq!(
            o.closed
                .iter()
                .map(|i| i.client_id.as_str())
                .collect::<Vec<_>>(),
            ["server:pd1/old"]
        );
        let o = run_with(
            vec![finding("main", t1 + Duration::hours(2))],
            t1 + Duration::hours(3),
        )
        .await;
        assert_eq!(
            names(&o.opened),
            [certificates::NAME],
            "a new file: judged again"
        );

        // Two open issues of one name (a second writer before the lease):
        // the oldest stays open, the other closes.
        let a = enroll(store, "a-host", t1).await;
        report(store, &a, firewall_off(), t1).await;
        store
            .put_issues(vec![
                Issue::open(&a.id, "firewall-disabled", None, t1),
                Issue::open(&a.id, "firewall-disabled", None, t1 + Duration::seconds(1)),
            ])
            .await
            .unwrap();
        let o = audit(store, &s, t1 + Duration::minutes(5)).await;
        let open = open_issues(store, &a).await;
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0].opened_at, t1);
        assert!(o.closed.iter().any(|i| i.client_id == a.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_of_the_issues_lease_at_a_time() {
    let (_dir, stores) = stores().await;
    for store in &stores {
        let first = IssuesLease::take(store.as_ref(), std::time::Duration::ZERO)
            .await
            .unwrap();
        let e = IssuesLease::take(store.as_ref(), std::time::Duration::from_millis(600))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("another issues audit"), "{e}");
        first.release(store.as_ref()).await;
        let second = IssuesLease::take(store.as_ref(), std::time::Duration::ZERO)
            .await
            .unwrap();
        second.release(store.as_ref()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_reached_on_arrival_give_the_same_issues() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let judged = enroll(store, "judged", t1).await;
        let plain = enroll(store, "plain", t1).await;
        let bad = {
            let sshd = fx::sshd(SshdStatus::Running, "yes", "no");
            with(firewall_off(), "sshd", to_value(&sshd))
        };
        report_judged(store, &s, &judged, bad.clone(), t1).await;
        report(store, &plain, bad, t1).await;
        let o = audit(store, &s, t1 + Duration::minutes(1)).await;
        let by = |c: &Client| {
            let mut v: Vec<(String, Option<String>)> = o
                .opened
                .iter()
                .filter(|i| i.client_id == c.id)
                .map(|i| (i.name.clone(), i.detail.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(by(&judged), by(&plain));
        assert_eq!(by(&judged).len(), 2, "{:?}", by(&judged));
        // Fixed: the new report's verdicts close both.
        report_judged(store, &s, &judged, compliant(), t1 + Duration::hours(1)).await;
        let o = audit(store, &s, t1 + Duration::hours(1)).await;
        let closed: Vec<&str> = o
            .closed
            .iter()
            .filter(|i| i.client_id == judged.id)
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(closed.len(), 2, "{closed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_verdicts_are_used_until_their_basis_changes_or_they_expire() {
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let c = enroll(store, "c-host", t1).await;
        // A compliant report whose stored verdicts say otherwise: the
        // audit believes the verdicts, so it never read the report.
        let honest = {
            let plugins = compliant();
            let raw: std::collections::BTreeMap<String, Box<RawValue>> = plugins
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), RawValue::from_string(v.to_string()).unwrap()))
                .collect();
            let facts = checks::Facts {
                enrolled_at: t1,
                submitted_at: Some(t1),
                plugins: checks::Plugins::Raw(&raw),
                facts_version: FACTS_VERSION,
                pending_patches: 0,
                peer_seen_at: None,
                last_listener: None,
            };
            verdicts::judge(&s, &facts, t1)
        };
        // Only the checks this site does not run fail (no-location).
        assert!(honest.raised().all(|(n, _)| !s.is_enabled(n)), "{honest:?}");
        let forged = |basis: &str, until: Option<DateTime<Utc>>| {
            let mut v = honest.clone();
            v.basis = basis.into();
            v.raised
                .insert("firewall-disabled".into(), "from the stored verdict".into());
            v.until = until;
            v.to_text()
        };
        let basis = s.basis.clone();
        submit_with(store, &c, compliant(), t1, |_| Some(forged(&basis, None))).await;
        let o = audit(store, &s, t1).await;
        assert_eq!(names(&o.opened), ["firewall-disabled"]);
        assert_eq!(
            o.opened[0].detail.as_deref(),
            Some("from the stored verdict")
        );
        // Another basis (a server upgrade, a new setting): judged again
        // from the stored report, which is compliant.
        let t2 = t1 + Duration::minutes(10);
        submit_with(store, &c, compliant(), t2, |_| Some(forged("old", None))).await;
        let o = audit(store, &s, t2).await;
        assert_eq!(names(&o.closed), ["firewall-disabled"]);
        // An expired verdict is judged again too.
        let t3 = t2 + Duration::minutes(10);
        let expired = Some(t3 - Duration::minutes(1));
        submit_with(store, &c, compliant(), t3, |_| {
            Some(forged(&basis, expired))
        })
        .await;
        let o = audit(store, &s, t3).await;
        assert!(o.opened.is_empty(), "{:?}", names(&o.opened));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapplied_patch_raises_pending_patches_until_it_is_reported() {
    use penguindome_protocol::actions::{ActionReport, ActionState};
    let (_dir, stores) = stores().await;
    let s = settings();
    for store in &stores {
        let t1 = t(MON_10);
        let a = enroll(store, "patched-host", t1).await;
        report(store, &a, compliant(), t1).await;
        let mut patch = crate::store::conformance::new_patch(&[&a.id], Duration::days(30));
        patch.created_at = t1;
        patch.expires_at = t1 + Duration::days(30);
        store.add_action(patch.clone()).await.unwrap();
        let opened = audit(store, &s, t1 + Duration::minutes(5)).await;
        assert!(opened.opened.iter().any(|i| i.name == "pending-patches"));
        assert!(due(&opened).is_empty(), "within its grace (4 h)");
        let later = audit(store, &s, t1 + Duration::hours(5)).await;
        assert_eq!(due(&later), vec![pair("patched-host", "pending-patches")]);
        store
            .report_action(
                meta(&a, t1 + Duration::hours(6)),
                ActionReport {
                    action_id: patch.id.clone(),
                    state: ActionState::Succeeded,
                    at: t1 + Duration::hours(6),
                    detail: None,
                    output: None,
                },
            )
            .await
            .unwrap();
        audit(store, &s, t1 + Duration::hours(6)).await;
        assert!(!names(&open_issues(store, &a).await).contains(&"pending-patches"));
    }
}
