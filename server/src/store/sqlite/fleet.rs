//! Counts over the whole fleet, each one SQL aggregate.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{SqliteStore, ts};
use crate::store::{FleetStore, FleetSummary, SEEN_WINDOWS, StoreResult};

#[async_trait]
impl FleetStore for SqliteStore {
    async fn fleet_summary(&self, now: DateTime<Utc>) -> StoreResult<FleetSummary> {
        self.read(move |c| {
            // One scan: times are stored in one fixed format, so text
            // order is time order.
            let since: Vec<String> = SEEN_WINDOWS
                .iter()
                .map(|(_, secs)| ts(&(now - Duration::seconds(*secs))))
                .collect();
            let seen_columns: String = (1..=since.len())
                .map(|n| {
                    format!(", COUNT(*) FILTER (WHERE revoked_at IS NULL AND last_seen_at >= ?{n})")
                })
                .collect();
            let counts: Vec<i64> = c.query_row(
                &format!(
                    "SELECT COUNT(*) FILTER (WHERE revoked_at IS NULL), \
                            COUNT(*) FILTER (WHERE revoked_at IS NOT NULL){seen_columns} \
                     FROM clients"
                ),
                rusqlite::params_from_iter(&since),
                |r| (0..2 + since.len()).map(|i| r.get(i)).collect(),
            )?;
            let seen_within = SEEN_WINDOWS
                .iter()
                .zip(&counts[2..])
                .map(|((label, _), n)| (*label, *n as u64))
                .collect();
            let (enrolled, revoked) = (counts[0], counts[1]);
            let mut st = c.prepare(
                "SELECT name, COUNT(*) FROM issues WHERE closed_at IS NULL GROUP BY name",
            )?;
            let open_issues = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
            Ok(FleetSummary {
                enrolled: enrolled as u64,
                revoked: revoked as u64,
                seen_within,
                open_issues,
            })
        })
        .await
    }
}
