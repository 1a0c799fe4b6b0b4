//! The sweep: entries whose pod is not live, revoked once unseen for the grace and confirmed
//! gone by a live read of the pod; entries without data; reservations (see [`super::reservations`])
//! and NRI fetch attempts (see [`super::attempts`]).

use super::{attempts, reservations, Revoker, RevokerConfig, SweepReport};
use crate::actors::error::ActorError;
use crate::actors::pod_check::{pod_state, PodState};
use crate::actors::pod_index::{LiveSnapshot, PodIndex, Snapshot};
use crate::actors::vault_session::{
    KvDeleteMetadata, KvGet, KvList, KvListReservations, Paced, VaultSession,
};
use crate::actors::ActorHandle;
use crate::bookkeeping::{entry_keys, BookkeepingEntry, ReservationKind};
use crate::config::OrphanLeaseMode;
use crate::telemetry::Metrics;
use actix::prelude::*;
use futures::StreamExt;
use slog::{debug, info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

impl Revoker {
    /// What a sweep or a discovery pass works with (nothing parked or in flight).
    pub(super) fn env(&self) -> SweepEnv {
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

    pub(super) fn sweep(
        &mut self,
        _ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<SweepReport, ActorError>> {
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
                        warn!(act.log, "sweep skipped"; "error" => %e);
                        Err(e)
                    }
                }
            }),
        )
    }
}

pub(super) struct SweepEnv {
    pub(super) vault: ActorHandle<VaultSession>,
    pub(super) pods: ActorHandle<PodIndex>,
    pub(super) kube: kube::Client,
    pub(super) cfg: RevokerConfig,
    pub(super) metrics: Metrics,
    pub(super) log: Logger,
    pub(super) parked: HashSet<String>,
    pub(super) in_flight: HashSet<String>,
}

impl SweepEnv {
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.cfg.call_timeout
    }

    /// A VaultSession request built with a fresh call deadline.
    pub(super) async fn call<M, T>(
        &self,
        msg: impl FnOnce(tokio::time::Instant) -> M,
    ) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        M::Result: Send,
        VaultSession: Handler<Paced<M>>,
    {
        self.vault.call(Paced(msg(self.deadline()))).await
    }

    pub(super) async fn kv_list(&self) -> Result<Vec<String>, ActorError> {
        self.call(|deadline| KvList { deadline }).await
    }

    /// The keys of one kind of reservation; `None` (logged) when they cannot be listed, and the
    /// pass is skipped.
    pub(super) async fn list_reservations(&self, kind: ReservationKind) -> Option<Vec<String>> {
        match self
            .call(|deadline| KvListReservations { kind, deadline })
            .await
        {
            Ok(l) => Some(entry_keys(l)),
            Err(e) => {
                warn!(self.log, "cannot list reservations; this pass is skipped"; "kind" => ?kind, "error" => %e);
                None
            }
        }
    }

    pub(super) async fn kv_get(&self, uuid: &str) -> Result<Option<BookkeepingEntry>, ActorError> {
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
) -> Result<SweepOutcome, ActorError> {
    let snapshot: LiveSnapshot = env
        .pods
        .send(Snapshot)
        .await?
        .ok_or(ActorError::NotReady("the pod index"))?;
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
        if env.cfg.unseen_grace_over(first, now)
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
    reservations::sweep(env, &snapshot, &unseen, &mut still_unseen, &mut report).await;
    attempts::sweep(env, &snapshot, &unseen, &mut still_unseen, &mut report).await;
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
