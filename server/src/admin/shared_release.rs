//! `pdome-admin release` on a site whose servers share a MongoDB database:
//! the release is built in this host's release folder as always, then
//! copied into the database and switched to there, where every server
//! reads it. Before building, the folder is brought up to the database's
//! (the new release carries the packages of the ones before, and they may
//! have been published from another host).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::{ServerConfig, StoreConfig};
use crate::release::publish::Repository;
use crate::store::mongodb::{MongoReleases, Pointer};

/// The database's releases, when the site keeps them there.
pub struct Shared {
    db: MongoReleases,
    /// The pointer before this release, for the compare-and-set.
    before: Option<Pointer>,
}

/// Connects when the store is MongoDB (before switching users: the
/// database password file may be root's).
pub async fn connect(config: &ServerConfig) -> anyhow::Result<Option<MongoReleases>> {
    let StoreConfig::Mongodb(m) = &config.store else {
        return Ok(None);
    };
    let db = MongoReleases::connect(m, &config.config_dir)
        .await
        .context("cannot reach the releases in MongoDB")?;
    Ok(Some(db))
}

impl Shared {
    /// Mirrors every release the database keeps into `repo` and points
    /// `current` where the database does.
    pub async fn mirror(db: MongoReleases, repo: &Repository) -> anyhow::Result<Self> {
        let before = db.pointer().await?;
        let Some(pointer) = before else {
            return Ok(Self { db, before });
        };
        let local: HashSet<u64> = repo.serials()?.into_iter().collect();
        for serial in db.serials().await? {
            // The current one may have re-signed files since it was copied.
            if local.contains(&serial) && serial != pointer.serial {
                continue;
            }
            let revision = if serial == pointer.serial {
                pointer.revision
            } else {
                u64::MAX
            };
            let files = db.release_files(serial, revision).await?;
            repo.adopt(serial, &files)?;
        }
        repo.point_current(pointer.serial)?;
        Ok(Self { db, before })
    }

    /// The number the new release gets: above any here or in the database.
    pub async fn next_serial(&self, repo: &Repository) -> anyhow::Result<u64> {
        let highest = self.db.serials().await?.last().copied().unwrap_or(0);
        Ok(repo.next_serial()?.max(highest + 1))
    }

    /// Copies release `serial` from `repo` into the database, switches
    /// every server to it, and drops releases older than the `keep` newest.
    pub async fn share(&self, repo: &Repository, serial: u64, keep: u64) -> anyhow::Result<()> {
        let dir = repo.root().join("releases").join(serial.to_string());
        let files = read_tree(&dir)?;
        let ids = self.db.upload(serial, 0, &files).await?;
        let to = Pointer {
            serial,
            revision: 0,
        };
        if !self.db.switch(self.before, to).await? {
            self.db.delete(ids).await?;
            bail!(
                "another `pdome-admin release` switched the site's release while this one was \
                 being written; release {serial} was not published: run `pdome-admin release` again"
            );
        }
        for old in self.db.serials().await? {
            if old + keep.max(1) <= serial {
                self.db.delete_release(old).await?;
            }
        }
        Ok(())
    }
}

/// Every file below `dir` (hidden ones aside), by path relative to it.
fn read_tree(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry?.path();
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            if !crate::release::publish::is_plain_path(&rel) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                out.push((rel, bytes));
            }
        }
    }
    out.sort();
    Ok(out)
}
