//! `pdome-admin secrets`: report fields only a quorum of administrators can
//! read.
//!
//! `enable` makes an OpenPGP encryption key in memory, locks its secret
//! half under a random key and splits that key into Shamir shares; only the
//! certificate, the locked key and the selectors reach `secrets.json`.
//! Agents learn the certificate and the selectors at their next update and
//! seal those fields before a report is spooled. `access` rebuilds the key
//! from shares in memory, records who read what, then prints the values.
//!
//! One file per part: [`keys`] makes and replaces the key and its shares,
//! [`unlock`] rebuilds it from shares, [`access`] opens a client's values.

mod access;
mod keys;
pub(crate) mod unlock;

use std::path::PathBuf;

use anyhow::{Context, bail};
use penguindome_protocol::sealing::Selector;
use serde_json::json;

use super::listeners::write_keeping_owner;
use crate::config::ServerConfig;
use crate::sealing::{SecretsFile, path, read};
use crate::store::AdminStore;

pub use access::{access, access_log_path};
pub use keys::{reencrypt, stage_replacement};
pub use unlock::{Unlocked, unlock};

/// `pdome-admin secrets …`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Make the site's secrets key and split it into shares (or turn
    /// sealing back on after `disable`, with the same key).
    Enable {
        /// How many shares to make.
        #[arg(long)]
        shares: u8,
        /// How many of them open the key.
        #[arg(long)]
        threshold: u8,
        /// Encrypt a share to this administrator's OpenPGP certificate
        /// (repeat: the first share to the first certificate, and so on).
        #[arg(long = "share-to", value_name = "ADMIN.asc")]
        share_to: Vec<PathBuf>,
        /// Write each share to a file in this directory (made 0700)
        /// instead of standard output.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace the site's key with a new one and re-encrypt every
        /// stored sealed value to it; needs shares of the current key.
        #[arg(long)]
        replace: bool,
        /// With --replace: a file of shares of the current key (`-`:
        /// standard input); missing ones are asked for without echo.
        #[arg(long = "old-share", value_name = "FILE", requires = "replace")]
        old_shares: Vec<PathBuf>,
        /// With --replace: the administrator's OpenPGP secret key, for an
        /// encrypted old share.
        #[arg(long, value_name = "KEY.asc", requires = "replace")]
        identity: Option<PathBuf>,
    },
    /// Finish moving sealed values from a replaced key to the current one
    /// (after an interrupted `enable --replace`, or for values an agent
    /// sealed to the old key before it learned the new one).
    Reencrypt {
        /// A file of shares of the replaced key (`-`: standard input).
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
        /// The administrator's OpenPGP secret key, for encrypted shares.
        #[arg(long, value_name = "KEY.asc")]
        identity: Option<PathBuf>,
    },
    /// Seal these fields from the agents' next reports on
    /// (`<collector>.<field>[.<field>...]`, e.g. `geolocation.location`).
    Select {
        /// Field selectors.
        #[arg(required = true)]
        selectors: Vec<String>,
    },
    /// Stop sealing these fields (values sealed before stay sealed).
    Deselect {
        /// Field selectors.
        #[arg(required = true)]
        selectors: Vec<String>,
    },
    /// The secrets key, its shares and the sealed fields.
    Show {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Seal the selected fields' values stored before they were selected,
    /// in client documents and the audit trail, then compact the database
    /// so that no copy of them is left in its files.
    Encrypt {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop asking agents to seal; the key stays, so sealed values stay
    /// readable with the shares.
    Disable,
    /// Open a client's sealed fields with shares of the key; the access is
    /// recorded before anything is shown.
    Access {
        /// Client id or host name.
        client: String,
        /// Only these fields (and what lies below them).
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// The sealed values in the client's audit trail too.
        #[arg(long)]
        audit_trail: bool,
        /// A file of shares, one per line, or an encrypted share (`-`:
        /// standard input). Missing shares are asked for without echo.
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
        /// The administrator's OpenPGP secret key, for encrypted shares.
        #[arg(long, value_name = "KEY.asc")]
        identity: Option<PathBuf>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Runs every subcommand but `access` (which needs the store; see
/// [`unlock`] and [`access`]).
pub fn run(config: &ServerConfig, cmd: SecretsCommand) -> anyhow::Result<()> {
    match cmd {
        SecretsCommand::Enable {
            shares,
            threshold,
            share_to,
            out,
            replace: false,
            ..
        } => keys::enable(config, shares, threshold, &share_to, out.as_deref()),
        SecretsCommand::Select { selectors } => change_selectors(config, &selectors, true),
        SecretsCommand::Deselect { selectors } => change_selectors(config, &selectors, false),
        SecretsCommand::Show { json } => show(config, json),
        SecretsCommand::Disable => disable(config),
        SecretsCommand::Access { .. }
        | SecretsCommand::Encrypt { .. }
        | SecretsCommand::Reencrypt { .. }
        | SecretsCommand::Enable { replace: true, .. } => {
            bail!("this secrets command needs the store")
        }
    }
}

fn load(config: &ServerConfig) -> anyhow::Result<SecretsFile> {
    read(&path(config))?
        .context("this site keeps no secrets yet: run `pdome-admin secrets enable` first")
}

fn save(config: &ServerConfig, file: &SecretsFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(file)? + "\n";
    write_keeping_owner(&path(config), text.as_bytes())
}

fn change_selectors(config: &ServerConfig, given: &[String], add: bool) -> anyhow::Result<()> {
    let mut file = load(config)?;
    for text in given {
        let sel = Selector::parse(text)?;
        let name = sel.to_string();
        if add {
            penguindome_protocol::facts::check_sealable(&sel).map_err(anyhow::Error::msg)?;
            if !file.selectors.contains(&name) {
                file.selectors.push(name);
            }
        } else {
            let before = file.selectors.len();
            file.selectors.retain(|s| *s != name);
            if file.selectors.len() == before {
                bail!("{name} is not sealed; `pdome-admin secrets show` lists what is");
            }
        }
    }
    file.selectors.sort();
    save(config, &file)?;
    if add {
        println!(
            "Sealing {} from each agent's next report on (agents learn it within a minute). \
             Values stored before stay as they were.",
            file.selectors.join(", ")
        );
    } else {
        let now = if file.selectors.is_empty() {
            "nothing".to_string()
        } else {
            file.selectors.join(", ")
        };
        println!("Sealed now: {now}.");
    }
    Ok(())
}

fn show(config: &ServerConfig, json: bool) -> anyhow::Result<()> {
    let file = read(&path(config))?;
    if json {
        let v = match &file {
            None => json!({"enabled": false, "key": null}),
            Some(f) => json!({
                "enabled": f.enabled,
                "key": f.fingerprint,
                "share_set": f.share_set,
                "threshold": f.threshold,
                "shares": f.shares,
                "selectors": f.selectors,
                "created_at": f.created_at,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let Some(f) = file else {
        println!("This site keeps no secrets: `pdome-admin secrets enable` starts.");
        return Ok(());
    };
    println!("key:       {}", f.fingerprint);
    println!(
        "state:     {}",
        if f.enabled { "sealing" } else { "disabled" }
    );
    println!(
        "shares:    {} of {} (set {})",
        f.threshold, f.shares, f.share_set
    );
    println!("made:      {}", f.created_at.format("%Y-%m-%d %H:%M UTC"));
    println!("sealed:    {}", f.selectors.join(", "));
    Ok(())
}

fn disable(config: &ServerConfig) -> anyhow::Result<()> {
    let mut file = load(config)?;
    file.enabled = false;
    save(config, &file)?;
    println!(
        "Agents stop sealing at their next update; values sealed so far stay readable with \
         {} shares of key {}.",
        file.threshold, file.fingerprint
    );
    Ok(())
}

/// `secrets encrypt`: seals stored plaintext of the selected fields.
pub async fn encrypt(
    config: &ServerConfig,
    store: &dyn AdminStore,
    json: bool,
) -> anyhow::Result<()> {
    let file = load(config)?;
    if file.selectors.is_empty() {
        bail!("no field is selected: `pdome-admin secrets select FIELD...` first");
    }
    let resealer = std::sync::Arc::new(crate::sealing::Resealer::new(&file)?);
    let rewrite: crate::store::ValueRewrite =
        std::sync::Arc::new(move |path, v| resealer.apply(path, v).map_err(|e| e.to_string()));
    let done = store
        .rewrite_values(rewrite)
        .await
        .context("sealing the stored values failed; run `pdome-admin secrets encrypt` again")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!(
            "Sealed {} in {} client plugin outputs and {} audit records; the database was \
             compacted, so no copy of the old values is left in its files.",
            file.selectors.join(", "),
            done.plugin_outputs,
            done.audit_records
        );
    }
    Ok(())
}
