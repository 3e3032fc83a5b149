//! What every role reaches: the backend's name, health and closing.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::doc;

use super::MongoStore;
use crate::store::{StoreBase, StoreError, StoreResult};

/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

#[async_trait]
impl StoreBase for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn health(&self) -> StoreResult<()> {
        let i = &self.inner;
        match tokio::time::timeout(HEALTH_TIMEOUT, i.db.run_command(doc! {"ping": 1})).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(i.err(e)),
            Err(_) => Err(StoreError::Backend(format!(
                "cannot reach a usable MongoDB server at {} (no answer within {} s: is it running, \
                 reachable, and for a replica set, does it have a primary?)",
                i.target,
                HEALTH_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn close(&self) {
        // The server closes the store after its last request has finished,
        // so no submission is waiting for the batcher.
        let handle = self.batcher.lock().expect("batcher lock").take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        self.inner.client.clone().shutdown().await;
    }
}
