//! `vdbi`: the daemon's entry point. Only wiring: parse flags, load the configuration, hand over
//! to [`vdbi::app`].

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vdbi",
    version,
    about = "Per-pod database credentials from Vault/OpenBao (vault-db-injector compatible)"
)]
struct Cli {
    /// YAML configuration file (vault-db-injector's keys).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration: print every problem with its key path (exit 1), or the
    /// effective configuration with secrets masked (exit 0). Unknown keys are warnings, listed
    /// on stderr, as the daemon ignores them.
    CheckConfig {
        /// Also refuse (exit 1) a file with unknown keys.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { strict }) => {
            vdbi::app::check_config(cli.config.as_deref(), strict)
        }
        None => vdbi::app::run_main(cli.config.as_deref()),
    }
}
