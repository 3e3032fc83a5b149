//! `pdome-admin release`: build the site's agent packages for every family
//! and publish them as signed repositories.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use penguindome_protocol::agent_config::AgentConfig;
use penguindome_protocol::{SecretKey, armored_keyring};

use super::shared_release::{self, Shared};
use crate::config::{AGENT_CONFIG_FILE, ServerConfig};
use crate::release::bootstrap::{self, BootstrapSite};
use crate::release::contents::{self, Site};
use crate::release::docs;
use crate::release::publish::Repository;
use crate::release::{DEFAULT_AGENT_BINARY, Family, PackageSpec, build_all};

/// Options of `pdome-admin release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The agent binary to package (the server package installs it here).
    #[arg(long, default_value = DEFAULT_AGENT_BINARY)]
    pub agent_binary: PathBuf,
    /// A different agent binary for the pacman package (built against
    /// Arch's libalpm); the generic one is used when absent.
    #[arg(long)]
    pub agent_binary_arch: Option<PathBuf>,
    /// The agent's version (default: this pdome-admin's, which the server
    /// package's agent binary matches).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub agent_version: String,
    /// How many releases the repositories keep packages of.
    #[arg(long, default_value_t = 3)]
    pub keep: u64,
    /// Package formats to publish, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["deb", "rpm", "arch"])]
    pub formats: Vec<Family>,
}

/// The site's view of itself, from server.toml, agent.toml and its key.
pub fn site(config: &ServerConfig, key: &SecretKey) -> anyhow::Result<Site> {
    let agent_path = config.config_dir.join(AGENT_CONFIG_FILE);
    let agent_toml = std::fs::read_to_string(&agent_path).with_context(|| {
        format!(
            "cannot read {}, which `pdome-admin init` writes",
            agent_path.display()
        )
    })?;
    let agent = AgentConfig::parse(&agent_toml, &agent_path)?;
    let url =
        url::Url::parse(&config.server.url).context("server.url in server.toml is not a URL")?;
    let host = url.host_str().context("server.url has no host")?;
    // apt's per-host options name the host without its port.
    let repo_host = host.trim_matches(['[', ']']).to_string();
    // The site package carries no secret: agents enroll with tokens and
    // fetch with credentials of their own.
    let trusted = crate::signing::trusted_keys(config, key)?;
    let mut public = agent.clone();
    public.enrollment_credential.clear();
    Ok(Site {
        agent_toml: public.to_toml()?,
        repo_url: format!(
            "{}/penguindome/v1/repo",
            config.server.url.trim_end_matches('/')
        ),
        repo_host,
        public_key_armored: key.public().to_armored()?,
        public_key_fingerprint: key.fingerprint().to_string(),
        keyring_armored: armored_keyring(&trusted)?,
        keyring_fingerprints: trusted
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect(),
        ca_pem: agent.ca_certificate,
        sealing_json: crate::sealing::read(&crate::sealing::path(config))?
            .and_then(|f| f.policy())
            .map(|p| serde_json::to_string_pretty(&p))
            .transpose()?,
    })
}

/// What the bootstrap scripts are made from (the same as the site package).
pub fn bootstrap_site(config: &ServerConfig, site: &Site) -> BootstrapSite {
    BootstrapSite {
        url: config.server.url.trim_end_matches('/').to_string(),
        host: site.repo_host.clone(),
        ca_pem: site.ca_pem.clone(),
        key_armored: site.public_key_armored.clone(),
        key_fingerprint: site.public_key_fingerprint.clone(),
    }
}

/// The bootstrap scripts, as published beside the repositories.
pub fn bootstrap_files(b: &BootstrapSite, formats: &[Family]) -> Vec<(String, String)> {
    formats
        .iter()
        .map(|f| (bootstrap::published_path(*f), bootstrap::script(b, *f)))
        .collect()
}

/// Warns while the site still accepts a site-wide secret.
fn deprecation_warnings(config: &ServerConfig) {
    if config.shared_credential_sha256().is_some() {
        eprintln!(
            "warning: server.toml still accepts the site-wide enrollment credential \
             (enrollment_credential_sha256). It is deprecated: enroll new machines with \
             `pdome-admin tokens create` and the bootstrap it prints, then remove that line \
             and restart the server."
        );
    }
    let password_file = config
        .config_dir
        .join(super::access::AGENT_REPO_PASSWORD_FILE);
    if password_file.exists() {
        eprintln!(
            "warning: the shared repository user `{}` ({}) is deprecated: each client now \
             fetches with its own credential. Once every agent runs this release, remove it \
             with `pdome-admin password remove {} --endpoint repo` and delete the file.",
            super::access::AGENT_REPO_USER,
            password_file.display(),
            super::access::AGENT_REPO_USER,
        );
    }
}

fn read_binary(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read the agent binary {}: install penguindome-server (which ships it) or pass --agent-binary",
            path.display()
        )
    })
}

/// Runs `pdome-admin release`.
pub async fn run(config_dir: &Path, args: ReleaseArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let config = ServerConfig::load(config_dir)?;
    let key = crate::serve::load_server_key(&config)?;
    let site = site(&config, &key)?;
    let agent_binary = read_binary(&args.agent_binary)?;
    let arch_binary = args
        .agent_binary_arch
        .as_deref()
        .map(read_binary)
        .transpose()?;
    // The Arch binary may link a libalpm this host lacks; the generic one
    // has the same command line.
    let agent_docs = docs::generate(&args.agent_binary, docs::Ask::Subcommand)?;
    let database = shared_release::connect(&config).await?;
    // Everything only root may read is read; publish as the server's user.
    super::account::become_data_owner(&config.server.data_dir)?;

    let repo = Repository::new(config.server.data_dir.join("repo"))
        .with_apt_validity(config.server.apt_valid_for)
        .with_started_at(started_at);
    let _lock = repo.lock()?;
    let shared = match database {
        Some(db) => Some(Shared::mirror(db, &repo).await?),
        None => None,
    };
    let serial = match &shared {
        Some(s) => s.next_serial(&repo).await?,
        None => repo.next_serial()?,
    };
    let now = SystemTime::now();
    let agent = contents::agent(&agent_binary, &agent_docs, &args.agent_version, serial, now)?;
    let agent_arch = match &arch_binary {
        Some(b) => contents::agent(b, &agent_docs, &args.agent_version, serial, now)?,
        None => agent.clone(),
    };
    let mut sites: Vec<(Family, PackageSpec)> = Vec::new();
    for f in &args.formats {
        sites.push((
            *f,
            contents::site(*f, &site, &args.agent_version, serial, now)?,
        ));
    }
    let mut jobs: Vec<(&PackageSpec, Family)> = Vec::new();
    for (f, s) in &sites {
        jobs.push((
            if *f == Family::Arch {
                &agent_arch
            } else {
                &agent
            },
            *f,
        ));
        jobs.push((s, *f));
    }
    let building = super::progress::spinner(&format!("building {} packages", jobs.len()), false);
    let built = build_all(&jobs, &key)?;
    building.set_message("indexing and signing the repositories");
    let extras = bootstrap_files(&bootstrap_site(&config, &site), &args.formats);
    let published = repo.publish(serial, &built, &key, args.keep, chrono::Utc::now(), &extras)?;
    if let Some(shared) = &shared {
        building.set_message("copying the release into the database");
        shared.share(&repo, serial, args.keep).await?;
    }
    building.finish_and_clear();

    println!(
        "Published release {} ({} packages indexed) in {:.2} s:",
        published.serial,
        published.indexed,
        started.elapsed().as_secs_f64()
    );
    for (name, size) in &published.new_packages {
        println!("  {name:<55} {:>8.2} MB", *size as f64 / 1e6);
    }
    if !published.pruned.is_empty() {
        println!(
            "Removed releases {:?} (keeping {}).",
            published.pruned, args.keep
        );
    }
    println!("Clients install from {}/{{apt,rpm,arch}}", site.repo_url);
    println!(
        "New machines: `pdome-admin tokens create` prints the bootstrap command for each family."
    );
    deprecation_warnings(&config);
    Ok(())
}
