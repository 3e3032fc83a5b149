//! Administration: clients, their history, revocation, actions and
//! parameters.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::writer::{Job, write_job};
use super::{SqliteStore, backend_err, insert_changes, parse_opt_ts, parse_ts, ts};
use crate::store::diff::{Change, ChangeAction};
use crate::store::{
    ActionFilter, ActionRecord, AdminStore, AuditRecord, ClientDocument, ClientSummary, KeyInfo,
    NewAction, NewToken, Parameter, StoreError, StoreResult, TokenRecord,
};

/// Revokes a client and its keys, with an audit record.
pub(super) fn revoke(conn: &Connection, client_id: &str, at: &DateTime<Utc>) -> StoreResult<bool> {
    let hostname: Option<String> = conn
        .query_row(
            "SELECT hostname FROM clients WHERE client_id = ?1",
            [client_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend_err)?;
    let Some(hostname) = hostname else {
        return Err(StoreError::NoSuchClient(client_id.to_string()));
    };
    let at_s = ts(at);
    conn.execute(
        "UPDATE client_keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
        params![client_id, at_s],
    )
    .map_err(backend_err)?;
    let n = conn
        .execute(
            "UPDATE clients SET revoked_at = ?2, reenroll_allowed = 0 WHERE client_id = ?1 AND revoked_at IS NULL",
            params![client_id, at_s],
        )
        .map_err(backend_err)?;
    if n > 0 {
        let change = Change {
            field: "revoked_at".into(),
            action: ChangeAction::Add,
            old: None,
            new: Some(Value::String(at_s)),
        };
        insert_changes(conn, client_id, &hostname, &[change], at, None)?;
    }
    Ok(n > 0)
}

/// Lets a client enroll a new key once.
pub(super) fn allow_reenroll(conn: &Connection, client_id: &str) -> StoreResult<()> {
    let n = conn
        .execute(
            "UPDATE clients SET reenroll_allowed = 1 WHERE client_id = ?1",
            [client_id],
        )
        .map_err(backend_err)?;
    if n == 0 {
        return Err(StoreError::NoSuchClient(client_id.to_string()));
    }
    Ok(())
}

/// Sets a parameter, or removes it when its value is null.
pub(super) fn put_parameter(conn: &Connection, p: &Parameter) -> StoreResult<()> {
    if p.value.is_null() {
        conn.execute(
            "DELETE FROM client_parameters WHERE client_id = ?1 AND name = ?2",
            params![p.client_id, p.name],
        )
    } else {
        conn.execute(
            "INSERT OR REPLACE INTO client_parameters (client_id, name, value, updated_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![p.client_id, p.name, p.value.to_string(), ts(&p.updated_at)],
        )
    }
    .map(|_| ())
    .map_err(backend_err)
}

/// A parameter from its row.
pub(super) fn parameter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Parameter> {
    let text: String = r.get(2)?;
    Ok(Parameter {
        client_id: r.get(0)?,
        name: r.get(1)?,
        value: serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        updated_at: parse_ts(&r.get::<_, String>(3)?)?,
    })
}

/// The summary columns of a client row.
fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientSummary> {
    Ok(ClientSummary {
        client_id: r.get(0)?,
        hostname: r.get(1)?,
        first_seen_at: parse_ts(&r.get::<_, String>(2)?)?,
        last_seen_at: parse_ts(&r.get::<_, String>(3)?)?,
        collected_at: parse_opt_ts(r.get(4)?)?,
        last_address: r.get(5)?,
        last_listener: r.get(6)?,
        revoked_at: parse_opt_ts(r.get(7)?)?,
    })
}

/// The columns [`summary_from_row`] reads, in order.
const SUMMARY_COLUMNS: &str = "client_id, hostname, first_seen_at, last_seen_at, collected_at, \
     last_address, last_listener, revoked_at";

#[async_trait]
impl AdminStore for SqliteStore {
    async fn list_clients(&self) -> StoreResult<Vec<ClientSummary>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM clients ORDER BY hostname, client_id"
            ))?;
            let rows = st.query_map([], summary_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn resolve_client(&self, selector: &str) -> StoreResult<String> {
        let sel = selector.to_string();
        let ids: Vec<String> = self
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT client_id FROM clients WHERE client_id = ?1 \
                     UNION SELECT client_id FROM clients WHERE hostname = ?1 ORDER BY 1",
                )?;
                let rows = st.query_map([sel], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        if ids.iter().any(|id| id == selector) {
            return Ok(selector.to_string());
        }
        match ids.len() {
            0 => Err(StoreError::NoSuchClient(selector.to_string())),
            1 => Ok(ids.into_iter().next().expect("one id")),
            n => Err(StoreError::Ambiguous {
                hostname: selector.to_string(),
                count: n,
                ids: ids.join(", "),
            }),
        }
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientDocument>> {
        let id = client_id.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, enrolled_at, submitted_at, agent_version, \
                         facts_version FROM clients WHERE client_id = ?1"
                    ),
                    [&id],
                    |r| {
                        Ok((
                            summary_from_row(r)?,
                            parse_ts(&r.get::<_, String>(8)?)?,
                            parse_opt_ts(r.get(9)?)?,
                            r.get::<_, Option<String>>(10)?,
                            r.get::<_, u32>(11)?,
                        ))
                    },
                )
                .optional()?;
            let Some((summary, enrolled_at, submitted_at, agent_version, facts_version)) = row
            else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT fingerprint, created_at, revoked_at FROM client_keys WHERE client_id = ?1 \
                 ORDER BY revoked_at IS NOT NULL, created_at DESC",
            )?;
            let keys = st
                .query_map([&id], |r| {
                    Ok(KeyInfo {
                        fingerprint: r.get(0)?,
                        created_at: parse_ts(&r.get::<_, String>(1)?)?,
                        revoked_at: parse_opt_ts(r.get(2)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare("SELECT name, data FROM plugins WHERE client_id = ?1")?;
            let mut plugins = BTreeMap::new();
            for row in st.query_map([&id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })? {
                let (name, data) = row?;
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                plugins.insert(name, value);
            }
            Ok(Some(ClientDocument {
                summary,
                enrolled_at,
                submitted_at,
                agent_version,
                facts_version,
                keys,
                plugins,
            }))
        })
        .await
    }

    async fn audit_trail(&self, client_id: &str, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let id = client_id.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT client_id, hostname, field, action, old, new, recorded_at, collected_at FROM \
                 (SELECT * FROM audit_trail WHERE client_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            )?;
            let rows = st.query_map(params![id, limit], |r| {
                let parse_json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
                let action: String = r.get(3)?;
                Ok(AuditRecord {
                    client_id: r.get(0)?,
                    hostname: r.get(1)?,
                    field: r.get(2)?,
                    action: ChangeAction::parse(&action).unwrap_or(ChangeAction::Change),
                    old: parse_json(r.get(4)?),
                    new: parse_json(r.get(5)?),
                    recorded_at: parse_ts(&r.get::<_, String>(6)?)?,
                    collected_at: parse_opt_ts(r.get(7)?)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn revoke_client(&self, client_id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let id = client_id.to_string();
        self.call(|r| Job::Revoke(id, at, r)).await
    }

    async fn add_token(&self, t: NewToken) -> StoreResult<()> {
        self.call(|r| write_job(r, move |c, _| super::tokens::add(c, &t)))
            .await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(super::tokens::list).await
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let id = id.to_string();
        self.call(|r| write_job(r, move |c, _| super::tokens::revoke(c, &id, &at)))
            .await
    }

    async fn clear_repo_credentials(&self, client_ids: Vec<String>) -> StoreResult<u64> {
        self.call(|r| {
            write_job(r, move |c, _| {
                super::tokens::clear_repo_credentials(c, &client_ids)
            })
        })
        .await
    }

    async fn rewrite_values(
        &self,
        rewrite: crate::store::ValueRewrite,
    ) -> StoreResult<crate::store::Rewritten> {
        let counts = self
            .call(|r| write_job(r, move |c, _| super::rewrite::rewrite(c, &rewrite)))
            .await?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || super::rewrite::compact(&path))
            .await
            .map_err(|e| StoreError::Backend(format!("compaction task failed: {e}")))??;
        Ok(counts)
    }

    async fn note_on_audit_trail(
        &self,
        client_id: &str,
        hostname: &str,
        change: crate::store::diff::Change,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (id, host) = (client_id.to_string(), hostname.to_string());
        self.call(|r| {
            write_job(r, move |c, _| {
                super::insert_changes(c, &id, &host, &[change], &at, None)
            })
        })
        .await
    }

    async fn allow_reenroll(&self, client_id: &str) -> StoreResult<()> {
        let id = client_id.to_string();
        self.call(|r| Job::AllowReenroll(id, r)).await
    }

    async fn add_action(&self, a: NewAction) -> StoreResult<()> {
        self.call(|r| Job::AddAction(Box::new(a), r)).await
    }

    async fn actions(&self, filter: ActionFilter) -> StoreResult<Vec<ActionRecord>> {
        self.read(move |c| super::actions::list(c, &filter)).await
    }

    async fn cancel_action(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let (id, by) = (id.to_string(), by.to_string());
        self.call(|r| Job::CancelAction(id, by, at, r)).await
    }

    async fn put_parameter(&self, p: Parameter) -> StoreResult<()> {
        self.call(|r| Job::PutParameter(p, r)).await
    }

    async fn parameters(&self, client_id: Option<&str>) -> StoreResult<Vec<Parameter>> {
        let client = client_id.map(str::to_string);
        self.read(move |c| {
            let base = "SELECT client_id, name, value, updated_at FROM client_parameters";
            match &client {
                Some(id) => c
                    .prepare(&format!("{base} WHERE client_id = ?1 ORDER BY name"))?
                    .query_map([id], parameter_from_row)?
                    .collect(),
                None => c
                    .prepare(&format!("{base} ORDER BY client_id, name"))?
                    .query_map([], parameter_from_row)?
                    .collect(),
            }
        })
        .await
    }
}
