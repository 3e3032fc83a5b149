//! `pdome-admin patch`: write or delete files on clients, below the patch
//! roots their agent.toml allows (the plugin directory,
//! /etc/penguindome/patches.d and any `patch_roots`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use penguindome_protocol::actions::{MAX_PATCH_BYTES, PatchTask, Task};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::actions::{self, is_open, tally, target_table};
use crate::audit::text::clean;
use crate::store::{ActionRecord, AdminStore};

/// How long a patch waits for an offline laptop by default.
const DEFAULT_EXPIRY: &str = "30d";

/// `pdome-admin patch …`.
#[derive(Debug, clap::Subcommand)]
pub enum PatchCommand {
    /// Write a file on clients (all active clients unless --host is given).
    Add {
        /// A client id or host name; repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Permission bits in octal, e.g. 755 (default: SRC's).
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// USER or USER:GROUP to own the file (default: root).
        #[arg(long)]
        owner: Option<String>,
        /// How long clients may still apply it, e.g. 30d or 12h.
        #[arg(long, default_value = DEFAULT_EXPIRY, value_parser = humantime::parse_duration)]
        expires: Duration,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Absolute path of the file on the clients.
        target: String,
        /// The local file to send.
        src: PathBuf,
    },
    /// Delete a file on clients (all active clients unless --host is given).
    Rm {
        /// A client id or host name; repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long clients may still apply it.
        #[arg(long, default_value = DEFAULT_EXPIRY, value_parser = humantime::parse_duration)]
        expires: Duration,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Absolute path of the file on the clients.
        target: String,
    },
    /// Patches and where each stands on each client.
    List {
        /// Only patches some client has not finished.
        #[arg(long)]
        pending: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a patch (by id, or every pending patch of a path) on the
    /// clients it has not been handed to yet.
    Cancel {
        /// A patch id, or a target path.
        patch: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 644"))?;
    if mode == 0 || mode > 0o7777 {
        return Err(format!(
            "mode {s} is not a file mode (1 to 7777; use `patch rm` to delete)"
        ));
    }
    Ok(mode)
}

/// Runs a patch subcommand as `operator`.
pub async fn run(store: &dyn AdminStore, cmd: PatchCommand, operator: &str) -> anyhow::Result<()> {
    match cmd {
        PatchCommand::Add {
            hosts,
            mode,
            owner,
            expires,
            json,
            target,
            src,
        } => {
            let task = file_task(&target, &src, mode, owner.as_deref())?;
            add(store, task, &hosts, expires, operator, json).await
        }
        PatchCommand::Rm {
            hosts,
            expires,
            json,
            target,
        } => {
            let task = PatchTask {
                path: checked_target(&target)?,
                mode: 0,
                owner: None,
                group: None,
                content: String::new(),
                sha256: String::new(),
            };
            add(store, task, &hosts, expires, operator, json).await
        }
        PatchCommand::List { pending, json } => list(store, pending, json).await,
        PatchCommand::Cancel { patch, json } => cancel(store, &patch, operator, json).await,
    }
}

/// The target path, refused unless absolute and plain (agents refuse the
/// same; saying so here saves a round trip).
fn checked_target(target: &str) -> anyhow::Result<String> {
    let p = Path::new(target);
    let plain = p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    anyhow::ensure!(
        plain,
        "{target:?} must be an absolute path to a file, without `.` or `..`"
    );
    Ok(target.to_string())
}

/// A patch writing `src`'s content to `target`.
fn file_task(
    target: &str,
    src: &Path,
    mode: Option<u32>,
    owner: Option<&str>,
) -> anyhow::Result<PatchTask> {
    let path = checked_target(target)?;
    let content = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    anyhow::ensure!(
        content.len() <= MAX_PATCH_BYTES,
        "{} is {} bytes; patches carry at most {MAX_PATCH_BYTES}",
        src.display(),
        content.len()
    );
    let mode = match mode {
        Some(m) => m,
        None => std::fs::metadata(src)?.permissions().mode() & 0o7777,
    };
    let (owner, group) = match owner {
        None => (None, None),
        Some(o) => match o.split_once(':') {
            Some((u, g)) => (Some(u.to_string()), Some(g.to_string())),
            None => (Some(o.to_string()), None),
        },
    };
    Ok(PatchTask {
        path,
        mode,
        owner,
        group,
        sha256: hex::encode(Sha256::digest(&content)),
        content: base64::engine::general_purpose::STANDARD.encode(&content),
    })
}

/// `patch add` and `patch rm`: refuses a path already pending on one of
/// the same clients, then queues.
async fn add(
    store: &dyn AdminStore,
    task: PatchTask,
    hosts: &[String],
    expires: Duration,
    operator: &str,
    json: bool,
) -> anyhow::Result<()> {
    let targets = actions::targets(store, hosts).await?;
    refuse_pending_conflicts(store, &task.path, &targets).await?;
    let summary = task.path.clone();
    let deletes = task.deletes();
    let count = targets.len();
    let id = actions::queue(
        store,
        &Task::Patch(task),
        summary.clone(),
        operator,
        expires,
        targets,
    )
    .await?;
    if json {
        println!(
            "{}",
            json!({"id": id, "path": summary, "delete": deletes, "clients": count})
        );
    } else {
        let verb = if deletes { "deleting" } else { "writing" };
        println!("Queued patch {id} {verb} {summary} for {count} client(s).");
    }
    Ok(())
}

async fn refuse_pending_conflicts(
    store: &dyn AdminStore,
    path: &str,
    targets: &[(String, String)],
) -> anyhow::Result<()> {
    let now = actions::now();
    for a in actions::of_kind(store, "patch", None).await? {
        if a.summary != path {
            continue;
        }
        let clash: Vec<&str> = a
            .targets
            .iter()
            .filter(|t| !t.state_at(a.expires_at, now).is_final())
            .filter(|t| targets.iter().any(|(c, _)| c == &t.client_id))
            .map(|t| t.hostname.as_str())
            .collect();
        anyhow::ensure!(
            clash.is_empty(),
            "patch {} for {path} is still pending on {}; wait for it or run \
             `pdome-admin patch cancel {}`",
            a.id,
            clash.join(", "),
            a.id
        );
    }
    Ok(())
}

/// `patch list`.
async fn list(store: &dyn AdminStore, pending: bool, json: bool) -> anyhow::Result<()> {
    let now = actions::now();
    let all: Vec<ActionRecord> = actions::of_kind(store, "patch", None)
        .await?
        .into_iter()
        .filter(|a| !pending || is_open(a, now))
        .collect();
    if json {
        let out: Vec<_> = all.iter().map(|a| patch_json(a, now)).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("No patches.");
        return Ok(());
    }
    for a in &all {
        let what = match serde_json::from_str::<Task>(&a.task) {
            Ok(Task::Patch(p)) if p.deletes() => "delete".to_string(),
            Ok(Task::Patch(p)) => format!("write, mode {:04o}", p.mode),
            Ok(_) | Err(_) => "unreadable".to_string(),
        };
        println!(
            "patch {}  {} ({what})\n  queued {} by {}, expires {}; {}",
            a.id,
            clean(&a.summary),
            a.created_at.format("%Y-%m-%d %H:%M:%SZ"),
            clean(&a.queued_by),
            a.expires_at.format("%Y-%m-%d %H:%M:%SZ"),
            tally(a, now)
        );
        for line in target_table(a, now).to_string().lines() {
            println!("    {line}");
        }
        println!();
    }
    Ok(())
}

/// A patch as `patch list --json` shows it: the states read at `now`.
fn patch_json(a: &ActionRecord, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let task = serde_json::from_str::<Task>(&a.task).ok();
    let (mode, delete) = match &task {
        Some(Task::Patch(p)) => (p.mode, p.deletes()),
        _ => (0, false),
    };
    let targets: Vec<_> = a
        .targets
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["state"] = json!(t.state_at(a.expires_at, now).as_str());
            v
        })
        .collect();
    json!({
        "id": a.id, "path": a.summary, "mode": format!("{mode:04o}"), "delete": delete,
        "queued_by": a.queued_by, "created_at": penguindome_protocol::envelope::utc::format(&a.created_at),
        "expires_at": penguindome_protocol::envelope::utc::format(&a.expires_at), "targets": targets,
    })
}

/// `patch cancel ID|TARGET`.
async fn cancel(
    store: &dyn AdminStore,
    patch: &str,
    operator: &str,
    json: bool,
) -> anyhow::Result<()> {
    let now = actions::now();
    let ids: Vec<String> = if penguindome_protocol::wire::is_valid_client_id(patch) {
        vec![patch.to_string()]
    } else {
        actions::of_kind(store, "patch", None)
            .await?
            .into_iter()
            .filter(|a| a.summary == patch && is_open(a, now))
            .map(|a| a.id)
            .collect()
    };
    anyhow::ensure!(
        !ids.is_empty(),
        "no pending patch is for {patch:?}; `pdome-admin patch list --pending` shows them"
    );
    let mut out = Vec::new();
    for id in ids {
        let cancelled = store.cancel_action(&id, operator, now).await?;
        if !json {
            println!(
                "Patch {id}: cancelled on {} client(s); clients it was handed to already are not affected.",
                cancelled.len()
            );
        }
        out.push(json!({"id": id, "cancelled_on": cancelled}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
