//! `pdome-admin build-packages`: the server and generic agent packages
//! for every family, from compiled binaries (scripts/build-packages).

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use penguindome_protocol::keys::SecretKey;

use crate::release::docs::{self, Ask};
use crate::release::{Family, PackageSpec, build_all, contents};

/// Options of `pdome-admin build-packages`.
#[derive(Debug, Args)]
pub struct PackagesArgs {
    /// Folder with penguindome-agent, penguindome-server and pdome-admin.
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Where to write the packages.
    #[arg(long)]
    pub out: PathBuf,
    /// Package revision.
    #[arg(long, default_value_t = 1)]
    pub release: u64,
    /// Sign rpm and pacman packages with this OpenPGP secret key (armored).
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Package formats, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["deb", "rpm", "arch"])]
    pub formats: Vec<Family>,
}

/// Runs `pdome-admin build-packages`.
pub fn run(args: PackagesArgs) -> anyhow::Result<()> {
    let read = |name: &str| {
        let p = args.bin_dir.join(name);
        std::fs::read(&p).with_context(|| {
            format!(
                "cannot read {}; build it first (cargo build --release)",
                p.display()
            )
        })
    };
    let agent_bin = read("penguindome-agent")?;
    let server_bin = read("penguindome-server")?;
    let admin_bin = read("pdome-admin")?;
    let key = match &args.signing_key {
        Some(p) => SecretKey::from_bytes(&crate::secrets::read_secret(p)?)?,
        // Packages installed from a file are checked by the admin, not by
        // a repository key; a throwaway key keeps rpm and pacman happy.
        None => SecretKey::generate("PenguinDome package build <penguindome@localhost>")?,
    };
    let version = env!("CARGO_PKG_VERSION");
    let now = SystemTime::now();
    let agent_docs = docs::generate(&args.bin_dir.join("penguindome-agent"), Ask::Subcommand)?;
    let mut server_docs = docs::generate(&args.bin_dir.join("penguindome-server"), Ask::Flag)?;
    server_docs.extend(docs::generate(
        &args.bin_dir.join("pdome-admin"),
        Ask::Subcommand,
    )?);
    let agent = contents::agent(&agent_bin, &agent_docs, version, args.release, now)?;
    let server = contents::server(
        &server_bin,
        &admin_bin,
        &agent_bin,
        &server_docs,
        version,
        args.release,
        now,
    )?;
    let specs: Vec<(&PackageSpec, Family)> = args
        .formats
        .iter()
        .flat_map(|f| [(&agent, *f), (&server, *f)])
        .collect();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for b in build_all(&specs, &key)? {
        let path = args.out.join(&b.record.file_name);
        std::fs::write(&path, &b.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(sig) = &b.signature {
            std::fs::write(
                path.with_file_name(format!("{}.sig", b.record.file_name)),
                sig,
            )?;
        }
        println!("{}  {:.2} MB", path.display(), b.bytes.len() as f64 / 1e6);
    }
    Ok(())
}
