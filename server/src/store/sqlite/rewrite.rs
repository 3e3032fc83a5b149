//! Rewriting stored values in place (`pdome-admin secrets encrypt`), then
//! removing every trace of the old ones from the database's files.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::backend_err;
use super::submit::{pack_digests, unpack_digests};
use crate::store::{Rewritten, StoreError, StoreResult, ValueRewrite, plugin_digest, rewrite_text};

/// Audit records read per query, so a long trail is not held in memory.
const PAGE: i64 = 1000;

/// Rewrites plugin outputs and audit records (in the writer's transaction).
pub(super) fn rewrite(conn: &Connection, f: &ValueRewrite) -> StoreResult<Rewritten> {
    let mut out = Rewritten::default();
    let touched = rewrite_plugins(conn, f, &mut out)?;
    for client in touched {
        conn.execute(
            "UPDATE clients SET verdicts = NULL WHERE client_id = ?1",
            [&client],
        )
        .map_err(backend_err)?;
    }
    rewrite_audit(conn, f, &mut out)?;
    Ok(out)
}

/// Returns the clients whose outputs changed.
fn rewrite_plugins(
    conn: &Connection,
    f: &ValueRewrite,
    out: &mut Rewritten,
) -> StoreResult<BTreeSet<String>> {
    let rows: Vec<(i64, String, String, String)> = conn
        .prepare("SELECT id, client_id, name, data FROM plugins ORDER BY id")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(backend_err)?;
    let mut touched = BTreeSet::new();
    for (id, client, name, data) in rows {
        let Some(text) = rewrite_text(f, &format!("plugins.{name}"), &data)? else {
            continue;
        };
        conn.execute(
            "UPDATE plugins SET data = ?1 WHERE id = ?2",
            params![text, id],
        )
        .map_err(backend_err)?;
        redigest(conn, &client, &name, &text)?;
        touched.insert(client);
        out.plugin_outputs += 1;
    }
    Ok(touched)
}

/// Stores the digest of a plugin's new text, so the next submission is
/// compared with what is stored now.
fn redigest(conn: &Connection, client: &str, name: &str, text: &str) -> StoreResult<()> {
    let packed: Option<Vec<u8>> = conn
        .query_row(
            "SELECT plugin_digests FROM clients WHERE client_id = ?1",
            [client],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend_err)?
        .flatten();
    let mut digests = packed.as_deref().map(unpack_digests).unwrap_or_default();
    digests.insert(name.to_string(), plugin_digest(text));
    conn.execute(
        "UPDATE clients SET plugin_digests = ?1 WHERE client_id = ?2",
        params![pack_digests(&digests), client],
    )
    .map_err(backend_err)?;
    Ok(())
}

type AuditRow = (i64, String, Option<String>, Option<String>);

fn rewrite_audit(conn: &Connection, f: &ValueRewrite, out: &mut Rewritten) -> StoreResult<()> {
    let mut last = 0i64;
    loop {
        let rows: Vec<AuditRow> = conn
            .prepare_cached(
                "SELECT id, field, old, new FROM audit_trail WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![last, PAGE], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(backend_err)?;
        let Some(&(end, ..)) = rows.last() else {
            return Ok(());
        };
        for (id, field, old, new) in rows {
            let old2 = old
                .as_deref()
                .map(|t| rewrite_text(f, &field, t))
                .transpose()?
                .flatten();
            let new2 = new
                .as_deref()
                .map(|t| rewrite_text(f, &field, t))
                .transpose()?
                .flatten();
            if old2.is_none() && new2.is_none() {
                continue;
            }
            conn.execute(
                "UPDATE audit_trail SET old = ?1, new = ?2 WHERE id = ?3",
                params![old2.or(old), new2.or(new), id],
            )
            .map_err(backend_err)?;
            out.audit_records += 1;
        }
        last = end;
    }
}

/// Rebuilds the database file from its live rows and empties the WAL, so
/// values replaced or deleted before leave no copy in free pages or old
/// WAL frames. Waits for other connections (a running server) a while.
pub(super) fn compact(path: &Path) -> StoreResult<()> {
    let conn = Connection::open(path).map_err(backend_err)?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(backend_err)?;
    conn.execute_batch("VACUUM;").map_err(backend_err)?;
    for _ in 0..20 {
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(backend_err)?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(StoreError::Backend(
        "the WAL could not be emptied: another process keeps reading the database; stop the \
         server and run the command again"
            .into(),
    ))
}
