//! The issues audit: issues and the leases that serialise their writers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::writer::Job;
use super::{SqliteStore, backend_err, parse_opt_ts, parse_ts, read_blocking, ts};
use std::collections::HashMap;

use crate::store::roles::AuditRows;
use crate::store::{AuditRow, AuditStore, Issue, IssueFilter, StoreResult};
use futures_util::StreamExt;

/// Writes issues, replacing those with the same id.
pub(super) fn put_issues(conn: &Connection, issues: &[Issue]) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO issues (id, client_id, name, detail, opened_at, closed_at, \
             closed_by, alerted_at, snoozed_at, unsnooze_at, unsnoozed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(backend_err)?;
    let opt = |t: &Option<DateTime<Utc>>| t.as_ref().map(ts);
    for i in issues {
        st.execute(params![
            i.id,
            i.client_id,
            i.name,
            i.detail,
            ts(&i.opened_at),
            opt(&i.closed_at),
            i.closed_by,
            opt(&i.alerted_at),
            opt(&i.snoozed_at),
            opt(&i.unsnooze_at),
            opt(&i.unsnoozed_at),
        ])
        .map_err(backend_err)?;
    }
    Ok(())
}

/// A lease request.
pub(super) struct Lease {
    name: String,
    holder: String,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
}

/// Takes or renews a lease unless another holder's is still valid.
pub(super) fn take_lease(conn: &Connection, l: &Lease) -> StoreResult<bool> {
    // Timestamps are fixed-width RFC 3339 UTC, so text order is time order.
    conn.execute(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) \
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE leases.until < ?4 OR leases.holder = excluded.holder",
        params![l.name, l.holder, ts(&l.until), ts(&l.now)],
    )
    .map(|n| n == 1)
    .map_err(backend_err)
}

/// Gives back a lease the holder has.
pub(super) fn release_lease(conn: &Connection, name: &str, holder: &str) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
        params![name, holder],
    )
    .map(|_| ())
    .map_err(backend_err)
}

/// The columns [`issue_from_row`] reads, in order.
pub(super) const ISSUE_COLUMNS: &str = "id, client_id, name, detail, opened_at, closed_at, closed_by, \
                             alerted_at, snoozed_at, unsnooze_at, unsnoozed_at";

/// An issue from its row.
pub(super) fn issue_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Issue> {
    Ok(Issue {
        id: r.get(0)?,
        client_id: r.get(1)?,
        name: r.get(2)?,
        detail: r.get(3)?,
        opened_at: parse_ts(&r.get::<_, String>(4)?)?,
        closed_at: parse_opt_ts(r.get(5)?)?,
        closed_by: r.get(6)?,
        alerted_at: parse_opt_ts(r.get(7)?)?,
        snoozed_at: parse_opt_ts(r.get(8)?)?,
        unsnooze_at: parse_opt_ts(r.get(9)?)?,
        unsnoozed_at: parse_opt_ts(r.get(10)?)?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn put_issues(&self, issues: Vec<Issue>) -> StoreResult<()> {
        self.call(|r| Job::PutIssues(issues, r)).await
    }

    async fn issues(&self, filter: IssueFilter) -> StoreResult<Vec<Issue>> {
        self.read(move |c| {
            let mut sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE 1");
            if filter.client_id.is_some() {
                sql.push_str(" AND client_id = ?1");
            }
            if filter.open_only {
                sql.push_str(" AND closed_at IS NULL");
            }
            sql.push_str(" ORDER BY client_id, opened_at, id");
            let mut st = c.prepare(&sql)?;
            match &filter.client_id {
                Some(id) => st.query_map([id], issue_from_row)?.collect(),
                None => st.query_map([], issue_from_row)?.collect(),
            }
        })
        .await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let lease = Lease {
            name: name.into(),
            holder: holder.into(),
            until,
            now,
        };
        self.call(|r| Job::TakeLease(lease, r)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(|r| Job::ReleaseLease(name, holder, r)).await
    }

    async fn audit_rows(&self) -> StoreResult<AuditRows> {
        let (tx, rx) = tokio::sync::mpsc::channel(ROWS_AHEAD);
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let sent = read_blocking(&readers, &path, |c| {
                without_mmap(c, |c| send_audit_rows(c, &tx))
            });
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|row| (row, rx))
        })
        .boxed())
    }

    async fn pending_patch_counts(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<HashMap<String, usize>> {
        self.read(move |c| super::actions::pending_patch_counts(c, &now))
            .await
    }
}

/// Rows read ahead of the audit: enough to keep it busy, few enough that
/// memory does not grow with the fleet.
const ROWS_AHEAD: usize = 1024;

/// Sends every client's row, by host name, until the receiver goes away.
fn send_audit_rows(
    c: &Connection,
    tx: &tokio::sync::mpsc::Sender<StoreResult<AuditRow>>,
) -> rusqlite::Result<()> {
    let mut st = c.prepare(
        "SELECT client_id, hostname, enrolled_at, last_seen_at, submitted_at, revoked_at, \
         verdicts, last_listener FROM clients ORDER BY hostname, client_id",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        if tx.blocking_send(audit_row(r).map_err(backend_err)).is_err() {
            break;
        }
    }
    Ok(())
}

/// One client's row for the audit.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        client_id: r.get(0)?,
        hostname: r.get(1)?,
        enrolled_at: parse_ts(&r.get::<_, String>(2)?)?,
        last_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
        submitted_at: parse_opt_ts(r.get(4)?)?,
        revoked_at: parse_opt_ts(r.get(5)?)?,
        verdicts: r.get(6)?,
        last_listener: r.get(7)?,
    })
}

/// Runs `f` with memory mapping off: a scan of every client would
/// otherwise map the whole table into the process (pages that count as
/// its memory), where the page cache bounds it.
fn without_mmap<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.execute_batch("PRAGMA mmap_size=0;")?;
    let result = f(c);
    c.execute_batch(&format!("PRAGMA mmap_size={};", super::MMAP_SIZE))?;
    result
}
