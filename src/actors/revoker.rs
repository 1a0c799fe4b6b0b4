//! Revoker actor: credentials die with their pod.
//!
//! While leading (see [`super::leadership`]) it revokes, for every pod the [`super::pod_index`]
//! reports deleted — or finished (Succeeded/Failed), when `revokeTerminatedPods` is on — each of
//! the pod's bookkeeping entries: the token (revoke-orphan, which also revokes the DB leases the
//! token created; then checked dead with `lookup-self`), then the DB lease explicitly if Vault
//! still holds it (a lease whose parent is
//! another token, or whose revocation through the token failed), then the KV entry. "Not found"
//! is success at every step, so a double revocation is harmless; a failure keeps the entry in KV
//! and retries with backoff. A pod reported deleted that still exists (its label was removed) is
//! left alone.
//!
//! A sweep catches what the watch missed: entries whose pod is not live. An entry is revoked only
//! after it has been seen without a live pod for `revokerUnseenGrace` (so an admission whose pod
//! is being stored is not raced) and after a live read of the pod it names confirms the pod is
//! really gone or finished (so a pod of another release, or one whose label was removed, keeps
//! its credentials — two defects of vault-db-injector). The sweep runs every
//! `revokerUnseenGrace / 4`: entries of pods that never appeared are revoked 60 to 75 s after
//! they were written (default grace), not at a 5-minute sweep.
//!
//! Orphan-lease discovery (`orphanLeaseDiscovery`), a separate pass after each sweep: it lists
//! the leases Vault holds under the database roles this release uses (`orphanLeaseRoles`, else the
//! roles of the leases recorded in its entries) and finds those no entry records — left by a crash
//! between issuing and recording. Once older than `orphanLeaseGrace` they are counted and, in
//! `revoke` mode, revoked. Entries are read once (at most [`ORPHAN_READS_PER_PASS`] per pass, so
//! a large installation learns them over a few passes); nothing is decided before all are known.
//! Without the permission to list leases it stops after the first refusal, until the next term.
//!
//! When the pod watch is broken the revoker gives up its lease ([`StepDown`]): a revoker that
//! cannot see deletions must not keep the lease from a healthy peer.

use super::error::ActorError;
use super::leadership::{Leadership, LeadershipChanged, StepDown};
use super::missed_events::MissedEvents;
use super::pod_check::{pod_state, still_exists, PodState};
use super::pod_index::{LiveSnapshot, PodEvent, PodIndex, PodRecord, Snapshot, WatchStatus};
use super::revocation::revoke_recorded;
use super::supervision::RestartGuard;
use super::vault_session::{
    KvDeleteMetadata, KvGet, KvList, ListLeases, LookupLease, Paced, RevokeLease, VaultSession,
};
use super::ActorHandle;
use crate::bookkeeping::BookkeepingEntry;
use crate::config::OrphanLeaseMode;
use crate::telemetry::Metrics;
use actix::prelude::*;
use futures::StreamExt;
use slog::{debug, info, warn, Logger};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

/// Attempts before an entry's revocation is parked (it stays in KV; the sweep retries it after
/// [`PARK_FOR`]).
const MAX_ATTEMPTS: u32 = 10;
const PARK_FOR: Duration = Duration::from_secs(600);
/// Bookkeeping entries orphan discovery reads per pass.
pub const ORPHAN_READS_PER_PASS: usize = 256;

impl RevokerConfig {
    /// The sweep period: a quarter of the unseen grace (an entry whose pod never appeared is
    /// revoked between 1 and 1.25 graces after it was written), at most `sweep_interval`.
    pub fn sweep_every(&self) -> Duration {
        (self.unseen_grace / 4)
            .min(self.sweep_interval)
            .max(Duration::from_secs(1))
    }
}

#[derive(Clone, Debug)]
pub struct RevokerConfig {
    pub revoke_finished_pods: bool,
    pub unseen_grace: Duration,
    pub sweep_interval: Duration,
    pub call_timeout: Duration,
    pub max_concurrent: usize,
    pub orphan_mode: OrphanLeaseMode,
    pub orphan_grace: Duration,
    /// `(mount, role)` pairs configured by `orphanLeaseRoles`; empty = roles seen in entries.
    pub orphan_roles: Vec<(String, String)>,
}

/// Revoke one bookkeeping entry now (also used by tests and the sweep).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RevokeEntry {
    pub uuid: String,
    pub path: &'static str,
    pub since: Instant,
}

/// Run a sweep now.
#[derive(Message)]
#[rtype(result = "Result<SweepReport, String>")]
pub struct Sweep;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub entries: usize,
    pub candidates: usize,
    pub revoked: usize,
}

/// Run an orphan-lease discovery pass now (tests; it also runs after every sweep).
#[derive(Message)]
#[rtype(result = "Result<OrphanReport, String>")]
pub struct DiscoverOrphans;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrphanReport {
    /// Leases listed under the examined roles.
    pub leases: usize,
    /// Entries whose lease is still unknown (nothing decided while > 0).
    pub unknown_entries: usize,
    /// Orphan leases older than the grace seen by this pass (not only new ones).
    pub orphans: usize,
    pub revoked: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Done {
    uuid: String,
    ok: bool,
    attempt: u32,
    path: &'static str,
    since: Instant,
}

/// Completion of one pod's cleanup: `vdbi_pod_cleanup_count_success` once every uuid is done,
/// if the pod had entries of this release.
struct PodCleanup {
    remaining: AtomicUsize,
    failed: AtomicBool,
    found: AtomicBool,
}

/// What orphan discovery remembers between sweeps.
#[derive(Default)]
struct OrphanState {
    /// uuid → lease id recorded in its entry ("" when none yet: re-read every pass, an NRI
    /// reservation gets its lease later).
    entry_leases: HashMap<String, String>,
    /// `(mount, role)` of the leases recorded in entries.
    roles: BTreeSet<(String, String)>,
    /// Issue time of leases without entry (looked up once).
    issued: HashMap<String, SystemTime>,
    /// Orphan leases already counted.
    reported: HashSet<String>,
    /// Listing leases was refused: no discovery until the next leadership term.
    denied: bool,
}

pub struct Revoker {
    _guard: RestartGuard,
    cfg: RevokerConfig,
    vault: ActorHandle<VaultSession>,
    pods: ActorHandle<PodIndex>,
    leadership: Arc<OnceLock<ActorHandle<Leadership>>>,
    kube: kube::Client,
    leading: bool,
    in_flight: HashSet<String>,
    /// First time the sweep saw each entry without a live pod.
    unseen_since: HashMap<String, Instant>,
    /// Entries whose revocation failed [`MAX_ATTEMPTS`] times, until when they are left alone.
    parked: HashMap<String, Instant>,
    sweeping: bool,
    /// Deletions reported while standing by, acted on when this replica leads.
    missed: MissedEvents,
    /// `None` while a discovery pass runs.
    orphans: Option<OrphanState>,
    permits: Arc<Semaphore>,
    metrics: Metrics,
    log: Logger,
}

impl Revoker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        guard: RestartGuard,
        cfg: RevokerConfig,
        vault: ActorHandle<VaultSession>,
        pods: ActorHandle<PodIndex>,
        leadership: Arc<OnceLock<ActorHandle<Leadership>>>,
        kube: kube::Client,
        metrics: Metrics,
        log: Logger,
    ) -> Revoker {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
        Revoker {
            _guard: guard,
            cfg,
            vault,
            pods,
            leadership,
            kube,
            leading: false,
            in_flight: HashSet::new(),
            unseen_since: HashMap::new(),
            parked: HashMap::new(),
            sweeping: false,
            missed: MissedEvents::default(),
            orphans: Some(OrphanState::default()),
            permits,
            metrics,
            log,
        }
    }

    fn step_down(&self, reason: String) {
        if let Some(l) = self.leadership.get() {
            l.do_send(StepDown { reason });
        }
    }

    /// A pod the index reports deleted: confirm with a live read (a pod whose label was removed
    /// is reported deleted too, but keeps its credentials), then revoke.
    fn pod_deleted(&mut self, rec: PodRecord, ctx: &mut Context<Self>) {
        let kube = self.kube.clone();
        let since = Instant::now();
        let revoke_finished = self.cfg.revoke_finished_pods;
        let (metrics, log) = (self.metrics.clone(), self.log.clone());
        ctx.spawn(
            async move {
                // Gone (or replaced by a new pod of the same name), or cannot tell: the API
                // reported the deletion, act on it.
                let gone = match still_exists(&kube, &rec, &metrics, &log).await {
                    None => true,
                    Some(state) => state == PodState::Finished && revoke_finished,
                };
                (rec, gone)
            }
            .into_actor(self)
            .map(move |(rec, gone), act, ctx| {
                if gone {
                    act.revoke_pod(&rec, "watch", since, ctx);
                } else {
                    info!(act.log, "pod left the watched set but still exists (label removed?): credentials kept";
                        "namespace" => &rec.namespace, "pod" => &rec.name);
                }
            }),
        );
    }

    fn revoke_pod(
        &mut self,
        rec: &PodRecord,
        path: &'static str,
        since: Instant,
        ctx: &mut Context<Self>,
    ) {
        let ids: Vec<String> = if rec.uuids.is_empty() {
            vec![rec.uid.clone()]
        } else {
            rec.uuids.clone()
        };
        let cleanup = Arc::new(PodCleanup {
            remaining: AtomicUsize::new(ids.len()),
            failed: AtomicBool::new(false),
            found: AtomicBool::new(false),
        });
        for uuid in ids {
            self.start_revoke(uuid, path, since, 0, Some(cleanup.clone()), ctx);
        }
    }

    fn start_revoke(
        &mut self,
        uuid: String,
        path: &'static str,
        since: Instant,
        attempt: u32,
        cleanup: Option<Arc<PodCleanup>>,
        ctx: &mut Context<Self>,
    ) {
        if !self.leading || !self.in_flight.insert(uuid.clone()) {
            return;
        }
        let vault = self.vault.clone();
        let metrics = self.metrics.clone();
        let log = self.log.clone();
        let timeout = self.cfg.call_timeout;
        let permits = self.permits.clone();
        let me = ctx.address();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let res = revoke_entry(&vault, &uuid, timeout, &metrics, &log).await;
            let ok = match &res {
                Ok(found) => {
                    if *found {
                        metrics.revocation.revoked_after(path, since.elapsed());
                    }
                    true
                }
                Err(e) => {
                    metrics.revocation.cleanup_failed();
                    warn!(log, "revocation failed; will retry"; "uuid" => &uuid, "error" => %e, "attempt" => attempt + 1);
                    false
                }
            };
            if let Some(c) = cleanup {
                match res {
                    Ok(true) => c.found.store(true, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(_) => c.failed.store(true, Ordering::SeqCst),
                }
                if c.remaining.fetch_sub(1, Ordering::SeqCst) == 1
                    && c.found.load(Ordering::SeqCst)
                    && !c.failed.load(Ordering::SeqCst)
                {
                    metrics.revocation.pod_cleaned_up();
                }
            }
            me.do_send(Done {
                uuid,
                ok,
                attempt,
                path,
                since,
            });
        });
    }

    fn sweep(
        &mut self,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<SweepReport, String>> {
        if !self.leading || self.sweeping {
            return Box::pin(fut::ready(Ok(SweepReport::default())));
        }
        self.sweeping = true;
        let now = Instant::now();
        self.parked.retain(|_, until| *until > now);
        let env = SweepEnv {
            parked: self.parked.keys().cloned().collect(),
            in_flight: self.in_flight.clone(),
            ..self.env()
        };
        let unseen = self.unseen_since.clone();
        Box::pin(
            async move { run_sweep(&env, unseen).await }
            .into_actor(self)
            .map(|res, act, ctx| {
                act.sweeping = false;
                match res {
                    Ok(out) => {
                        act.unseen_since = out.still_unseen;
                        let revoked = out.confirmed.len();
                        for uuid in out.confirmed {
                            act.unseen_since.remove(&uuid);
                            act.start_revoke(uuid, "sweep", Instant::now(), 0, None, ctx);
                        }
                        if revoked > 0 {
                            info!(act.log, "sweep found credentials of gone pods"; "entries" => out.report.entries, "revoking" => revoked);
                        }
                        if act.cfg.orphan_mode != OrphanLeaseMode::Off && act.orphans.is_some() {
                            let f = act.discover();
                            ctx.spawn(f.map(|_, _, _| ()));
                        }
                        Ok(SweepReport {
                            revoked,
                            ..out.report
                        })
                    }
                    Err(e) => {
                        warn!(act.log, "sweep skipped"; "error" => &e);
                        Err(e)
                    }
                }
            }),
        )
    }
}

impl Revoker {
    /// What a sweep or a discovery pass works with (nothing parked or in flight).
    fn env(&self) -> SweepEnv {
        SweepEnv {
            vault: self.vault.clone(),
            pods: self.pods.clone(),
            kube: self.kube.clone(),
            cfg: self.cfg.clone(),
            metrics: self.metrics.clone(),
            log: self.log.clone(),
            parked: HashSet::new(),
            in_flight: HashSet::new(),
        }
    }

    fn discover(&mut self) -> ResponseActFuture<Self, Result<OrphanReport, String>> {
        if !self.leading || self.cfg.orphan_mode == OrphanLeaseMode::Off {
            return Box::pin(fut::ready(Ok(OrphanReport::default())));
        }
        let Some(mut orphans) = self.orphans.take() else {
            return Box::pin(fut::ready(Err("a discovery pass is running".to_string())));
        };
        let env = self.env();
        Box::pin(
            async move {
                let res = discover_orphans(&env, &mut orphans).await;
                (res, orphans)
            }
            .into_actor(self)
            .map(|(res, orphans), act, _| {
                act.orphans = Some(orphans);
                res
            }),
        )
    }
}

#[path = "revoker_reservations.rs"]
mod reservations;

struct SweepEnv {
    vault: ActorHandle<VaultSession>,
    pods: ActorHandle<PodIndex>,
    kube: kube::Client,
    cfg: RevokerConfig,
    metrics: Metrics,
    log: Logger,
    parked: HashSet<String>,
    in_flight: HashSet<String>,
}

impl SweepEnv {
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.cfg.call_timeout
    }

    /// A VaultSession request built with a fresh call deadline.
    async fn call<M, T>(&self, msg: impl FnOnce(tokio::time::Instant) -> M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        M::Result: Send,
        VaultSession: Handler<Paced<M>>,
    {
        self.vault.call(Paced(msg(self.deadline()))).await
    }

    async fn kv_list(&self) -> Result<Vec<String>, String> {
        self.call(|deadline| KvList { deadline })
            .await
            .map_err(|e| e.to_string())
    }

    async fn kv_get(&self, uuid: &str) -> Result<Option<BookkeepingEntry>, ActorError> {
        let uuid = uuid.to_string();
        self.call(|deadline| KvGet { uuid, deadline }).await
    }
}

struct SweepOutcome {
    report: SweepReport,
    confirmed: Vec<String>,
    still_unseen: HashMap<String, Instant>,
}

async fn run_sweep(
    env: &SweepEnv,
    unseen: HashMap<String, Instant>,
) -> Result<SweepOutcome, String> {
    let snapshot: LiveSnapshot = env
        .pods
        .send(Snapshot)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "pod index not synchronised yet".to_string())?;
    let now = Instant::now();
    let uuids = env.kv_list().await?;
    let mut still_unseen = HashMap::new();
    let mut candidates = Vec::new();
    for uuid in &uuids {
        let gone = !snapshot.is_live(uuid);
        let finished = env.cfg.revoke_finished_pods && snapshot.is_finished(uuid);
        if !gone && !finished {
            continue;
        }
        let first = unseen.get(uuid).copied().unwrap_or(now);
        still_unseen.insert(uuid.clone(), first);
        // Sweeps are periodic: an entry first seen at one sweep is due exactly `grace` later,
        // give or take the sweeps' own jitter (a tenth of a period of tolerance).
        if now.duration_since(first) + env.cfg.sweep_every() / 10 >= env.cfg.unseen_grace
            && !env.parked.contains(uuid)
            && !env.in_flight.contains(uuid)
        {
            candidates.push(uuid.clone());
        }
    }
    // Confirm with a live read of the pod each entry names before revoking.
    let checks = futures::stream::iter(candidates.iter().cloned())
        .map(|uuid| async move {
            let entry = env.kv_get(&uuid).await;
            let state = match &entry {
                Ok(Some(e)) => Some(pod_state(&env.kube, e, &uuid, &env.metrics, &env.log).await),
                _ => None,
            };
            (uuid, entry, state)
        })
        .buffer_unordered(env.cfg.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut confirmed = Vec::new();
    for (uuid, entry, state) in checks {
        match (entry, state) {
            (Ok(None), _) => {
                // Metadata without data (a deletion cut short between its two calls, or data
                // deleted by hand): nothing to revoke, but it would be listed for good.
                still_unseen.remove(&uuid);
                delete_hollow(env, &uuid).await;
            }
            (Ok(Some(_)), Some(state)) => {
                let revoke = match state {
                    PodState::Gone => true,
                    PodState::Finished => env.cfg.revoke_finished_pods,
                    PodState::Running | PodState::Unknown => false,
                };
                if revoke {
                    confirmed.push(uuid);
                } else {
                    debug!(env.log, "entry's pod exists outside this release's view; kept"; "uuid" => &uuid, "state" => ?state);
                    if state == PodState::Running {
                        still_unseen.remove(&uuid);
                    }
                }
            }
            (Ok(Some(_)), None) => {}
            (Err(e), _) => {
                warn!(env.log, "sweep cannot read entry"; "uuid" => &uuid, "error" => %e)
            }
        }
    }
    let mut report = SweepReport {
        entries: uuids.len(),
        candidates: candidates.len(),
        ..Default::default()
    };
    reservations::sweep(env, &snapshot, &unseen, &mut still_unseen, now, &mut report).await;
    Ok(SweepOutcome {
        report,
        confirmed,
        still_unseen,
    })
}

/// Deletes the metadata of an entry found without data. A failure is logged; the next sweep
/// retries.
async fn delete_hollow(env: &SweepEnv, uuid: &str) {
    let id = uuid.to_string();
    match env
        .call(|deadline| KvDeleteMetadata { uuid: id, deadline })
        .await
    {
        Ok(()) => {
            env.metrics.revocation.hollow_entry_deleted();
            info!(env.log, "deleted the metadata of a bookkeeping entry without data"; "uuid" => uuid);
        }
        Err(e) => {
            warn!(env.log, "cannot delete the metadata of an entry without data"; "uuid" => uuid, "error" => %e)
        }
    }
}

/// `(mount, role)` of a lease id `<mount>/creds/<role>/<id>` (the mount may contain `/`).
pub fn lease_role(lease_id: &str) -> Option<(String, String)> {
    let (path, _id) = lease_id.rsplit_once('/')?;
    let (mount_creds, role) = path.rsplit_once('/')?;
    let mount = mount_creds.strip_suffix("/creds")?;
    (!mount.is_empty() && !role.is_empty()).then(|| (mount.to_string(), role.to_string()))
}

/// Lists the lease ids Vault holds under the roles orphan discovery examines. `None` when the
/// listing is impossible (not permitted: logged once per leadership term).
async fn list_managed_leases(env: &SweepEnv, orphans: &mut OrphanState) -> Option<Vec<String>> {
    let roles: BTreeSet<(String, String)> = if env.cfg.orphan_roles.is_empty() {
        orphans.roles.clone()
    } else {
        env.cfg.orphan_roles.iter().cloned().collect()
    };
    let mut out = Vec::new();
    for (mount, role) in roles {
        let prefix = format!("{mount}/creds/{role}/");
        let res = env
            .call(|deadline| ListLeases {
                prefix: prefix.clone(),
                deadline,
            })
            .await;
        match res {
            Ok(keys) => out.extend(
                keys.into_iter()
                    .filter(|k| !k.ends_with('/'))
                    .map(|k| format!("{prefix}{k}")),
            ),
            Err(e) if e.vault().is_some_and(|v| v.is_permission_denied()) => {
                orphans.denied = true;
                warn!(env.log, "orphan-lease discovery needs `list` and `sudo` on sys/leases/lookup/<mount>/creds/* (and `update` on sys/leases/revoke to revoke); off until the next leadership term";
                    "prefix" => &prefix);
                return None;
            }
            Err(e) => {
                warn!(env.log, "cannot list leases; orphan discovery skipped this sweep"; "prefix" => &prefix, "error" => %e);
                return None;
            }
        }
    }
    Some(out)
}

/// One discovery pass: lists Vault's leases under the examined roles *before* the bookkeeping
/// entries (a lease issued and recorded meanwhile is then seen recorded), learns the lease of
/// entries not read yet, and counts (in `revoke` mode also revokes) the unrecorded leases older
/// than the grace.
async fn discover_orphans(
    env: &SweepEnv,
    orphans: &mut OrphanState,
) -> Result<OrphanReport, String> {
    if orphans.denied {
        return Ok(OrphanReport::default());
    }
    let Some(listed) = list_managed_leases(env, orphans).await else {
        return Ok(OrphanReport::default());
    };
    let uuids = env.kv_list().await?;
    // Learn the lease of entries not read yet (and of those without one yet), within budget.
    let listed_uuids: HashSet<&String> = uuids.iter().collect();
    orphans.entry_leases.retain(|u, _| listed_uuids.contains(u));
    let mut unknown: Vec<String> = uuids
        .iter()
        .filter(|u| orphans.entry_leases.get(*u).is_none_or(|l| l.is_empty()))
        .cloned()
        .collect();
    let over_budget = unknown.len().saturating_sub(ORPHAN_READS_PER_PASS);
    unknown.truncate(ORPHAN_READS_PER_PASS);
    let reads = futures::stream::iter(unknown)
        .map(|uuid| async move {
            let e = env.kv_get(&uuid).await;
            (uuid, e)
        })
        .buffer_unordered(env.cfg.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut failed = 0;
    for (uuid, e) in reads {
        match e {
            Ok(Some(e)) => {
                if let Some(r) = lease_role(&e.lease_id) {
                    orphans.roles.insert(r);
                }
                orphans.entry_leases.insert(uuid, e.lease_id);
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                warn!(env.log, "orphan discovery cannot read entry"; "uuid" => &uuid, "error" => %e);
            }
        }
    }
    let mut report = OrphanReport {
        leases: listed.len(),
        unknown_entries: over_budget + failed,
        ..Default::default()
    };
    if report.unknown_entries > 0 {
        // Some entries are unknown: any listed lease may be theirs. Decide nothing this time.
        return Ok(report);
    }
    let recorded: HashSet<&String> = orphans.entry_leases.values().collect();
    let candidates: Vec<String> = listed
        .iter()
        .filter(|l| !recorded.contains(l))
        .cloned()
        .collect();
    let listed_set: HashSet<&String> = listed.iter().collect();
    orphans.issued.retain(|l, _| listed_set.contains(l));
    orphans.reported.retain(|l| listed_set.contains(l));
    let now = SystemTime::now();
    for lease in candidates {
        let issued = match orphans.issued.get(&lease) {
            Some(t) => *t,
            None => {
                let lease_id = lease.clone();
                let info = env
                    .call(|deadline| LookupLease { lease_id, deadline })
                    .await;
                match info {
                    Ok(Some(info)) => {
                        let Some(t) = info
                            .issue_time
                            .as_deref()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(SystemTime::from)
                        else {
                            continue;
                        };
                        orphans.issued.insert(lease.clone(), t);
                        t
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(env.log, "cannot look up lease"; "lease" => &lease, "error" => %e);
                        continue;
                    }
                }
            }
        };
        let age = now.duration_since(issued).unwrap_or_default();
        if age < env.cfg.orphan_grace {
            continue;
        }
        report.orphans += 1;
        if orphans.reported.insert(lease.clone()) {
            env.metrics.revocation.orphan_lease_found();
            warn!(env.log, "database lease without bookkeeping entry"; "lease" => &lease,
                "age_s" => age.as_secs(), "action" => env.cfg.orphan_mode.as_str());
        }
        if env.cfg.orphan_mode == OrphanLeaseMode::Revoke {
            let lease_id = lease.clone();
            let res = env
                .call(|deadline| RevokeLease { lease_id, deadline })
                .await;
            match res {
                Ok(()) => {
                    report.revoked += 1;
                    env.metrics.revocation.orphan_lease_revoked();
                    orphans.issued.remove(&lease);
                    orphans.reported.remove(&lease);
                    info!(env.log, "orphan database lease revoked"; "lease" => &lease);
                }
                Err(e) => {
                    warn!(env.log, "cannot revoke orphan lease"; "lease" => &lease, "error" => %e)
                }
            }
        }
    }
    Ok(report)
}

/// Revokes one entry: token, lease (if Vault still holds it), then the KV entry. `Ok(false)`
/// when there was nothing to do.
pub async fn revoke_entry(
    vault: &ActorHandle<VaultSession>,
    uuid: &str,
    timeout: Duration,
    metrics: &Metrics,
    log: &Logger,
) -> Result<bool, ActorError> {
    let dl = || tokio::time::Instant::now() + timeout;
    let Some(entry) = vault
        .send(Paced(KvGet {
            uuid: uuid.to_string(),
            deadline: dl(),
        }))
        .await??
    else {
        return Ok(false);
    };
    revoke_recorded(vault, uuid, &entry, dl, metrics, log).await?;
    info!(log, "credentials revoked"; "uuid" => uuid, "namespace" => &entry.namespace, "pod" => &entry.pod_name);
    Ok(true)
}

impl Revoker {
    /// On taking the lease: act on the deletions (and finished pods) reported while this replica
    /// stood by or its lease had lapsed. The leader of the time may have handled them already:
    /// revocation of a missing entry is a no-op.
    fn replay_missed(&mut self, ctx: &mut Context<Self>) {
        let missed = self.missed.take(Instant::now());
        if missed.is_empty() {
            return;
        }
        info!(self.log, "acting on pod deletions seen while standing by"; "pods" => missed.len());
        for ev in missed {
            match ev {
                PodEvent::Deleted(rec) => self.pod_deleted(rec, ctx),
                PodEvent::Finished(rec) => self.revoke_pod(&rec, "finished", Instant::now(), ctx),
                _ => {}
            }
        }
    }
}

impl Actor for Revoker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = self.cfg.sweep_every();
        ctx.run_interval(every, |act, ctx| {
            act.missed.prune(Instant::now());
            if act.leading {
                let f = act.sweep(ctx);
                ctx.spawn(f.map(|_, _, _| ()));
            }
        });
    }
}

impl Handler<LeadershipChanged> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        if self.leading == msg.leading {
            return;
        }
        self.leading = msg.leading;
        if msg.leading {
            info!(self.log, "revoker active");
            if let Some(o) = self.orphans.as_mut() {
                o.denied = false;
            }
            // A broken watch means a blind revoker: leave the lease to a healthy peer.
            let pods = self.pods.clone();
            ctx.spawn(
                async move { pods.send(WatchStatus).await.ok().flatten() }
                    .into_actor(self)
                    .map(|broken, act, ctx| match broken {
                        Some(reason) if act.leading => {
                            act.step_down(format!("pod watch broken: {reason}"))
                        }
                        _ => {
                            act.replay_missed(ctx);
                            let f = act.sweep(ctx);
                            ctx.spawn(f.map(|_, _, _| ()));
                        }
                    }),
            );
        } else {
            info!(self.log, "revoker standing by");
            self.unseen_since.clear();
        }
    }
}

impl Handler<PodEvent> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: PodEvent, ctx: &mut Context<Self>) {
        if !self.leading {
            self.missed.remember(&msg, self.cfg.revoke_finished_pods);
            return;
        }
        match msg {
            PodEvent::Deleted(rec) => self.pod_deleted(rec, ctx),
            PodEvent::Finished(rec) if self.cfg.revoke_finished_pods => {
                self.revoke_pod(&rec, "finished", Instant::now(), ctx)
            }
            PodEvent::WatchBroken(reason) => self.step_down(format!("pod watch broken: {reason}")),
            _ => {}
        }
    }
}

impl Handler<RevokeEntry> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: RevokeEntry, ctx: &mut Context<Self>) {
        self.start_revoke(msg.uuid, msg.path, msg.since, 0, None, ctx);
    }
}

impl Handler<DiscoverOrphans> for Revoker {
    type Result = ResponseActFuture<Self, Result<OrphanReport, String>>;
    fn handle(&mut self, _: DiscoverOrphans, _: &mut Context<Self>) -> Self::Result {
        self.discover()
    }
}

impl Handler<Sweep> for Revoker {
    type Result = ResponseActFuture<Self, Result<SweepReport, String>>;
    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) -> Self::Result {
        self.sweep(ctx)
    }
}

impl Handler<Done> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: Done, ctx: &mut Context<Self>) {
        self.in_flight.remove(&msg.uuid);
        if msg.ok {
            self.parked.remove(&msg.uuid);
            return;
        }
        let attempt = msg.attempt + 1;
        if attempt >= MAX_ATTEMPTS {
            // Persistently failing (irrevocable lease? Vault policy?): the entry stays in KV and
            // the sweep tries again later; the other entries are not held up.
            warn!(self.log, "revocation keeps failing; parked"; "uuid" => &msg.uuid,
                "attempts" => attempt, "retry_in_s" => PARK_FOR.as_secs());
            self.parked.insert(msg.uuid, Instant::now() + PARK_FOR);
            return;
        }
        let delay = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(attempt.min(7)))
            .min(Duration::from_secs(60));
        ctx.run_later(delay, move |act, ctx| {
            act.start_revoke(msg.uuid, msg.path, msg.since, attempt, None, ctx);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::lease_role;

    #[test]
    fn lease_roles_are_parsed_from_lease_ids() {
        assert_eq!(
            lease_role("databases/creds/app-rw/AbC123"),
            Some(("databases".into(), "app-rw".into()))
        );
        assert_eq!(
            lease_role("team/db/creds/reporting/x"),
            Some(("team/db".into(), "reporting".into()))
        );
        assert_eq!(lease_role("kv/data/x"), None);
        assert_eq!(lease_role("creds/role/x"), None);
        assert_eq!(lease_role(""), None);
    }
}
