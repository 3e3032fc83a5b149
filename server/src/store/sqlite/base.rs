//! What every role reaches: the backend's name, health and closing.

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::SqliteStore;
use super::writer::Job;
use crate::store::{StoreBase, StoreError, StoreResult};

/// A commit younger than this answers a health check without a probe.
const HEALTH_FRESH: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a health probe may wait for the writer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

#[async_trait]
impl StoreBase for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// Healthy when readers read and the writer commits: a commit of the
    /// last two seconds answers, else a probe write does.
    async fn health(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await?;
        if self.tx.is_closed() {
            return Err(StoreError::Broken(
                "the SQLite writer thread has stopped; restart the server".into(),
            ));
        }
        if let Some(last) = self.writer_health.recent(HEALTH_FRESH) {
            return last.map_err(|e| StoreError::Broken(format!("the last commit failed: {e}")));
        }
        match tokio::time::timeout(PROBE_TIMEOUT, self.call(Job::Probe)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(StoreError::Closed)) => Err(StoreError::Broken(
                "the SQLite writer thread has stopped; restart the server".into(),
            )),
            Ok(Err(e)) => Err(StoreError::Broken(format!(
                "the SQLite writer refuses writes: {e}"
            ))),
            Err(_) => Err(StoreError::Broken(format!(
                "the SQLite writer did not commit a probe within {} s",
                PROBE_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn close(&self) {
        let checkpointer = self.checkpointer.lock().expect("checkpointer lock").take();
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
