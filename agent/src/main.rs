//! penguindome-agent: the command line. The systemd timer calls `run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use penguindome_agent::collectors::{NoCache, PluginSettings};
use penguindome_agent::host::Host;
use penguindome_agent::repo_keys;
use penguindome_agent::run::{self, Agent, RunOptions, Status};
use penguindome_agent::server_keys::ServerKeys;
use penguindome_agent::state::{StateDir, read_machine_id};
use penguindome_protocol::agent_config::{self, AgentConfig, DEFAULT_PLUGINS_DIR};
use penguindome_protocol::logging::{self, LogTarget};
use penguindome_protocol::token::EnrollmentToken;
use penguindome_protocol::wire::Report;

#[derive(Parser)]
#[command(
    name = "penguindome-agent",
    version,
    about = "Collect this machine's compliance facts and report them to the PenguinDome server"
)]
struct Cli {
    /// The agent configuration.
    #[arg(long, global = true, env = "PENGUINDOME_AGENT_CONFIG", default_value = agent_config::DEFAULT_PATH)]
    config: PathBuf,
    /// The state directory (key, spool, stamps).
    #[arg(long, global = true, env = "PENGUINDOME_STATE_DIR", default_value = agent_config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Read the machine id from this file instead of the configured one.
    #[arg(long, global = true)]
    machine_id_file: Option<PathBuf>,
    /// Where the package managers' configuration is (the repository
    /// credential goes below it); another root is for tests and chroots.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "PENGUINDOME_PACKAGE_ROOT",
        default_value = "/"
    )]
    package_root: PathBuf,
    /// Log level (default: the configured one for run, warn otherwise).
    #[arg(long, global = true)]
    log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll if needed, check for updates, collect and submit when due.
    Run {
        /// Collect now, whatever the collect interval says.
        #[arg(long)]
        force_collect: bool,
        /// Submit waiting reports now, whatever the submit interval says.
        #[arg(long)]
        force_submit: bool,
    },
    /// Print what would be submitted, without submitting.
    Collect {
        /// Only this collector.
        #[arg(long)]
        plugin: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print wall and CPU time, peak memory and programs run to stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Upgrade the penguindome packages from the site's repository (what
    /// penguindome-upgrade.service runs when a newer release is published).
    Upgrade,
    /// Enroll this machine with a token from `pdome-admin tokens create`
    /// (agent.toml comes from the site package the bootstrap installs).
    Enroll {
        /// The server URL, as agent.toml names it.
        url: String,
        /// The token, or `-` to read it from standard input (keeps it out
        /// of `ps` and shell history).
        token: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show identity, server, last collect and submit, spool and last error.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Perform one action read from stdin and print its outcome (what the
    /// transient unit `run` starts for each action runs).
    #[command(hide = true)]
    Act,
    /// Run one remote shell session from its request file (what the
    /// transient unit `run` starts for a shell action runs).
    #[command(hide = true)]
    ShellSession {
        /// The request the run wrote.
        request: PathBuf,
    },
    /// Write this program's man pages and shell completions below DIR
    /// (what the package builders run).
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write man/, bash/, zsh/ and fish/.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("penguindome-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_agent(cli: &Cli) -> anyhow::Result<Agent> {
    let mut config = AgentConfig::load(&cli.config)?;
    let id_file = cli
        .machine_id_file
        .clone()
        .unwrap_or_else(|| config.machine_id_file.clone());
    let machine_id = read_machine_id(&id_file)?;
    let state = StateDir::open(&cli.state_dir)?;
    let moved = penguindome_agent::moved::apply(&mut config, state.root());
    Ok(Agent {
        config,
        state,
        machine_id,
        host: Host::system(),
        package_root: cli.package_root.clone(),
        moved,
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run {
            force_collect,
            force_submit,
        } => cmd_run(
            &cli,
            RunOptions {
                force_collect: *force_collect,
                force_submit: *force_submit,
            },
        ),
        Command::Upgrade => cmd_upgrade(&cli),
        Command::Collect {
            plugin,
            json,
            stats,
        } => cmd_collect(&cli, plugin.as_deref(), *json, *stats),
        Command::Status { json } => cmd_status(&cli, *json),
        Command::Enroll { url, token, json } => cmd_enroll(&cli, url, token, *json),
        Command::Act => {
            penguindome_agent::actions::exec::act_from_stdin()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ShellSession { request } => {
            logging::init(
                LogTarget::Auto,
                cli.log_level.unwrap_or(log::LevelFilter::Info),
                "penguindome-agent",
            )
            .map_err(anyhow::Error::msg)?;
            penguindome_agent::shell::run_from_file(request)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateDocs { dir } => {
            penguindome_protocol::cli_docs::write(Cli::command(), dir, MAN_SECTIONS)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `run`: what the systemd timer calls.
fn cmd_run(cli: &Cli, options: RunOptions) -> anyhow::Result<ExitCode> {
    let agent = load_agent(cli);
    let level = cli.log_level.unwrap_or_else(|| {
        agent
            .as_ref()
            .ok()
            .and_then(|a| a.config.log_level.parse().ok())
            .unwrap_or(log::LevelFilter::Info)
    });
    logging::init(LogTarget::Auto, level, "penguindome-agent").map_err(anyhow::Error::msg)?;
    let agent = agent?;
    let outcome = run::run(&agent, options)?;
    if outcome.skipped {
        return Ok(ExitCode::SUCCESS);
    }
    if !outcome.errors.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    if !outcome.offline.is_empty() {
        log::warn!(
            "the server is unreachable; {} reports wait in the spool",
            outcome.pending
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `upgrade`: upgrades the penguindome packages.
fn cmd_upgrade(cli: &Cli) -> anyhow::Result<ExitCode> {
    logging::init(
        LogTarget::Auto,
        cli.log_level.unwrap_or(log::LevelFilter::Info),
        "penguindome-agent",
    )
    .map_err(anyhow::Error::msg)?;
    let state = StateDir::open(&cli.state_dir)?;
    trust_server_keys(cli, state.root());
    let outcome = penguindome_agent::upgrade::upgrade(&Host::system(), state.root())?;
    log::info!(
        "upgraded with {}: {} -> {}",
        outcome.package_manager.as_deref().unwrap_or("?"),
        outcome.from_version.as_deref().unwrap_or("?"),
        outcome.to_version.as_deref().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// Puts the server keys this agent accepts into the package managers'
/// keyrings (they differ after a key rotation the agent followed on its
/// own). A failure is logged: the upgrade then says what the package
/// manager thinks.
fn trust_server_keys(cli: &Cli, state_dir: &Path) {
    let written = || -> anyhow::Result<Vec<PathBuf>> {
        let config = AgentConfig::load(&cli.config)?;
        let keys = ServerKeys::for_agent(&config, state_dir)?;
        Ok(repo_keys::refresh(&cli.package_root, &keys.accepted(&[]))?)
    };
    match written() {
        Ok(files) if files.is_empty() => {}
        Ok(files) => log::info!(
            "the package managers now trust the server keys this agent accepts: {}",
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => log::warn!("cannot update the package managers' server keys: {e:#}"),
    }
}

/// `collect`: prints what would be submitted.
fn cmd_collect(
    cli: &Cli,
    plugin: Option<&str>,
    json: bool,
    stats: bool,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    init_quiet_logging(cli)?;
    let settings = plugin_settings(cli);
    let host = Host::system();
    let report = match StateDir::open(&cli.state_dir) {
        Ok(state) => {
            let cache = state.cache();
            let r = run::collect_report(&host, &cache, &settings, plugin);
            let _ = cache.save();
            r
        }
        Err(_) => run::collect_report(&host, &NoCache, &settings, plugin),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    print_report(&report, json)?;
    if stats {
        eprintln!("{}", run::collect_stats(started));
    }
    Ok(ExitCode::SUCCESS)
}

/// The plugin settings from agent.toml, or the defaults without one.
fn plugin_settings(cli: &Cli) -> PluginSettings {
    // Collecting works without an agent.toml, so collectors can be
    // tried on any machine; the plugins settings come from it if present.
    match AgentConfig::load(&cli.config) {
        Ok(c) => PluginSettings {
            dir: c.plugins_dir,
            timeout: c.plugin_timeout,
            collectors: c.collectors,
        },
        Err(e) => {
            if cli.config.exists() {
                log::warn!("{e}; using default plugin settings");
            }
            PluginSettings {
                dir: DEFAULT_PLUGINS_DIR.into(),
                timeout: std::time::Duration::from_secs(60),
                collectors: Default::default(),
            }
        }
    }
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "host {} collected at {}",
        report.hostname,
        report.collected_at.to_rfc3339()
    );
    for (name, value) in &report.plugins {
        println!("\n[{name}]\n{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// `enroll URL TOKEN`.
fn cmd_enroll(cli: &Cli, url: &str, token: &str, json: bool) -> anyhow::Result<ExitCode> {
    logging::init(
        LogTarget::Stderr,
        cli.log_level.unwrap_or(log::LevelFilter::Warn),
        "penguindome-agent",
    )
    .map_err(anyhow::Error::msg)?;
    let token = read_token(token)?;
    let agent = load_agent(cli).context(
        "enrolling needs the site's agent.toml: install penguindome-site (the bootstrap does)",
    )?;
    let done = penguindome_agent::enroll::enroll(&agent, url, &token)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!(
            "Enrolled with {url} as {} (key {}, {}).",
            done.client_id, done.fingerprint, done.status
        );
        for f in &done.credential_files {
            println!("Repository credential: {}", f.display());
        }
        println!("The timer reports within a minute: systemctl status penguindome.timer");
    }
    Ok(ExitCode::SUCCESS)
}

/// The token from the command line, or from standard input for `-`.
fn read_token(arg: &str) -> anyhow::Result<EnrollmentToken> {
    let text = if arg == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the token from standard input")?;
        line
    } else {
        arg.to_string()
    };
    Ok(text.trim().parse()?)
}

/// `status`: identity, server, last collect and submit, spool, last error.
fn cmd_status(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    init_quiet_logging(cli)?;
    let agent = load_agent(cli)?;
    let s = run::status(&agent)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &Status) {
    println!("client id:    {}", s.client_id);
    println!("server:       {}", s.server_url);
    if let Some(m) = &s.moved {
        println!(
            "moved:        from {} by action {} at {}",
            m.from,
            m.action_id,
            m.moved_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    println!(
        "key:          {}",
        match (&s.key_fingerprint, s.enrolled) {
            (Some(fp), true) => format!("{fp} (enrolled)"),
            (Some(fp), false) => format!("{fp} (not enrolled yet)"),
            (None, _) => "none yet (made at the first run)".into(),
        }
    );
    println!("last collect: {}", when(&s.state.last_collect_at));
    println!("last submit:  {}", when(&s.state.last_submit_at));
    println!("last update:  {}", when(&s.state.last_update_at));
    if let Some(skew) = s.state.clock_skew_seconds {
        println!("clock skew:   {skew} s (server minus this machine)");
    }
    println!(
        "spool:        {} reports, {} bytes",
        s.spool_reports, s.spool_bytes
    );
    match &s.state.last_error {
        Some(e) => println!(
            "last error:   {} at {}",
            e.message,
            e.at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => println!("last error:   none"),
    }
}

/// A time and how long ago it was, or "never".
fn when(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    match t {
        Some(t) => {
            let ago = (chrono::Utc::now() - *t).num_seconds().max(0);
            format!(
                "{} ({} ago)",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                humantime::format_duration(std::time::Duration::from_secs(ago as u64))
            )
        }
        None => "never".into(),
    }
}

fn init_quiet_logging(cli: &Cli) -> anyhow::Result<()> {
    logging::init(
        LogTarget::Stderr,
        cli.log_level.unwrap_or(log::LevelFilter::Warn),
        "penguindome-agent",
    )
    .map_err(anyhow::Error::msg)
    .context("cannot set up logging")?;
    Ok(())
}

/// What `man penguindome-agent` says beyond the options.
const MAN_SECTIONS: &[penguindome_protocol::cli_docs::ManSection] = &[
    penguindome_protocol::cli_docs::ManSection {
        title: "FILES",
        items: &[
            (
                "/etc/penguindome/agent.toml",
                "The server's address, its pinned TLS certificate and OpenPGP key, and the \
                 collectors' settings; installed by the site package (mode 0600).",
            ),
            (
                "/var/lib/penguindome-agent/client-key.asc",
                "This machine's signing key, made at enrollment; it never leaves the machine.",
            ),
            (
                "/var/lib/penguindome-agent/spool/",
                "Signed reports not yet acknowledged by the server; rejected/ holds those \
                 the server called malformed.",
            ),
            (
                "/var/lib/penguindome-agent/state.json",
                "When each collector and upgrade last ran, and what is due next.",
            ),
            (
                "/etc/penguindome/patches.d/",
                "Where files patched by an administrator may be written, with agent.toml's \
                 patch_roots and the plugins folder.",
            ),
            (
                "/usr/lib/penguindome/plugins/",
                "External collectors: executables whose JSON output joins the report.",
            ),
        ],
    },
    penguindome_protocol::cli_docs::ManSection {
        title: "EXAMPLES",
        items: &[
            (
                "penguindome-agent enroll https://pd.example.com:8443 - < token",
                "Enroll this machine with a token from pdome-admin tokens create, read from \
                 standard input so it stays out of ps and the shell history.",
            ),
            (
                "systemctl status penguindome.timer",
                "When the agent last ran and runs next (every minute, jittered).",
            ),
            (
                "journalctl -u penguindome-agent",
                "What the agent did: reports sent, commands run, errors.",
            ),
            (
                "penguindome-agent status",
                "The server, the enrollment, what is spooled and when each collector is due.",
            ),
            (
                "penguindome-agent collect --plugin hd_encryption",
                "Print one collector's answer without sending anything.",
            ),
        ],
    },
];
