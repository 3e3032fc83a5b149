//! `pdome-admin command`: run a script once on clients, and read what it
//! printed and how it exited, per client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use penguindome_protocol::actions::{CommandOutput, CommandTask, Task};
use serde_json::json;

use super::actions::{self, is_open, tally, target_table};
use crate::audit::text::clean;
use crate::store::{ActionRecord, AdminStore};

/// Longest a script may be.
const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// `pdome-admin command …`.
#[derive(Debug, clap::Subcommand)]
pub enum CommandCommand {
    /// Run a script once on clients (all active clients unless --host).
    Run {
        /// A client id or host name; repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// A file holding the script.
        #[arg(long, conflicts_with = "command", required_unless_present = "command")]
        file: Option<PathBuf>,
        /// The script itself, run with /bin/sh -c.
        #[arg(long)]
        command: Option<String>,
        /// What lists call it (default: the file name or the script).
        #[arg(long)]
        name: Option<String>,
        /// Run as this user (default: root).
        #[arg(long)]
        user: Option<String>,
        /// Longest it may run before it is killed with its children.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How long offline clients may still run it.
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Commands and how far each got.
    List {
        /// Only commands some client has not finished.
        #[arg(long)]
        pending: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One command per client: state, times, exit status, stdout, stderr.
    Show {
        /// The command's id.
        id: String,
        /// JSON for scripts (output base64, as stored).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a command on the clients it has not been handed to yet.
    Cancel {
        /// The command's id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command subcommand as `operator`.
pub async fn run(
    store: &dyn AdminStore,
    cmd: CommandCommand,
    operator: &str,
) -> anyhow::Result<()> {
    match cmd {
        CommandCommand::Run {
            hosts,
            file,
            command,
            name,
            user,
            timeout,
            expires,
            json,
        } => {
            let task = task(file, command, name, user, timeout)?;
            queue(store, task, &hosts, expires, operator, json).await
        }
        CommandCommand::List { pending, json } => list(store, pending, json).await,
        CommandCommand::Show { id, json } => show(store, &id, json).await,
        CommandCommand::Cancel { id, json } => {
            let cancelled = store.cancel_action(&id, operator, actions::now()).await?;
            if json {
                println!("{}", json!({"id": id, "cancelled_on": cancelled}));
            } else {
                println!(
                    "Command {id}: cancelled on {} client(s); clients it was handed to already are not affected.",
                    cancelled.len()
                );
            }
            Ok(())
        }
    }
}

fn task(
    file: Option<PathBuf>,
    command: Option<String>,
    name: Option<String>,
    user: Option<String>,
    timeout: Duration,
) -> anyhow::Result<Task> {
    let (script, default_name) = match (file, command) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the script {}", f.display()))?;
            let base = f.file_name().map(|n| n.to_string_lossy().into_owned());
            (text, base.unwrap_or_default())
        }
        (None, Some(c)) => (c.clone(), c.chars().take(40).collect()),
        (None, None) => anyhow::bail!("give the script with --file or --command"),
    };
    anyhow::ensure!(
        script.len() <= MAX_SCRIPT_BYTES && !script.trim().is_empty(),
        "the script must be between 1 and {MAX_SCRIPT_BYTES} bytes"
    );
    Ok(Task::Command(CommandTask {
        name: name.unwrap_or(default_name),
        script,
        user,
        timeout_secs: timeout.as_secs().max(1),
    }))
}

async fn queue(
    store: &dyn AdminStore,
    task: Task,
    hosts: &[String],
    expires: Duration,
    operator: &str,
    json: bool,
) -> anyhow::Result<()> {
    let Task::Command(c) = &task else {
        unreachable!("built by task()")
    };
    let name = c.name.clone();
    let targets = actions::targets(store, hosts).await?;
    let count = targets.len();
    let started = std::time::Instant::now();
    let id = actions::queue(store, &task, name.clone(), operator, expires, targets).await?;
    if json {
        println!(
            "{}",
            json!({"id": id, "name": name, "clients": count,
                "queued_in_ms": started.elapsed().as_millis() as u64})
        );
    } else {
        println!(
            "Queued command {id} ({}) for {count} client(s).",
            clean(&name)
        );
    }
    Ok(())
}

async fn list(store: &dyn AdminStore, pending: bool, json: bool) -> anyhow::Result<()> {
    let now = actions::now();
    let all: Vec<ActionRecord> = actions::of_kind(store, "command", None)
        .await?
        .into_iter()
        .filter(|a| !pending || is_open(a, now))
        .collect();
    if json {
        let out: Vec<_> = all
            .iter()
            .map(|a| {
                json!({"id": a.id, "name": a.summary, "queued_by": a.queued_by,
                    "created_at": penguindome_protocol::envelope::utc::format(&a.created_at),
                    "states": tally(a, now)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("No commands.");
        return Ok(());
    }
    let mut t = actions::table();
    t.set_header(["ID", "NAME", "QUEUED (UTC)", "BY", "STATES"]);
    for a in &all {
        t.add_row([
            a.id.clone(),
            clean(&a.summary),
            a.created_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            clean(&a.queued_by),
            tally(a, now),
        ]);
    }
    println!("{t}");
    Ok(())
}

async fn show(store: &dyn AdminStore, id: &str, json: bool) -> anyhow::Result<()> {
    let now = actions::now();
    // Wipes report their steps the same way.
    let found = store
        .actions(crate::store::ActionFilter {
            id: Some(id.to_string()),
            ..Default::default()
        })
        .await?;
    let a = found.first().with_context(|| {
        format!("no command has id {id}; `pdome-admin command list` shows them")
    })?;
    if json {
        let targets: Vec<_> = a
            .targets
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["state"] = json!(t.state_at(a.expires_at, now).as_str());
                v
            })
            .collect();
        let task: serde_json::Value = serde_json::from_str(&a.task).unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"id": a.id, "name": a.summary,
                "queued_by": a.queued_by, "task": task,
                "created_at": penguindome_protocol::envelope::utc::format(&a.created_at),
                "expires_at": penguindome_protocol::envelope::utc::format(&a.expires_at),
                "targets": targets}))?
        );
        return Ok(());
    }
    println!(
        "command {}  {}\n  queued {} by {}; {}\n",
        a.id,
        clean(&a.summary),
        a.created_at.format("%Y-%m-%d %H:%M:%SZ"),
        clean(&a.queued_by),
        tally(a, now)
    );
    println!("{}", target_table(a, now));
    for t in &a.targets {
        if let Some(out) = &t.output {
            print_output(&t.hostname, &t.client_id, out);
        }
    }
    Ok(())
}

fn print_output(hostname: &str, client_id: &str, out: &CommandOutput) {
    let decode = |s: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default();
        clean(&String::from_utf8_lossy(&bytes))
    };
    let exit = match (out.exit_status, out.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "no status".into(),
    };
    println!(
        "\n== {} ({client_id}): {exit}{}, ran {} to {}",
        clean(hostname),
        if out.timed_out { ", timed out" } else { "" },
        out.started_at.format("%H:%M:%SZ"),
        out.finished_at.format("%H:%M:%SZ")
    );
    for (name, text, dropped) in [
        ("stdout", &out.stdout, out.stdout_dropped),
        ("stderr", &out.stderr, out.stderr_dropped),
    ] {
        let text = decode(text);
        if text.is_empty() && dropped == 0 {
            continue;
        }
        println!("-- {name}:\n{}", text.trim_end());
        if dropped > 0 {
            println!("-- [{dropped} more bytes of {name} were dropped at the cap]");
        }
    }
}
