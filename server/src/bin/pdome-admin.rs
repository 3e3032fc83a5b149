//! pdome-admin: set up and administer a PenguinDome server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use penguindome_server::admin::{
    access, account, clients, command, configure, init, issues, keys, listeners, packages, patch,
    release, secrets, shell, store, tls, tokens, wipe,
};
use penguindome_server::config::{DEFAULT_CONFIG_DIR, ServerConfig};

#[derive(Parser)]
#[command(
    name = "pdome-admin",
    version,
    about = "Set up and administer a PenguinDome server"
)]
struct Cli {
    /// Directory holding server.toml.
    #[arg(long, global = true, env = "PENGUINDOME_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand)]
enum Sub {
    /// Create a new server: configuration, keys, certificate, agent.toml.
    Init(Box<init::InitArgs>),
    /// The issues audit, and the issues it opens: audit, list, checks, open,
    /// close, snooze, unsnooze, suspend, unsuspend.
    #[command(subcommand)]
    Issues(issues::IssuesCommand),
    /// Clients: list, show, history, revoke, reenroll, param.
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// Files written or deleted on clients: add, rm, list, cancel.
    #[command(subcommand)]
    Patch(patch::PatchCommand),
    /// Scripts run once on clients: run, list, show, cancel.
    #[command(subcommand)]
    Command(command::CommandCommand),
    /// End every human account on a lost machine.
    Wipe(wipe::WipeArgs),
    /// A root shell on a client, relayed by the server and sealed end to
    /// end; exits with the remote shell's status (`~.` ends it).
    Shell(shell::ShellArgs),
    /// Enrollment tokens for new machines: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// The server's sockets in server.toml: list, add, remove, set; applied
    /// by `systemctl reload penguindome-server`.
    #[command(subcommand)]
    Listeners(listeners::ListenersCommand),
    /// Renew a listener's self-signed certificate without stranding agents:
    /// renew, status, renew --finish.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Rotate the server's signing key without stranding agents: rotate,
    /// status, rotate --finish.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Report fields only a quorum of administrators can read: enable,
    /// select, deselect, show, disable, access.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// The database: migrate to another store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Build the site's agent packages and publish them as signed apt, dnf
    /// and pacman repositories.
    Release(release::ReleaseArgs),
    /// Build the server and generic agent packages from compiled binaries.
    BuildPackages(packages::PackagesArgs),
    /// Passwords for the repositories and release downloads.
    #[command(subcommand)]
    Password(access::PasswordCommand),
    /// Address ranges, users and groups allowed to the repositories and
    /// release downloads.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Write this program's man pages and shell completions below DIR
    /// (what the package builders run).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write man/, bash/, zsh/ and fish/.
        dir: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Sub::Shell(args) = &cli.command
        && args.command.is_none()
    {
        // Exits at once: a read of the terminal may still be pending, and
        // the runtime would wait for it.
        let code = match shell::run(&cli.config_dir, args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("\rpdome-admin: {e:#}");
                shell::NO_STATUS
            }
        };
        std::process::exit(code);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdome-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server's store, opened as the data directory's owner.
async fn open_store(
    config_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn penguindome_server::store::Store>> {
    let config = ServerConfig::load(config_dir)?;
    account::become_data_owner(&config.server.data_dir)?;
    penguindome_server::store::open(&config)
        .await
        .context("pdome-admin reads the server's store; run it on the server host")
}

/// `pdome-admin shell log …` (sessions themselves run from `main`).
async fn shell_log(config_dir: &Path, args: shell::ShellArgs) -> anyhow::Result<()> {
    let Some(shell::ShellCommand::Log {
        host,
        session,
        json,
        shares,
        identity,
    }) = args.command
    else {
        unreachable!("sessions are handled in main")
    };
    let config = ServerConfig::load(config_dir)?;
    let request = shell::log::LogRequest {
        host: &host,
        session: session.as_deref(),
        json,
        shares: &shares,
        identity: identity.as_deref(),
    };
    shell::log::run(&config, request, || open_store(config_dir)).await
}

/// `pdome-admin tls …`.
async fn tls_command(config_dir: &Path, cmd: tls::TlsCommand) -> anyhow::Result<()> {
    let config = ServerConfig::load(config_dir)?;
    match cmd {
        tls::TlsCommand::Renew {
            listener,
            finish,
            force,
        } => tls::renew(&config, listener.as_deref(), finish, force),
        tls::TlsCommand::Status { listener, json } => {
            let store = open_store(config_dir).await?;
            let result = tls::status(&config, store.as_ref(), listener.as_deref(), json).await;
            store.close().await;
            result
        }
    }
}

/// `pdome-admin keys …`.
async fn keys_command(config_dir: &Path, cmd: keys::KeysCommand) -> anyhow::Result<()> {
    let config = ServerConfig::load(config_dir)?;
    match cmd {
        keys::KeysCommand::Rotate { finish } => keys::rotate(&config, finish),
        keys::KeysCommand::Status { json } => {
            // The key files are root's; the store is read as its owner.
            let files = keys::read_for_status(&config)?;
            let store = open_store(config_dir).await?;
            let result = keys::status(&config, store.as_ref(), files, json).await;
            store.close().await;
            result
        }
    }
}

/// `pdome-admin secrets …`.
async fn secrets_command(config_dir: &Path, cmd: secrets::SecretsCommand) -> anyhow::Result<()> {
    let config = ServerConfig::load(config_dir)?;
    // Shares and keys are read, and key files written, as root, before the
    // switch to the data directory's owner that opening the store makes.
    let old = match &cmd {
        secrets::SecretsCommand::Enable {
            replace: true,
            old_shares,
            identity,
            ..
        } => {
            let old = secrets::unlock(&config, old_shares, identity.as_deref())?;
            secrets::stage_replacement(&config, &old, &cmd)?;
            Some(old)
        }
        secrets::SecretsCommand::Reencrypt { shares, identity } => {
            Some(secrets::unlock(&config, shares, identity.as_deref())?)
        }
        _ => None,
    };
    if let Some(old) = old {
        let store = open_store(config_dir).await?;
        let result = secrets::reencrypt(&config, store.as_ref(), old).await;
        store.close().await;
        return result;
    }
    if let secrets::SecretsCommand::Encrypt { json } = cmd {
        let store = open_store(config_dir).await?;
        let result = secrets::encrypt(&config, store.as_ref(), json).await;
        store.close().await;
        return result;
    }
    let secrets::SecretsCommand::Access {
        shares, identity, ..
    } = &cmd
    else {
        return secrets::run(&config, cmd);
    };
    // Shares and keys are read as root, before the switch to the data
    // directory's owner.
    let unlocked = secrets::unlock(&config, shares, identity.as_deref())?;
    let operator = account::operator();
    let store = open_store(config_dir).await?;
    let result = secrets::access(&config, store.as_ref(), &unlocked, &cmd, &operator).await;
    store.close().await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Sub::Init(args) => init::run(&cli.config_dir, *args).await,
        Sub::Release(args) => release::run(&cli.config_dir, args).await,
        Sub::BuildPackages(args) => packages::run(args),
        Sub::Password(cmd) => access::password(&cli.config_dir, cmd),
        Sub::Access(cmd) => access::access(&cli.config_dir, cmd),
        Sub::GenerateDocs { dir } => Ok(penguindome_protocol::cli_docs::write(
            Cli::command(),
            &dir,
            penguindome_server::man::ADMIN,
        )?),
        Sub::Listeners(cmd) => listeners::run(&cli.config_dir, cmd),
        Sub::Tls(cmd) => tls_command(&cli.config_dir, cmd).await,
        Sub::Keys(cmd) => keys_command(&cli.config_dir, cmd).await,
        Sub::Secrets(cmd) => secrets_command(&cli.config_dir, cmd).await,
        Sub::Issues(cmd) => {
            let config = ServerConfig::load(&cli.config_dir)?;
            account::become_data_owner(&config.server.data_dir)?;
            let store = penguindome_server::store::open(&config)
                .await
                .context("pdome-admin reads the server's store; run it on the server host")?;
            // Stores keep milliseconds; so does the audit's clock.
            let now = chrono::Utc::now();
            let now =
                chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
            let result = issues::run(&config, store.as_ref(), cmd, now).await;
            store.close().await;
            result
        }
        Sub::Clients(clients::ClientsCommand::Configure(args)) => {
            let config = ServerConfig::load(&cli.config_dir)?;
            let task = configure::task(&config, &args)?;
            let operator = account::operator();
            let store = open_store(&cli.config_dir).await?;
            let result = configure::queue(store.as_ref(), &args, task, &operator).await;
            store.close().await;
            result
        }
        Sub::Clients(cmd) => {
            let config = ServerConfig::load(&cli.config_dir)?;
            account::become_data_owner(&config.server.data_dir)?;
            let store = penguindome_server::store::open(&config)
                .await
                .context("pdome-admin reads the server's store; run it on the server host")?;
            let result = clients::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        Sub::Tokens(cmd) => {
            let config = ServerConfig::load(&cli.config_dir)?;
            // The pins come from files only root reads, before the switch
            // to the data directory's owner.
            let pins = tokens::pins_for(&cli.config_dir, &cmd)?;
            let operator = account::operator();
            let store = open_store(&cli.config_dir).await?;
            let result = tokens::run(&config, pins, store.as_ref(), cmd, &operator).await;
            store.close().await;
            result
        }
        Sub::Patch(cmd) => {
            let operator = account::operator();
            let store = open_store(&cli.config_dir).await?;
            let result = patch::run(store.as_ref(), cmd, &operator).await;
            store.close().await;
            result
        }
        Sub::Shell(args) => shell_log(&cli.config_dir, args).await,
        Sub::Wipe(args) => {
            let operator = account::operator();
            let store = open_store(&cli.config_dir).await?;
            let result = wipe::run(store.as_ref(), args, &operator).await;
            store.close().await;
            result
        }
        Sub::Command(cmd) => {
            let operator = account::operator();
            let store = open_store(&cli.config_dir).await?;
            let result = command::run(store.as_ref(), cmd, &operator).await;
            store.close().await;
            result
        }
        Sub::Store(store::StoreCommand::Migrate { to, force }) => {
            let config = ServerConfig::load(&cli.config_dir)?;
            account::become_data_owner(&config.server.data_dir)?;
            let source = penguindome_server::store::open(&config).await?;
            let result = store::migrate(&config, source.as_ref(), &to, force).await;
            source.close().await;
            result
        }
    }
}
