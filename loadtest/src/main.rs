//! vdbi load-test harness: drives an in-process vdbi against the local platform's real OpenBao,
//! PostgreSQL and kube-apiserver (loopback only) and prints reproducible figures.
//! See docs/performance.md.

mod admission;
mod churn;
mod footprint;
mod harness;
mod noisy;
mod nri;
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
        /// vdbi's `vaultRateLimit` (calls/s, 0 = unlimited; it paces the renewer and revoker).
        #[arg(long, default_value_t = 0)]
        vault_rate_limit: u32,
    },
    /// Normal pods at a fixed rate, alone and beside a pod at the dbConfig cap re-submitted in a
    /// loop: the normal pods' admission p99 in both runs.
    NoisyNeighbour {
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 1)]
        noisy_loops: usize,
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
        /// vdbi's `renewerConcurrency` (the daemon's default is 16).
        #[arg(long, default_value_t = 16)]
        renewer_concurrency: usize,
        /// Run vdbi with `perUuidMetrics: false` (no per-credential series).
        #[arg(long)]
        no_per_uuid_metrics: bool,
        #[arg(long, default_value = "app-rw")]
        role: String,
        /// Leave PodName out of the entries: the cycle backfills (one KV write per entry).
        #[arg(long)]
        backfill: bool,
    },
    /// Pods created and deleted through the kube-apiserver: time from DELETE to revocation.
    Churn {
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Pods in their create → delete → revoked cycle at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// How long each pod lives between CREATE and DELETE.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        hold: Duration,
        #[arg(long, default_value = "app-rw")]
        role: String,
    },
    /// CreateContainer substitution over the real NRI wire: cache miss, hit, no placeholder.
    Nri {
        /// Pods (each served once on a cold cache).
        #[arg(long, default_value_t = 20)]
        misses: usize,
        /// Cache-hit requests (and as many without placeholders).
        #[arg(long, default_value_t = 500)]
        hits: usize,
    },
    /// The `vdbi` binary as its own process: idle RSS, then RSS and CPU under admission load.
    Footprint {
        /// The daemon binary (default: `vdbi` next to this binary).
        #[arg(long)]
        vdbi_bin: Option<PathBuf>,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        idle: Duration,
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "app-rw")]
        role: String,
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
                vault_rate_limit,
            } => {
                let a = if cli.smoke {
                    admission::Args {
                        mode,
                        rate: 10.0,
                        duration: Duration::from_secs(2),
                        concurrency: None,
                        bare_samples: 10,
                        role,
                        vault_rate_limit,
                    }
                } else {
                    admission::Args {
                        mode,
                        rate,
                        duration,
                        concurrency,
                        bare_samples,
                        role,
                        vault_rate_limit,
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
            Scenario::NoisyNeighbour {
                rate,
                duration,
                noisy_loops,
                role,
            } => {
                let a = noisy::Args {
                    rate: if cli.smoke { 5.0 } else { rate },
                    duration: if cli.smoke {
                        Duration::from_secs(2)
                    } else {
                        duration
                    },
                    noisy_loops,
                    role,
                };
                match noisy::run(&p, a, &cli.out).await {
                    Ok(r) => {
                        r.alone.errors == 0
                            && r.beside_noisy.errors == 0
                            && r.leftovers.total() == 0
                    }
                    Err(e) => {
                        eprintln!("noisy-neighbour failed: {e}");
                        false
                    }
                }
            }
            Scenario::Renewal {
                entries,
                leases,
                rate_limit,
                uuids_per_pod,
                renewer_concurrency,
                no_per_uuid_metrics,
                role,
                backfill,
            } => {
                let entries = if cli.smoke { 20 } else { entries };
                let a = renewal::Args {
                    entries,
                    leases: leases.unwrap_or(entries).min(entries),
                    rate_limit,
                    concurrency: 16,
                    renewer_concurrency,
                    per_uuid_metrics: !no_per_uuid_metrics,
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
            Scenario::Churn {
                pods,
                concurrency,
                hold,
                role,
            } => {
                let a = churn::Args {
                    pods: if cli.smoke { 20 } else { pods },
                    concurrency: if cli.smoke { 4 } else { concurrency },
                    hold,
                    role,
                };
                match churn::run(&p, a, &cli.out).await {
                    Ok(r) => r.errors == 0 && r.leftovers.total() == 0 && r.revoked == r.pods,
                    Err(e) => {
                        eprintln!("churn failed: {e}");
                        false
                    }
                }
            }
            Scenario::Nri { misses, hits } => {
                let a = if cli.smoke {
                    nri::Args {
                        misses: 3,
                        hits: 20,
                    }
                } else {
                    nri::Args { misses, hits }
                };
                match nri::run(&p, a, &cli.out).await {
                    Ok(r) => r.modes.iter().all(|m| {
                        m.errors == 0 && m.issued_alive_after.total() == 0 && m.miss.count > 0
                    }),
                    Err(e) => {
                        eprintln!("nri failed: {e}");
                        false
                    }
                }
            }
            Scenario::Footprint {
                vdbi_bin,
                idle,
                rate,
                duration,
                role,
            } => {
                let a = if cli.smoke {
                    footprint::Args {
                        vdbi_bin,
                        idle: Duration::from_secs(1),
                        rate: 10.0,
                        duration: Duration::from_secs(2),
                        role,
                    }
                } else {
                    footprint::Args {
                        vdbi_bin,
                        idle,
                        rate,
                        duration,
                        role,
                    }
                };
                match footprint::run(&p, a, &cli.out).await {
                    Ok(r) => r.errors == 0 && r.leftovers.total() == 0 && r.ok > 0,
                    Err(e) => {
                        eprintln!("footprint failed: {e}");
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
