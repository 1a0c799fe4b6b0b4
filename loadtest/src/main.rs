//! vdbi load-test harness: drives an in-process vdbi against the local platform's real OpenBao,
//! PostgreSQL and kube-apiserver (loopback only) and prints reproducible figures.
//! See docs/performance.md.

mod admission;
mod chaos;
mod chaos_fleet;
mod churn;
mod footprint;
mod leftovers;
mod noisy;
mod nri;
mod renewal;
mod report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use vdbi_testkit::platform::Platform;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "vdbi load tests against the local platform",
    long_about = "vdbi load tests against the local platform (OpenBao, PostgreSQL, kube-apiserver \
                  on loopback; VDBI_PLATFORM_ENV names its env file). Each scenario prints a \
                  table and writes <out>/<figure>.json, .svg and .samples.json; `compare` draws \
                  two runs side by side. Run through `platform/vdbi-platform loadtest`, which \
                  starts the platform and builds in release mode."
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
        /// Admission mode: legacy (vdbi's own login, orphan token), projected (the pod's
        /// TokenRequest login) or nri (placeholders, bookkeeping reservation).
        #[arg(long, value_enum, default_value = "legacy")]
        mode: admission::AdmissionMode,
        /// Open-loop rate (admissions/s).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// How long the load runs (e.g. 10s, 2m).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Closed loop with this many in flight instead of a fixed rate.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Sequential bare Vault sequences timed before the load.
        #[arg(long, default_value_t = 200)]
        bare_samples: usize,
        /// Vault database role of the pods' dbConfig (a role of the platform).
        #[arg(long, default_value = "app-rw")]
        role: String,
        /// vdbi's `vaultRateLimit` (calls/s, 0 = unlimited; it paces the renewer and revoker).
        #[arg(long, default_value_t = 0)]
        vault_rate_limit: u32,
    },
    /// Normal pods at a fixed rate, alone and beside a pod at the dbConfig cap re-submitted in a
    /// loop: the normal pods' admission p99 in both runs.
    NoisyNeighbour {
        /// Normal pods' open-loop admission rate (admissions/s).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// How long each of the two runs (alone, beside the noisy pod) lasts (e.g. 20s).
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Loops re-submitting the pod at the dbConfig cap, back to back.
        #[arg(long, default_value_t = 1)]
        noisy_loops: usize,
        /// Vault database role of every dbConfig (a role of the platform).
        #[arg(long, default_value = "app-rw")]
        role: String,
        /// vdbi's `issuanceSlots` (default: vdbi's default).
        #[arg(long)]
        issuance_slots: Option<usize>,
        /// vdbi's `issuanceSlotsPerPod` (default: vdbi's default).
        #[arg(long)]
        issuance_slots_per_pod: Option<usize>,
    },
    /// One renewer cycle over N bookkeeping entries with real tokens (and leases).
    Renewal {
        /// Bookkeeping entries (each with its own real token).
        #[arg(long, default_value_t = 1000)]
        entries: usize,
        /// Entries that also hold a DB lease (default: all).
        #[arg(long)]
        leases: Option<usize>,
        /// vdbi's Vault rate limit (calls/s, 0 = unlimited).
        #[arg(long, default_value_t = 0)]
        rate_limit: u32,
        /// Entries per labelled pod (its `uuid` annotation): fewer pods to create.
        #[arg(long, default_value_t = 200)]
        uuids_per_pod: usize,
        /// vdbi's `renewerConcurrency` (the daemon's default is 16).
        #[arg(long, default_value_t = 16)]
        renewer_concurrency: usize,
        /// Run vdbi with `perUuidMetrics: false` (no per-credential series).
        #[arg(long)]
        no_per_uuid_metrics: bool,
        /// Vault database role the entries' leases come from.
        #[arg(long, default_value = "app-rw")]
        role: String,
        /// Leave PodName out of the entries: the cycle backfills (one KV write per entry).
        #[arg(long)]
        backfill: bool,
    },
    /// Pods created and deleted through the kube-apiserver: time from DELETE to revocation.
    Churn {
        /// Pods to create, admit and delete.
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Pods in their create → delete → revoked cycle at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// How long each pod lives between CREATE and DELETE.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Vault database role of the pods' dbConfig.
        #[arg(long, default_value = "app-rw")]
        role: String,
    },
    /// Pod churn through the apiserver with vdbi as real processes (an injector, 2 renewers, 2
    /// revokers), faults injected at seeded random moments, then leftovers counted.
    Chaos {
        /// The daemon binary (default: `vdbi` next to this binary).
        #[arg(long)]
        vdbi_bin: Option<PathBuf>,
        /// Pods to create and delete at least (the churn lasts until every fault was injected).
        #[arg(long, default_value_t = 500)]
        pods: usize,
        /// Pods in their create/delete cycle at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Longest a pod lives between CREATE and DELETE (each pod: random below it).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Faults of each of the 6 kinds (injector kill, leading renewer kill, leading revoker
        /// kill, OpenBao stop, PostgreSQL stop, kube-apiserver restart).
        #[arg(long, default_value_t = 3)]
        faults_each: usize,
        /// Mean time between two faults (each gap random in [gap/2, 3 gap/2]).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        fault_gap: Duration,
        /// Longest a faulty component stays down (random from 0.5 s).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        max_down: Duration,
        /// Seed of the fault plan and the pods' hold times (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Bound of the settle period waiting for nothing to be left.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// The revokers' `revokerUnseenGrace`.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        unseen_grace: Duration,
        /// The revokers' `orphanLeaseDiscovery` (off, report or revoke).
        #[arg(long, default_value = "revoke")]
        orphan_lease_discovery: String,
        /// The revokers' `orphanLeaseGrace`.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        orphan_lease_grace: Duration,
        /// The injector in projected mode (each pod's own login) instead of legacy.
        #[arg(long)]
        projected: bool,
        /// Only these fault kinds (comma-separated; default: all six).
        #[arg(long, value_enum, value_delimiter = ',')]
        fault_kinds: Vec<chaos::FaultKind>,
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
        /// How long the idle daemon is observed before the load.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        idle: Duration,
        /// Open-loop admission rate (admissions/s) during the load phase.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// How long the load phase runs.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Vault database role of the admitted pods' dbConfig.
        #[arg(long, default_value = "app-rw")]
        role: String,
    },
    /// Two runs side by side: for every figure both output folders hold, one SVG with the
    /// two runs' histograms on the same axes (no platform needed).
    Compare {
        /// Output folder of the first run.
        before: PathBuf,
        /// Output folder of the second run.
        after: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Scenario::Compare { before, after } = &cli.scenario {
        match report::compare(before, after, &cli.out) {
            Ok(n) => println!("{n} figure(s) compared"),
            Err(e) => {
                eprintln!("compare: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if std::env::var_os("VDBI_PLATFORM_ENV").is_none() {
        eprintln!(
            "hint: VDBI_PLATFORM_ENV is not set; `platform/vdbi-platform loadtest` sets it to the \
             platform's env file"
        );
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
                issuance_slots,
                issuance_slots_per_pod,
            } => {
                let a = noisy::Args {
                    issuance_slots,
                    issuance_slots_per_pod,
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
            Scenario::Chaos {
                vdbi_bin,
                pods,
                concurrency,
                hold,
                faults_each,
                fault_gap,
                max_down,
                seed,
                settle,
                unseen_grace,
                orphan_lease_discovery,
                orphan_lease_grace,
                projected,
                fault_kinds,
            } => {
                let a = chaos::Args {
                    vdbi_bin,
                    pods: if cli.smoke { 8 } else { pods },
                    concurrency: if cli.smoke { 3 } else { concurrency },
                    hold,
                    faults_each: if cli.smoke { 1 } else { faults_each },
                    fault_gap: if cli.smoke {
                        Duration::from_secs(2)
                    } else {
                        fault_gap
                    },
                    max_down: if cli.smoke {
                        Duration::from_millis(1500)
                    } else {
                        max_down
                    },
                    seed,
                    settle: if cli.smoke {
                        Duration::from_secs(90)
                    } else {
                        settle
                    },
                    unseen_grace,
                    orphan_lease_discovery,
                    orphan_lease_grace,
                    projected,
                    kinds: fault_kinds,
                };
                match chaos::run(&p, a, &cli.out).await {
                    Ok(r) => {
                        r.churn.errors == 0
                            && r.churn.created > 0
                            && r.time_to_clean_s.is_some()
                            && r.leftovers.total() == 0
                    }
                    Err(e) => {
                        eprintln!("chaos failed: {e}");
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
            Scenario::Compare { .. } => unreachable!("handled before the platform starts"),
        }
    });
    if !ok {
        eprintln!("FAILED: errors or leftovers (see above)");
        std::process::exit(1);
    }
}
