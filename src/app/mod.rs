//! Process assembly: which actors and servers a `mode` starts, and the ordered shutdown.
//! The binary calls [`run_main`]; tests and the load-test harness call [`start`] to run vdbi
//! in-process.

use crate::config::{Config, ConfigError, Severity};
use crate::telemetry::sentry::FLUSH_TIMEOUT;
use crate::telemetry::{Metrics, Sentry, SentrySettings};
use std::path::Path;
use std::process::ExitCode;

/// `vdbi check-config [--strict]`.
pub fn check_config(path: Option<&Path>, strict: bool) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let unknown = loaded.warnings.iter().filter(|w| w.unknown_key).count();
            if strict && unknown > 0 {
                eprintln!("{unknown} unknown key(s): configuration refused (--strict)");
                return ExitCode::FAILURE;
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
    let config = loaded.config;
    crate::tls::install_crypto_provider();
    let metrics = Metrics::new(config.per_uuid_metrics);
    // As `sentry.Init` in the Go version: started before anything logs, a failure is fatal.
    let sentry = if config.sentry {
        match Sentry::start(
            SentrySettings::from_config(&config),
            metrics.process.sentry_events(),
        ) {
            Ok(s) => {
                s.install_panic_hook();
                Some(s)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (log, _guard) = crate::telemetry::build_logger(config.log_level, sentry.as_ref());
    for w in &loaded.warnings {
        slog::warn!(log, "configuration warning"; "key" => &w.key, "problem" => &w.message);
    }
    if let Some(s) = &sentry {
        slog::info!(log, "reporting errors to Sentry"; "endpoint" => s.endpoint(), "environment" => &config.sentry_environment);
    }
    let system = actix::System::new();
    let result = system.block_on(runtime::run(config, log.clone(), metrics));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            slog::error!(log, "vdbi stopped with an error"; "error" => %e);
            ExitCode::FAILURE
        }
    };
    if let Some(s) = &sentry {
        if !s.flush(FLUSH_TIMEOUT) {
            slog::warn!(log, "Sentry events still queued at exit"; "waited" => ?FLUSH_TIMEOUT);
        }
    }
    code
}

mod listeners;
pub mod runtime;
pub mod starters;
