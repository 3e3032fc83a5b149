//! `pdome-admin shell log HOST [--session ID]`: the sessions a client had,
//! and one replayed as asciicast v2. Reading one is recorded on the
//! client's audit trail before it is shown.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::Utc;
use penguindome_protocol::sealing::Opener;
use penguindome_protocol::shell::TranscriptKeys;
use serde_json::json;
use zeroize::Zeroizing;

use crate::admin::account;
use crate::audit::text::clean;
use crate::config::ServerConfig;
use crate::shell::transcript::{self, Transcript};
use crate::store::{AdminStore, Change, ChangeAction};

/// What `shell log` was asked.
pub struct LogRequest<'a> {
    /// The client.
    pub host: &'a str,
    /// One session to replay.
    pub session: Option<&'a str>,
    /// JSON list instead of a table.
    pub json: bool,
    /// Shares, for transcripts sealed to the secret-keeping key.
    pub shares: &'a [PathBuf],
    /// An administrator's key for encrypted shares.
    pub identity: Option<&'a Path>,
}

/// Lists or replays; `open_store` is called once keys are in hand.
pub async fn run<F, Fut>(
    config: &ServerConfig,
    req: LogRequest<'_>,
    open_store: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<std::sync::Arc<dyn crate::store::Store>>>,
{
    let Some(session) = req.session else {
        let store = open_store().await?;
        let client_id = store.resolve_client(req.host).await?;
        print_list(
            &transcript::list(&transcript::client_dir(config, &client_id))?,
            req.json,
        )?;
        return Ok(());
    };
    // Keys and shares are read as root, before the store is opened as the
    // data directory's owner.
    let t = find(config, session)?;
    let keys = open_keys(config, &t, &req)?;
    let cast = super::cast::render(&t, &keys)?;
    let store = open_store().await?;
    if store.resolve_client(req.host).await? != t.client_id {
        bail!("shell session {session} was not on {}", req.host);
    }
    note_reading(store.as_ref(), &t).await?;
    print!("{cast}");
    Ok(())
}

/// The transcript of a session, whichever client it was on.
fn find(config: &ServerConfig, session: &str) -> anyhow::Result<Transcript> {
    anyhow::ensure!(
        penguindome_protocol::wire::is_valid_client_id(session),
        "{session:?} is not a session id (32 hex characters)"
    );
    let root = config.data_path(Path::new("transcripts"));
    for dir in std::fs::read_dir(&root).into_iter().flatten() {
        let path = dir?.path().join(format!("{session}.json"));
        if let Ok(bytes) = std::fs::read(&path) {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", path.display()));
        }
    }
    bail!("no shell session {session} was recorded; `pdome-admin shell log HOST` lists them")
}

fn print_list(all: &[Transcript], json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|t| {
                json!({"session_id": t.session_id, "operator": t.operator,
                    "started_at": t.started_at.to_rfc3339(), "ended_at": t.ended_at.to_rfc3339(),
                    "ended_because": t.ended_because, "frames": t.frames.len(),
                    "dropped_bytes": t.dropped_bytes})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("No shell sessions.");
        return Ok(());
    }
    let mut table = super::super::actions::table();
    table.set_header(["SESSION", "STARTED (UTC)", "BY", "SECONDS", "ENDED BECAUSE"]);
    for t in all {
        table.add_row([
            t.session_id.clone(),
            t.started_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            clean(&t.operator),
            (t.ended_at - t.started_at).num_seconds().to_string(),
            clean(&t.ended_because),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Opens the session's keys: with the server's transcript key, or with
/// the secret-keeping key rebuilt from shares.
fn open_keys(
    config: &ServerConfig,
    t: &Transcript,
    req: &LogRequest<'_>,
) -> anyhow::Result<TranscriptKeys> {
    let own = std::fs::read(transcript::key_path(config))
        .ok()
        .and_then(|tsk| Opener::from_bytes(&tsk).ok());
    let plain = match own.and_then(|o| o.decrypt(t.keys.as_bytes()).ok()) {
        Some(p) => p,
        None => {
            if crate::sealing::all_files(config)?.is_empty() {
                bail!("the transcript's keys are sealed to a key this server does not have");
            }
            eprintln!(
                "This transcript is sealed to the site's secret-keeping key; give a quorum of shares."
            );
            let unlocked = crate::admin::secrets::unlock::unlock(config, req.shares, req.identity)?;
            unlocked
                .opener
                .decrypt(t.keys.as_bytes())
                .context("the shares open a key this transcript is not sealed to")?
        }
    };
    let plain = Zeroizing::new(plain);
    serde_json::from_slice(&plain).context("the transcript's keys are damaged")
}

async fn note_reading(store: &dyn AdminStore, t: &Transcript) -> anyhow::Result<()> {
    let change = Change {
        field: "shell.transcript_read".into(),
        action: ChangeAction::Add,
        old: None,
        new: Some(
            json!({"by": account::operator(), "session_id": t.session_id,
            "at": Utc::now().to_rfc3339()}),
        ),
    };
    store
        .note_on_audit_trail(&t.client_id, &t.hostname, change, Utc::now())
        .await
        .context("cannot record the reading on the client's audit trail; nothing was shown")
}
