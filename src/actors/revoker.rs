//! Revoker actor: credentials die with their pod.
//!
//! While leading (see [`super::leadership`]) it revokes, for every pod the [`super::pod_index`]
//! reports deleted — or finished (Succeeded/Failed), when `revokeTerminatedPods` is on — each of
//! the pod's bookkeeping entries: the DB lease explicitly, then the token (revoke-orphan), then the
//! KV entry. "Not found" is success at every step, so a double revocation is harmless; a failure
//! keeps the entry in KV and retries with backoff.
//!
//! A sweep catches what the watch missed: entries whose pod is not live. An entry is revoked only
//! after it has been seen without a live pod for `revokerUnseenGrace` (so an admission whose pod
//! is being stored is not raced) and after a live GET of the pod it names confirms the pod is
//! really gone (so a pod of another release, or one whose label was removed, keeps its
//! credentials — two defects of vault-db-injector). The sweep runs every `revokerUnseenGrace / 2`:
//! entries of pods that never appeared are revoked within about a minute.

use super::error::ActorError;
use super::leadership::{Leadership, LeadershipChanged, StepDown};
use super::pod_index::{PodEvent, PodIndex, PodRecord, Snapshot};
use super::supervision::RestartGuard;
use super::vault_session::{KvDelete, KvGet, KvList, RevokeLease, RevokeOrphan, VaultSession};
use super::ActorHandle;
use crate::bookkeeping::BookkeepingEntry;
use crate::telemetry::Metrics;
use crate::vault::VaultToken;
use actix::prelude::*;
use slog::{debug, info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RevokerConfig {
    pub revoke_finished_pods: bool,
    pub unseen_grace: Duration,
    pub sweep_interval: Duration,
    pub call_timeout: Duration,
    pub max_concurrent: usize,
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

#[derive(Message)]
#[rtype(result = "()")]
struct Done {
    uuid: String,
    ok: bool,
    attempt: u32,
    path: &'static str,
    since: Instant,
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
    sweeping: bool,
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
            sweeping: false,
            metrics,
            log,
        }
    }

    fn revoke_pod(&mut self, rec: &PodRecord, path: &'static str, ctx: &mut Context<Self>) {
        let ids: Vec<String> = if rec.uuids.is_empty() {
            vec![rec.uid.clone()]
        } else {
            rec.uuids.clone()
        };
        for uuid in ids {
            self.start_revoke(uuid, path, Instant::now(), 0, ctx);
        }
    }

    fn start_revoke(
        &mut self,
        uuid: String,
        path: &'static str,
        since: Instant,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) {
        if !self.leading || !self.in_flight.insert(uuid.clone()) {
            return;
        }
        let vault = self.vault.clone();
        let metrics = self.metrics.clone();
        let log = self.log.clone();
        let timeout = self.cfg.call_timeout;
        let me = ctx.address();
        tokio::spawn(async move {
            let res = revoke_entry(&vault, &uuid, timeout, &metrics, &log).await;
            let ok = match &res {
                Ok(found) => {
                    if *found {
                        metrics
                            .revocation_latency
                            .with_label_values(&[path])
                            .observe(since.elapsed().as_secs_f64());
                    }
                    true
                }
                Err(e) => {
                    metrics.pod_cleanup_error.inc();
                    warn!(log, "revocation failed; will retry"; "uuid" => &uuid, "error" => %e, "attempt" => attempt + 1);
                    false
                }
            };
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
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<SweepReport, String>> {
        if !self.leading || self.sweeping {
            return Box::pin(fut::ready(Ok(SweepReport::default())));
        }
        self.sweeping = true;
        let vault = self.vault.clone();
        let pods = self.pods.clone();
        let kube = self.kube.clone();
        let timeout = self.cfg.call_timeout;
        let grace = self.cfg.unseen_grace;
        let log = self.log.clone();
        let unseen = std::mem::take(&mut self.unseen_since);
        let _ = ctx;
        Box::pin(
            async move {
                let snapshot = pods.send(Snapshot).await.map_err(|e| e.to_string())?;
                let Some(snapshot) = snapshot else {
                    return Err("pod index not synchronised yet".to_string());
                };
                let deadline = tokio::time::Instant::now() + timeout;
                let uuids = vault
                    .send(KvList { deadline })
                    .await
                    .map_err(ActorError::from)
                    .and_then(|r| r)
                    .map_err(|e| e.to_string())?;
                let now = Instant::now();
                let mut still_unseen = HashMap::new();
                let mut candidates = Vec::new();
                for uuid in &uuids {
                    if snapshot.is_live(uuid) {
                        continue;
                    }
                    let first = unseen.get(uuid).copied().unwrap_or(now);
                    still_unseen.insert(uuid.clone(), first);
                    if now.duration_since(first) >= grace {
                        candidates.push(uuid.clone());
                    }
                }
                // Confirm with a live GET of the named pod before revoking.
                let mut confirmed = Vec::new();
                for uuid in &candidates {
                    let entry = vault
                        .send(KvGet { uuid: uuid.clone(), deadline: tokio::time::Instant::now() + timeout })
                        .await
                        .map_err(ActorError::from)
                        .and_then(|r| r);
                    match entry {
                        Ok(None) => {
                            still_unseen.remove(uuid);
                        }
                        Ok(Some(e)) => {
                            if pod_still_exists(&kube, &e).await {
                                debug!(log, "entry's pod exists outside this release's view; kept"; "uuid" => uuid);
                                still_unseen.remove(uuid);
                            } else {
                                confirmed.push(uuid.clone());
                            }
                        }
                        Err(e) => warn!(log, "sweep cannot read entry"; "uuid" => uuid, "error" => %e),
                    }
                }
                Ok((uuids.len(), candidates.len(), confirmed, still_unseen))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                act.sweeping = false;
                match res {
                    Ok((entries, candidates, confirmed, still_unseen)) => {
                        act.unseen_since = still_unseen;
                        let revoked = confirmed.len();
                        for uuid in confirmed {
                            act.unseen_since.remove(&uuid);
                            act.start_revoke(uuid, "sweep", Instant::now(), 0, ctx);
                        }
                        if revoked > 0 {
                            info!(act.log, "sweep found credentials of gone pods"; "entries" => entries, "revoking" => revoked);
                        }
                        Ok(SweepReport { entries, candidates, revoked })
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

/// True when the pod named by the entry still exists (any labels), or cannot be checked.
async fn pod_still_exists(kube: &kube::Client, e: &BookkeepingEntry) -> bool {
    if e.namespace.is_empty() || e.pod_name.is_empty() {
        return false;
    }
    match crate::k8s::get_pod(kube, &e.namespace, &e.pod_name).await {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(_) => true, // cannot confirm: keep, retry at the next sweep
    }
}

/// Revokes one entry: lease, token, then KV entry. `Ok(false)` when there was nothing to do.
pub async fn revoke_entry(
    vault: &ActorHandle<VaultSession>,
    uuid: &str,
    timeout: Duration,
    metrics: &Metrics,
    log: &Logger,
) -> Result<bool, ActorError> {
    let dl = || tokio::time::Instant::now() + timeout;
    let Some(entry) = vault
        .send(KvGet {
            uuid: uuid.to_string(),
            deadline: dl(),
        })
        .await??
    else {
        return Ok(false);
    };
    let ns = entry.namespace.clone();
    if !entry.lease_id.is_empty() {
        vault
            .send(RevokeLease {
                lease_id: entry.lease_id.clone(),
                deadline: dl(),
            })
            .await??;
    }
    if !entry.token_id.is_empty() {
        let res = vault
            .send(RevokeOrphan {
                target: VaultToken::new(entry.token_id.clone()),
                deadline: dl(),
            })
            .await?;
        match res {
            Ok(()) => metrics.revoke_token_success.with_label_values(&[&ns]).inc(),
            Err(e) => {
                metrics
                    .revoke_token_error
                    .with_label_values(&[metrics.uuid(uuid), &ns])
                    .inc();
                return Err(e);
            }
        }
    }
    match vault
        .send(KvDelete {
            uuid: uuid.to_string(),
            deadline: dl(),
        })
        .await?
    {
        Ok(()) => metrics
            .delete_data_success
            .with_label_values(&[metrics.uuid(uuid), &ns])
            .inc(),
        Err(e) => {
            metrics
                .delete_data_error
                .with_label_values(&[metrics.uuid(uuid), &ns])
                .inc();
            return Err(e);
        }
    }
    metrics.forget_uuid(uuid, &ns);
    info!(log, "credentials revoked"; "uuid" => uuid, "namespace" => &ns, "pod" => &entry.pod_name);
    Ok(true)
}

impl Actor for Revoker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.cfg.unseen_grace / 2)
            .min(self.cfg.sweep_interval)
            .max(Duration::from_secs(1));
        ctx.run_interval(every, |act, ctx| {
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
            let f = self.sweep(ctx);
            ctx.spawn(f.map(|_, _, _| ()));
        } else {
            self.unseen_since.clear();
        }
    }
}

impl Handler<PodEvent> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: PodEvent, ctx: &mut Context<Self>) {
        if !self.leading {
            return;
        }
        match msg {
            PodEvent::Deleted(rec) => self.revoke_pod(&rec, "watch", ctx),
            PodEvent::Finished(rec) if self.cfg.revoke_finished_pods => {
                self.revoke_pod(&rec, "finished", ctx)
            }
            _ => {}
        }
    }
}

impl Handler<RevokeEntry> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: RevokeEntry, ctx: &mut Context<Self>) {
        self.start_revoke(msg.uuid, msg.path, msg.since, 0, ctx);
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
            return;
        }
        let attempt = msg.attempt + 1;
        let delay = Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(attempt.min(6)))
            .min(Duration::from_secs(60));
        if attempt >= 10 {
            // Something is persistently wrong (Vault policy?): let a healthy peer try.
            if let Some(l) = self.leadership.get() {
                l.do_send(StepDown {
                    reason: format!("revocation of {} failed {attempt} times", msg.uuid),
                });
            }
        }
        ctx.run_later(delay, move |act, ctx| {
            act.start_revoke(msg.uuid, msg.path, msg.since, attempt, ctx);
        });
    }
}
