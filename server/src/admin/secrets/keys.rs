//! Making the secrets key and its shares, and replacing it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use penguindome_protocol::sealing::{Recipient, generate_key, public_armored};
use zeroize::Zeroizing;

use super::{SecretsCommand, Unlocked, load, save};
use crate::admin::listeners::write_server_secret;
use crate::config::ServerConfig;
use crate::sealing::{SecretsFile, lock, path, read};
use crate::shares::{Share, split};
use crate::store::AdminStore;

pub(super) fn enable(
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
