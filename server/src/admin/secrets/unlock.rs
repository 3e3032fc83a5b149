//! Rebuilding the secrets key from shares: files, standard input, or typed
//! at a prompt without echo.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use penguindome_protocol::sealing::Opener;
use zeroize::Zeroizing;

use super::SecretsFile;
use crate::config::ServerConfig;
use crate::shares::{Share, combine};

/// What `secrets access` needs before it reads the store: the key, opened.
pub struct Unlocked {
    pub(crate) opener: Opener,
    pub(crate) fingerprint: String,
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
        crate::admin::prompt::Prompter::stdio().secret(&format!("Password of {}", p.display()))?,
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
    let mut prompt = crate::admin::prompt::Prompter::stdio();
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
