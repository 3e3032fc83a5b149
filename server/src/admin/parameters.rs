//! `pdome-admin clients param`: per-client settings the issues audit reads.

use std::collections::BTreeSet;

use anyhow::bail;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::audit::{USER_CLIENTS, USER_EMAIL};
use crate::store::{AdminStore, Parameter};

/// `pdome-admin clients param …`.
#[derive(Debug, clap::Subcommand)]
pub enum ParamCommand {
    /// Show parameters (of one client, or of all).
    List {
        /// Client id or host name.
        client: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Set `user_email ADDRESS` (where the audit mails this machine's
    /// user) or `user_clients HOST...` (the user's other machines: while
    /// one of them reports, this one is not "not reporting").
    Set {
        /// Client id or host name.
        client: String,
        /// `user_email` or `user_clients`.
        name: String,
        /// The value(s).
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Remove a parameter.
    Unset {
        /// Client id or host name.
        client: String,
        /// The parameter.
        name: String,
    },
}

/// Runs a param subcommand.
pub async fn run(
    store: &dyn AdminStore,
    cmd: ParamCommand,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    match cmd {
        ParamCommand::List { client, json } => {
            let id = match client {
                Some(c) => Some(store.resolve_client(&c).await?),
                None => None,
            };
            let params = store.parameters(id.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&params)?);
                return Ok(());
            }
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header(["CLIENT", "PARAMETER", "VALUE", "SET"]);
            for p in params {
                t.add_row([
                    p.client_id,
                    p.name,
                    p.value.to_string(),
                    p.updated_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        ParamCommand::Set {
            client,
            name,
            values,
        } => {
            let id = store.resolve_client(&client).await?;
            match name.as_str() {
                USER_EMAIL => {
                    let [address] = values.as_slice() else {
                        bail!("user_email takes one address");
                    };
                    if address.parse::<lettre::Address>().is_err() {
                        bail!("{address:?} is not a mail address");
                    }
                    put(store, &id, USER_EMAIL, json!(address), now).await
                }
                USER_CLIENTS => {
                    let mut peers = BTreeSet::new();
                    for v in &values {
                        let peer = store.resolve_client(v).await?;
                        if peer == id {
                            bail!("{v} is the client itself; list the user's other machines");
                        }
                        peers.insert(peer);
                    }
                    set_group(store, &id, peers, now).await
                }
                other => bail!("unknown parameter {other:?}; use user_email or user_clients"),
            }
        }
        ParamCommand::Unset { client, name } => {
            let id = store.resolve_client(&client).await?;
            if name == USER_CLIENTS {
                set_group(store, &id, BTreeSet::new(), now).await
            } else {
                put(store, &id, &name, Value::Null, now).await
            }
        }
    }
}

async fn put(
    store: &dyn AdminStore,
    client_id: &str,
    name: &str,
    value: Value,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    store
        .put_parameter(Parameter {
            client_id: client_id.into(),
            name: name.into(),
            value: value.clone(),
            updated_at: now,
        })
        .await?;
    if value.is_null() {
        println!("{client_id}: {name} removed");
    } else {
        println!("{client_id}: {name} = {value}");
    }
    Ok(())
}

async fn peers_of(store: &dyn AdminStore, client_id: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(store
        .parameters(Some(client_id))
        .await?
        .into_iter()
        .find(|p| p.name == USER_CLIENTS)
        .and_then(|p| p.value.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// Makes `client_id` and `peers` one user's machines: each lists all the
/// others; machines dropped from the group lose it (and forget this one).
async fn set_group(
    store: &dyn AdminStore,
    client_id: &str,
    peers: BTreeSet<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let old = peers_of(store, client_id).await?;
    let mut group = peers.clone();
    group.insert(client_id.to_string());
    if peers.is_empty() {
        group.clear();
    }
    for member in &group {
        let others: Vec<&String> = group.iter().filter(|m| *m != member).collect();
        put(store, member, USER_CLIENTS, json!(others), now).await?;
    }
    if peers.is_empty() {
        put(store, client_id, USER_CLIENTS, Value::Null, now).await?;
    }
    for dropped in old.difference(&peers) {
        let mut theirs = peers_of(store, dropped).await?;
        theirs.remove(client_id);
        for p in &peers {
            theirs.remove(p);
        }
        let value = if theirs.is_empty() {
            Value::Null
        } else {
            json!(theirs)
        };
        put(store, dropped, USER_CLIENTS, value, now).await?;
    }
    Ok(())
}
