//! One behavioural suite every [`Store`] backend must pass.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{Duration, Utc};
use futures_util::TryStreamExt;
use penguindome_protocol::actions::{ActionReport, ActionState, CommandOutput, PatchTask, Task};
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Report;
use serde_json::json;
use serde_json::value::RawValue;

use super::*;

/// A fresh client id for each scenario, so backends can share a database.
fn client_id() -> String {
    new_nonce()
}

/// A request's facts, now, with a fresh nonce.
pub(crate) fn meta(client: &str, fp: &str) -> RequestMeta {
    let now = Utc::now();
    RequestMeta {
        client_id: client.into(),
        fingerprint: fp.into(),
        nonce: new_nonce(),
        nonce_expires_at: now + Duration::minutes(15),
        received_at: now,
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        listener: "test".into(),
    }
}

/// An enrollment of `fp` for `client`, now, with a fresh nonce.
pub(crate) fn enrollment(client: &str, fp: &str, host: &str) -> Enrollment {
    let m = meta(client, fp);
    Enrollment {
        client_id: client.into(),
        hostname: host.into(),
        fingerprint: fp.into(),
        certificate: vec![1, 2, 3],
        nonce: m.nonce,
        nonce_expires_at: m.nonce_expires_at,
        received_at: m.received_at,
        address: m.address,
        listener: m.listener,
        token: None,
    }
}

fn report(host: &str, plugins: serde_json::Value, minutes_ago: i64) -> Report<Box<RawValue>> {
    let map = plugins
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), RawValue::from_string(v.to_string()).unwrap()))
        .collect();
    Report {
        report_id: new_nonce(),
        hostname: host.into(),
        collected_at: Utc::now() - Duration::minutes(minutes_ago),
        agent_version: "test".into(),
        facts_version: penguindome_protocol::facts::FACTS_VERSION,
        plugins: map,
    }
}

async fn submit(
    store: &Arc<dyn Store>,
    client: &str,
    fp: &str,
    r: Report<Box<RawValue>>,
) -> StoreResult<SubmitOutcome> {
    store.submit(Submission::new(meta(client, fp), r)).await
}

/// Fills a store with some of everything: clients with several reports,
/// a revoked one, keys, audit records, nonces, a patch done on one client
/// and queued on another.
pub(crate) async fn populate(store: &Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = client_id();
        let fp = new_nonce().to_uppercase();
        store
            .enroll(enrollment(&id, &fp, &format!("host-{i}")))
            .await
            .unwrap();
        for n in 0..4 {
            let r = report(
                &format!("host-{i}"),
                json!({"os_info": {"kernel": format!("6.{n}")}, "counter": n, "list": [n, "x"]}),
                10 - n,
            );
            submit(store, &id, &fp, r).await.unwrap();
        }
        store.touch(meta(&id, &fp)).await.unwrap();
        ids.push((id, fp));
    }
    store
        .set_repo_credential(meta(&ids[0].0, &ids[0].1), "ab".repeat(32))
        .await
        .unwrap();
    // A token used once of two, and a revoked one.
    let used = new_token(store, 2).await;
    let (joiner, jfp) = (client_id(), new_nonce().to_uppercase());
    store
        .enroll(with_token(&joiner, &jfp, &used))
        .await
        .unwrap();
    let revoked = new_token(store, 1).await;
    store.revoke_token(&revoked.id, Utc::now()).await.unwrap();
    store.revoke_client(&ids[2].0, Utc::now()).await.unwrap();
    let action = new_patch(&[&ids[0].0, &ids[1].0], Duration::days(1));
    store.add_action(action.clone()).await.unwrap();
    store
        .deliver_actions(meta(&ids[0].0, &ids[0].1), Utc::now())
        .await
        .unwrap();
    store
        .report_action(
            meta(&ids[0].0, &ids[0].1),
            report_of(&action.id, ActionState::Succeeded),
        )
        .await
        .unwrap();
    let now = Utc::now();
    let mut closed = Issue::open(
        &ids[0].0,
        "firewall-disabled",
        None,
        now - Duration::hours(3),
    );
    closed.closed_at = Some(now - Duration::hours(1));
    let mut snoozed = Issue::open(
        &ids[1].0,
        "unencrypted-hard-drive",
        Some("/ is not".into()),
        now,
    );
    snoozed.snoozed_at = Some(now);
    snoozed.unsnooze_at = Some(now + Duration::days(1));
    store.put_issues(vec![closed, snoozed]).await.unwrap();
    for (name, value) in [
        ("user_email", json!("alice@example.com")),
        ("user_clients", json!([ids[1].0])),
    ] {
        store
            .put_parameter(Parameter {
                client_id: ids[0].0.clone(),
                name: name.into(),
                value,
                updated_at: now,
            })
            .await
            .unwrap();
    }
}

/// Runs every scenario against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    enrollment_rules(&store).await;
    tokens_enroll_once_per_use(&store).await;
    repo_credentials(&store).await;
    submissions_and_audit(&store).await;
    replay_unknown_and_revoked(&store).await;
    actions(&store).await;
    selectors(&store).await;
    nonces_are_pruned(&store).await;
    issues_and_parameters(&store).await;
    leases(&store).await;
    audit_rows_and_patch_counts(&store).await;
    collection_times_from_the_future_are_bounded(&store).await;
    fleet_summary_counts(&store).await;
    client_table_queries(&store).await;
    store.health().await.unwrap();
}

/// Enrolls `host` (seen `days_ago`) with an `os_info` output when given.
async fn table_client(
    store: &Arc<dyn Store>,
    host: &str,
    os_info: Option<serde_json::Value>,
    days_ago: i64,
) -> String {
    let (id, fp) = (client_id(), new_nonce());
    let at = Utc::now() - Duration::days(days_ago);
    let mut e = enrollment(&id, &fp, host);
    e.received_at = at;
    store.enroll(e).await.unwrap();
    if let Some(os) = os_info {
        let mut m = meta(&id, &fp);
        m.received_at = at;
        let r = report(host, json!({ "os_info": os }), days_ago * 1440);
        store.submit(Submission::new(m, r)).await.unwrap();
    }
    id
}

/// The web view's client table: search, filters, order and pages, on the
/// store; and the issue spans and host names its other pages read.
async fn client_table_queries(store: &Arc<dyn Store>) {
    let tag = format!("tbl{}", &new_nonce()[..8]);
    let spans_since = Utc::now() - Duration::hours(1);
    let spans_before = store.issue_spans(spans_since).await.unwrap().len();
    let (deb, rpm) = seed_table(store, &tag).await;
    client_table_filters(store, &tag, &deb).await;
    let spans = store.issue_spans(spans_since).await.unwrap();
    assert_eq!(
        spans.len() - spans_before,
        2,
        "the open one and the one closed since"
    );
    let names = store
        .hostnames(vec![deb.clone(), rpm.clone(), "nobody".into()])
        .await
        .unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(names[&deb], format!("{tag}-deb"));
}

/// Four clients named `TAG-…`: Debian-like with an open issue, Fedora-like
/// silent for 3 days with a closed one, Arch revoked, and one that never
/// reported. Returns the first two ids.
async fn seed_table(store: &Arc<dyn Store>, tag: &str) -> (String, String) {
    let os = |id: &str, like: &[&str]| json!({"id": id, "id_like": like, "pretty_name": id});
    let deb = table_client(
        store,
        &format!("{tag}-deb"),
        Some(os("ubuntu", &["debian"])),
        0,
    )
    .await;
    let rpm = table_client(
        store,
        &format!("{tag}-rpm"),
        Some(os("rocky", &["rhel", "centos", "fedora"])),
        3,
    )
    .await;
    let arch = table_client(store, &format!("{tag}-arch"), Some(os("arch", &[])), 0).await;
    table_client(store, &format!("{tag}-none"), None, 0).await;
    store.revoke_client(&arch, Utc::now()).await.unwrap();
    let check = format!("{tag}-check");
    let mut closed = Issue::open(&rpm, &check, None, Utc::now() - Duration::hours(2));
    closed.closed_at = Some(Utc::now() - Duration::minutes(30));
    store
        .put_issues(vec![Issue::open(&deb, &check, None, Utc::now()), closed])
        .await
        .unwrap();
    (deb, rpm)
}

async fn client_table_filters(store: &Arc<dyn Store>, tag: &str, deb: &str) {
    let tag = tag.to_string();
    let check = format!("{tag}-check");
    let page = |change: &dyn Fn(&mut ClientQuery)| {
        let mut q = ClientQuery {
            search: Some(tag.clone()),
            open_check: None,
            family: None,
            status: None,
            sort: ClientSort::Hostname,
            offset: 0,
            limit: 10,
            now: Utc::now(),
        };
        change(&mut q);
        let store = store.clone();
        async move { store.client_page(q).await.unwrap() }
    };
    let hosts = |p: &ClientPage| -> Vec<String> {
        p.rows
            .iter()
            .map(|r| r.hostname.trim_start_matches(&tag).to_string())
            .collect()
    };
    let all = page(&|_| {}).await;
    assert_eq!(all.total, 4);
    assert_eq!(hosts(&all), ["-arch", "-deb", "-none", "-rpm"]);
    let families: Vec<_> = all.rows.iter().map(|r| r.family).collect();
    use DistroFamily as F;
    assert_eq!(
        families,
        [Some(F::Arch), Some(F::Debian), None, Some(F::Fedora)]
    );
    assert_eq!(all.rows[1].open_issues, 1, "{:?}", all.rows[1]);
    assert_eq!(all.rows[3].open_issues, 0, "closed issues do not count");
    assert!(all.rows[0].revoked_at.is_some());
    for (family, want) in [(F::Debian, "-deb"), (F::Fedora, "-rpm"), (F::Arch, "-arch")] {
        assert_eq!(
            hosts(&page(&|q| q.family = Some(family)).await),
            [want],
            "{family:?}"
        );
    }
    assert_eq!(page(&|q| q.family = Some(F::Other)).await.total, 0);
    assert_eq!(
        hosts(&page(&|q| q.status = Some(ClientStatus::Silent)).await),
        ["-rpm"]
    );
    assert_eq!(
        hosts(&page(&|q| q.status = Some(ClientStatus::Revoked)).await),
        ["-arch"]
    );
    assert_eq!(
        hosts(&page(&|q| q.status = Some(ClientStatus::Reporting)).await),
        ["-deb", "-none"]
    );
    assert_eq!(
        hosts(&page(&|q| q.open_check = Some(check.clone())).await),
        ["-deb"]
    );
    assert_eq!(
        hosts(&page(&|q| q.sort = ClientSort::LastSeenOldest).await)[0],
        "-rpm"
    );
    let second = page(&|q| {
        q.offset = 2;
        q.limit = 2;
    })
    .await;
    assert_eq!(
        (second.total, hosts(&second)),
        (4, vec!["-none".to_string(), "-rpm".into()])
    );
    assert_eq!(
        page(&|q| q.search = Some(tag.to_uppercase())).await.total,
        4,
        "any case"
    );
    assert_eq!(
        page(&|q| q.search = Some(format!("{tag}%"))).await.total,
        0,
        "no wildcards"
    );
    assert_eq!(
        page(&|q| q.search = Some(format!("{tag}.*"))).await.total,
        0,
        "no regex"
    );
    assert_eq!(
        hosts(&page(&|q| q.search = Some(deb[..12].to_string())).await).len(),
        1,
        "id prefix"
    );
}

/// Counts move by exactly what a scenario adds (earlier ones left clients
/// and issues behind, so only differences are compared).
async fn fleet_summary_counts(store: &Arc<dyn Store>) {
    let before = store.fleet_summary(Utc::now()).await.unwrap();
    let (recent, older, gone) = (client_id(), client_id(), client_id());
    store
        .enroll(enrollment(&recent, &new_nonce(), "recent"))
        .await
        .unwrap();
    let mut three_days_ago = enrollment(&older, &new_nonce(), "older");
    three_days_ago.received_at = Utc::now() - Duration::days(3);
    store.enroll(three_days_ago).await.unwrap();
    store
        .enroll(enrollment(&gone, &new_nonce(), "gone"))
        .await
        .unwrap();
    store.revoke_client(&gone, Utc::now()).await.unwrap();
    let check = format!("fleet-check-{}", new_nonce());
    let t0 = Utc::now() - Duration::hours(1);
    let mut closed = Issue::open(&older, &check, None, t0 - Duration::hours(1));
    closed.closed_at = Some(t0);
    store
        .put_issues(vec![
            Issue::open(&recent, &check, None, t0),
            Issue::open(&older, &check, None, t0),
            closed,
        ])
        .await
        .unwrap();

    let after = store.fleet_summary(Utc::now()).await.unwrap();
    assert_eq!(after.enrolled - before.enrolled, 2, "{before:?} {after:?}");
    assert_eq!(after.revoked - before.revoked, 1, "{before:?} {after:?}");
    let grown: Vec<(&str, u64)> = after
        .seen_within
        .iter()
        .zip(&before.seen_within)
        .map(|((label, a), (_, b))| (*label, a - b))
        .collect();
    assert_eq!(grown, [("1h", 1), ("1d", 1), ("7d", 2), ("30d", 2)]);
    assert_eq!(after.open_issues.get(&check), Some(&2), "{after:?}");
}

async fn collection_times_from_the_future_are_bounded(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp = new_nonce().to_uppercase();
    store.enroll(enrollment(&id, &fp, "ahead")).await.unwrap();
    // Collected while the clock ran a day ahead, sent after NTP fixed it.
    let ahead = report("ahead", json!({"n": 1}), -24 * 60);
    let claimed = ahead.collected_at;
    let m = meta(&id, &fp);
    let received = m.received_at;
    store.submit(Submission::new(m, ahead)).await.unwrap();
    let doc = store.get_client(&id).await.unwrap().unwrap();
    let stored = doc.summary.collected_at.unwrap();
    assert!(
        stored < claimed && (stored - received).num_milliseconds().abs() <= 1,
        "{stored}"
    );
    let trail = store.audit_trail(&id, 10).await.unwrap();
    let note = trail
        .iter()
        .find(|r| r.field == "collected_at")
        .expect("noted");
    assert_eq!(note.old, Some(json!(utc::format(&claimed))));
    // The next report, collected by the corrected clock, is not "older".
    let next = report("ahead", json!({"n": 2}), 0);
    assert!(matches!(
        submit(store, &id, &fp, next).await.unwrap(),
        SubmitOutcome::Stored { .. }
    ));
}

async fn audit_rows_and_patch_counts(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp = new_nonce().to_uppercase();
    store.enroll(enrollment(&id, &fp, "rows")).await.unwrap();
    let rows = || async {
        let all: Vec<AuditRow> = store
            .audit_rows()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        all.into_iter().find(|r| r.client_id == id).unwrap()
    };
    let fresh = rows().await;
    assert_eq!(
        (fresh.hostname.as_str(), fresh.submitted_at, fresh.verdicts),
        ("rows", None, None)
    );
    let submission = Submission::new(meta(&id, &fp), report("rows", json!({"a": 1}), 0))
        .with_verdicts(r#"{"basis":"b","checks":{}}"#.into());
    store.submit(submission).await.unwrap();
    let judged = rows().await;
    assert!(judged.submitted_at.is_some());
    assert_eq!(
        judged.verdicts.as_deref(),
        Some(r#"{"basis":"b","checks":{}}"#)
    );
    // A duplicate keeps the stored report's verdicts.
    let older = Submission::new(meta(&id, &fp), report("rows", json!({"a": 2}), 60))
        .with_verdicts("{}".into());
    assert_eq!(store.submit(older).await.unwrap(), SubmitOutcome::Duplicate);
    assert_eq!(rows().await.verdicts, judged.verdicts);

    for _ in 0..2 {
        store
            .add_action(new_patch(&[&id], Duration::days(1)))
            .await
            .unwrap();
    }
    store
        .add_action(new_patch(&[&id], Duration::seconds(-1)))
        .await
        .unwrap();
    assert_eq!(
        store
            .pending_patch_counts(Utc::now())
            .await
            .unwrap()
            .get(&id),
        Some(&2),
        "the expired one does not count"
    );
}

async fn issues_and_parameters(store: &Arc<dyn Store>) {
    let (a, b) = (client_id(), client_id());
    // Stores keep milliseconds.
    let t0 = Utc::now() - Duration::days(2);
    let t0 = chrono::DateTime::from_timestamp_millis(t0.timestamp_millis()).unwrap();
    let first = Issue::open(&a, "firewall-disabled", Some("policy accept".into()), t0);
    let other = Issue::open(&b, "firewall-disabled", None, t0 + Duration::seconds(1));
    let second = Issue::open(&a, "screenlock-disabled", None, t0 + Duration::seconds(2));
    store
        .put_issues(vec![second.clone(), first.clone(), other.clone()])
        .await
        .unwrap();
    let of_a = |open_only| IssueFilter {
        client_id: Some(a.clone()),
        open_only,
    };
    assert_eq!(
        store.issues(of_a(false)).await.unwrap(),
        vec![first.clone(), second.clone()],
        "one client's issues, oldest first, exactly as written"
    );

    // Replacing by id updates in place; closed issues drop out of open ones.
    let mut closed = first.clone();
    closed.closed_at = Some(t0 + Duration::hours(1));
    closed.closed_by = Some("alice".into());
    closed.alerted_at = Some(t0 + Duration::minutes(5));
    let mut snoozed = second.clone();
    snoozed.snoozed_at = Some(t0);
    snoozed.unsnooze_at = Some(t0 + Duration::days(5));
    store
        .put_issues(vec![closed.clone(), snoozed.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.issues(of_a(true)).await.unwrap(),
        vec![snoozed.clone()]
    );
    assert_eq!(
        store.issues(of_a(false)).await.unwrap(),
        vec![closed, snoozed.clone()]
    );
    assert!(snoozed.snoozed(t0 + Duration::days(1)));
    assert!(!snoozed.snoozed(t0 + Duration::days(6)));
    let all_open = store
        .issues(IssueFilter {
            client_id: None,
            open_only: true,
        })
        .await
        .unwrap();
    assert!(all_open.contains(&other) && all_open.contains(&snoozed));
    assert!(all_open.iter().all(|i| i.closed_at.is_none()));

    // Parameters: set, replace, list per client and all, remove with null.
    let param = |name: &str, value: serde_json::Value| Parameter {
        client_id: a.clone(),
        name: name.into(),
        value,
        updated_at: t0,
    };
    store
        .put_parameter(param("user_email", json!("old@example.com")))
        .await
        .unwrap();
    store
        .put_parameter(param("user_email", json!("alice@example.com")))
        .await
        .unwrap();
    store
        .put_parameter(param("user_clients", json!([b.clone()])))
        .await
        .unwrap();
    let mine = store.parameters(Some(&a)).await.unwrap();
    assert_eq!(
        mine,
        vec![
            param("user_clients", json!([b.clone()])),
            param("user_email", json!("alice@example.com")),
        ]
    );
    let all = store.parameters(None).await.unwrap();
    assert!(all.contains(&mine[0]) && all.contains(&mine[1]));
    store
        .put_parameter(param("user_clients", serde_json::Value::Null))
        .await
        .unwrap();
    assert_eq!(
        store.parameters(Some(&a)).await.unwrap(),
        vec![param("user_email", json!("alice@example.com"))]
    );
    assert!(store.parameters(Some(&b)).await.unwrap().is_empty());
}

async fn leases(store: &Arc<dyn Store>) {
    let name = format!("lease-{}", new_nonce());
    let now = Utc::now();
    let until = now + Duration::minutes(30);
    assert!(
        store.take_lease(&name, "a", until, now).await.unwrap(),
        "free: taken"
    );
    assert!(
        !store.take_lease(&name, "b", until, now).await.unwrap(),
        "held by a: refused to b"
    );
    assert!(
        store
            .take_lease(&name, "a", until + Duration::minutes(5), now)
            .await
            .unwrap(),
        "a renews its own"
    );
    let later = until + Duration::minutes(6);
    assert!(
        store
            .take_lease(&name, "b", later + Duration::minutes(30), later)
            .await
            .unwrap(),
        "expired: b takes it"
    );
    store.release_lease(&name, "a").await.unwrap();
    assert!(
        !store.take_lease(&name, "c", later, later).await.unwrap(),
        "a cannot give back what b holds"
    );
    store.release_lease(&name, "b").await.unwrap();
    assert!(
        store.take_lease(&name, "c", later, now).await.unwrap(),
        "given back: free"
    );
}

async fn enrollment_rules(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp1 = new_nonce().to_uppercase();
    let fp2 = new_nonce().to_uppercase();
    assert_eq!(
        store.enroll(enrollment(&id, &fp1, "h")).await.unwrap(),
        EnrollOutcome::Enrolled
    );
    let key = store.find_key(&fp1).await.unwrap().unwrap();
    assert_eq!(key.client_id, id);
    assert_eq!(key.certificate, vec![1, 2, 3]);
    assert!(key.revoked_at.is_none());
    // The same key again is idempotent.
    assert_eq!(
        store.enroll(enrollment(&id, &fp1, "h")).await.unwrap(),
        EnrollOutcome::AlreadyEnrolled
    );
    // Another key for an enrolled machine needs an administrator.
    let e = store.enroll(enrollment(&id, &fp2, "h")).await.unwrap_err();
    assert!(matches!(e, StoreError::AlreadyEnrolled { .. }), "{e}");
    assert!(e.to_string().contains("pdome-admin clients reenroll"));
    store.allow_reenroll(&id).await.unwrap();
    assert_eq!(
        store.enroll(enrollment(&id, &fp2, "h")).await.unwrap(),
        EnrollOutcome::Enrolled
    );
    assert!(
        store
            .find_key(&fp1)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        store
            .find_key(&fp2)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    // The permission is used up.
    let fp3 = new_nonce().to_uppercase();
    assert!(matches!(
        store.enroll(enrollment(&id, &fp3, "h")).await,
        Err(StoreError::AlreadyEnrolled { .. })
    ));
    // A key cannot move to another client.
    let other = client_id();
    assert!(matches!(
        store.enroll(enrollment(&other, &fp2, "h")).await,
        Err(StoreError::Invalid(_))
    ));
    let doc = store.get_client(&id).await.unwrap().unwrap();
    assert_eq!(doc.keys.len(), 2);
    assert_eq!(doc.keys[0].fingerprint, fp2, "active key first");
    assert!(store.find_key("0000").await.unwrap().is_none());
}

/// A token with `uses` uses, valid for an hour; returns its claim.
async fn new_token(store: &Arc<dyn Store>, uses: u32) -> TokenClaim {
    let id = new_nonce()[..16].to_string();
    let secret = new_nonce();
    let sha = hex::encode(penguindome_protocol::token::secret_sha256(&secret));
    let now = Utc::now();
    store
        .add_token(NewToken {
            id: id.clone(),
            secret_sha256: sha.clone(),
            label: "conformance".into(),
            max_uses: uses,
            expires_at: now + Duration::hours(1),
            created_at: now,
            created_by: "root".into(),
        })
        .await
        .unwrap();
    TokenClaim {
        id,
        secret_sha256: sha,
    }
}

fn with_token(client: &str, fp: &str, claim: &TokenClaim) -> Enrollment {
    Enrollment {
        token: Some(claim.clone()),
        ..enrollment(client, fp, "tok")
    }
}

fn refused_for(r: StoreResult<EnrollOutcome>, why: &str) {
    match r {
        Err(StoreError::TokenRefused(m)) => assert!(m.contains(why), "{m} should say {why}"),
        other => panic!("expected a token refusal ({why}), got {other:?}"),
    }
}

async fn tokens_enroll_once_per_use(store: &Arc<dyn Store>) {
    let claim = new_token(store, 2).await;
    let (a, fa) = (client_id(), new_nonce().to_uppercase());
    assert_eq!(
        store.enroll(with_token(&a, &fa, &claim)).await.unwrap(),
        EnrollOutcome::Enrolled
    );
    // The same key's retry spends nothing.
    assert_eq!(
        store.enroll(with_token(&a, &fa, &claim)).await.unwrap(),
        EnrollOutcome::AlreadyEnrolled
    );
    let trail = store.audit_trail(&a, 10).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|r| r.field == "enrollment_token" && r.new == Some(json!(claim.id))),
        "the audit trail names the token: {trail:?}"
    );
    // A wrong secret is refused and claims nothing.
    let (b, fb) = (client_id(), new_nonce().to_uppercase());
    let wrong = TokenClaim {
        secret_sha256: "00".repeat(32),
        ..claim.clone()
    };
    refused_for(store.enroll(with_token(&b, &fb, &wrong)).await, "not valid");
    assert!(store.get_client(&b).await.unwrap().is_none());
    // A machine enrolled already does not spend a use on a new key.
    let fa2 = new_nonce().to_uppercase();
    assert!(matches!(
        store.enroll(with_token(&a, &fa2, &claim)).await,
        Err(StoreError::AlreadyEnrolled { .. })
    ));
    assert_eq!(
        store.enroll(with_token(&b, &fb, &claim)).await.unwrap(),
        EnrollOutcome::Enrolled
    );
    let listed = store.tokens().await.unwrap();
    let t = listed.iter().find(|t| t.id == claim.id).unwrap();
    assert_eq!((t.uses, t.max_uses), (2, 2));
    assert!(t.last_used_at.is_some());
    let (c, fc) = (client_id(), new_nonce().to_uppercase());
    refused_for(store.enroll(with_token(&c, &fc, &claim)).await, "used-up");
    // Revoked and unknown tokens.
    let other = new_token(store, 5).await;
    assert!(store.revoke_token(&other.id, Utc::now()).await.unwrap());
    assert!(!store.revoke_token(&other.id, Utc::now()).await.unwrap());
    refused_for(store.enroll(with_token(&c, &fc, &other)).await, "revoked");
    let unknown = TokenClaim {
        id: "ffffffffffffffff".into(),
        ..other.clone()
    };
    refused_for(
        store.enroll(with_token(&c, &fc, &unknown)).await,
        "not valid",
    );
    assert!(store.get_client(&c).await.unwrap().is_none());
    let found = store.find_token(&other.id).await.unwrap().unwrap();
    assert_eq!(found.state(Utc::now()), "revoked");
    // Expiry.
    let late = new_token(store, 1).await;
    let e = Enrollment {
        received_at: Utc::now() + Duration::hours(2),
        ..with_token(&c, &fc, &late)
    };
    refused_for(store.enroll(e).await, "expired");
}

async fn repo_credentials(store: &Arc<dyn Store>) {
    let (id, fp) = (client_id(), new_nonce().to_uppercase());
    store.enroll(enrollment(&id, &fp, "repo")).await.unwrap();
    assert_eq!(store.repo_credential(&id).await.unwrap(), None);
    let needs = || async {
        let d = store.deliver_actions(meta(&id, &fp), Utc::now()).await;
        d.unwrap().needs_repo_credential
    };
    assert!(
        needs().await,
        "/update asks for a password until one is set"
    );
    let sha = "ab".repeat(32);
    store
        .set_repo_credential(meta(&id, &fp), sha.clone())
        .await
        .unwrap();
    assert_eq!(store.repo_credential(&id).await.unwrap(), Some(sha.clone()));
    assert!(!needs().await);
    // Only a signed request of the client's own key sets it.
    let stranger = new_nonce().to_uppercase();
    assert!(matches!(
        store
            .set_repo_credential(meta(&id, &stranger), "cd".repeat(32))
            .await,
        Err(StoreError::UnknownKey)
    ));
    assert_eq!(store.repo_credential(&id).await.unwrap(), Some(sha));
    assert_eq!(
        store
            .clear_repo_credentials(vec![id.clone(), client_id()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.repo_credential(&id).await.unwrap(), None);
    assert!(needs().await, "a rotation asks for a new one");
    // A revoked client's credential opens nothing.
    store
        .set_repo_credential(meta(&id, &fp), "ef".repeat(32))
        .await
        .unwrap();
    store.revoke_client(&id, Utc::now()).await.unwrap();
    assert_eq!(store.repo_credential(&id).await.unwrap(), None);
}

async fn submissions_and_audit(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp = new_nonce().to_uppercase();
    store.enroll(enrollment(&id, &fp, "alpha")).await.unwrap();

    let first = report(
        "alpha",
        json!({"os_info": {"kernel": "6.1", "arch": "x86_64"}, "extra": [1, 2]}),
        10,
    );
    assert_eq!(
        submit(store, &id, &fp, first).await.unwrap(),
        SubmitOutcome::Stored { changes: 2 }
    );
    // Identical data: stored, no audit records.
    let same = report(
        "alpha",
        json!({"os_info": {"arch": "x86_64", "kernel": "6.1"}, "extra": [1, 2]}),
        9,
    );
    assert_eq!(
        submit(store, &id, &fp, same).await.unwrap(),
        SubmitOutcome::Stored { changes: 0 }
    );
    // One leaf changes, one plugin disappears, the host is renamed.
    let changed = report(
        "beta",
        json!({"os_info": {"kernel": "6.2", "arch": "x86_64"}}),
        8,
    );
    let changed_id = changed.report_id.clone();
    assert_eq!(
        submit(store, &id, &fp, changed).await.unwrap(),
        SubmitOutcome::Stored { changes: 3 }
    );

    let doc = store.get_client(&id).await.unwrap().unwrap();
    assert_eq!(doc.summary.hostname, "beta");
    assert_eq!(
        doc.plugins["os_info"],
        json!({"kernel": "6.2", "arch": "x86_64"})
    );
    assert!(!doc.plugins.contains_key("extra"));
    assert_eq!(doc.agent_version.as_deref(), Some("test"));
    assert!(doc.submitted_at.is_some());
    assert_eq!(doc.summary.last_address, "127.0.0.1");
    assert_eq!(doc.summary.last_listener, "test");

    let trail = store.audit_trail(&id, 100).await.unwrap();
    let fields: Vec<(&str, ChangeAction)> =
        trail.iter().map(|r| (r.field.as_str(), r.action)).collect();
    assert_eq!(
        fields,
        vec![
            ("key", ChangeAction::Add),
            ("plugins.extra", ChangeAction::Add),
            ("plugins.os_info", ChangeAction::Add),
            ("hostname", ChangeAction::Change),
            ("plugins.os_info.kernel", ChangeAction::Change),
            ("plugins.extra", ChangeAction::Delete),
        ]
    );
    let kernel = &trail[4];
    assert_eq!(kernel.old, Some(json!("6.1")));
    assert_eq!(kernel.new, Some(json!("6.2")));
    assert_eq!(kernel.hostname, "beta");
    assert!(kernel.collected_at.is_some());
    // The limit keeps the newest records, still oldest first.
    let last_two = store.audit_trail(&id, 2).await.unwrap();
    assert_eq!(last_two.len(), 2);
    assert_eq!(last_two[1].field, "plugins.extra");

    // Re-delivery of a stored report and an older report change nothing.
    let mut again = report("gamma", json!({"os_info": "unknown"}), 1);
    again.report_id = changed_id;
    assert_eq!(
        submit(store, &id, &fp, again).await.unwrap(),
        SubmitOutcome::Duplicate
    );
    let older = report("gamma", json!({"os_info": "unknown"}), 60);
    assert_eq!(
        submit(store, &id, &fp, older).await.unwrap(),
        SubmitOutcome::Duplicate
    );
    assert_eq!(store.audit_trail(&id, 100).await.unwrap().len(), 6);

    // Two new reports collected in the same millisecond are both stored:
    // an agent's reports arrive one after another, and both were
    // acknowledged.
    let first = report("gamma", json!({"os_info": "same-ms-1"}), 0);
    let mut second = report("gamma", json!({"os_info": "same-ms-2"}), 0);
    second.collected_at = first.collected_at;
    assert!(matches!(
        submit(store, &id, &fp, first).await.unwrap(),
        SubmitOutcome::Stored { .. }
    ));
    assert_eq!(
        submit(store, &id, &fp, second).await.unwrap(),
        SubmitOutcome::Stored { changes: 1 }
    );
    let trail = store.audit_trail(&id, 100).await.unwrap();
    let last = trail.last().unwrap();
    assert_eq!(last.field, "plugins.os_info");
    assert_eq!(last.old, Some(json!("same-ms-1")));
    assert_eq!(last.new, Some(json!("same-ms-2")));

    // Bad plugin names are refused before anything is written.
    let bad = report("beta", json!({"a.b": 1}), 0);
    assert!(matches!(
        submit(store, &id, &fp, bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn replay_unknown_and_revoked(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp = new_nonce().to_uppercase();
    store.enroll(enrollment(&id, &fp, "r")).await.unwrap();

    let m = meta(&id, &fp);
    store.touch(m.clone()).await.unwrap();
    assert!(matches!(
        store.touch(m.clone()).await,
        Err(StoreError::Replay)
    ));
    let r = report("r", json!({"a": 1}), 0);
    assert!(matches!(
        store.submit(Submission::new(m, r)).await,
        Err(StoreError::Replay)
    ));

    assert!(matches!(
        store.touch(meta(&id, "FFFF")).await,
        Err(StoreError::UnknownKey)
    ));
    // A key used with another client's id is unknown for that id.
    assert!(matches!(
        store.touch(meta(&client_id(), &fp)).await,
        Err(StoreError::UnknownKey)
    ));

    assert!(store.revoke_client(&id, Utc::now()).await.unwrap());
    assert!(!store.revoke_client(&id, Utc::now()).await.unwrap());
    assert!(matches!(
        store.touch(meta(&id, &fp)).await,
        Err(StoreError::Revoked { .. })
    ));
    assert!(matches!(
        submit(store, &id, &fp, report("r", json!({"a": 2}), 0)).await,
        Err(StoreError::Revoked { .. })
    ));
    // A revoked machine cannot simply enroll again with a new key.
    assert!(matches!(
        store.enroll(enrollment(&id, &new_nonce(), "r")).await,
        Err(StoreError::Revoked { .. })
    ));
    let doc = store.get_client(&id).await.unwrap().unwrap();
    assert!(doc.summary.revoked_at.is_some());
    assert!(matches!(
        store.revoke_client(&client_id(), Utc::now()).await,
        Err(StoreError::NoSuchClient(_))
    ));
}

/// A patch action for `clients`, expiring `expires_in` from now.
pub(crate) fn new_patch(clients: &[&str], expires_in: Duration) -> NewAction {
    let task = Task::Patch(PatchTask {
        path: "/etc/penguindome/patches.d/x".into(),
        mode: 0o644,
        owner: None,
        group: None,
        content: "eA==".into(),
        sha256: String::new(),
    });
    let now = utc::truncate(Utc::now());
    NewAction {
        id: new_nonce(),
        kind: "patch".into(),
        summary: "/etc/penguindome/patches.d/x".into(),
        task: serde_json::to_string(&task).unwrap(),
        queued_by: "alice".into(),
        created_at: now,
        expires_at: now + expires_in,
        targets: clients
            .iter()
            .map(|c| (c.to_string(), format!("host-{}", &c[..4])))
            .collect(),
    }
}

fn report_of(id: &str, state: ActionState) -> ActionReport {
    ActionReport {
        action_id: id.into(),
        state,
        at: utc::truncate(Utc::now()),
        detail: Some(format!("{} here", state.as_str())),
        output: None,
    }
}

/// The report with a command's output (fixed times, so copies compare).
fn with_output(mut r: ActionReport) -> ActionReport {
    let at = chrono::DateTime::from_timestamp_millis(1_790_000_000_000).unwrap();
    r.output = Some(CommandOutput {
        exit_status: Some(0),
        stdout: "aGkK".into(),
        stderr: String::new(),
        stdout_dropped: 7,
        started_at: at,
        finished_at: at + Duration::seconds(2),
        ..Default::default()
    });
    r
}

async fn actions(store: &Arc<dyn Store>) {
    let (a, b) = (client_id(), client_id());
    let (fa, fb) = (new_nonce().to_uppercase(), new_nonce().to_uppercase());
    store.enroll(enrollment(&a, &fa, "act-a")).await.unwrap();
    store.enroll(enrollment(&b, &fb, "act-b")).await.unwrap();
    let deliver = |c: &str, f: &str| {
        let m = meta(c, f);
        async move {
            store
                .deliver_actions(m, Utc::now())
                .await
                .map(|d| d.actions)
        }
    };
    assert!(deliver(&a, &fa).await.unwrap().is_empty());
    let action = new_patch(&[&a, &b], Duration::days(1));
    store.add_action(action.clone()).await.unwrap();
    store
        .add_action(new_patch(&[&a], Duration::seconds(-1)))
        .await
        .unwrap();

    // Handed out, bound to the client; again until it reports.
    let got = deliver(&a, &fa).await.unwrap();
    assert_eq!(got.len(), 1, "the expired one is not handed out");
    assert_eq!(got[0].id, action.id);
    let sealed = got[0].seal_for(&a).unwrap();
    assert!(sealed.action.contains(&a) && sealed.action.contains("\"queued_by\":\"alice\""));
    assert_eq!(deliver(&a, &fa).await.unwrap().len(), 1);
    store
        .report_action(meta(&a, &fa), report_of(&action.id, ActionState::Started))
        .await
        .unwrap();
    assert!(
        deliver(&a, &fa).await.unwrap().is_empty(),
        "started: not again"
    );
    store
        .report_action(
            meta(&a, &fa),
            with_output(report_of(&action.id, ActionState::Succeeded)),
        )
        .await
        .unwrap();
    // A repeat, or a late contradiction, changes nothing.
    for state in [ActionState::Succeeded, ActionState::Failed] {
        store
            .report_action(meta(&a, &fa), report_of(&action.id, state))
            .await
            .unwrap();
    }
    // Another client's action, or none at all.
    let foreign = new_patch(&[&b], Duration::days(1));
    store.add_action(foreign.clone()).await.unwrap();
    for id in [foreign.id.as_str(), "0123456789abcdef0123456789abcdef"] {
        assert!(matches!(
            store
                .report_action(meta(&a, &fa), report_of(id, ActionState::Succeeded))
                .await,
            Err(StoreError::NoSuchAction { .. })
        ));
    }

    cancelled_listed_and_recorded(store, [(&a, &fa), (&b, &fb)], &action, &foreign).await;
}

/// Continues [`actions`]: `action` went to a and succeeded there, is still
/// queued for b; `foreign` is queued for b only.
async fn cancelled_listed_and_recorded(
    store: &Arc<dyn Store>,
    [(a, _), (b, fb)]: [(&String, &String); 2],
    action: &NewAction,
    foreign: &NewAction,
) {
    let (a, b) = (a.clone(), b.clone());
    // Cancelled where still queued (b), not where delivered (a).
    assert_eq!(
        store
            .cancel_action(&action.id, "bob", Utc::now())
            .await
            .unwrap(),
        vec![b.clone()]
    );
    let for_b: Vec<String> = store
        .deliver_actions(meta(&b, fb), Utc::now())
        .await
        .unwrap()
        .actions
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        for_b,
        vec![foreign.id.clone()],
        "the cancelled one never goes out"
    );
    assert!(matches!(
        store
            .cancel_action("0123456789abcdef0123456789abcdef", "bob", Utc::now())
            .await,
        Err(StoreError::Invalid(_))
    ));

    let listed = store
        .actions(ActionFilter {
            id: Some(action.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let states: Vec<(String, ActionState, Option<String>)> = listed[0]
        .targets
        .iter()
        .map(|t| (t.client_id.clone(), t.state, t.detail.clone()))
        .collect();
    let mut want = vec![
        (
            a.clone(),
            ActionState::Succeeded,
            Some("succeeded here".to_string()),
        ),
        (
            b.clone(),
            ActionState::Cancelled,
            Some("cancelled by bob".to_string()),
        ),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(states, want);
    assert_eq!(listed[0].queued_by, "alice");
    let on_a = listed[0].targets.iter().find(|t| t.client_id == a).unwrap();
    assert_eq!(
        on_a.output,
        with_output(report_of("", ActionState::Succeeded)).output
    );
    assert!(on_a.started_at.is_some() && on_a.finished_at.is_some());
    let of_a = store
        .actions(ActionFilter {
            client_id: Some(a.clone()),
            kind: Some("patch".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 2, "the expired one is listed too");

    let trail = store.audit_trail(&a, 100).await.unwrap();
    let field = crate::store::actions::audit_field(&action.id);
    let kinds: Vec<_> = trail
        .iter()
        .filter(|r| r.field == field)
        .map(|r| r.new.as_ref().unwrap()["state"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![json!("queued"), json!("started"), json!("succeeded")]
    );
    let trail_b = store.audit_trail(&b, 100).await.unwrap();
    assert!(
        trail_b
            .iter()
            .any(|r| r.field == field && r.new.as_ref().unwrap()["state"] == json!("cancelled")),
        "{trail_b:?}"
    );
}

async fn selectors(store: &Arc<dyn Store>) {
    let host = format!("host-{}", new_nonce());
    let a = client_id();
    let b = client_id();
    store
        .enroll(enrollment(&a, &new_nonce(), &host))
        .await
        .unwrap();
    assert_eq!(store.resolve_client(&host).await.unwrap(), a);
    assert_eq!(store.resolve_client(&a).await.unwrap(), a);
    store
        .enroll(enrollment(&b, &new_nonce(), &host))
        .await
        .unwrap();
    let e = store.resolve_client(&host).await.unwrap_err();
    assert!(matches!(e, StoreError::Ambiguous { count: 2, .. }), "{e}");
    assert_eq!(store.resolve_client(&b).await.unwrap(), b);
    assert!(matches!(
        store.resolve_client("no-such-host").await,
        Err(StoreError::NoSuchClient(_))
    ));
    let all = store.list_clients().await.unwrap();
    assert!(all.iter().any(|c| c.client_id == a));
    assert!(all.windows(2).all(|w| w[0].hostname <= w[1].hostname));
}

async fn nonces_are_pruned(store: &Arc<dyn Store>) {
    let id = client_id();
    let fp = new_nonce().to_uppercase();
    store.enroll(enrollment(&id, &fp, "n")).await.unwrap();
    let mut m = meta(&id, &fp);
    m.nonce_expires_at = Utc::now() - Duration::minutes(1);
    store.touch(m.clone()).await.unwrap();
    assert!(store.prune_nonces(Utc::now()).await.unwrap() >= 1);
    // Once its window has passed the nonce is forgotten; the timestamp
    // check in the envelope is what refuses such an old request.
    store.touch(m).await.unwrap();
}
