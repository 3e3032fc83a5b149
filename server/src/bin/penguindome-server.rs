//! penguindome-server: the PenguinDome HTTP(S) service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use penguindome_protocol::logging::{self, LogTarget};
use penguindome_server::config::{DEFAULT_CONFIG_DIR, ServerConfig};

#[derive(Parser)]
#[command(name = "penguindome-server", version, about = "The PenguinDome server")]
struct Cli {
    /// Directory holding server.toml.
    #[arg(long, env = "PENGUINDOME_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Override the configured log target (auto, journal, stderr).
    #[arg(long)]
    log_target: Option<LogTarget>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Write the man page and shell completions below DIR and exit (what
    /// the package builders run).
    #[arg(long, hide = true, value_name = "DIR")]
    generate_docs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate_docs {
        return match penguindome_protocol::cli_docs::write(
            Cli::command(),
            dir,
            penguindome_server::man::SERVER,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("penguindome-server: {:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        };
    }
    let config = match ServerConfig::load(&cli.config_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("penguindome-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = cli.log_target.unwrap_or(config.logging.target);
    if let Err(e) = logging::init(target, config.log_level(), "penguindome-server") {
        eprintln!("penguindome-server: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    if cli.check {
        return match penguindome_server::serve::load_server_key(&config) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("penguindome-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("penguindome-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(penguindome_server::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
