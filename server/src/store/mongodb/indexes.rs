//! Setting up the database: indexes, and a word on what kind of
//! deployment it is.

use std::sync::Arc;
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;

use super::Inner;
use crate::store::StoreResult;

/// Creates the indexes, retrying until the database answers, and says what
/// kind of deployment it is.
pub(super) async fn setup(inner: Arc<Inner>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match create_indexes(&inner).await {
            Ok(()) => break,
            Err(e) => {
                log::warn!(
                    "cannot set up the MongoDB indexes yet ({e}); retrying in {} s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    match inner.db.run_command(doc! {"hello": 1}).await {
        Ok(hello) if hello.get_str("setName").is_ok() => log::info!(
            "MongoDB at {} is replica set {}: writes are acknowledged by a majority of its members",
            inner.target,
            hello.get_str("setName").unwrap_or_default()
        ),
        Ok(_) => log::info!(
            "MongoDB at {} is a standalone server: writes are acknowledged once journaled on that \
             one server (a replica set adds failover); transactions are not used",
            inner.target
        ),
        Err(e) => log::warn!("cannot ask MongoDB what it is: {}", inner.err(e)),
    }
}

async fn create_indexes(inner: &Inner) -> StoreResult<()> {
    let index = |keys: Document| IndexModel::builder().keys(keys).build();
    let unique = |keys: Document| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().unique(true).build())
            .build()
    };
    let plans: Vec<(&str, Vec<IndexModel>)> = vec![
        (
            "clients",
            vec![
                index(doc! {"hostname": 1}),
                // The web view's client table pages in these orders.
                index(doc! {"hostname": 1, "_id": 1}),
                index(doc! {"last_seen_at": 1, "_id": 1}),
            ],
        ),
        ("client_keys", vec![index(doc! {"client_id": 1})]),
        (
            "audit_trail",
            vec![index(doc! {"client_id": 1, "recorded_at": 1, "n": 1})],
        ),
        ("nonces", vec![index(doc! {"expires_at": 1})]),
        ("actions", vec![index(doc! {"kind": 1, "expires_at": 1})]),
        (
            "action_targets",
            vec![
                index(doc! {"client_id": 1, "state": 1}),
                index(doc! {"action_id": 1}),
            ],
        ),
        ("issues", vec![index(doc! {"client_id": 1, "name": 1})]),
        (
            "client_parameters",
            vec![unique(doc! {"client_id": 1, "parameter": 1})],
        ),
        // Every repository request finds its file by these.
        (
            "releases.files",
            vec![index(
                doc! {"metadata.serial": 1, "metadata.path": 1, "metadata.revision": 1},
            )],
        ),
    ];
    for (name, models) in plans {
        inner
            .db
            .collection::<Document>(name)
            .create_indexes(models)
            .await
            .map_err(|e| inner.err(e))?;
    }
    Ok(())
}
