//! Tests of the SQLite store beyond the conformance suite.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rusqlite::Connection;

use super::SqliteStore;
use super::schema::SCHEMA_VERSION;
use super::submit::{pack_digests, unpack_digests};
use super::writer::Job;
use crate::store::{
    AdminStore, AuditStore, Issue, IssueFilter, Kind, MigrationStore, RequestStore, Store,
    StoreBase, StoreError, conformance,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_while_another_process_writes_never_fails() {
    // pdome-admin opens the store while the server commits to it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    SqliteStore::open(&path).unwrap().close().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            // Commits as fast as they go, so that an opener's read
            // snapshot is overtaken often.
            conn.execute_batch("PRAGMA synchronous=OFF; CREATE TABLE IF NOT EXISTS churn(x)")
                .unwrap();
            let mut commits = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute("INSERT INTO churn VALUES (1)", []).unwrap();
                commits += 1;
                // The server's checkpointer restarts the WAL now and then.
                if commits.is_multiple_of(50) {
                    conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
                        .unwrap();
                }
            }
            commits
        })
    };
    for _ in 0..40 {
        let store = SqliteStore::open(&path).expect("opening waits for the writer");
        store.close().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_writer_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pd.db");
    let store = SqliteStore::open(&path).unwrap();
    store.health().await.unwrap();
    store.close().await;
    // A seen nonce the writer cannot load: it then refuses every write
    // rather than accept replays, while readers still read.
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO nonces (client_id, nonce, expires_at) VALUES (x'00ff', 'n', ?1)",
        [Utc::now().timestamp() + 3600],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.list_clients().await.is_ok());
    let e = store.health().await.unwrap_err();
    assert!(matches!(e, StoreError::Broken(_)), "{e}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_writer_has_died() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pd.db")).unwrap();
    store.health().await.unwrap();
    store.tx.send(Job::Crash).await.unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !store.tx.is_closed() {
        assert!(Instant::now() < deadline, "the writer did not stop");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let e = store.health().await.unwrap_err();
    assert!(matches!(e, StoreError::Broken(_)), "{e}");
    assert!(e.to_string().contains("restart"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db.sqlite")).unwrap());
    conformance::run_all(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    let (id, fp) = ("a".repeat(32), "F".repeat(40));
    let mut e = conformance::enrollment(&id, &fp, "h");
    e.address = "::1".parse().unwrap();
    store.enroll(e).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.touch(conformance::meta(&id, &fp)).await,
        Err(StoreError::Closed)
    ));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = SqliteStore::open(&path).unwrap();
    let doc = again.get_client(&id).await.unwrap().unwrap();
    assert_eq!(doc.summary.last_address, "::1");
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    let (id, fp) = ("b".repeat(32), "E".repeat(40));
    let enrollment = conformance::enrollment(&id, &fp, "h");
    let enrollment_nonce = enrollment.nonce.clone();
    store.enroll(enrollment).await.unwrap();
    let meta = conformance::meta(&id, &fp);
    store.touch(meta.clone()).await.unwrap();
    store.close().await;

    let again = SqliteStore::open(&path).unwrap();
    assert!(matches!(
        again.touch(meta.clone()).await,
        Err(StoreError::Replay)
    ));
    // The enrollment's nonce is remembered too.
    let mut other = meta.clone();
    other.nonce = enrollment_nonce;
    assert!(matches!(again.touch(other).await, Err(StoreError::Replay)));
    // Once pruned past its expiry, the nonce is forgotten in memory and on disk.
    let later = meta.nonce_expires_at + chrono::Duration::minutes(1);
    assert_eq!(again.prune_nonces(later).await.unwrap(), 2);
    again.close().await;
    let third = SqliteStore::open(&path).unwrap();
    third.touch(meta).await.unwrap();
    third.close().await;
}

#[test]
fn digests_pack_and_unpack() {
    let d: BTreeMap<String, [u8; 16]> = [
        ("a".to_string(), [1u8; 16]),
        ("os_updates".to_string(), [2u8; 16]),
    ]
    .into_iter()
    .collect();
    assert_eq!(unpack_digests(&pack_digests(&d)), d);
    assert!(
        unpack_digests(&[200, 1, 2]).is_empty(),
        "a damaged blob yields nothing, not a panic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let e = SqliteStore::open(&path).err().unwrap();
    assert!(e.to_string().contains("upgrade penguindome-server"), "{e}");
}

#[tokio::test]
async fn a_version_1_database_gains_the_audit_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    // What a version-1 server left: its tables, data, no issues tables and
    // no facts_version column (version 3 adds it).
    let store = SqliteStore::open(&path).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    conformance::populate(&store).await;
    let clients = store.count(Kind::Clients).await.unwrap();
    store.close().await;
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE issues; DROP TABLE client_parameters; \
             ALTER TABLE clients DROP COLUMN facts_version; \
             ALTER TABLE clients DROP COLUMN verdicts; \
             ALTER TABLE clients DROP COLUMN repo_credential_sha256; \
             DROP TABLE enrollment_tokens; PRAGMA user_version = 1;",
        )
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.count(Kind::Clients).await.unwrap(),
        clients,
        "data kept"
    );
    let issue = Issue::open("c", "firewall-disabled", None, chrono::Utc::now());
    store.put_issues(vec![issue.clone()]).await.unwrap();
    assert_eq!(
        store.issues(IssueFilter::default()).await.unwrap(),
        vec![issue]
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    store.close().await;
}
