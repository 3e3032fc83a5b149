//! `pdome-admin store migrate`: copy everything to another store, verified.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::shared_release::Shared;
use crate::config::{ServerConfig, StoreConfig};
use crate::store::mongodb::{MongoReleases, MongoStore};
use crate::store::{Kind, MigrationStore, sqlite::SqliteStore};

/// Records copied per round trip.
const PAGE: usize = 500;

/// `pdome-admin store …`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy everything from this server's store to another and verify the copy.
    ///
    /// The site's current release goes with it: into the database when
    /// the target is MongoDB, into this host's release folder when it is
    /// SQLite. Stop penguindome-server first: what it writes during the
    /// copy would not be copied. Then point server.toml's [store] at the
    /// target.
    Migrate {
        /// The target: mongodb://… or mongodb+srv://… (database from the
        /// path, default penguindome), or sqlite:/path/to/file.db.
        #[arg(long)]
        to: String,
        /// Copy into a target that holds data, emptying it first.
        #[arg(long)]
        force: bool,
    },
}

/// Opens a store from a migration URI.
pub async fn open_target(uri: &str) -> anyhow::Result<Arc<dyn MigrationStore>> {
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        return Ok(Arc::new(MongoStore::connect_uri(uri, None).await?));
    }
    if let Some(path) = uri.strip_prefix("sqlite:") {
        let path = PathBuf::from(path.trim_start_matches("//"));
        if path.as_os_str().is_empty() {
            bail!("{uri:?} names no file; use sqlite:/path/to/file.db");
        }
        return Ok(Arc::new(SqliteStore::open(&path)?));
    }
    bail!(
        "{uri:?} is not a store: use mongodb://HOST/DATABASE, mongodb+srv://… or sqlite:/path/to/file.db"
    )
}

/// What a copy moved, by kind.
pub type Counts = Vec<(Kind, u64)>;

/// Copies every record; `progress` hears (kind, done, total) as it goes.
pub async fn copy(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
    mut progress: impl FnMut(Kind, u64, u64),
) -> anyhow::Result<Counts> {
    let mut counts = Vec::new();
    for kind in Kind::ALL {
        let total = source.count(kind).await?;
        let mut done = 0u64;
        let mut after = None;
        progress(kind, 0, total);
        loop {
            let page = source.export(kind, after.clone(), PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            done += page.len() as u64;
            target
                .import(page.into_iter().map(|(_, r)| r).collect())
                .await
                .with_context(|| format!("cannot write {} to the target", kind.name()))?;
            progress(kind, done, total);
        }
        counts.push((kind, done));
    }
    Ok(counts)
}

/// Checks that both stores hold the same records: equal counts, and equal
/// per-record checksums.
pub async fn verify(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
) -> anyhow::Result<()> {
    for kind in Kind::ALL {
        let a = checksums(source, kind).await?;
        let b = checksums(target, kind).await?;
        if a.len() != b.len() {
            bail!(
                "the copy holds {} {} where the source holds {}",
                b.len(),
                kind.name(),
                a.len()
            );
        }
        if a != b {
            let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            bail!(
                "{differing} of {} {} differ between the source and the copy",
                a.len(),
                kind.name()
            );
        }
    }
    Ok(())
}

async fn checksums(store: &dyn MigrationStore, kind: Kind) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.export(kind, after.clone(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        out.extend(page.iter().map(|(_, r)| r.checksum()));
    }
    // Stores may order records differently; compare them as multisets.
    out.sort();
    Ok(out)
}

/// True when the store holds nothing.
async fn is_empty(store: &dyn MigrationStore) -> anyhow::Result<bool> {
    for kind in Kind::ALL {
        if store.count(kind).await? > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs `pdome-admin store migrate`: the records, then the site's
/// current release, which moves with them (the embedded store's servers
/// serve it from the data directory, MongoDB's from the database).
pub async fn migrate(
    config: &ServerConfig,
    source: &dyn MigrationStore,
    to: &str,
    force: bool,
) -> anyhow::Result<()> {
    let target = open_target(to).await?;
    let result = migrate_into(source, target.as_ref(), to, force).await;
    let backend = target.backend();
    target.close().await;
    result?;
    carry_release(config, backend, to).await
}

/// Makes the release the site serves now the one it serves after the
/// switch: into the target database, or out of the source database into
/// this host's release folder.
async fn carry_release(config: &ServerConfig, target: &str, to: &str) -> anyhow::Result<()> {
    let repo = crate::release::source::site_repository(config);
    let _lock = repo.lock()?;
    match (&config.store, target) {
        (StoreConfig::Sqlite { .. }, "mongodb") => {
            let Some(serial) = repo.current_serial() else {
                return Ok(());
            };
            let db = MongoReleases::connect_uri(to)
                .await
                .context("cannot reach the target's releases")?;
            if let Some(there) = db.pointer().await? {
                println!(
                    "The target already serves release {}; release {serial} of this host was not copied.",
                    there.serial
                );
                return Ok(());
            }
            Shared::mirror(db, &repo)
                .await?
                .share(&repo, serial, 1)
                .await?;
            println!("Copied release {serial} into the target; its servers serve it.");
        }
        (StoreConfig::Mongodb(_), "sqlite") => {
            let Some(db) = super::shared_release::connect(config).await? else {
                return Ok(());
            };
            if db.pointer().await?.is_none() {
                return Ok(());
            }
            Shared::mirror(db, &repo).await?;
            if let Some(serial) = repo.current_serial() {
                println!(
                    "Release {serial} is in {}; the server serves it from there.",
                    repo.root().display()
                );
            }
        }
        _ => {}
    }
    Ok(())
}

async fn migrate_into(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
    to: &str,
    force: bool,
) -> anyhow::Result<()> {
    target
        .health()
        .await
        .with_context(|| format!("the target {to} does not answer"))?;
    if !is_empty(target).await? {
        if !force {
            bail!("the target {to} already holds data; pass --force to empty it and copy anyway");
        }
        eprintln!("emptying the target {to} (--force)");
        target.clear().await?;
    }
    eprintln!(
        "copying from the {} store to {to}; penguindome-server should be stopped meanwhile",
        source.backend()
    );
    let mut bars: HashMap<Kind, indicatif::ProgressBar> = HashMap::new();
    let counts = copy(source, target, |kind, done, total| {
        let bar = bars
            .entry(kind)
            .or_insert_with(|| super::progress::bar(total, kind.name(), false));
        bar.set_position(done);
        if done == total {
            bar.finish();
        }
    })
    .await?;
    let checking = super::progress::spinner("verifying counts and per-record checksums", false);
    verify(source, target).await?;
    checking.finish_and_clear();
    let summary: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    println!("Copied and verified: {}.", summary.join(", "));
    match target.backend() {
        "mongodb" => println!(
            "To switch, put this in server.toml and restart penguindome-server:\n\n[store]\nbackend = \"mongodb\"\nuri = \"{to}\""
        ),
        _ => println!(
            "To switch, put this in server.toml and restart penguindome-server:\n\n[store]\nbackend = \"sqlite\"\npath = \"{}\"",
            to.trim_start_matches("sqlite:").trim_start_matches("//")
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::conformance::populate;
    use crate::store::mongodb::tests::{fresh_store, test_uri};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_mongodb_and_back_loses_nothing() {
        let Some(uri) = test_uri() else { return };
        let dir = tempfile::tempdir().unwrap();
        let source: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("a.db")).unwrap());
        populate(&source).await;

        let mongo = Arc::new(fresh_store(&uri).await);
        let target: Arc<dyn Store> = mongo.clone();
        let mut seen = Vec::new();
        let counts = copy(source.as_ref(), target.as_ref(), |k, done, total| {
            seen.push((k, done, total))
        })
        .await
        .unwrap();
        let count = |k: Kind| counts.iter().find(|(x, _)| *x == k).unwrap().1;
        assert_eq!(count(Kind::Clients), 4);
        assert_eq!(count(Kind::Keys), 4);
        assert_eq!(count(Kind::Tokens), 2);
        assert_eq!(count(Kind::Actions), 1);
        assert_eq!(count(Kind::Issues), 2);
        assert_eq!(count(Kind::Parameters), 2);
        assert!(count(Kind::Audit) >= 3 * 4, "every change is copied");
        assert!(count(Kind::Nonces) >= 3 * 6);
        assert!(
            seen.contains(&(Kind::Audit, count(Kind::Audit), count(Kind::Audit))),
            "progress reaches the total"
        );
        verify(source.as_ref(), target.as_ref()).await.unwrap();

        // What the server shows is the same on both.
        for c in source.list_clients().await.unwrap() {
            assert_eq!(
                source.get_client(&c.client_id).await.unwrap(),
                target.get_client(&c.client_id).await.unwrap()
            );
            assert_eq!(
                source.audit_trail(&c.client_id, 100).await.unwrap(),
                target.audit_trail(&c.client_id, 100).await.unwrap()
            );
            let of = |id: &str| crate::store::ActionFilter {
                client_id: Some(id.to_string()),
                ..Default::default()
            };
            assert_eq!(
                source.actions(of(&c.client_id)).await.unwrap(),
                target.actions(of(&c.client_id)).await.unwrap()
            );
        }
        let now = chrono::Utc::now();
        assert_eq!(
            source.pending_patch_counts(now).await.unwrap(),
            target.pending_patch_counts(now).await.unwrap()
        );

        // A non-empty target is refused unless forced.
        let e = migrate_into(source.as_ref(), target.as_ref(), "mongodb://test", false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        migrate_into(source.as_ref(), target.as_ref(), "mongodb://test", true)
            .await
            .unwrap();

        // And back, into a new SQLite file.
        let back: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        copy(target.as_ref(), back.as_ref(), |_, _, _| {})
            .await
            .unwrap();
        verify(source.as_ref(), back.as_ref()).await.unwrap();
        for c in source.list_clients().await.unwrap() {
            assert_eq!(
                source.audit_trail(&c.client_id, 100).await.unwrap(),
                back.audit_trail(&c.client_id, 100).await.unwrap()
            );
            // Agents keep their repository credentials across a move.
            assert_eq!(
                source.repo_credential(&c.client_id).await.unwrap(),
                back.repo_credential(&c.client_id).await.unwrap()
            );
        }
        let tokens = source.tokens().await.unwrap();
        assert_eq!(tokens, target.tokens().await.unwrap());
        assert_eq!(tokens, back.tokens().await.unwrap());
        assert!(tokens.iter().any(|t| t.uses == 1 && t.max_uses == 2));

        // A damaged copy is noticed.
        back.clear().await.unwrap();
        let e = verify(source.as_ref(), back.as_ref()).await.unwrap_err();
        assert!(e.to_string().contains("the copy holds 0 clients"), "{e}");

        mongo.drop_database().await.unwrap();
        for s in [source, target, back] {
            s.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn target_uris_are_checked() {
        let e = open_target("postgres://x").await.err().unwrap();
        assert!(e.to_string().contains("sqlite:/path"), "{e}");
        assert!(open_target("sqlite:").await.is_err());
    }
}
