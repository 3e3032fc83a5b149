//! Tests of the MongoDB store beyond the conformance suite, and the test
//! database other tests use.

use std::sync::Arc;
use std::time::Duration;

use super::MongoStore;
use crate::config::MongoConfig;
use crate::store::{
    AdminStore, EnrollOutcome, RequestStore, StoreBase, StoreError, Submission, SubmitOutcome,
    conformance,
};
use penguindome_protocol::envelope::new_nonce;
use penguindome_protocol::wire::Report;

/// The MongoDB-protocol server the tests use: PENGUINDOME_TEST_MONGODB_URI
/// (scripts/test starts FerretDB and sets it). Without it a MongoDB test
/// fails, unless PENGUINDOME_SKIP_MONGODB=1 says to skip it on purpose
/// (never under CI): a missing database must not look like a pass.
pub(crate) fn test_uri() -> Option<String> {
    match std::env::var("PENGUINDOME_TEST_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ if std::env::var_os("CI").is_none()
            && std::env::var("PENGUINDOME_SKIP_MONGODB").as_deref() == Ok("1") =>
        {
            None
        }
        _ => panic!(
            "PENGUINDOME_TEST_MONGODB_URI is not set: start one with \
             `scripts/ferretdb start DIR PORT` and set it to mongodb://127.0.0.1:PORT/, \
             run the suite through scripts/test, or set PENGUINDOME_SKIP_MONGODB=1 to skip"
        ),
    }
}

/// A store on a fresh database of the test server.
pub(crate) async fn fresh_store(uri: &str) -> MongoStore {
    let db = format!("pdtest_{}", penguindome_protocol::envelope::new_nonce());
    let store = MongoStore::connect_uri(uri, Some(&db)).await.unwrap();
    store
        .health()
        .await
        .unwrap_or_else(|e| panic!("the test MongoDB server does not answer: {e}"));
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_passes_the_conformance_suite() {
    let Some(uri) = test_uri() else { return };
    let store = Arc::new(fresh_store(&uri).await);
    conformance::run_all(store.clone()).await;
    store.drop_database().await.unwrap();
    store.close().await;
}

fn raw_report(id: &str, n: u64) -> Report<Box<serde_json::value::RawValue>> {
    Report {
        report_id: id.into(),
        hostname: "faulty".into(),
        collected_at: chrono::Utc::now(),
        agent_version: "test".into(),
        facts_version: penguindome_protocol::facts::FACTS_VERSION,
        plugins: [(
            "burst".to_string(),
            serde_json::value::RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
        )]
        .into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_client_update_acknowledges_nothing_and_a_retry_stores_once() {
    let Some(uri) = test_uri() else { return };
    let store = fresh_store(&uri).await;
    let (client, fp) = (new_nonce(), new_nonce().to_uppercase());
    let e = conformance::enrollment(&client, &fp, "faulty");
    assert_eq!(store.enroll(e).await.unwrap(), EnrollOutcome::Enrolled);
    let submit = |r| store.submit(Submission::new(conformance::meta(&client, &fp), r));
    assert!(matches!(
        submit(raw_report("r1", 1)).await.unwrap(),
        SubmitOutcome::Stored { .. }
    ));
    // The audit records of r2 are written, then the client update fails.
    store.inner.faults.lock().unwrap().insert("client-updates");
    let failed = submit(raw_report("r2", 2)).await;
    assert!(failed.is_err(), "acknowledged without storing: {failed:?}");
    let doc = store.get_client(&client).await.unwrap().unwrap();
    assert_eq!(doc.plugins["burst"]["n"], 1, "r2 is not stored");
    // The agent retries the same report with a new nonce.
    assert_eq!(
        submit(raw_report("r2", 2)).await.unwrap(),
        SubmitOutcome::Stored { changes: 1 }
    );
    let trail = store.audit_trail(&client, 100).await.unwrap();
    let n2: Vec<_> = trail
        .iter()
        .filter(|r| r.field == "plugins.burst.n" && r.new == Some(serde_json::json!(2)))
        .collect();
    assert_eq!(n2.len(), 1, "stored once: {trail:?}");
    store.drop_database().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_enrollment_is_finished_by_the_same_key_only() {
    let Some(uri) = test_uri() else { return };
    let store = fresh_store(&uri).await;
    let (client, fp) = (new_nonce(), new_nonce().to_uppercase());
    store.inner.faults.lock().unwrap().insert("enroll-key");
    let first = store
        .enroll(conformance::enrollment(&client, &fp, "new"))
        .await;
    assert!(first.is_err(), "{first:?}");
    // Another key cannot take the half-enrolled machine...
    let other = new_nonce().to_uppercase();
    let stolen = store
        .enroll(conformance::enrollment(&client, &other, "thief"))
        .await;
    assert!(
        matches!(stolen, Err(StoreError::AlreadyEnrolled { .. })),
        "{stolen:?}"
    );
    // ...and the same key's retry finishes it, with one audit record.
    assert_eq!(
        store
            .enroll(conformance::enrollment(&client, &fp, "new"))
            .await
            .unwrap(),
        EnrollOutcome::Enrolled
    );
    assert!(store.find_key(&fp).await.unwrap().is_some());
    let keys: Vec<_> = store.audit_trail(&client, 10).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");

    // The same for a re-enrollment an administrator allowed: the
    // permission is spent, the new key's retry still gets in.
    store.allow_reenroll(&client).await.unwrap();
    let fresh = new_nonce().to_uppercase();
    store.inner.faults.lock().unwrap().insert("enroll-key");
    assert!(
        store
            .enroll(conformance::enrollment(&client, &fresh, "new"))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .enroll(conformance::enrollment(&client, &fresh, "new"))
            .await
            .unwrap(),
        EnrollOutcome::Enrolled
    );
    let doc = store.get_client(&client).await.unwrap().unwrap();
    let active: Vec<_> = doc.keys.iter().filter(|k| k.revoked_at.is_none()).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].fingerprint, fresh);
    store.drop_database().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = MongoConfig {
        hosts: vec![format!("127.0.0.1:{port}")],
        server_selection_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let store = MongoStore::connect(&config, std::path::Path::new("/"))
        .await
        .unwrap();
    let e = store.health().await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("cannot reach"),
        "{e}"
    );
    let e = store.list_clients().await.unwrap_err().to_string();
    assert!(e.contains("is it running"), "{e}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_routes_name_the_holder_while_the_session_waits() {
    use crate::shell::routes::ShellRoutes as _;
    let Some(uri) = test_uri() else { return };
    let store = fresh_store(&uri).await;
    let routes = store.shell_routes();
    let soon = chrono::Utc::now() + chrono::Duration::minutes(5);
    routes
        .hold("a1", "http://10.0.0.5:8080", soon)
        .await
        .unwrap();
    assert_eq!(
        routes.holder("a1").await.unwrap().as_deref(),
        Some("http://10.0.0.5:8080")
    );
    assert_eq!(routes.holder("b2").await.unwrap(), None);
    // The same session cannot be held twice (ids are fresh nonces).
    assert!(
        routes
            .hold("a1", "http://10.0.0.6:8080", soon)
            .await
            .is_err()
    );
    routes.release("a1").await.unwrap();
    assert_eq!(routes.holder("a1").await.unwrap(), None);
    // A wait that ended routes nowhere, and is cleared by the next hold.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    routes
        .hold("c3", "http://10.0.0.5:8080", past)
        .await
        .unwrap();
    assert_eq!(routes.holder("c3").await.unwrap(), None);
    routes
        .hold("d4", "http://10.0.0.5:8080", soon)
        .await
        .unwrap();
    let left = store
        .inner
        .db
        .collection::<mongodb::bson::Document>("shell_routes")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(left, 1);
    store.drop_database().await.unwrap();
}
