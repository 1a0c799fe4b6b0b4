//! Renewer actor: keeps the credentials of live pods alive.
//!
//! While leading, every `syncTTLSecond` it walks the bookkeeping entries (`LIST` + `GET` of new
//! ones only: contents are remembered between cycles) and, for each entry whose pod is live in
//! the [`super::pod_index`] snapshot, renews the token (`increment: tokenTTL`) and the DB lease
//! (`increment: 432000`, as vault-db-injector) — but only when they would expire within
//! `renewHorizonCycles` cycles or when less than half of the TTL granted at the last renewal is
//! left (TTL-aware: far fewer calls than renewing everything every cycle, while Vault keeps at
//! least half a TTL of margin should every renewer be down), with bounded concurrency under the
//! Vault rate limit.
//! Unrecoverable leases (400 `invalid lease` / `could not find role`) are purged as the revoker
//! revokes ([`super::revocation`]: token revoked and checked dead, lease revoked if Vault still
//! holds it, entry deleted; on a failure the entry stays and the next cycle tries again); missing `PodName`/`NodeName`/`ServiceAccountName` are backfilled. If the pod
//! index has zero live pods while entries exist, the cycle touches nothing: that is almost
//! certainly a broken view of the cluster, not a cluster without pods. When the pod watch is
//! broken the renewer gives up its lease ([`StepDown`]), so that a peer with a working view renews.

use super::error::ActorError;
use super::leadership::{Leadership, LeadershipChanged, StepDown};
use super::pod_index::{LiveSnapshot, PodEvent, PodIndex, Snapshot, WatchStatus};
use super::revocation::revoke_recorded;
use super::supervision::RestartGuard;
use super::vault_session::{KvGet, KvList, KvPut, Paced, RenewLease, RenewToken, VaultSession};
use super::ActorHandle;
use crate::bookkeeping::BookkeepingEntry;
use crate::telemetry::metrics::Entry;
use crate::telemetry::Metrics;
use crate::vault::VaultToken;
use actix::prelude::*;
use futures::StreamExt;
use slog::{info, warn, Logger};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// vault-db-injector's lease renew increment (5 days).
pub const LEASE_INCREMENT: Duration = Duration::from_secs(432_000);

/// How long after taking the Lease the first cycle runs (at most one interval).
pub const FIRST_CYCLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RenewerConfig {
    pub interval: Duration,
    pub token_increment: Duration,
    pub horizon_cycles: u32,
    pub concurrency: usize,
    pub call_timeout: Duration,
    /// Delay of the first cycle after gaining leadership.
    pub first_cycle_after: Duration,
}

/// Run one cycle now; returns its report.
#[derive(Message)]
#[rtype(result = "Result<CycleReport, ActorError>")]
pub struct RunCycle;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub entries: usize,
    pub live: usize,
    pub tokens_renewed: u64,
    pub leases_renewed: u64,
    pub skipped: u64,
    pub purged: u64,
    pub backfilled: u64,
    pub errors: u64,
    pub vault_calls: u64,
}

/// What the renewer remembers of an entry between cycles.
#[derive(Clone, Debug)]
struct Known {
    entry: BookkeepingEntry,
    /// Expiry and TTL granted at the last renewal.
    token: Option<(SystemTime, Duration)>,
    lease: Option<(SystemTime, Duration)>,
}

pub struct Renewer {
    _guard: RestartGuard,
    cfg: RenewerConfig,
    vault: ActorHandle<VaultSession>,
    pods: ActorHandle<PodIndex>,
    leadership: Arc<OnceLock<ActorHandle<Leadership>>>,
    leading: bool,
    cycling: bool,
    known: Option<HashMap<String, Known>>,
    timer: Option<SpawnHandle>,
    metrics: Metrics,
    log: Logger,
}

impl Renewer {
    pub fn new(
        guard: RestartGuard,
        cfg: RenewerConfig,
        vault: ActorHandle<VaultSession>,
        pods: ActorHandle<PodIndex>,
        leadership: Arc<OnceLock<ActorHandle<Leadership>>>,
        metrics: Metrics,
        log: Logger,
    ) -> Renewer {
        Renewer {
            _guard: guard,
            cfg,
            vault,
            pods,
            leadership,
            leading: false,
            cycling: false,
            known: Some(HashMap::new()),
            timer: None,
            metrics,
            log,
        }
    }

    fn step_down(&self, reason: String) {
        if let Some(l) = self.leadership.get() {
            l.do_send(StepDown { reason });
        }
    }

    fn cycle(&mut self) -> ResponseActFuture<Self, Result<CycleReport, ActorError>> {
        if self.cycling {
            return Box::pin(fut::ready(Err(ActorError::Busy("a renewal cycle"))));
        }
        let Some(known) = self.known.take() else {
            return Box::pin(fut::ready(Err(ActorError::NotReady("the renewer's state"))));
        };
        self.cycling = true;
        let ctx = CycleCtx {
            cfg: self.cfg.clone(),
            vault: self.vault.clone(),
            metrics: self.metrics.clone(),
            log: self.log.clone(),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let pods = self.pods.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let snapshot = pods.send(Snapshot).await.ok().flatten();
                run_cycle(ctx, snapshot, known).await
            }
            .into_actor(self)
            .map(move |(known, res), act, _| {
                act.cycling = false;
                act.known = Some(known);
                let m = &act.metrics.renewal;
                m.cycle(started.elapsed(), matches!(&res, Ok(r) if r.errors == 0));
                match &res {
                    Ok(r) if r.errors == 0 => {
                        if act.leading {
                            m.leader_succeeded_at(SystemTime::now());
                        }
                        info!(act.log, "renewal cycle done"; "entries" => r.entries, "live" => r.live,
                            "tokens_renewed" => r.tokens_renewed, "leases_renewed" => r.leases_renewed,
                            "skipped" => r.skipped, "purged" => r.purged, "vault_calls" => r.vault_calls,
                            "duration_ms" => started.elapsed().as_millis() as u64);
                    }
                    Ok(r) => {
                        warn!(act.log, "renewal cycle finished with errors"; "errors" => r.errors, "entries" => r.entries);
                    }
                    Err(e) => {
                        warn!(act.log, "renewal cycle failed"; "error" => %e);
                    }
                }
                res
            }),
        )
    }

    fn schedule(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.timer = Some(ctx.run_later(after, |act, ctx| {
            if !act.leading {
                return;
            }
            let f = act.cycle();
            ctx.spawn(f.map(|_, act, ctx| {
                let every = act.cfg.interval;
                act.schedule(every, ctx);
            }));
        }));
    }
}

#[derive(Clone)]
struct CycleCtx {
    cfg: RenewerConfig,
    vault: ActorHandle<VaultSession>,
    metrics: Metrics,
    log: Logger,
    calls: Arc<AtomicU64>,
}

impl CycleCtx {
    fn deadline(&self) -> tokio::time::Instant {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::Instant::now() + self.cfg.call_timeout
    }
}

#[derive(Default)]
struct Outcome {
    token: bool,
    lease: bool,
    skipped: u64,
    purged: bool,
    backfilled: bool,
    error: bool,
    /// The entry has metadata but no data (the revoker's sweep deletes it; not counted).
    hollow: bool,
}

/// Entries read (at most [`GUARD_READS`]) that hold data; `None` when some could not be read
/// or the budget did not cover them all while none was real yet.
async fn count_real_entries(ctx: &CycleCtx, uuids: &[String]) -> Option<usize> {
    let reads = futures::stream::iter(uuids.iter().take(GUARD_READS).cloned())
        .map(|uuid| async move {
            ctx.vault
                .call(KvGet {
                    uuid,
                    deadline: ctx.deadline(),
                })
                .await
        })
        .buffer_unordered(ctx.cfg.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut real = 0;
    for r in reads {
        match r {
            Ok(Some(_)) => real += 1,
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    (real > 0 || uuids.len() <= GUARD_READS).then_some(real)
}

/// Entries the zero-live-pods guard reads to tell real entries from hollow ones.
const GUARD_READS: usize = 256;

async fn run_cycle(
    ctx: CycleCtx,
    snapshot: Option<LiveSnapshot>,
    mut known: HashMap<String, Known>,
) -> (HashMap<String, Known>, Result<CycleReport, ActorError>) {
    let Some(snapshot) = snapshot else {
        ctx.metrics.renewal.pods_listed(false);
        return (known, Err(ActorError::NotReady("the pod index")));
    };
    let listed = ctx
        .vault
        .call(Paced(KvList {
            deadline: ctx.deadline(),
        }))
        .await;
    let uuids = match listed {
        Ok(u) => u,
        Err(e) => return (known, Err(e)),
    };
    // Entries gone from KV were revoked (or purged): their per-uuid series go with them.
    known.retain(|k, v| {
        let keep = uuids.contains(k);
        if !keep {
            ctx.metrics.forget_entry(Entry::new(k, &v.entry.namespace));
        }
        keep
    });
    let mut hollow = 0;
    if snapshot.live_ids.is_empty() && !uuids.is_empty() {
        // Entries left without data (metadata only) are not entries: only real ones make the
        // view suspicious.
        match count_real_entries(&ctx, &uuids).await {
            Some(0) => hollow = uuids.len(),
            real => {
                ctx.metrics.renewal.pods_listed(false);
                return (
                    known,
                    Err(ActorError::BrokenView {
                        entries: real.unwrap_or(uuids.len()),
                    }),
                );
            }
        }
    }
    let mut report = CycleReport {
        entries: uuids.len() - hollow,
        ..Default::default()
    };
    let horizon = crate::schedule::renewal_horizon(ctx.cfg.interval, ctx.cfg.horizon_cycles);
    let live: Vec<String> = uuids
        .iter()
        .filter(|u| snapshot.is_live(u))
        .cloned()
        .collect();
    report.live = live.len();
    for u in uuids.iter().filter(|u| !snapshot.is_live(u)) {
        // Not ours to revoke (the revoker does); just drop its series.
        if let Some(k) = known.get(u) {
            ctx.metrics.forget_entry(Entry::new(u, &k.entry.namespace));
        }
    }
    let priors: Vec<(String, Option<Known>)> = live
        .into_iter()
        .map(|u| {
            let k = known.get(&u).cloned();
            (u, k)
        })
        .collect();
    let work = priors.into_iter().map(|(uuid, prior)| {
        let ctx = ctx.clone();
        let snapshot = snapshot.clone();
        async move {
            let (k, o) = renew_one(&ctx, &snapshot, &uuid, prior, horizon).await;
            (uuid, k, o)
        }
    });
    let mut stream = futures::stream::iter(work).buffer_unordered(ctx.cfg.concurrency.max(1));
    while let Some((uuid, k, o)) = stream.next().await {
        match k {
            Some(k) => {
                known.insert(uuid, k);
            }
            None => {
                known.remove(&uuid);
            }
        }
        report.tokens_renewed += o.token as u64;
        report.leases_renewed += o.lease as u64;
        report.skipped += o.skipped;
        report.purged += o.purged as u64;
        report.backfilled += o.backfilled as u64;
        report.errors += o.error as u64;
        report.entries -= o.hollow as usize;
    }
    ctx.metrics.renewal.skipped(report.skipped);
    report.vault_calls = ctx.calls.load(Ordering::Relaxed);
    (known, Ok(report))
}

/// Renew when it would expire within `horizon`, or when less than half of the TTL granted at
/// the last renewal is left (unknown: renew).
fn due(last: Option<(SystemTime, Duration)>, horizon: Duration) -> bool {
    crate::schedule::renewal_due(last, horizon, SystemTime::now())
}

async fn renew_one(
    ctx: &CycleCtx,
    snapshot: &LiveSnapshot,
    uuid: &str,
    prior: Option<Known>,
    horizon: Duration,
) -> (Option<Known>, Outcome) {
    let mut out = Outcome::default();
    let m = &ctx.metrics;
    // An entry without token nor lease (an NRI reservation) is re-read until they are filled in.
    let prior = prior.filter(|k| !(k.entry.token_id.is_empty() && k.entry.lease_id.is_empty()));
    let mut k = match prior {
        Some(k) => k,
        None => {
            let got = ctx
                .vault
                .call(Paced(KvGet {
                    uuid: uuid.to_string(),
                    deadline: ctx.deadline(),
                }))
                .await;
            match got {
                Ok(Some(entry)) => Known {
                    entry,
                    token: None,
                    lease: None,
                },
                Ok(None) => {
                    out.hollow = true;
                    return (None, out);
                }
                Err(e) => {
                    warn!(ctx.log, "cannot read bookkeeping entry"; "uuid" => uuid, "error" => %e);
                    out.error = true;
                    return (None, out);
                }
            }
        }
    };
    let ns = k.entry.namespace.clone();
    let labels = Entry::new(uuid, &ns);
    // NRI reservations (no token or lease yet) have nothing to renew.
    if !k.entry.token_id.is_empty() {
        if due(k.token, horizon) {
            let res = ctx
                .vault
                .call(Paced(RenewToken {
                    target: VaultToken::new(k.entry.token_id.clone()),
                    increment: ctx.cfg.token_increment,
                    deadline: ctx.deadline(),
                }))
                .await;
            match res {
                Ok(ttl) => {
                    let exp = SystemTime::now() + ttl.ttl;
                    k.token = Some((exp, ttl.ttl));
                    m.renewal.token_renewed(labels, exp);
                    out.token = true;
                }
                Err(e) if e.vault().is_some_and(|v| v.is_token_not_found()) => {
                    // vault-db-injector treats a vanished token as renewed; the revoker cleans up.
                    m.renewal.token_vanished(labels);
                }
                Err(e) => {
                    m.renewal.token_failed(labels);
                    warn!(ctx.log, "token renewal failed"; "uuid" => uuid, "error" => %e);
                    out.error = true;
                }
            }
        } else {
            out.skipped += 1;
        }
    }
    if !k.entry.lease_id.is_empty() {
        if due(k.lease, horizon) {
            let res = ctx
                .vault
                .call(Paced(RenewLease {
                    lease_id: k.entry.lease_id.clone(),
                    increment: LEASE_INCREMENT,
                    deadline: ctx.deadline(),
                }))
                .await;
            match res {
                Ok(ttl) => {
                    let exp = SystemTime::now() + ttl.ttl;
                    k.lease = Some((exp, ttl.ttl));
                    m.renewal.lease_renewed(labels, exp);
                    out.lease = true;
                }
                Err(e) if e.vault().is_some_and(|v| v.is_unrecoverable_lease()) => {
                    m.renewal.lease_failed(labels);
                    warn!(ctx.log, "lease is unrecoverable; purging the entry"; "uuid" => uuid, "error" => %e);
                    let purged =
                        revoke_recorded(&ctx.vault, uuid, &k.entry, || ctx.deadline(), m, &ctx.log)
                            .await;
                    match purged {
                        Ok(()) => {
                            out.purged = true;
                            return (None, out);
                        }
                        Err(e) => {
                            warn!(ctx.log, "cannot purge the entry; retried at the next cycle"; "uuid" => uuid, "error" => %e);
                            out.error = true;
                        }
                    }
                }
                Err(e) if e.vault().is_some_and(|v| v.is_lease_not_found()) => {
                    m.renewal.lease_vanished(labels);
                }
                Err(e) => {
                    m.renewal.lease_failed(labels);
                    warn!(ctx.log, "lease renewal failed"; "uuid" => uuid, "error" => %e);
                    out.error = true;
                }
            }
        } else {
            out.skipped += 1;
        }
    }
    // Backfill PodName / NodeName / ServiceAccountName from the live pod.
    if let Some(pod) = snapshot.pod_for(uuid) {
        let e = &k.entry;
        let missing = (e.pod_name.is_empty() && !pod.name.is_empty())
            || (e.node_name.is_empty() && !pod.node_name.is_empty())
            || (e.service_account_name.is_empty() && !pod.service_account.is_empty());
        if missing {
            let mut entry = k.entry.clone();
            if entry.pod_name.is_empty() {
                entry.pod_name = pod.name.clone();
            }
            if entry.node_name.is_empty() {
                entry.node_name = pod.node_name.clone();
            }
            if entry.service_account_name.is_empty() {
                entry.service_account_name = pod.service_account.clone();
            }
            let res = ctx
                .vault
                .call(Paced(KvPut {
                    uuid: uuid.to_string(),
                    entry: entry.clone(),
                    deadline: ctx.deadline(),
                }))
                .await;
            match res {
                Ok(()) => {
                    m.bookkeeping.stored();
                    k.entry = entry;
                    out.backfilled = true;
                }
                Err(e) => {
                    m.bookkeeping.store_failed(labels);
                    warn!(ctx.log, "backfill failed"; "uuid" => uuid, "error" => %e);
                }
            }
        }
    }
    (Some(k), out)
}

impl Actor for Renewer {
    type Context = Context<Self>;
}

impl Handler<LeadershipChanged> for Renewer {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        if self.leading == msg.leading {
            return;
        }
        self.leading = msg.leading;
        if msg.leading {
            info!(self.log, "renewer active"; "interval_s" => self.cfg.interval.as_secs());
            let first = self.cfg.first_cycle_after;
            self.schedule(first, ctx);
            // A broken watch means a stale view: leave the lease to a healthy peer.
            let pods = self.pods.clone();
            ctx.spawn(
                async move { pods.send(WatchStatus).await.ok().flatten() }
                    .into_actor(self)
                    .map(|broken, act, _| {
                        if let Some(reason) = broken {
                            if act.leading {
                                act.step_down(format!("pod watch broken: {reason}"));
                            }
                        }
                    }),
            );
        } else {
            info!(self.log, "renewer standing by");
            // A standby exports no renewal state: the leader's is the one that counts.
            self.metrics.renewal.not_leading();
            if let Some(known) = &self.known {
                for (uuid, k) in known {
                    self.metrics
                        .forget_entry(Entry::new(uuid, &k.entry.namespace));
                }
            }
            if let Some(t) = self.timer.take() {
                ctx.cancel_future(t);
            }
        }
    }
}

impl Handler<PodEvent> for Renewer {
    type Result = ();
    fn handle(&mut self, msg: PodEvent, _: &mut Context<Self>) {
        if let PodEvent::WatchBroken(reason) = msg {
            if self.leading {
                self.step_down(format!("pod watch broken: {reason}"));
            }
        }
    }
}

impl Handler<RunCycle> for Renewer {
    type Result = ResponseActFuture<Self, Result<CycleReport, ActorError>>;
    fn handle(&mut self, _: RunCycle, _: &mut Context<Self>) -> Self::Result {
        self.cycle()
    }
}

#[cfg(test)]
mod tests {
    use super::due;
    use std::time::{Duration, SystemTime};

    #[test]
    fn renewal_is_due_within_the_horizon_or_past_half_the_granted_ttl() {
        let h = Duration::from_secs(900);
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(due(None, h), "never renewed: due");
        // 768 h granted, 700 h left: not due; 300 h left (< half): due.
        assert!(!due(Some((now + 700 * hour, 768 * hour)), h));
        assert!(due(Some((now + 300 * hour, 768 * hour)), h));
        // Capped lease: 10 min left of 10 min granted, within the horizon: due.
        assert!(due(
            Some((now + Duration::from_secs(600), Duration::from_secs(600))),
            h
        ));
        // Already expired: due.
        assert!(due(Some((now - hour, hour)), h));
    }
}
