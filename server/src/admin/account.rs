//! The server's service account: `pdome-admin init` hands the files the
//! server needs to the `penguindome` user that the package creates, and
//! commands run as root switch to the data directory's owner, so they
//! never leave root-owned files the server cannot open.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;
use nix::unistd::{Gid, Group, Uid, User, chown, setgid, setgroups, setuid};

/// The system user the server runs as (systemd/penguindome-server.sysusers).
pub const SERVICE_USER: &str = "penguindome";

/// The service account, when it exists and we are root (who can hand
/// files over).
pub fn service_account() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let Some(user) = User::from_name(SERVICE_USER).context("cannot read the user database")? else {
        return Ok(None);
    };
    let gid = Group::from_name(SERVICE_USER)
        .context("cannot read the group database")?
        .map(|g| g.gid)
        .unwrap_or(user.gid);
    Ok(Some((user.uid, gid)))
}

/// Makes `path` owned by root and readable by the service group (secrets
/// the server reads: its key, TLS key, config).
pub fn share_with_group(path: &Path, gid: Gid, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    chown(path, Some(Uid::from_raw(0)), Some(gid))
        .with_context(|| format!("cannot change the group of {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot change the mode of {}", path.display()))
}

/// Gives a whole tree to the service account (the data directory).
pub fn give_tree(path: &Path, uid: Uid, gid: Gid) -> anyhow::Result<()> {
    chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot hand {} to {SERVICE_USER}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_symlink() {
                continue;
            }
            give_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Who is running pdome-admin, for the audit trail: the invoking user's
/// name, and through sudo the user who ran sudo. Read before
/// [`become_data_owner`] changes who we are.
pub fn operator() -> String {
    let me = User::from_uid(Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {}", Uid::current()));
    match std::env::var("SUDO_USER") {
        Ok(sudoer) if Uid::current().is_root() && !sudoer.is_empty() && sudoer != me => {
            format!("{sudoer} (via sudo)")
        }
        _ => me,
    }
}

/// When running as root, becomes the owner of the data directory if that
/// is not root. Call after reading whatever only root may read.
pub fn become_data_owner(data_dir: &Path) -> anyhow::Result<()> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let meta = match std::fs::metadata(data_dir) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    setgroups(&[gid]).context("cannot drop supplementary groups")?;
    setgid(gid).context("cannot switch to the data directory's group")?;
    setuid(uid).context("cannot switch to the data directory's owner")?;
    Ok(())
}
