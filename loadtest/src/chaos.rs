//! `chaos`: pod churn through the real kube-apiserver, vdbi registered as its webhook and run as
//! real processes (see [`crate::chaos_fleet`]), while faults are injected at seeded random
//! moments: kill -9 of the injector, of the leading renewer and of the leading revoker (each
//! started again after a random down time), OpenBao and PostgreSQL stopped and started, the
//! kube-apiserver killed and started. Then a settle period waits, bounded, for nothing to be
//! left, and what is left is counted without cleaning anything first
//! ([`crate::leftovers::count`]). The harness cleans up only after that count.

use crate::chaos_fleet::{Fleet, RevokerSettings, INJECTOR};
use crate::leftovers::{self, kv_prefixes, Counted, Scope};
use crate::report;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vdbi_testkit::chart_rbac::ChartRelease;
use vdbi_testkit::load::cleanup_prefix;
use vdbi_testkit::platform::{Platform, TestNamespace};
use vdbi_testkit::roles::{drop_role, own_role};

pub struct Args {
    pub vdbi_bin: Option<PathBuf>,
    /// Pods to create and delete at least (the churn goes on until every fault was injected).
    pub pods: usize,
    pub concurrency: usize,
    /// Longest a pod lives between CREATE and DELETE (random below it).
    pub hold: Duration,
    /// Faults of each kind.
    pub faults_each: usize,
    /// Mean time between two faults (each gap is random in [gap/2, 3·gap/2]).
    pub fault_gap: Duration,
    /// Longest a faulty component stays down (random in [0.5 s, max]).
    pub max_down: Duration,
    pub seed: Option<u64>,
    /// Bound of the settle period.
    pub settle: Duration,
    pub unseen_grace: Duration,
    pub orphan_lease_discovery: String,
    pub orphan_lease_grace: Duration,
    /// The injector in projected mode (pod logins) instead of legacy (orphan tokens).
    pub projected: bool,
    /// The fault kinds to inject (empty: all six).
    pub kinds: Vec<FaultKind>,
}

/// splitmix64: the run's only source of randomness, from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi].
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        })
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillInjector,
    KillLeadingRenewer,
    KillLeadingRevoker,
    StopOpenbao,
    StopPostgresql,
    RestartApiserver,
}

const KINDS: [FaultKind; 6] = [
    FaultKind::KillInjector,
    FaultKind::KillLeadingRenewer,
    FaultKind::KillLeadingRevoker,
    FaultKind::StopOpenbao,
    FaultKind::StopPostgresql,
    FaultKind::RestartApiserver,
];

/// One planned (then injected) fault.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// Planned gap before it.
    pub gap_ms: u64,
    /// Planned time the component stays down.
    pub down_ms: u64,
    /// When it was injected, from the start of the churn.
    pub at_s: f64,
    /// Which process, for the kills.
    pub target: String,
    /// How long bringing it back took.
    pub restart_ms: u64,
}

/// The seeded plan: each kind `each` times, shuffled, with gaps and down times.
fn plan(rng: &mut Rng, a: &Args) -> Vec<Fault> {
    let chosen: Vec<FaultKind> = if a.kinds.is_empty() {
        KINDS.to_vec()
    } else {
        KINDS.into_iter().filter(|k| a.kinds.contains(k)).collect()
    };
    let mut kinds: Vec<FaultKind> = (0..a.faults_each)
        .flat_map(|_| chosen.iter().copied())
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    kinds
        .into_iter()
        .map(|kind| Fault {
            kind,
            gap_ms: rng
                .between(a.fault_gap / 2, a.fault_gap * 3 / 2)
                .as_millis() as u64,
            down_ms: rng
                .between(Duration::from_millis(500), a.max_down)
                .as_millis() as u64,
            at_s: 0.0,
            target: String::new(),
            restart_ms: 0,
        })
        .collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Churn {
    /// Pods the apiserver stored (admitted by vdbi).
    pub created: usize,
    /// Of those, stored with credentials in their env.
    pub with_credentials: usize,
    /// CREATE attempts refused or failed (webhook down or denying, apiserver down); retried.
    pub create_refused: usize,
    pub deleted: usize,
    /// Pods given up on (never stored, or never deleted, within a minute of retries).
    pub errors: usize,
    pub error_samples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ChaosResult {
    pub scenario: &'static str,
    pub seed: u64,
    /// The injector's mode: projected (pod logins) or legacy (orphan tokens).
    pub projected: bool,
    pub binary: String,
    pub concurrency: usize,
    pub faults: Vec<Fault>,
    pub churn: Churn,
    pub churn_wall_s: f64,
    /// From the end of the churn (every fault over, every component back) to the first count
    /// with nothing left; None when the settle bound passed first.
    pub time_to_clean_s: Option<f64>,
    pub settle_bound_s: f64,
    pub leftovers: Counted,
    pub unseen_grace_s: u64,
    pub orphan_lease_discovery: String,
    pub orphan_lease_grace_s: u64,
}

/// How long a pod's CREATE or DELETE is retried before the pod counts as an error.
const RETRY_FOR: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One pod: CREATE until stored, hold, DELETE until gone.
async fn one_pod(pods: &Api<Pod>, role: &str, name: &str, hold: Duration, c: &Mutex<Churn>) {
    let t = Instant::now();
    let stored = loop {
        match pods
            .create(&PostParams::default(), &crate::churn::pod(name, role))
            .await
        {
            Ok(p) => break Some(p),
            // Stored by a CREATE whose answer was lost (apiserver killed meanwhile).
            Err(kube::Error::Api(s)) if s.code == 409 => break pods.get(name).await.ok(),
            Err(_) if t.elapsed() < RETRY_FOR => {
                c.lock().unwrap().create_refused += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                let mut c = c.lock().unwrap();
                c.errors += 1;
                if c.error_samples.len() < 10 {
                    c.error_samples.push(format!("{name}: create: {e}"));
                }
                return;
            }
        }
    };
    {
        let mut c = c.lock().unwrap();
        c.created += 1;
        let injected = stored
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .is_some_and(|s| {
                s.containers[0].env.iter().flatten().any(|e| {
                    e.name == "DB_USER" && e.value.as_deref().is_some_and(|v| v.starts_with("v-"))
                })
            });
        if injected {
            c.with_credentials += 1;
        }
    }
    tokio::time::sleep(hold).await;
    let t = Instant::now();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    loop {
        match pods.delete(name, &dp).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Err(_) if t.elapsed() < RETRY_FOR => tokio::time::sleep(RETRY_PAUSE).await,
            Err(e) => {
                let mut c = c.lock().unwrap();
                c.errors += 1;
                if c.error_samples.len() < 10 {
                    c.error_samples.push(format!("{name}: delete: {e}"));
                }
                return;
            }
        }
    }
    c.lock().unwrap().deleted += 1;
}

/// Now, in whole seconds since the epoch (as Vault's `creation_time`).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Injects `f` and brings the component back after its down time.
async fn inject(f: &mut Fault, fleet: &mut Fleet) -> Result<(), String> {
    let down = Duration::from_millis(f.down_ms);
    let member = match f.kind {
        FaultKind::KillInjector => Some(INJECTOR.to_string()),
        FaultKind::KillLeadingRenewer | FaultKind::KillLeadingRevoker => {
            let mode = if f.kind == FaultKind::KillLeadingRenewer {
                "renewer"
            } else {
                "revoker"
            };
            // A leader exists unless a previous fault is still being recovered from: wait.
            let leader = fleet.leader(mode, Duration::from_secs(60)).await;
            Some(leader.ok_or_else(|| format!("no {mode} led within 60 s"))?)
        }
        _ => None,
    };
    let t;
    if let Some(name) = &member {
        f.target = name.clone();
        fleet.kill(name);
        tokio::time::sleep(down).await;
        t = Instant::now();
        fleet.spawn(name);
    } else {
        let (stop, component) = match f.kind {
            FaultKind::StopOpenbao => ("kill", "openbao"),
            FaultKind::StopPostgresql => ("stop", "postgresql"),
            _ => ("kill", "kube-apiserver"),
        };
        f.target = component.into();
        platform_fault(stop, component).await?;
        tokio::time::sleep(down).await;
        t = Instant::now();
        platform_fault("start", component).await?;
    }
    f.restart_ms = t.elapsed().as_millis() as u64;
    Ok(())
}

/// `platform/vdbi-platform fault ACTION COMPONENT`, off the runtime's threads.
async fn platform_fault(action: &'static str, component: &'static str) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| vdbi_testkit::process::platform_fault(action, component))
            .map(|_| ())
            .map_err(|_| format!("fault {action} {component} failed (see above)"))
    })
    .await
    .map_err(|e| e.to_string())?
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<ChaosResult, String> {
    let bin = match &a.vdbi_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("vdbi"),
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --bin vdbi)",
            bin.display()
        ));
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut rng = Rng(seed);
    let mut faults = plan(&mut rng, &a);
    eprintln!(
        "[chaos] seed {seed} (--seed {seed} replays this plan): {}",
        faults
            .iter()
            .map(|f| format!("{:?}+{}ms/{}ms", f.kind, f.gap_ms, f.down_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let admin = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let db_mount = p.var("VDBI_DB_MOUNT");
    let ns = TestNamespace::create(&admin, "lt-chaos").await;
    ns.service_account("app").await;
    // The run's own DB role (first 8 characters unique: its PostgreSQL users are recognisable).
    let role = format!("cx{:06x}", rng.next() & 0xff_ffff);
    own_role(&root, p, &role, &ns.name, false).await;
    let rel = ChartRelease::install(p, &admin, "lt-chaos-rel").await;
    let prefix = vdbi_testkit::platform::unique_name("lt-chaos");
    let settings = RevokerSettings {
        unseen_grace: a.unseen_grace,
        orphan_lease_discovery: a.orphan_lease_discovery.clone(),
        orphan_lease_grace: a.orphan_lease_grace,
        orphan_lease_role: format!("{db_mount}/{role}"),
    };
    let mut fleet = Fleet::start(p, &bin, &rel, &prefix, &settings, a.projected).await?;
    if !fleet.injector_ready(Duration::from_secs(60)).await {
        return Err(format!(
            "the injector never got ready\n{}",
            fleet.log_tails(30)
        ));
    }
    for mode in ["renewer", "revoker"] {
        if fleet.leader(mode, Duration::from_secs(60)).await.is_none() {
            return Err(format!("no {mode} led\n{}", fleet.log_tails(30)));
        }
    }
    let webhook =
        vdbi_testkit::webhook::register(&admin, &fleet.webhook_url, &fleet.cert_pem, &ns.name)
            .await?;
    eprintln!(
        "[chaos] fleet up (logs in {}); role {role}; {} pods at least, {} at once, {} faults",
        fleet.log_dir().display(),
        a.pods,
        a.concurrency,
        faults.len()
    );

    let churn = Arc::new(Mutex::new(Churn::default()));
    let faults_done = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let (pods, role, churn, done, next) = (
            ns.api::<Pod>(),
            role.clone(),
            churn.clone(),
            faults_done.clone(),
            next.clone(),
        );
        let (target, hold) = (a.pods, a.hold);
        let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D));
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= target && done.load(Ordering::SeqCst) {
                    break;
                }
                let hold = rng.between(Duration::ZERO, hold);
                one_pod(&pods, &role, &format!("chaos-{i}"), hold, &churn).await;
            }
        }));
    }
    let progress = {
        let churn = churn.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let c = churn.lock().unwrap();
                eprintln!(
                    "[chaos] {:.0}s: {} created ({} with credentials), {} deleted, {} refused, {} errors",
                    started.elapsed().as_secs_f64(),
                    c.created,
                    c.with_credentials,
                    c.deleted,
                    c.create_refused,
                    c.errors
                );
            }
        })
    };
    let mut fault_error = None;
    // When a pod login may have been cut short (its answer lost with the injector or OpenBao).
    let mut kills: Vec<i64> = Vec::new();
    for f in faults.iter_mut() {
        tokio::time::sleep(Duration::from_millis(f.gap_ms)).await;
        f.at_s = started.elapsed().as_secs_f64();
        if matches!(f.kind, FaultKind::KillInjector | FaultKind::StopOpenbao) {
            kills.push(unix_now());
        }
        let r = inject(f, &mut fleet).await;
        eprintln!(
            "[chaos] {:.1}s: {:?} {} down {} ms, back in {} ms{}",
            f.at_s,
            f.kind,
            f.target,
            f.down_ms,
            f.restart_ms,
            r.as_ref()
                .err()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = r {
            fault_error = Some(e);
            break;
        }
    }
    faults_done.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    progress.abort();
    let churn_wall = started.elapsed();
    // Everything is back: count until nothing is left, bounded.
    let scope = Scope {
        kv_mount: &kv,
        prefix: &prefix,
        db_mount: &db_mount,
        role: &role,
        pod_namespace: &ns.name,
        vdbi_namespace: &rel.namespace.name,
        kills: &kills,
    };
    let settle = Instant::now();
    let mut last = Counted::default();
    let mut clean_after = None;
    while settle.elapsed() < a.settle {
        match leftovers::count(p, &root, &scope).await {
            Ok(c) => {
                if c != last {
                    eprintln!(
                        "[chaos] settle {:.0}s: {c:?}",
                        settle.elapsed().as_secs_f64()
                    );
                }
                let clean = c.total() == 0;
                last = c;
                if clean {
                    clean_after = Some(settle.elapsed());
                    break;
                }
            }
            Err(e) => eprintln!("[chaos] count failed (retrying): {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The count that decides (nothing cleaned before it).
    let left = leftovers::count(p, &root, &scope).await.unwrap_or(last);
    if left.total() > 0 {
        eprintln!(
            "[chaos] leftovers; the fleet's logs:\n{}",
            fleet.log_tails(20)
        );
    }
    let binary = bin.display().to_string();
    // Clean-up, only now.
    fleet.stop();
    webhook.delete().await;
    for pfx in kv_prefixes(&prefix) {
        cleanup_prefix(&root, &kv, &pfx, &[], &[]).await;
    }
    drop_role(&root, p, &role).await;
    ns.cleanup().await;
    rel.cleanup().await;
    if let Some(e) = fault_error {
        return Err(e);
    }

    let c = std::mem::take(&mut *churn.lock().unwrap());
    let res = ChaosResult {
        scenario: "chaos",
        seed,
        projected: a.projected,
        binary,
        concurrency: a.concurrency,
        faults,
        churn: c,
        churn_wall_s: churn_wall.as_secs_f64(),
        time_to_clean_s: clean_after.map(|d| d.as_secs_f64()),
        settle_bound_s: a.settle.as_secs_f64(),
        leftovers: left,
        unseen_grace_s: a.unseen_grace.as_secs(),
        orphan_lease_discovery: a.orphan_lease_discovery,
        orphan_lease_grace_s: a.orphan_lease_grace.as_secs(),
    };
    let mut per_kind = Vec::new();
    for k in KINDS {
        let n = res.faults.iter().filter(|f| f.kind == k).count();
        per_kind.push(format!("{k:?} {n}"));
    }
    let mut rows = vec![
        ("seed".into(), res.seed.to_string()),
        (
            "injector".into(),
            if res.projected { "projected" } else { "legacy" }.into(),
        ),
        ("faults".into(), per_kind.join(", ")),
        (
            "pods created (with credentials) / deleted".into(),
            format!(
                "{} ({}) / {}",
                res.churn.created, res.churn.with_credentials, res.churn.deleted
            ),
        ),
        (
            "CREATE refused and retried / pods given up".into(),
            format!("{} / {}", res.churn.create_refused, res.churn.errors),
        ),
        ("churn wall".into(), format!("{:.1}s", res.churn_wall_s)),
        (
            "time to clean state".into(),
            match res.time_to_clean_s {
                Some(s) => format!("{s:.1}s"),
                None => format!("not clean within {:.0}s", res.settle_bound_s),
            },
        ),
    ];
    rows.extend(res.leftovers.rows());
    report::print_table("chaos", &rows);
    for e in &res.churn.error_samples {
        eprintln!("[chaos] error: {e}");
    }
    report::write_json(out, &format!("chaos-{}", res.churn.created), &res)
        .map_err(|e| e.to_string())?;
    Ok(res)
}
