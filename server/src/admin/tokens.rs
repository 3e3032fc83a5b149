//! `pdome-admin tokens`: enrollment tokens, the way new machines join
//! without any site-wide secret on them.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::token::{self, EnrollmentToken};
use serde::Serialize;

use crate::config::{AGENT_CONFIG_FILE, ServerConfig};
use crate::release::Family;
use crate::release::bootstrap::published_path;
use crate::store::{AdminStore, NewToken, TokenRecord};

/// `pdome-admin tokens …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it with the bootstrap command of each family.
    Create {
        /// How many machines it may enroll.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        uses: u32,
        /// How long it stays valid (e.g. 1h, 7d).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// What it is for, shown by `tokens list`.
        #[arg(long, default_value = "")]
        label: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every token: uses, expiry, state.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop a token from enrolling anything more.
    Revoke {
        /// The token's id (the second field of the token, as `tokens list` shows).
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// What `tokens create --json` prints.
#[derive(Debug, Serialize)]
struct Created {
    id: String,
    token: String,
    label: String,
    max_uses: u32,
    #[serde(with = "penguindome_protocol::envelope::utc")]
    expires_at: DateTime<Utc>,
    /// The one-line bootstrap per family, when a release published scripts.
    bootstrap: std::collections::BTreeMap<String, String>,
}

/// The pins a token carries, from what agents trust: agent.toml's
/// certificate and the server key. Read as root, before the store opens.
pub struct Pins {
    certificate_sha256: Option<[u8; 32]>,
    key_fingerprint: String,
}

/// Reads the pins (needs root: agent.toml and the key are not public).
pub fn pins(config: &ServerConfig) -> anyhow::Result<Pins> {
    let key = crate::serve::load_server_key(config)?;
    let agent = AgentConfig::load(&config.config_dir.join(AGENT_CONFIG_FILE))?;
    let certificate_sha256 = match &agent.ca_certificate {
        Some(pem) => Some(token::certificate_pin(pem).with_context(|| {
            format!("{AGENT_CONFIG_FILE}: ca_certificate holds no readable certificate")
        })?),
        None => None,
    };
    Ok(Pins {
        certificate_sha256,
        key_fingerprint: key.fingerprint().to_string(),
    })
}

/// Runs a tokens subcommand.
pub async fn run(
    config: &ServerConfig,
    pins: Option<Pins>,
    store: &dyn AdminStore,
    cmd: TokensCommand,
    operator: &str,
) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create {
            uses,
            expires,
            label,
            json,
        } => {
            let pins = pins.context("creating a token needs the site's pins")?;
            let request = Request {
                uses,
                expires,
                label,
            };
            create(config, &pins, store, request, operator, json).await
        }
        TokensCommand::List { json } => list(store, json).await,
        TokensCommand::Revoke { id, json } => revoke(store, &id, json).await,
    }
}

struct Request {
    uses: u32,
    expires: Duration,
    label: String,
}

async fn create(
    config: &ServerConfig,
    pins: &Pins,
    store: &dyn AdminStore,
    req: Request,
    operator: &str,
    json: bool,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let expires_at =
        now + chrono::Duration::from_std(req.expires).context("--expires is too long")?;
    let t = EnrollmentToken::generate(pins.certificate_sha256, &pins.key_fingerprint);
    store
        .add_token(NewToken {
            id: t.id.clone(),
            secret_sha256: hex::encode(t.secret_sha256()),
            label: req.label.clone(),
            max_uses: req.uses,
            expires_at,
            created_at: now,
            created_by: operator.to_string(),
        })
        .await?;
    let created = Created {
        id: t.id.clone(),
        token: t.to_string(),
        label: req.label,
        max_uses: req.uses,
        expires_at,
        bootstrap: one_liners(config).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        print_created(config, &created);
    }
    Ok(())
}

/// The bootstrap command of each family whose script the current release
/// published, pinned by the SHA-256 of exactly what the server serves.
async fn one_liners(
    config: &ServerConfig,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let releases = crate::store::release_source(config).await?;
    let url = config.server.url.trim_end_matches('/');
    let mut out = std::collections::BTreeMap::new();
    for family in [Family::Deb, Family::Rpm, Family::Arch] {
        let Some(script) = releases
            .read(&published_path(family))
            .await
            .with_context(|| format!("cannot read the {} bootstrap script", family.as_str()))?
        else {
            continue;
        };
        let pinned = script_is_pinned(&script);
        out.insert(
            family.as_str().to_string(),
            crate::release::bootstrap::one_liner_for(url, family, &script, pinned),
        );
    }
    Ok(out)
}

/// Whether a script carries its own certificate (then the one-liner may
/// skip the certificate check, the hash standing in for it).
fn script_is_pinned(script: &[u8]) -> bool {
    script
        .windows(b"PENGUINDOME_CERT".len())
        .any(|w| w == b"PENGUINDOME_CERT")
}

fn print_created(config: &ServerConfig, c: &Created) {
    let uses = if c.max_uses == 1 {
        "1 machine".to_string()
    } else {
        format!("{} machines", c.max_uses)
    };
    println!(
        "Enrollment token {} ({uses}, until {}):\n\n    {}\n",
        c.id,
        c.expires_at.format("%Y-%m-%d %H:%M UTC"),
        c.token
    );
    println!(
        "It enrolls {uses} and fetches the repositories until then: hand it over privately, \
         and revoke it with `pdome-admin tokens revoke {}` if it leaks.\n",
        c.id
    );
    if c.bootstrap.is_empty() {
        println!(
            "No release with bootstrap scripts is published yet: run `pdome-admin release`, \
             then `pdome-admin tokens create` again for the bootstrap commands."
        );
    } else {
        println!(
            "On the new machine, as root, run the line for its family; it asks for the token:\n"
        );
        for (family, line) in &c.bootstrap {
            println!("  {family}:\n    {line}\n");
        }
    }
    println!(
        "Where penguindome-agent is installed already:\n    penguindome-agent enroll {} -   (reads the token on standard input)",
        config.server.url.trim_end_matches('/')
    );
}

async fn list(store: &dyn AdminStore, json: bool) -> anyhow::Result<()> {
    let tokens = store.tokens().await?;
    let now = Utc::now();
    if json {
        let listed: Vec<serde_json::Value> = tokens
            .iter()
            .map(|t| listed(t, now))
            .collect::<Result<_, _>>()?;
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    if tokens.is_empty() {
        println!("No enrollment tokens; `pdome-admin tokens create` makes one.");
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "ID",
        "STATE",
        "USES",
        "EXPIRES",
        "CREATED BY",
        "LAST USED",
        "LABEL",
    ]);
    let when = |d: &DateTime<Utc>| d.format("%Y-%m-%d %H:%MZ").to_string();
    for k in &tokens {
        t.add_row([
            k.id.clone(),
            k.state(now).to_string(),
            format!("{}/{}", k.uses, k.max_uses),
            when(&k.expires_at),
            k.created_by.clone(),
            k.last_used_at.as_ref().map_or_else(|| "-".into(), when),
            k.label.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// A token as `tokens list --json` shows it: with its state, without the
/// hash of its secret.
fn listed(t: &TokenRecord, now: DateTime<Utc>) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(t)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("secret_sha256");
        o.insert("state".into(), t.state(now).into());
    }
    Ok(v)
}

async fn revoke(store: &dyn AdminStore, id: &str, json: bool) -> anyhow::Result<()> {
    if !token::is_valid_id(id) {
        anyhow::bail!(
            "{id:?} is not a token id (16 hex characters; `pdome-admin tokens list` shows them)"
        );
    }
    let revoked = store.revoke_token(id, Utc::now()).await?;
    if !revoked && !store.tokens().await?.iter().any(|t| t.id == id) {
        anyhow::bail!("no token {id}; `pdome-admin tokens list` shows them");
    }
    if json {
        println!("{}", serde_json::json!({"id": id, "revoked": revoked}));
    } else if revoked {
        println!(
            "Token {id} revoked: it enrolls nothing more and no longer opens the repositories."
        );
    } else {
        println!("Token {id} was revoked already.");
    }
    Ok(())
}

/// Reads the pins when the command needs them (only `create`).
pub fn pins_for(config_dir: &Path, cmd: &TokensCommand) -> anyhow::Result<Option<Pins>> {
    match cmd {
        TokensCommand::Create { .. } => pins(&ServerConfig::load(config_dir)?).map(Some),
        _ => Ok(None),
    }
}
