//! `pdome-admin secrets`: report fields only a quorum of administrators can
//! read.
//!
//! `enable` makes an OpenPGP encryption key in memory, locks its secret
//! half under a random key and splits that key into Shamir shares; only the
//! certificate, the locked key and the selectors reach `secrets.json`.
//! Agents learn the certificate and the selectors at their next update and
//! seal those fields before a report is spooled. `access` rebuilds the key
//! from shares in memory, records who read what, then prints the values.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use penguindome_protocol::sealing::{
    Opener, Recipient, SealedValue, Selector, generate_key, public_armored,
};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::listeners::{write_keeping_owner, write_server_secret};
use crate::config::ServerConfig;
use crate::sealing::{SecretsFile, lock, path, read};
use crate::shares::{Share, combine, split};
use crate::store::AdminStore;
use crate::store::diff::{Change, ChangeAction};

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
        } => enable(config, shares, threshold, &share_to, out.as_deref()),
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

fn enable(
    config: &ServerConfig,
    count: u8,
    threshold: u8,
    share_to: &[PathBuf],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(mut file) = read(&path(config))? {
        if file.enabled {
            bail!(
                "secrets are enabled already, with key {} ({} of {} shares); `pdome-admin \
                 secrets show` lists the sealed fields",
                file.fingerprint,
                file.threshold,
                file.shares
            );
        }
        file.enabled = true;
        save(config, &file)?;
        println!(
            "Sealing is on again with key {} ({} of {} shares open it).",
            file.fingerprint, file.threshold, file.shares
        );
        return Ok(());
    }
    check_counts(count, threshold, share_to.len())?;
    let admins = share_to
        .iter()
        .map(|p| read_certificate(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let made = make_key(count, threshold)?;
    write_shares(&made.shares, &admins, out)?;
    write_server_secret(
        &path(config),
        &(serde_json::to_string_pretty(&made.file)? + "\n"),
    )?;
    eprintln!(
        "Made secrets key {}; its secret half was written nowhere: any {threshold} of the \
         {count} shares open it. Agents receive the key with their next update; choose the \
         fields to seal with `pdome-admin secrets select FIELD...`.",
        made.file.fingerprint
    );
    Ok(())
}

fn check_counts(count: u8, threshold: u8, encrypted: usize) -> anyhow::Result<()> {
    if threshold == 0 || count < threshold {
        bail!("--threshold must be between 1 and --shares ({count})");
    }
    if encrypted > usize::from(count) {
        bail!("{encrypted} --share-to certificates for {count} shares: give at most one per share");
    }
    if threshold == 1 {
        eprintln!("warning: --threshold 1 lets any one share holder read every sealed field");
    }
    Ok(())
}

fn read_certificate(p: &Path) -> anyhow::Result<(PathBuf, Recipient)> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    let r = Recipient::from_bytes(&bytes).with_context(|| {
        format!(
            "{} is not an OpenPGP certificate to encrypt to",
            p.display()
        )
    })?;
    Ok((p.to_path_buf(), r))
}

struct MadeKey {
    file: SecretsFile,
    shares: Vec<Share>,
}

/// The key, locked, and the shares of the lock's key: all in memory.
fn make_key(count: u8, threshold: u8) -> anyhow::Result<MadeKey> {
    let tsk = Zeroizing::new(generate_key("PenguinDome secrets")?);
    let (public_key, fingerprint) = public_armored(&tsk)?;
    let mut share_key = Zeroizing::new([0u8; 32]);
    penguindome_protocol::envelope::random_bytes(share_key.as_mut());
    let mut set = [0u8; 4];
    penguindome_protocol::envelope::random_bytes(&mut set);
    let share_set = hex::encode(set);
    let locked_key = lock(&tsk, &share_key, &fingerprint)?;
    let shares = split(&share_key, &share_set, count, threshold);
    Ok(MadeKey {
        file: SecretsFile {
            fingerprint,
            public_key,
            locked_key,
            share_set,
            threshold,
            shares: count,
            selectors: Vec::new(),
            enabled: true,
            created_at: Utc::now(),
        },
        shares,
    })
}

/// Each share as a file in `out`, or on standard output; the first ones
/// encrypted to the administrators' certificates.
fn write_shares(
    shares: &[Share],
    admins: &[(PathBuf, Recipient)],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(dir) = out {
        make_private_dir(dir)?;
    }
    for (i, share) in shares.iter().enumerate() {
        let header = format!(
            "PenguinDome secrets share {} of set {} ({} needed)",
            share.x, share.set, share.threshold
        );
        let (text, ext) = match admins.get(i) {
            Some((cert, r)) => {
                let body = format!("# {header}\n{}\n", share.to_text().as_str());
                let sealed = r.encrypt_armored(body.as_bytes()).with_context(|| {
                    format!("cannot encrypt share {} to {}", share.x, cert.display())
                })?;
                (Zeroizing::new(sealed), "asc")
            }
            None => (
                Zeroizing::new(format!("# {header}\n{}\n", share.to_text().as_str())),
                "txt",
            ),
        };
        match out {
            Some(dir) => write_new_private(&dir.join(format!("share-{}.{ext}", share.x)), &text)?,
            None => print!("{}", text.as_str()),
        }
    }
    if let Some(dir) = out {
        eprintln!(
            "Wrote {} shares to {}: hand each to one administrator and delete them here.",
            shares.len(),
            dir.display()
        );
    }
    Ok(())
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Creates a 0600 file that must not exist yet.
fn write_new_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
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
            "Sealed {} in {} client plugin outputs and {} audit records; the database was              compacted, so no copy of the old values is left in its files.",
            file.selectors.join(", "),
            done.plugin_outputs,
            done.audit_records
        );
    }
    Ok(())
}

/// `secrets enable --replace`, the part done as root: a new key and its
/// shares; the current key's file is kept as a replaced key's.
pub fn stage_replacement(
    config: &ServerConfig,
    old: &Unlocked,
    cmd: &SecretsCommand,
) -> anyhow::Result<()> {
    let SecretsCommand::Enable {
        shares: count,
        threshold,
        share_to,
        out,
        ..
    } = cmd
    else {
        bail!("not an enable");
    };
    let current = load(config)?;
    if current.fingerprint != old.fingerprint {
        bail!(
            "--old-share opens key {}, not the current key {}",
            old.fingerprint,
            current.fingerprint
        );
    }
    check_counts(*count, *threshold, share_to.len())?;
    let admins = share_to
        .iter()
        .map(|p| read_certificate(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut made = make_key(*count, *threshold)?;
    made.file.selectors = current.selectors.clone();
    made.file.enabled = current.enabled;
    write_shares(&made.shares, &admins, out.as_deref())?;
    write_server_secret(
        &crate::sealing::previous_path(config, &current.fingerprint),
        &(serde_json::to_string_pretty(&current)? + "\n"),
    )?;
    write_server_secret(
        &path(config),
        &(serde_json::to_string_pretty(&made.file)? + "\n"),
    )?;
    eprintln!(
        "Made secrets key {} to replace {}; agents seal to it from their next update.",
        made.file.fingerprint, current.fingerprint
    );
    Ok(())
}

/// Moves every stored value sealed to `old` to the current key
/// (`enable --replace`, `reencrypt`).
pub async fn reencrypt(
    config: &ServerConfig,
    store: &dyn AdminStore,
    old: Unlocked,
) -> anyhow::Result<()> {
    let current = load(config)?;
    if current.fingerprint == old.fingerprint {
        bail!("these are shares of the current key: give shares of the key it replaced");
    }
    let from = old.fingerprint.clone();
    let rekeyer = std::sync::Arc::new(crate::sealing::Rekeyer::new(old.opener, &current)?);
    let rewrite: crate::store::ValueRewrite =
        std::sync::Arc::new(move |_, v| rekeyer.apply(v).map_err(|e| e.to_string()));
    let done = store.rewrite_values(rewrite).await.with_context(|| {
        "re-encrypting stopped part way; finish with `pdome-admin secrets reencrypt` and \
         shares of the replaced key (every value still opens with its own key's shares)"
            .to_string()
    })?;
    println!(
        "Re-encrypted {} client plugin outputs and {} audit records from key {from} to key {}.",
        done.plugin_outputs, done.audit_records, current.fingerprint
    );
    Ok(())
}

/// What `secrets access` needs before it reads the store: the key, opened.
pub struct Unlocked {
    opener: Opener,
    fingerprint: String,
}

/// Reads shares (files, then prompts) and opens the secrets key, as root,
/// before pdome-admin becomes the data directory's owner.
pub fn unlock(
    config: &ServerConfig,
    files: &[PathBuf],
    identity: Option<&Path>,
) -> anyhow::Result<Unlocked> {
    let identity = identity.map(read_identity).transpose()?;
    let mut shares = Vec::new();
    for f in files {
        shares.extend(shares_from_file(f, identity.as_ref())?);
    }
    if shares.is_empty() {
        ask_for_missing(&mut shares, 1)?;
    }
    let file = file_of_share_set(config, &shares[0].1.set)?;
    ask_for_missing(&mut shares, file.threshold)?;
    let key = combine(&shares, &file.share_set, file.threshold)?;
    let tsk = file.unlock(&key)?;
    Ok(Unlocked {
        opener: Opener::from_bytes(&tsk)?,
        fingerprint: file.fingerprint,
    })
}

/// The current or a replaced key's file whose shares are of `set`.
fn file_of_share_set(config: &ServerConfig, set: &str) -> anyhow::Result<SecretsFile> {
    let files = crate::sealing::all_files(config)?;
    if files.is_empty() {
        bail!("this site keeps no secrets yet: run `pdome-admin secrets enable` first");
    }
    files
        .into_iter()
        .find(|f| f.share_set == set)
        .with_context(|| format!("the shares are of set {set}, which opens no key of this site"))
}

fn read_identity(p: &Path) -> anyhow::Result<Opener> {
    let bytes = Zeroizing::new(
        crate::secrets::read_secret(p).with_context(|| format!("cannot use {}", p.display()))?,
    );
    let opener = Opener::from_bytes(&bytes)
        .with_context(|| format!("{} is not an OpenPGP secret key", p.display()))?;
    if !opener.needs_password() {
        return Ok(opener);
    }
    let password = Zeroizing::new(
        super::prompt::Prompter::stdio().secret(&format!("Password of {}", p.display()))?,
    );
    Ok(opener.with_password(&password)?)
}

fn shares_from_file(p: &Path, identity: Option<&Opener>) -> anyhow::Result<Vec<(String, Share)>> {
    let label = if p == Path::new("-") {
        "standard input".to_string()
    } else {
        p.display().to_string()
    };
    let mut raw = Zeroizing::new(Vec::new());
    if p == Path::new("-") {
        std::io::stdin().read_to_end(&mut raw)?;
    } else {
        std::fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_context(|| format!("cannot read {label}"))?;
    }
    let text = if raw.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        let me = identity.with_context(|| {
            format!("{label} is encrypted to an administrator: give that administrator's key with --identity")
        })?;
        Zeroizing::new(
            me.decrypt(&raw)
                .with_context(|| format!("{label} is not encrypted to the --identity key"))?,
        )
    } else {
        raw
    };
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let where_ = format!("{label} line {}", n + 1);
        out.push((where_.clone(), Share::parse(line, &where_)?));
    }
    Ok(out)
}

fn ask_for_missing(shares: &mut Vec<(String, Share)>, threshold: u8) -> anyhow::Result<()> {
    let mut prompt = super::prompt::Prompter::stdio();
    while shares.len() < usize::from(threshold) {
        let n = shares.len() + 1;
        let answer = Zeroizing::new(
            prompt
                .secret(&format!("Share {n} of {threshold}"))
                .with_context(|| format!("{threshold} shares are needed, {} given", n - 1))?,
        );
        let label = format!("share {n} typed");
        shares.push((label.clone(), Share::parse(&answer, &label)?));
    }
    Ok(())
}

/// One sealed value found in a client's data.
#[derive(Debug, Serialize)]
struct Opened {
    field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<String>,
    value: Value,
}

/// `secrets access`: records the access on the client's audit trail and in
/// the access log, then prints the opened values.
pub async fn access(
    config: &ServerConfig,
    store: &dyn AdminStore,
    unlocked: &Unlocked,
    cmd: &SecretsCommand,
    operator: &str,
) -> anyhow::Result<()> {
    let SecretsCommand::Access {
        client,
        selectors,
        audit_trail,
        json,
        ..
    } = cmd
    else {
        bail!("not an access");
    };
    let wanted = selectors
        .iter()
        .map(|s| Selector::parse(s).map(|s| s.audit_field()))
        .collect::<Result<Vec<_>, _>>()?;
    let id = store.resolve_client(client).await?;
    let doc = store
        .get_client(&id)
        .await?
        .with_context(|| format!("no client {client}"))?;
    let mut found = Vec::new();
    for (name, output) in &doc.plugins {
        find_sealed(output, &format!("plugins.{name}"), None, &mut found);
    }
    if *audit_trail {
        for r in store.audit_trail(&id, usize::MAX).await? {
            let when = Some(r.recorded_at.to_rfc3339());
            for v in [&r.old, &r.new].into_iter().flatten() {
                find_sealed(v, &r.field, when.clone(), &mut found);
            }
        }
    }
    found.retain(|(f, _, _)| wanted.is_empty() || wanted.iter().any(|w| under(f, w)));
    let others = found
        .iter()
        .filter(|(_, _, v)| v.key != unlocked.fingerprint)
        .count();
    if others > 0 {
        eprintln!(
            "{others} value(s) are sealed to another key of this site: give its shares to read them"
        );
        found.retain(|(_, _, v)| v.key == unlocked.fingerprint);
    }
    record_access(
        config,
        store,
        (&id, &doc.summary.hostname),
        operator,
        unlocked,
        &found,
        *audit_trail,
    )
    .await?;
    let opened = found
        .into_iter()
        .map(|(field, recorded_at, sealed)| {
            let value = unlocked.opener.open(&sealed)?;
            Ok(Opened {
                field,
                recorded_at,
                value,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_opened(&doc.summary.hostname, &opened, *json)
}

fn under(field: &str, selector: &str) -> bool {
    field == selector
        || field
            .strip_prefix(selector)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Every sealed marker in `value`, with the field it stands for.
fn find_sealed(
    value: &Value,
    path: &str,
    when: Option<String>,
    out: &mut Vec<(String, Option<String>, SealedValue)>,
) {
    if penguindome_protocol::sealing::sealed_digest(value).is_some() {
        if let Ok(m) =
            serde_json::from_value::<penguindome_protocol::sealing::Sealed>(value.clone())
        {
            out.push((path.to_string(), when, m.sealed));
        }
        return;
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            find_sealed(v, &format!("{path}.{k}"), when.clone(), out);
        }
    }
}

async fn record_access(
    config: &ServerConfig,
    store: &dyn AdminStore,
    (client_id, hostname): (&str, &str),
    operator: &str,
    unlocked: &Unlocked,
    found: &[(String, Option<String>, SealedValue)],
    audit_trail: bool,
) -> anyhow::Result<()> {
    let mut fields: Vec<&str> = found.iter().map(|(f, _, _)| f.as_str()).collect();
    fields.dedup();
    let now = Utc::now();
    let record = json!({
        "by": operator,
        "at": now.to_rfc3339(),
        "client_id": client_id,
        "hostname": hostname,
        "fields": fields,
        "audit_trail": audit_trail,
        "key": unlocked.fingerprint,
    });
    append_access_log(config, &record)?;
    let change = Change {
        field: "secrets.access".into(),
        action: ChangeAction::Add,
        old: None,
        new: Some(record),
    };
    store
        .note_on_audit_trail(client_id, hostname, change, now)
        .await
        .context("cannot record the access on the client's audit trail; nothing was shown")?;
    Ok(())
}

/// The access log: one JSON line per access, in the data directory.
pub fn access_log_path(config: &ServerConfig) -> PathBuf {
    config.data_path(Path::new("secrets-access.log"))
}

fn append_access_log(config: &ServerConfig, record: &Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let p = access_log_path(config);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&p)
        .with_context(|| {
            format!(
                "cannot open the access log {}; nothing was shown",
                p.display()
            )
        })?;
    f.write_all(format!("{record}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| {
            format!(
                "cannot write the access log {}; nothing was shown",
                p.display()
            )
        })
}

fn print_opened(hostname: &str, opened: &[Opened], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(opened)?);
        return Ok(());
    }
    if opened.is_empty() {
        println!("No sealed field of {hostname} matches.");
    }
    // serde_json escapes control characters: a hostile value prints as text.
    for o in opened {
        match &o.recorded_at {
            Some(at) => println!("{at}  {} = {}", o.field, o.value),
            None => println!("{} = {}", o.field, o.value),
        }
    }
    Ok(())
}
