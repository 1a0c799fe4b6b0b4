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
//!
//! Layout: this file holds the actor (its configuration, messages, and the handling of
//! leadership and pod-watch events); `revoke.rs` the revocation of entries with retry and
//! parking; `sweep.rs` the sweep; `reservations.rs` the sweep's pass over reservations;
//! `attempts.rs` its pass over NRI fetch attempts; `orphans.rs` orphan-lease discovery.

mod attempts;
mod orphans;
mod reservations;
mod revoke;
mod sweep;

pub use orphans::{lease_role, ORPHAN_READS_PER_PASS};
pub use revoke::revoke_entry;

use super::error::ActorError;
use super::leadership::{Leadership, LeadershipChanged, StepDown};
use super::missed_events::MissedEvents;
use super::pod_check::{still_exists, PodState};
use super::pod_index::{PodEvent, PodIndex, PodRecord, WatchStatus};
use super::supervision::RestartGuard;
use super::vault_session::VaultSession;
use super::ActorHandle;
use crate::config::OrphanLeaseMode;
use crate::telemetry::Metrics;
use actix::prelude::*;
use orphans::OrphanState;
use slog::{info, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

impl RevokerConfig {
    /// The sweep period: a quarter of the unseen grace (an entry whose pod never appeared is
    /// revoked between 1 and 1.25 graces after it was written), at most `sweep_interval`.
    pub fn sweep_every(&self) -> Duration {
        crate::schedule::sweep_period(self.unseen_grace, self.sweep_interval)
    }

    /// An entry (or reservation) unseen since `first` may go at `now`.
    pub(super) fn unseen_grace_over(&self, first: Instant, now: Instant) -> bool {
        crate::schedule::unseen_grace_over(
            now.duration_since(first),
            self.unseen_grace,
            self.sweep_every(),
        )
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
#[rtype(result = "Result<SweepReport, ActorError>")]
pub struct Sweep;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub entries: usize,
    pub candidates: usize,
    pub revoked: usize,
}

/// Run an orphan-lease discovery pass now (tests; it also runs after every sweep).
#[derive(Message)]
#[rtype(result = "Result<OrphanReport, ActorError>")]
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
    /// Entries whose revocation failed [`revoke::MAX_ATTEMPTS`] times, until when they are left alone.
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
    type Result = ResponseActFuture<Self, Result<OrphanReport, ActorError>>;
    fn handle(&mut self, _: DiscoverOrphans, _: &mut Context<Self>) -> Self::Result {
        self.discover()
    }
}

impl Handler<Sweep> for Revoker {
    type Result = ResponseActFuture<Self, Result<SweepReport, ActorError>>;
    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) -> Self::Result {
        self.sweep(ctx)
    }
}
