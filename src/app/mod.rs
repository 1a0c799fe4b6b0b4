//! Process assembly: which actors and servers a `mode` starts, and the ordered shutdown.
//! The binary calls [`run_main`]; tests and the load-test harness call [`start`] to run vdbi
//! in-process.

use crate::config::{Config, ConfigError, Severity};
use std::path::Path;
use std::process::ExitCode;

/// `vdbi check-config`.
pub fn check_config(path: Option<&Path>) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            print!("{}", loaded.config.render_masked());
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{errors} error(s): configuration refused");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `vdbi --config FILE`: load, then run until SIGTERM/SIGINT.
pub fn run_main(path: Option<&Path>) -> ExitCode {
    let loaded = match Config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    crate::tls::install_crypto_provider();
    let (log, _guard) = crate::telemetry::build_logger(loaded.config.log_level);
    for w in &loaded.warnings {
        slog::warn!(log, "configuration warning"; "key" => &w.key, "problem" => &w.message);
    }
    let system = actix::System::new();
    let result = system.block_on(runtime::run(loaded.config, log.clone()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            slog::error!(log, "vdbi stopped with an error"; "error" => %e);
            ExitCode::FAILURE
        }
    }
}

pub mod runtime;
