//! Counts over the whole fleet, each one SQL aggregate.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use rusqlite::types::Value as SqlValue;

use super::{SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::store::{
    ClientPage, ClientQuery, ClientRow, ClientSort, ClientStatus, DistroFamily, FleetStore,
    FleetSummary, IssueSpan, SEEN_WINDOWS, SILENT_AFTER_SECS, StoreResult,
};

/// The family of the joined `os_info` row `p`, by the rules of
/// [`DistroFamily::of_os_info`].
const FAMILY_SQL: &str = "CASE \
    WHEN json_extract(p.data, '$.id') IS NULL THEN NULL \
    WHEN json_extract(p.data, '$.id') = 'debian' \
      OR instr(json_extract(p.data, '$.id_like'), '\"debian\"') THEN 'debian' \
    WHEN json_extract(p.data, '$.id') IN ('fedora', 'rhel', 'centos', 'rocky', 'almalinux') \
      OR instr(json_extract(p.data, '$.id_like'), '\"fedora\"') \
      OR instr(json_extract(p.data, '$.id_like'), '\"rhel\"') THEN 'fedora' \
    WHEN json_extract(p.data, '$.id') = 'arch' \
      OR instr(json_extract(p.data, '$.id_like'), '\"arch\"') THEN 'arch' \
    ELSE 'other' END";

/// The WHERE clause of a client query and its parameters, in order.
fn client_filter(q: &ClientQuery) -> (String, Vec<SqlValue>) {
    let mut clauses = vec!["1".to_string()];
    let mut params: Vec<SqlValue> = Vec::new();
    let param = |v: SqlValue, params: &mut Vec<SqlValue>| {
        params.push(v);
        format!("?{}", params.len())
    };
    if let Some(text) = &q.search {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let contains = param(SqlValue::Text(format!("%{escaped}%")), &mut params);
        let prefix = param(SqlValue::Text(format!("{escaped}%")), &mut params);
        clauses.push(format!(
            "(c.hostname LIKE {contains} ESCAPE '\\' OR c.client_id LIKE {prefix} ESCAPE '\\')"
        ));
    }
    if let Some(check) = &q.open_check {
        let check = param(SqlValue::Text(check.clone()), &mut params);
        // IN rather than EXISTS: SQLite can start from the check's open
        // issues (a few clients) instead of testing every client.
        clauses.push(format!(
            "c.client_id IN (SELECT i.client_id FROM issues i \
             WHERE i.name = {check} AND i.closed_at IS NULL)"
        ));
    }
    if let Some(family) = q.family {
        let family = param(SqlValue::Text(family.as_str().into()), &mut params);
        clauses.push(format!("({FAMILY_SQL}) = {family}"));
    }
    if let Some(status) = q.status {
        let since = ts(&(q.now - Duration::seconds(SILENT_AFTER_SECS)));
        clauses.push(match status {
            ClientStatus::Revoked => "c.revoked_at IS NOT NULL".into(),
            ClientStatus::Reporting => format!(
                "c.revoked_at IS NULL AND c.last_seen_at >= {}",
                param(SqlValue::Text(since), &mut params)
            ),
            ClientStatus::Silent => format!(
                "c.revoked_at IS NULL AND c.last_seen_at < {}",
                param(SqlValue::Text(since), &mut params)
            ),
        });
    }
    (clauses.join(" AND "), params)
}

fn order_by(sort: ClientSort) -> &'static str {
    match sort {
        ClientSort::Hostname => "c.hostname, c.client_id",
        ClientSort::LastSeenNewest => "c.last_seen_at DESC, c.client_id DESC",
        ClientSort::LastSeenOldest => "c.last_seen_at, c.client_id",
    }
}

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRow> {
    let family: Option<String> = r.get(4)?;
    Ok(ClientRow {
        client_id: r.get(0)?,
        hostname: r.get(1)?,
        last_seen_at: parse_ts(&r.get::<_, String>(2)?)?,
        revoked_at: parse_opt_ts(r.get(3)?)?,
        family: family.as_deref().and_then(DistroFamily::parse),
        open_issues: r.get::<_, i64>(5)? as u64,
    })
}

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

    async fn client_page(&self, query: ClientQuery) -> StoreResult<ClientPage> {
        self.read(move |c| {
            let (filter, params) = client_filter(&query);
            let from = "FROM clients c LEFT JOIN plugins p \
                        ON p.client_id = c.client_id AND p.name = 'os_info'";
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) {from} WHERE {filter}"),
                rusqlite::params_from_iter(&params),
                |r| r.get(0),
            )?;
            let sql = format!(
                "SELECT c.client_id, c.hostname, c.last_seen_at, c.revoked_at, ({FAMILY_SQL}), \
                 (SELECT COUNT(*) FROM issues i WHERE i.client_id = c.client_id \
                  AND i.closed_at IS NULL) \
                 {from} WHERE {filter} ORDER BY {} LIMIT {} OFFSET {}",
                order_by(query.sort),
                query.limit,
                query.offset
            );
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(&params), client_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ClientPage {
                total: total as u64,
                rows,
            })
        })
        .await
    }

    async fn issue_spans(&self, since: DateTime<Utc>) -> StoreResult<Vec<IssueSpan>> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT opened_at, closed_at FROM issues \
                 WHERE closed_at IS NULL OR closed_at >= ?1",
            )?;
            st.query_map([ts(&since)], |r| {
                Ok(IssueSpan {
                    opened_at: parse_ts(&r.get::<_, String>(0)?)?,
                    closed_at: parse_opt_ts(r.get(1)?)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn hostnames(&self, ids: Vec<String>) -> StoreResult<HashMap<String, String>> {
        self.read(move |c| {
            let mut out = HashMap::new();
            // SQLite allows 32,766 parameters; pages ask for a few hundred.
            for chunk in ids.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let mut st = c.prepare(&format!(
                    "SELECT client_id, hostname FROM clients WHERE client_id IN ({marks})"
                ))?;
                let rows = st.query_map(rusqlite::params_from_iter(chunk), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (id, host) = row?;
                    out.insert(id, host);
                }
            }
            Ok(out)
        })
        .await
    }
}
