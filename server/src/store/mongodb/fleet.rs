//! Counts over the whole fleet: counts and one aggregation, never a read
//! of every client.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, doc};

use super::MongoStore;
use super::fields::to_bson_date;
use crate::store::{FleetStore, FleetSummary, SEEN_WINDOWS, StoreResult};

#[async_trait]
impl FleetStore for MongoStore {
    async fn fleet_summary(&self, now: DateTime<Utc>) -> StoreResult<FleetSummary> {
        let i = &self.inner;
        let count = |filter| async {
            i.clients
                .count_documents(filter)
                .await
                .map_err(|e| i.err(e))
        };
        let enrolled = count(doc! {"revoked_at": Bson::Null}).await?;
        let revoked = count(doc! {"revoked_at": {"$ne": Bson::Null}}).await?;
        let mut seen_within = Vec::with_capacity(SEEN_WINDOWS.len());
        for (label, secs) in SEEN_WINDOWS {
            let since = to_bson_date(&(now - Duration::seconds(secs)));
            let n = count(doc! {"revoked_at": Bson::Null, "last_seen_at": {"$gte": since}}).await?;
            seen_within.push((label, n));
        }
        let mut cursor = i
            .issues
            .aggregate([
                doc! {"$match": {"closed_at": Bson::Null}},
                doc! {"$group": {"_id": "$name", "n": {"$sum": 1}}},
            ])
            .await
            .map_err(|e| i.err(e))?;
        let mut open_issues = BTreeMap::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            let name = d.get_str("_id").unwrap_or_default().to_string();
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as u64,
                Some(Bson::Int64(n)) => *n as u64,
                Some(Bson::Double(n)) => *n as u64,
                _ => 0,
            };
            open_issues.insert(name, n);
        }
        Ok(FleetSummary {
            enrolled,
            revoked,
            seen_within,
            open_issues,
        })
    }
}
