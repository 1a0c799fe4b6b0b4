//! vdbi load-test harness: drives an in-process vdbi against the local platform's real OpenBao,
//! PostgreSQL and kube-apiserver (loopback only) and prints reproducible figures.
//! See docs/performance.md.

mod admission;
mod harness;
mod renewal;
mod report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use vdbi::testing::platform::Platform;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "vdbi load tests against the local platform"
)]
struct Cli {
    /// Output folder for JSON and SVG files.
    #[arg(long, default_value = "loadtest/out", global = true)]
    out: PathBuf,
    /// Small counts, and a non-zero exit on any error or leftover (for CI).
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// AdmissionReview requests straight to an in-process webhook, plus the bare Vault calls.
    Admission {
        #[arg(long, value_enum, default_value = "legacy")]
        mode: admission::AdmissionMode,
        /// Open-loop rate (admissions/s).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Closed loop with this many in flight instead of a fixed rate.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Sequential bare Vault sequences timed before the load.
        #[arg(long, default_value_t = 200)]
        bare_samples: usize,
        #[arg(long, default_value = "app-rw")]
        role: String,
    },
    /// One renewer cycle over N bookkeeping entries with real tokens (and leases).
    Renewal {
        #[arg(long, default_value_t = 1000)]
        entries: usize,
        /// Entries that also hold a DB lease (default: all).
        #[arg(long)]
        leases: Option<usize>,
        /// vdbi's Vault rate limit (calls/s, 0 = unlimited).
        #[arg(long, default_value_t = 0)]
        rate_limit: u32,
        #[arg(long, default_value_t = 200)]
        uuids_per_pod: usize,
        #[arg(long, default_value = "app-rw")]
        role: String,
        /// Leave PodName out of the entries: the cycle backfills (one KV write per entry).
        #[arg(long)]
        backfill: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if std::env::var_os("VDBI_PLATFORM_ENV").is_none()
        && std::path::Path::new("/work/main/.platform/env").exists()
    {
        eprintln!("hint: set VDBI_PLATFORM_ENV to the platform's env file");
    }
    let sys = actix_rt::System::new();
    let ok = sys.block_on(async move {
        let p = Platform::get();
        match cli.scenario {
            Scenario::Admission {
                mode,
                rate,
                duration,
                concurrency,
                bare_samples,
                role,
            } => {
                let a = if cli.smoke {
                    admission::Args {
                        mode,
                        rate: 10.0,
                        duration: Duration::from_secs(2),
                        concurrency: None,
                        bare_samples: 10,
                        role,
                    }
                } else {
                    admission::Args {
                        mode,
                        rate,
                        duration,
                        concurrency,
                        bare_samples,
                        role,
                    }
                };
                match admission::run(&p, a, &cli.out).await {
                    Ok(r) => r.errors == 0 && r.leftovers.total() == 0 && r.ok > 0,
                    Err(e) => {
                        eprintln!("admission failed: {e}");
                        false
                    }
                }
            }
            Scenario::Renewal {
                entries,
                leases,
                rate_limit,
                uuids_per_pod,
                role,
                backfill,
            } => {
                let entries = if cli.smoke { 20 } else { entries };
                let a = renewal::Args {
                    entries,
                    leases: leases.unwrap_or(entries).min(entries),
                    rate_limit,
                    concurrency: 16,
                    uuids_per_pod,
                    role,
                    backfill,
                };
                match renewal::run(&p, a, &cli.out).await {
                    Ok(r) => {
                        r.errors == 0
                            && r.setup_errors == 0
                            && r.leftovers.total() == 0
                            && r.live == r.entries
                            && r.tokens_renewed as usize == r.entries
                    }
                    Err(e) => {
                        eprintln!("renewal failed: {e}");
                        false
                    }
                }
            }
        }
    });
    if !ok {
        eprintln!("FAILED: errors or leftovers (see above)");
        std::process::exit(1);
    }
}
