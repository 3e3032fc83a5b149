//! `pdome-admin wipe HOST --confirm HOSTNAME`: end every human account on a
//! lost machine (sessions, processes, home, account). Its outcome, step by
//! step, is in `clients show HOST` and `command show ID`.

use std::time::Duration;

use anyhow::Context;
use penguindome_protocol::actions::{Task, WipeTask};
use serde_json::json;

use super::actions;
use crate::audit::text::clean;
use crate::store::AdminStore;

/// `pdome-admin wipe`.
#[derive(Debug, clap::Args)]
pub struct WipeArgs {
    /// The machine: client id or host name.
    pub host: String,
    /// Its host name, typed again, as a guard against the wrong machine.
    #[arg(long)]
    pub confirm: String,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// How long the machine may take to come back online and run it.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Queues a wipe as `operator`.
pub async fn run(store: &dyn AdminStore, args: WipeArgs, operator: &str) -> anyhow::Result<()> {
    let targets = actions::targets(store, std::slice::from_ref(&args.host)).await?;
    let (client_id, hostname) = targets.first().context("no such client")?.clone();
    anyhow::ensure!(
        args.confirm == hostname,
        "--confirm {:?} does not match the machine's host name {:?}; type its host name exactly",
        args.confirm,
        clean(&hostname)
    );
    let task = Task::Wipe(WipeTask {
        dry_run: args.dry_run,
    });
    let summary = if args.dry_run {
        "wipe (dry run)"
    } else {
        "wipe"
    };
    let id = actions::queue(
        store,
        &task,
        summary.into(),
        operator,
        args.expires,
        targets,
    )
    .await?;
    if args.json {
        println!(
            "{}",
            json!({"id": id, "client_id": client_id, "hostname": hostname, "dry_run": args.dry_run})
        );
    } else {
        println!(
            "Queued {summary} {id} for {} ({client_id}); it runs at the machine's next contact. \
             `pdome-admin command show {id}` shows each step.",
            clean(&hostname)
        );
    }
    Ok(())
}
