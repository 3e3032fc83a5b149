//! Counts over the whole fleet: counts and one aggregation, never a read
//! of every client.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, Regex, doc};

use super::fields::{from_bson_date, to_bson_date};
use super::{Inner, MongoStore};
use crate::store::{
    ClientPage, ClientQuery, ClientRow, ClientSort, ClientStatus, DistroFamily, FleetStore,
    FleetSummary, IssueSpan, SEEN_WINDOWS, SILENT_AFTER_SECS, StoreResult,
};

/// What an `os_info` text (stored as sent) says for each family, by the
/// rules of [`DistroFamily::of_os_info`].
fn family_pattern(family: DistroFamily) -> &'static str {
    match family {
        DistroFamily::Debian => r#""id"\s*:\s*"debian"|"id_like"\s*:\s*\[[^\]]*"debian""#,
        DistroFamily::Fedora => {
            r#""id"\s*:\s*"(fedora|rhel|centos|rocky|almalinux)"|"id_like"\s*:\s*\[[^\]]*"(fedora|rhel)""#
        }
        DistroFamily::Arch => r#""id"\s*:\s*"arch"|"id_like"\s*:\s*\[[^\]]*"arch""#,
        DistroFamily::Other => r#""id"\s*:\s*""#,
    }
}

fn regex(pattern: &str, options: &str) -> Bson {
    Bson::RegularExpression(Regex {
        pattern: pattern.into(),
        options: options.into(),
    })
}

/// The filter of a client query (the check's clients are looked up first).
async fn client_filter(inner: &Inner, q: &ClientQuery) -> StoreResult<Document> {
    let mut all: Vec<Document> = Vec::new();
    if let Some(text) = &q.search {
        let quoted = regex_escape(text);
        all.push(doc! {"$or": [
            {"hostname": regex(&quoted, "i")},
            {"_id": regex(&format!("^{quoted}"), "")},
        ]});
    }
    if let Some(check) = &q.open_check {
        let ids = inner
            .issues
            .distinct("client_id", doc! {"name": check, "closed_at": Bson::Null})
            .await
            .map_err(|e| inner.err(e))?;
        all.push(doc! {"_id": {"$in": ids}});
    }
    if let Some(family) = q.family {
        all.push(doc! {"plugins.os_info": regex(family_pattern(family), "")});
        if family == DistroFamily::Other {
            let named: Vec<Document> = [
                DistroFamily::Debian,
                DistroFamily::Fedora,
                DistroFamily::Arch,
            ]
            .into_iter()
            .map(|f| doc! {"plugins.os_info": regex(family_pattern(f), "")})
            .collect();
            all.push(doc! {"$nor": named});
        }
    }
    if let Some(status) = q.status {
        let since = to_bson_date(&(q.now - Duration::seconds(SILENT_AFTER_SECS)));
        all.push(match status {
            ClientStatus::Revoked => doc! {"revoked_at": {"$ne": Bson::Null}},
            ClientStatus::Reporting => {
                doc! {"revoked_at": Bson::Null, "last_seen_at": {"$gte": since}}
            }
            ClientStatus::Silent => doc! {"revoked_at": Bson::Null, "last_seen_at": {"$lt": since}},
        });
    }
    Ok(if all.is_empty() {
        doc! {}
    } else {
        doc! {"$and": all}
    })
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if "\\.^$|?*+()[]{}/".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn sort_of(sort: ClientSort) -> Document {
    match sort {
        ClientSort::Hostname => doc! {"hostname": 1, "_id": 1},
        ClientSort::LastSeenNewest => doc! {"last_seen_at": -1, "_id": -1},
        ClientSort::LastSeenOldest => doc! {"last_seen_at": 1, "_id": 1},
    }
}

/// Open issues of each of `ids`.
async fn open_issue_counts(inner: &Inner, ids: &[String]) -> StoreResult<BTreeMap<String, u64>> {
    let mut cursor = inner
        .issues
        .aggregate([
            doc! {"$match": {"client_id": {"$in": ids}, "closed_at": Bson::Null}},
            doc! {"$group": {"_id": "$client_id", "n": {"$sum": 1}}},
        ])
        .await
        .map_err(|e| inner.err(e))?;
    let mut out = BTreeMap::new();
    while let Some(d) = cursor.try_next().await.map_err(|e| inner.err(e))? {
        out.insert(
            d.get_str("_id").unwrap_or_default().to_string(),
            count_of(d.get("n")),
        );
    }
    Ok(out)
}

fn count_of(b: Option<&Bson>) -> u64 {
    match b {
        Some(Bson::Int32(n)) => *n as u64,
        Some(Bson::Int64(n)) => *n as u64,
        Some(Bson::Double(n)) => *n as u64,
        _ => 0,
    }
}

fn client_row(d: &Document) -> ClientRow {
    let family = d
        .get_document("plugins")
        .ok()
        .and_then(|p| p.get_str("os_info").ok())
        .and_then(|text| serde_json::from_str(text).ok())
        .and_then(|v| DistroFamily::of_os_info(&v));
    ClientRow {
        client_id: d.get_str("_id").unwrap_or_default().to_string(),
        hostname: d.get_str("hostname").unwrap_or_default().to_string(),
        last_seen_at: from_bson_date(d.get("last_seen_at")).unwrap_or_default(),
        revoked_at: from_bson_date(d.get("revoked_at")),
        family,
        open_issues: 0,
    }
}

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
            open_issues.insert(name, count_of(d.get("n")));
        }
        Ok(FleetSummary {
            enrolled,
            revoked,
            seen_within,
            open_issues,
        })
    }

    async fn client_page(&self, query: ClientQuery) -> StoreResult<ClientPage> {
        let i = &self.inner;
        let filter = client_filter(i, &query).await?;
        let total = i
            .clients
            .count_documents(filter.clone())
            .await
            .map_err(|e| i.err(e))?;
        let mut cursor = i
            .clients
            .find(filter)
            .projection(
                doc! {"hostname": 1, "last_seen_at": 1, "revoked_at": 1, "plugins.os_info": 1},
            )
            .sort(sort_of(query.sort))
            .skip(query.offset)
            .limit(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| i.err(e))?;
        let mut rows = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            rows.push(client_row(&d));
        }
        let ids: Vec<String> = rows.iter().map(|r| r.client_id.clone()).collect();
        let counts = open_issue_counts(i, &ids).await?;
        for row in &mut rows {
            row.open_issues = counts.get(&row.client_id).copied().unwrap_or(0);
        }
        Ok(ClientPage { total, rows })
    }

    async fn issue_spans(&self, since: DateTime<Utc>) -> StoreResult<Vec<IssueSpan>> {
        let i = &self.inner;
        let mut cursor = i
            .issues
            .find(doc! {"$or": [{"closed_at": Bson::Null}, {"closed_at": {"$gte": to_bson_date(&since)}}]})
            .projection(doc! {"opened_at": 1, "closed_at": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            if let Some(opened_at) = from_bson_date(d.get("opened_at")) {
                out.push(IssueSpan {
                    opened_at,
                    closed_at: from_bson_date(d.get("closed_at")),
                });
            }
        }
        Ok(out)
    }

    async fn hostnames(
        &self,
        ids: Vec<String>,
    ) -> StoreResult<std::collections::HashMap<String, String>> {
        let i = &self.inner;
        let mut cursor = i
            .clients
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"hostname": 1})
            .await
            .map_err(|e| i.err(e))?;
        let mut out = std::collections::HashMap::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| i.err(e))? {
            out.insert(
                d.get_str("_id").unwrap_or_default().to_string(),
                d.get_str("hostname").unwrap_or_default().to_string(),
            );
        }
        Ok(out)
    }
}
