//! The database schema and its upgrades.

use rusqlite::Connection;

use super::backend_err;
use crate::store::{StoreError, StoreResult};

/// Current schema version (PRAGMA user_version).
pub(super) const SCHEMA_VERSION: i64 = 6;

// Version 6 replaced the host-name index with (hostname, client_id) and
// added (last_seen_at, client_id): the web view's client table pages in
// index order instead of sorting every client.
// Version 5 added enrollment_tokens and clients.repo_credential_sha256
// (each client's own repository password, hashed).
// Version 4 replaced patches and patch_targets (never filled: nothing
// queued patches) with actions and action_targets.
// Version 3 added clients.facts_version (the facts version of the latest
// report) and clients.verdicts (the audit's verdicts on it, JSON). No
// comments inside column lists: ALTER TABLE rewrites their text.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clients (
    client_id        TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    enrolled_at      TEXT NOT NULL,
    first_seen_at    TEXT NOT NULL,
    last_seen_at     TEXT NOT NULL,
    last_address     TEXT NOT NULL,
    last_listener    TEXT NOT NULL,
    collected_at     TEXT,
    submitted_at     TEXT,
    last_report_id   TEXT,
    agent_version    TEXT,
    plugin_digests   BLOB,
    revoked_at       TEXT,
    reenroll_allowed INTEGER NOT NULL DEFAULT 0,
    facts_version    INTEGER NOT NULL DEFAULT 1,
    verdicts         TEXT,
    repo_credential_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS clients_hostname_id ON clients(hostname, client_id);
CREATE INDEX IF NOT EXISTS clients_last_seen_id ON clients(last_seen_at, client_id);
CREATE TABLE IF NOT EXISTS client_keys (
    fingerprint TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients(client_id),
    certificate BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX IF NOT EXISTS client_keys_client ON client_keys(client_id);
-- A rowid table: plugin outputs can be tens of KB, and SQLite's
-- WITHOUT ROWID tables are meant for small rows.
CREATE TABLE IF NOT EXISTS plugins (
    id         INTEGER PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients(client_id),
    name       TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS plugins_client_name ON plugins(client_id, name);
CREATE TABLE IF NOT EXISTS audit_trail (
    id           INTEGER PRIMARY KEY,
    client_id    TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    field        TEXT NOT NULL,
    action       TEXT NOT NULL,
    old          TEXT,
    new          TEXT,
    recorded_at  TEXT NOT NULL,
    n            INTEGER NOT NULL DEFAULT 0,
    collected_at TEXT
);
CREATE INDEX IF NOT EXISTS audit_trail_client ON audit_trail(client_id, id);
CREATE TABLE IF NOT EXISTS nonces (
    seq        INTEGER PRIMARY KEY,
    client_id  TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces(expires_at);
-- Version 2: the issues audit.
CREATE TABLE IF NOT EXISTS issues (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    detail       TEXT,
    opened_at    TEXT NOT NULL,
    closed_at    TEXT,
    closed_by    TEXT,
    alerted_at   TEXT,
    snoozed_at   TEXT,
    unsnooze_at  TEXT,
    unsnoozed_at TEXT
);
CREATE INDEX IF NOT EXISTS issues_client ON issues(client_id, opened_at);
CREATE INDEX IF NOT EXISTS issues_open ON issues(closed_at);
CREATE TABLE IF NOT EXISTS client_parameters (
    client_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (client_id, name)
) WITHOUT ROWID;
-- Version 4: actions, one row per action and one per target client.
CREATE TABLE IF NOT EXISTS actions (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    summary    TEXT NOT NULL,
    task       TEXT NOT NULL,
    queued_by  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS action_targets (
    action_id    TEXT NOT NULL REFERENCES actions(id),
    client_id    TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    state        TEXT NOT NULL,
    delivered_at TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    detail       TEXT,
    output       TEXT,
    PRIMARY KEY (action_id, client_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS action_targets_client ON action_targets(client_id, state);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_id      TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    label         TEXT NOT NULL,
    max_uses      INTEGER NOT NULL,
    uses          INTEGER NOT NULL DEFAULT 0,
    expires_at    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    revoked_at    TEXT,
    last_used_at  TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TEXT NOT NULL
) WITHOUT ROWID;
"#;

pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this server's \
             {SCHEMA_VERSION}; upgrade penguindome-server"
        )));
    }
    if version == SCHEMA_VERSION {
        // Up to date: opening writes nothing (pdome-admin opens the store
        // while the server runs).
        return Ok(());
    }
    // IMMEDIATE: take the write lock first (waiting for it), rather than
    // upgrading a read snapshot, which fails at once when a checkpoint or
    // another writer got in between.
    // Tables that exist already gain the columns of later versions.
    let mut added_columns = String::new();
    if (1..3).contains(&version) {
        added_columns.push_str(
            "ALTER TABLE clients ADD COLUMN facts_version INTEGER NOT NULL DEFAULT 1; \
             ALTER TABLE clients ADD COLUMN verdicts TEXT;",
        );
    }
    if (1..5).contains(&version) {
        added_columns.push_str("ALTER TABLE clients ADD COLUMN repo_credential_sha256 TEXT;");
    }
    let mut dropped = String::new();
    if (1..4).contains(&version) {
        dropped.push_str("DROP TABLE IF EXISTS patch_targets; DROP TABLE IF EXISTS patches;");
    }
    if (1..6).contains(&version) {
        dropped.push_str("DROP INDEX IF EXISTS clients_hostname;");
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} {added_columns} {dropped} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(backend_err)
}
