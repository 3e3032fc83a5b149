//! Reading records for a copy to another store, one page of one kind at a
//! time, each with the cursor the next page starts after.

use std::collections::BTreeMap;

use base64::Engine as _;
use rusqlite::{Connection, params};

use super::admin::parameter_from_row;
use super::audit::{ISSUE_COLUMNS, issue_from_row};
use super::{parse_opt_ts, parse_ts};
use crate::store::diff::ChangeAction;
use crate::store::{Kind, Record};

/// Records with their cursors.
type Page = Vec<(String, Record)>;

/// Reads one page of records for a copy.
pub(super) fn export(
    c: &Connection,
    kind: Kind,
    after: Option<String>,
    limit: usize,
) -> rusqlite::Result<Page> {
    let limit = limit as i64;
    let after_text = after.clone().unwrap_or_default();
    let after_num: i64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
    match kind {
        Kind::Clients => clients(c, &after_text, limit),
        Kind::Keys => keys(c, &after_text, limit),
        Kind::Audit => audit(c, after_num, limit),
        Kind::Nonces => nonces(c, after_num, limit),
        Kind::Actions => Ok(super::actions::export(c, &after_text, limit)?
            .into_iter()
            .map(|(cursor, a)| (cursor, Record::Action(a)))
            .collect()),
        Kind::Issues => issues(c, &after_text, limit),
        Kind::Parameters => parameters(c, &after_text, limit),
        Kind::Tokens => Ok(super::tokens::page(c, &after_text, limit)?
            .into_iter()
            .map(|t| (t.id.clone(), Record::Token(t)))
            .collect()),
    }
}

fn clients(c: &Connection, after: &str, limit: i64) -> rusqlite::Result<Page> {
    let mut st = c.prepare(
        "SELECT client_id, hostname, enrolled_at, first_seen_at, last_seen_at, last_address, last_listener, \
         collected_at, submitted_at, last_report_id, agent_version, revoked_at, reenroll_allowed, \
         facts_version, repo_credential_sha256 FROM clients WHERE client_id > ?1 \
         ORDER BY client_id LIMIT ?2",
    )?;
    let mut plugins_st =
        c.prepare("SELECT name, data FROM plugins WHERE client_id = ?1 ORDER BY name")?;
    let rows = st.query_map(params![after, limit], |r| {
        Ok(Record::Client {
            client_id: r.get(0)?,
            hostname: r.get(1)?,
            enrolled_at: parse_ts(&r.get::<_, String>(2)?)?,
            first_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
            last_seen_at: parse_ts(&r.get::<_, String>(4)?)?,
            last_address: r.get(5)?,
            last_listener: r.get(6)?,
            collected_at: parse_opt_ts(r.get(7)?)?,
            submitted_at: parse_opt_ts(r.get(8)?)?,
            last_report_id: r.get(9)?,
            agent_version: r.get(10)?,
            revoked_at: parse_opt_ts(r.get(11)?)?,
            reenroll_allowed: r.get(12)?,
            facts_version: r.get(13)?,
            plugins: BTreeMap::new(),
            repo_credential_sha256: r.get(14)?,
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        let mut record = row?;
        if let Record::Client {
            client_id, plugins, ..
        } = &mut record
        {
            for p in plugins_st.query_map([&*client_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (name, data) = p?;
                plugins.insert(name, data);
            }
            out.push((client_id.clone(), record));
        }
    }
    Ok(out)
}

fn keys(c: &Connection, after: &str, limit: i64) -> rusqlite::Result<Page> {
    let mut st = c.prepare(
        "SELECT fingerprint, client_id, certificate, created_at, revoked_at FROM client_keys \
         WHERE fingerprint > ?1 ORDER BY fingerprint LIMIT ?2",
    )?;
    st.query_map(params![after, limit], |r| {
        let fingerprint: String = r.get(0)?;
        Ok((
            fingerprint.clone(),
            Record::Key {
                fingerprint,
                client_id: r.get(1)?,
                certificate: base64::engine::general_purpose::STANDARD
                    .encode(r.get::<_, Vec<u8>>(2)?),
                created_at: parse_ts(&r.get::<_, String>(3)?)?,
                revoked_at: parse_opt_ts(r.get(4)?)?,
            },
        ))
    })?
    .collect()
}

fn audit(c: &Connection, after: i64, limit: i64) -> rusqlite::Result<Page> {
    let mut st = c.prepare(
        "SELECT id, client_id, hostname, field, action, old, new, recorded_at, n, collected_at \
         FROM audit_trail WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    st.query_map(params![after, limit], |r| {
        let action: String = r.get(4)?;
        Ok((
            r.get::<_, i64>(0)?.to_string(),
            Record::Audit {
                client_id: r.get(1)?,
                hostname: r.get(2)?,
                field: r.get(3)?,
                action: ChangeAction::parse(&action).unwrap_or(ChangeAction::Change),
                old: r.get(5)?,
                new: r.get(6)?,
                recorded_at: parse_ts(&r.get::<_, String>(7)?)?,
                n: r.get(8)?,
                collected_at: parse_opt_ts(r.get(9)?)?,
            },
        ))
    })?
    .collect()
}

fn nonces(c: &Connection, after: i64, limit: i64) -> rusqlite::Result<Page> {
    let mut st = c.prepare(
        "SELECT seq, client_id, nonce, expires_at FROM nonces WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    st.query_map(params![after, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?.to_string(),
            Record::Nonce {
                client_id: r.get(1)?,
                nonce: r.get(2)?,
                expires_at: r.get(3)?,
            },
        ))
    })?
    .collect()
}

fn issues(c: &Connection, after: &str, limit: i64) -> rusqlite::Result<Page> {
    let mut st = c.prepare(&format!(
        "SELECT {ISSUE_COLUMNS} FROM issues WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    st.query_map(params![after, limit], issue_from_row)?
        .map(|row| row.map(|issue| (issue.id.clone(), Record::Issue(issue))))
        .collect()
}

fn parameters(c: &Connection, after: &str, limit: i64) -> rusqlite::Result<Page> {
    // The cursor is `client_id NUL name`.
    let (after_client, after_name) = after
        .split_once('\0')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or_default();
    let mut st = c.prepare(
        "SELECT client_id, name, value, updated_at FROM client_parameters \
         WHERE client_id > ?1 OR (client_id = ?1 AND name > ?2) \
         ORDER BY client_id, name LIMIT ?3",
    )?;
    st.query_map(params![after_client, after_name, limit], parameter_from_row)?
        .map(|row| row.map(|p| (format!("{}\0{}", p.client_id, p.name), Record::Parameter(p))))
        .collect()
}
