//! `pdome-admin password` and `pdome-admin access`: the rules in
//! access.toml for the repositories and release downloads.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use ipnet::IpNet;

use super::prompt::Prompter;
use crate::access_rules::{ACCESS_FILE, AccessRules, ENDPOINTS, REPO_ENDPOINTS, hash_password};

/// The user name agents fetch the repositories with (init makes it).
pub const AGENT_REPO_USER: &str = "agent";
/// Where init keeps that user's password for site packages (root only).
pub const AGENT_REPO_PASSWORD_FILE: &str = "repo-password";

/// `pdome-admin password`.
#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Set a password: server-wide user, or with --endpoint that endpoint's own user.
    Set {
        /// User name.
        user: String,
        /// repo or download_release; server-wide when absent.
        #[arg(long)]
        endpoint: Option<String>,
        /// Read the password from standard input instead of asking twice.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (server-wide, or an endpoint's own with --endpoint).
    Remove {
        /// User name.
        user: String,
        /// repo or download_release.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// List users, groups and each endpoint's rules (never hashes).
    List,
}

/// `pdome-admin access`.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Let an address range in without a password (IPv4 or IPv6 CIDR).
    AllowIp {
        /// repo, download_release or metrics (shell takes users only).
        endpoint: String,
        /// e.g. 10.0.0.0/8 or 2001:db8::/32.
        range: IpNet,
    },
    /// Stop letting an address range in.
    RemoveIp {
        /// repo, download_release or metrics.
        endpoint: String,
        /// The range as it was added.
        range: IpNet,
    },
    /// Let a server-wide user, or a group written @name, use an endpoint.
    Grant {
        /// repo, download_release, metrics, or shell (root shells on clients).
        endpoint: String,
        /// user or @group.
        who: String,
    },
    /// Withdraw a grant.
    Revoke {
        /// repo, download_release, metrics or shell.
        endpoint: String,
        /// user or @group.
        who: String,
    },
    /// Set a group's members (server-wide users).
    Group {
        /// Group name.
        group: String,
        /// Its members; none removes the group.
        members: Vec<String>,
    },
}

fn check_endpoint(e: &str) -> anyhow::Result<()> {
    if !ENDPOINTS.contains(&e) {
        bail!(
            "unknown endpoint {e:?}: use one of {}",
            ENDPOINTS.join(", ")
        );
    }
    Ok(())
}

fn edit(
    config_dir: &Path,
    change: impl FnOnce(&mut AccessRules) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let path = config_dir.join(ACCESS_FILE);
    let mut rules = AccessRules::load(&path)?;
    change(&mut rules)?;
    rules.validate().map_err(anyhow::Error::msg)?;
    rules.save(&path)?;
    share(config_dir, &path)
}

/// Keeps access.toml readable by the server's user.
fn share(config_dir: &Path, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Some((_, gid)) = super::account::service_account()?
        && std::fs::metadata(config_dir)?.gid() == gid.as_raw()
    {
        super::account::share_with_group(path, gid, 0o640)?;
    }
    Ok(())
}

/// Runs `pdome-admin password`.
pub fn password(config_dir: &Path, cmd: PasswordCommand) -> anyhow::Result<()> {
    match cmd {
        PasswordCommand::Set {
            user,
            endpoint,
            password_stdin,
        } => {
            if let Some(e) = &endpoint {
                check_endpoint(e)?;
            }
            if user.is_empty() || user.contains(':') {
                bail!("a user name must be non-empty and without ':' (HTTP Basic auth)");
            }
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                let mut p = Prompter::stdio();
                let first = p.secret(&format!("New password for {user}"))?;
                if p.secret("Again")? != first {
                    bail!("the passwords differ; nothing changed");
                }
                first
            };
            if password.len() < 8 {
                bail!("use a password of at least 8 characters");
            }
            let hash = hash_password(&password)?;
            edit(config_dir, |r| {
                match &endpoint {
                    Some(e) => {
                        r.endpoint
                            .entry(e.clone())
                            .or_default()
                            .passwords
                            .insert(user.clone(), hash);
                    }
                    None => {
                        r.users.insert(user.clone(), hash);
                    }
                }
                Ok(())
            })?;
            match endpoint {
                Some(e) => println!("Password set for {user} on {e}."),
                None => println!(
                    "Password set for server-wide user {user}; grant it endpoints with `pdome-admin access grant`."
                ),
            }
            Ok(())
        }
        PasswordCommand::Remove { user, endpoint } => edit(config_dir, |r| {
            let removed = match &endpoint {
                Some(e) => r
                    .endpoint
                    .get_mut(e)
                    .and_then(|rules| rules.passwords.remove(&user))
                    .is_some(),
                None => {
                    for rules in r.endpoint.values_mut() {
                        rules.users.retain(|u| u != &user);
                    }
                    for members in r.groups.values_mut() {
                        members.retain(|u| u != &user);
                    }
                    r.users.remove(&user).is_some()
                }
            };
            if !removed {
                bail!("no such user {user}");
            }
            println!("Removed {user}.");
            Ok(())
        }),
        PasswordCommand::List => {
            let rules = AccessRules::load(&config_dir.join(ACCESS_FILE))?;
            println!("server-wide users: {}", join(rules.users.keys()));
            for (g, m) in &rules.groups {
                println!("group {g}: {}", join(m.iter()));
            }
            for e in ENDPOINTS {
                match rules.endpoint.get(*e) {
                    None => println!("{e}: nobody (no rules)"),
                    Some(r) => println!(
                        "{e}: addresses {}; own users {}; users {}; groups {}",
                        join(r.ip_ranges.iter()),
                        join(r.passwords.keys()),
                        join(r.users.iter()),
                        join(r.groups.iter())
                    ),
                }
            }
            Ok(())
        }
    }
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = items.map(|i| i.to_string()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// Runs `pdome-admin access`.
pub fn access(config_dir: &Path, cmd: AccessCommand) -> anyhow::Result<()> {
    edit(config_dir, |r| {
        match cmd {
            AccessCommand::AllowIp { endpoint, range } => {
                check_endpoint(&endpoint)?;
                if endpoint == crate::shell::ENDPOINT {
                    bail!(
                        "remote shells always need a user and password; grant users with \
                         `pdome-admin access grant shell USER`"
                    );
                }
                if crate::web::PAGE_GROUPS.contains(&endpoint.as_str()) {
                    bail!(
                        "the web view always needs a login; grant users with \
                         `pdome-admin access grant {endpoint} USER`"
                    );
                }
                let rules = r.endpoint.entry(endpoint).or_default();
                if !rules.ip_ranges.contains(&range) {
                    rules.ip_ranges.push(range);
                }
            }
            AccessCommand::RemoveIp { endpoint, range } => {
                check_endpoint(&endpoint)?;
                let rules = r.endpoint.entry(endpoint).or_default();
                let before = rules.ip_ranges.len();
                rules.ip_ranges.retain(|n| n != &range);
                if rules.ip_ranges.len() == before {
                    bail!("{range} was not allowed");
                }
            }
            AccessCommand::Grant { endpoint, who } => {
                check_endpoint(&endpoint)?;
                let rules = r.endpoint.entry(endpoint).or_default();
                let list = match who.strip_prefix('@') {
                    Some(g) => (&mut rules.groups, g.to_string()),
                    None => (&mut rules.users, who.clone()),
                };
                if !list.0.contains(&list.1) {
                    list.0.push(list.1);
                }
            }
            AccessCommand::Revoke { endpoint, who } => {
                check_endpoint(&endpoint)?;
                let rules = r.endpoint.entry(endpoint).or_default();
                match who.strip_prefix('@') {
                    Some(g) => rules.groups.retain(|x| x != g),
                    None => rules.users.retain(|x| x != &who),
                }
            }
            AccessCommand::Group { group, members } => {
                if members.is_empty() {
                    r.groups.remove(&group);
                    for rules in r.endpoint.values_mut() {
                        rules.groups.retain(|g| g != &group);
                    }
                } else {
                    r.groups.insert(group, members);
                }
            }
        }
        Ok(())
    })?;
    println!("Access rules updated; the server applies them within a second.");
    Ok(())
}

/// Makes the agents' repository user with a random password: its hash
/// goes to access.toml, the password to a root-only file that releases
/// put into site packages.
pub fn create_agent_user(config_dir: &Path) -> anyhow::Result<()> {
    use base64::Engine;
    let mut raw = [0u8; 24];
    penguindome_protocol::envelope::random_bytes(&mut raw);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_password(&password)?;
    edit(config_dir, |r| {
        for e in REPO_ENDPOINTS {
            r.endpoint
                .entry(e.to_string())
                .or_default()
                .passwords
                .insert(AGENT_REPO_USER.to_string(), hash.clone());
        }
        Ok(())
    })?;
    crate::secrets::write_secret(
        &config_dir.join(AGENT_REPO_PASSWORD_FILE),
        password.as_bytes(),
    )
}
