//! `pdome-admin clients`: list, show, history, revoke, reenroll.

use anyhow::Context;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};

use crate::audit::text::clean;
use crate::store::{ActionFilter, AdminStore, AuditRecord, ClientDocument, ClientSummary};

/// `pdome-admin clients …`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientsCommand {
    /// List every client.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show everything stored about one client.
    Show {
        /// Client id (machine id) or host name.
        client: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a client's audit trail, oldest first.
    History {
        /// Client id or host name.
        client: String,
        /// Show at most this many of the newest records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Refuse the client's key from its next request on.
    Revoke {
        /// Client id or host name.
        client: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Let a reinstalled or revoked client enroll a new key once.
    Reenroll {
        /// Client id or host name.
        client: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Forget clients' repository credentials: they are refused at once
    /// and each agent fetches a new one on its next run.
    RotateCredentials {
        /// Client ids or host names.
        #[arg(required_unless_present = "all")]
        clients: Vec<String>,
        /// Every client.
        #[arg(long, conflicts_with = "clients")]
        all: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move clients to another server address or certificate: each agent
    /// tries it once and keeps its configuration if that fails.
    Configure(super::configure::ConfigureArgs),
    /// Per-client settings the issues audit reads (user_email, user_clients).
    #[command(subcommand)]
    Param(super::parameters::ParamCommand),
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn opt_when(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "-".into())
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t
}

fn status(c: &ClientSummary) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

/// Runs a clients subcommand against the store; prints to stdout.
pub async fn run(store: &dyn AdminStore, cmd: ClientsCommand) -> anyhow::Result<()> {
    match cmd {
        ClientsCommand::List { json } => list(store, json).await?,
        ClientsCommand::Show { client, json } => show(store, &client, json).await?,
        ClientsCommand::History {
            client,
            limit,
            json,
        } => {
            let id = store.resolve_client(&client).await?;
            let records = store.audit_trail(&id, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
                return Ok(());
            }
            print_history(&records);
        }
        ClientsCommand::Revoke { client, json } => revoke(store, &client, json).await?,
        ClientsCommand::Reenroll { client, json } => reenroll(store, &client, json).await?,
        ClientsCommand::RotateCredentials { clients, all, json } => {
            rotate_credentials(store, &clients, all, json).await?
        }
        ClientsCommand::Param(cmd) => super::parameters::run(store, cmd, Utc::now()).await?,
        // It reads the certificate as root first: see pdome-admin's main.
        ClientsCommand::Configure(_) => {
            anyhow::bail!("clients configure runs through pdome-admin's command line")
        }
    }
    Ok(())
}

/// `clients list`.
async fn list(store: &dyn AdminStore, json: bool) -> anyhow::Result<()> {
    let clients = store.list_clients().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&clients)?);
        return Ok(());
    }
    if clients.is_empty() {
        println!("No clients have enrolled yet.");
        return Ok(());
    }
    let mut t = table();
    t.set_header([
        "CLIENT ID",
        "HOSTNAME",
        "LAST SEEN (UTC)",
        "COLLECTED (UTC)",
        "ADDRESS",
        "STATUS",
    ]);
    for c in &clients {
        t.add_row([
            c.client_id.clone(),
            clean(&c.hostname),
            when(&c.last_seen_at),
            opt_when(&c.collected_at),
            c.last_address.clone(),
            status(c).into(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `clients show`.
async fn show(store: &dyn AdminStore, client: &str, json: bool) -> anyhow::Result<()> {
    let id = store.resolve_client(client).await?;
    let doc = store
        .get_client(&id)
        .await?
        .with_context(|| format!("client {id} disappeared while reading it"))?;
    let actions = store
        .actions(ActionFilter {
            client_id: Some(id.clone()),
            ..Default::default()
        })
        .await?;
    let now = super::actions::now();
    if json {
        let mut v = serde_json::to_value(&doc)?;
        v["actions"] = actions
            .iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id, "kind": a.kind, "summary": a.summary, "queued_by": a.queued_by,
                    "created_at": penguindome_protocol::envelope::utc::format(&a.created_at),
                    "state": super::actions::client_state(a, &id, now).map(|s| s.as_str()),
                    "detail": a.targets.iter().find(|t| t.client_id == id).and_then(|t| t.detail.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", client_table(&doc));
    if !actions.is_empty() {
        // The newest twenty; `patch list` has them all.
        let recent = &actions[actions.len().saturating_sub(20)..];
        println!(
            "\n[actions]\n{}",
            super::actions::client_rows(recent, &id, now)
        );
    }
    for (name, value) in &doc.plugins {
        println!("\n[{name}]");
        // JSON escapes control characters, not bidirectional ones.
        for line in serde_json::to_string_pretty(value)?.lines() {
            println!("{}", clean(line));
        }
    }
    Ok(())
}

/// What the server knows of a client apart from its facts.
fn client_table(doc: &ClientDocument) -> Table {
    let s = &doc.summary;
    let mut t = table();
    t.add_row(["client id", s.client_id.as_str()]);
    t.add_row(["hostname", clean(&s.hostname).as_str()]);
    t.add_row(["status", status(s)]);
    t.add_row(["enrolled", &when(&doc.enrolled_at)]);
    t.add_row(["first seen", &when(&s.first_seen_at)]);
    t.add_row([
        "last seen",
        &format!(
            "{} from {} ({})",
            when(&s.last_seen_at),
            s.last_address,
            s.last_listener
        ),
    ]);
    // What the server saw, behind any NAT: the agent's own view of
    // its addresses is in the ip_addresses facts.
    t.add_row(["public address", s.last_address.as_str()]);
    t.add_row(["collected", &opt_when(&s.collected_at)]);
    t.add_row(["facts version", &doc.facts_version.to_string()]);
    t.add_row(["submitted", &opt_when(&doc.submitted_at)]);
    t.add_row([
        "agent version",
        &clean(doc.agent_version.as_deref().unwrap_or("-")),
    ]);
    for k in &doc.keys {
        let state = match &k.revoked_at {
            Some(r) => format!("revoked {}", when(r)),
            None => "active".into(),
        };
        t.add_row(["key", &format!("{} ({state})", k.fingerprint)]);
    }
    t
}

/// `clients revoke`.
async fn revoke(store: &dyn AdminStore, client: &str, json: bool) -> anyhow::Result<()> {
    let id = store.resolve_client(client).await?;
    let changed = store.revoke_client(&id, Utc::now()).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"client_id": id, "revoked": true, "changed": changed})
        );
    } else if changed {
        println!("Revoked client {id}: the server refuses its key from the next request on.");
    } else {
        println!("Client {id} was already revoked.");
    }
    Ok(())
}

/// `clients reenroll`.
async fn reenroll(store: &dyn AdminStore, client: &str, json: bool) -> anyhow::Result<()> {
    let id = store.resolve_client(client).await?;
    store.allow_reenroll(&id).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"client_id": id, "reenroll_allowed": true})
        );
    } else {
        println!("Client {id} may enroll a new key once; its current key is revoked when it does.");
    }
    Ok(())
}

fn print_history(records: &[AuditRecord]) {
    if records.is_empty() {
        println!("No changes recorded.");
        return;
    }
    let show = |v: &Option<serde_json::Value>| {
        let s = v
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        let s = clean(&s);
        if s.chars().count() > 60 {
            format!("{}…", s.chars().take(59).collect::<String>())
        } else {
            s
        }
    };
    let mut t = table();
    t.set_header([
        "RECORDED (UTC)",
        "HOSTNAME",
        "FIELD",
        "ACTION",
        "OLD",
        "NEW",
    ]);
    for r in records {
        t.add_row([
            when(&r.recorded_at),
            clean(&r.hostname),
            clean(&r.field),
            r.action.as_str().into(),
            show(&r.old),
            show(&r.new),
        ]);
    }
    println!("{t}");
}

/// `clients rotate-credentials`.
async fn rotate_credentials(
    store: &dyn AdminStore,
    selectors: &[String],
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let ids = if all {
        store
            .list_clients()
            .await?
            .into_iter()
            .map(|c| c.client_id)
            .collect()
    } else {
        let mut ids = Vec::new();
        for s in selectors {
            ids.push(store.resolve_client(s).await?);
        }
        ids
    };
    let cleared = store.clear_repo_credentials(ids.clone()).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"clients": ids, "credentials_revoked": cleared})
        );
    } else {
        println!(
            "{cleared} of {} clients had a repository credential; it no longer opens the \
             repositories, and each agent fetches a new one on its next run.",
            ids.len()
        );
    }
    Ok(())
}
