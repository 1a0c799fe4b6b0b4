//! PodIndex actor: a watch-fed index of the live labelled pods (`<injectorLabel>=true`, all
//! namespaces — or one node's pods for the NRI plugin). It replaces vault-db-injector's
//! cluster-wide LIST per cycle: the renewer and revoker read snapshots from memory, and the
//! revoker is told about deletions as they happen.
//!
//! The watch resumes from its last resourceVersion and re-lists when that expires. A pod deleted
//! while the watch was broken is not reported by the API as a deletion; the index diffs the
//! re-list against what it knew and reports those pods as deleted too.
//!
//! Watch health: when the watch has failed continuously for `broken_after` (errors keep coming,
//! no successful list or event in between), the index reports `PodEvent::WatchBroken` and fails
//! its readiness check; the renewer and revoker then give up their lease (a duty acting on a
//! view it cannot refresh must not hold it). `PodEvent::WatchRestored` follows recovery.
//!
//! Recovery is fast: the watch retries with a back-off capped at [`WATCH_BACKOFF_MAX`] and reset
//! by any success (not client-go's 30 s cap, reset only after two quiet minutes, which left the
//! watch down ~80 s after an apiserver restart). While the watch errs, a one-item list probes the
//! apiserver every second: the first answer ends the failure run, so a restored watch (which emits
//! nothing when it resumes from its resourceVersion) is reported restored within seconds.

use super::supervision::{RestartGuard, Subscriber};
use crate::annotations::UUID_KEY;
use crate::health::HealthState;
use crate::telemetry::Metrics;
use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use rand::Rng;
use slog::{info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors further apart than this belong to separate failure runs (the watch's back-off is at
/// most [`WATCH_BACKOFF_MAX`] plus a request timeout, so a persistently failing watch errs more
/// often than this).
const FAILURE_RUN_GAP: Duration = Duration::from_secs(45);

/// First retry delay of the pod watch after an error.
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest delay between two attempts of the pod watch (before jitter of up to 20 %): the watch is
/// back within this (plus one request) of the apiserver answering again.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a failing watch probes the apiserver with a one-item list.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The pod watch's back-off: doubling from [`WATCH_BACKOFF_MIN`] up to [`WATCH_BACKOFF_MAX`],
/// with up to 20 % jitter, reset by any success.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl WatchBackoff {
    pub fn new(min: Duration, max: Duration) -> WatchBackoff {
        WatchBackoff {
            next: min,
            min,
            max: max.max(min),
        }
    }

    /// The next delay without jitter (what [`Iterator::next`] jitters).
    pub fn peek(&self) -> Duration {
        self.next
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff::new(WATCH_BACKOFF_MIN, WATCH_BACKOFF_MAX)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.0..0.2);
        Some(base.mul_f64(1.0 + jitter))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What vdbi needs to know of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node_name: String,
    pub service_account: String,
    /// Entries of the `uuid` annotation.
    pub uuids: Vec<String>,
    /// `Succeeded`/`Failed` pods are finished: their credentials can go.
    pub finished: bool,
}

impl PodRecord {
    pub fn from_pod(pod: &Pod) -> Option<PodRecord> {
        let uid = pod.metadata.uid.clone()?;
        let uuids = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(UUID_KEY))
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Some(PodRecord {
            uid,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            uuids,
            finished: matches!(phase, Some("Succeeded") | Some("Failed")),
        })
    }
}

/// Sent to subscribers.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum PodEvent {
    /// The pod object is gone (or vanished while the watch was broken).
    Deleted(PodRecord),
    /// The pod reached Succeeded/Failed.
    Finished(PodRecord),
    /// The index is (re)synchronised with the API.
    Synced,
    /// The watch has failed continuously for `broken_after`: the view is stale.
    WatchBroken(String),
    /// The watch works again after [`PodEvent::WatchBroken`].
    WatchRestored,
}

/// The live set, for sweeps.
#[derive(Clone, Debug, Default)]
pub struct LiveSnapshot {
    pub pods: Arc<HashMap<String, PodRecord>>,
    /// Pod UIDs and `uuid` annotation entries of every indexed pod (finished ones included, as
    /// vault-db-injector's live set).
    pub live_ids: Arc<HashSet<String>>,
    /// The ids of `live_ids` that belong to finished (Succeeded/Failed) pods.
    pub finished_ids: Arc<HashSet<String>>,
    /// Bookkeeping id (uuid or pod UID) → pod UID, for every indexed pod.
    pub by_id: Arc<HashMap<String, String>>,
}

impl LiveSnapshot {
    /// The id (uuid or pod UID) belongs to a pod the index knows (running or finished).
    pub fn is_live(&self, id: &str) -> bool {
        self.live_ids.contains(id)
    }

    /// The id belongs to a pod that reached Succeeded/Failed.
    pub fn is_finished(&self, id: &str) -> bool {
        self.finished_ids.contains(id)
    }

    /// The pod owning bookkeeping id `id` (a uuid or a pod UID).
    pub fn pod_for(&self, id: &str) -> Option<&PodRecord> {
        self.by_id.get(id).and_then(|uid| self.pods.get(uid))
    }
}

/// Subscribers of an index, kept outside the actor so they survive its restarts.
pub type Subscribers = Arc<std::sync::RwLock<Vec<Subscriber<PodEvent>>>>;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Subscriber<PodEvent>);

/// The current live set; `None` until the first list has completed.
#[derive(Message)]
#[rtype(result = "Option<LiveSnapshot>")]
pub struct Snapshot;

/// `Some(reason)` while the watch is broken (see [`PodEvent::WatchBroken`]).
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct WatchStatus;

/// Where and what to watch.
#[derive(Clone)]
pub struct PodIndexConfig {
    pub label_selector: String,
    pub field_selector: Option<String>,
    /// Name of the readiness check this index feeds.
    pub health_check: String,
    /// Continuous watch failure for this long means the watch is broken.
    pub broken_after: Duration,
}

pub struct PodIndex {
    _guard: RestartGuard,
    client: Client,
    cfg: PodIndexConfig,
    pods: HashMap<String, PodRecord>,
    init_buffer: Option<HashMap<String, PodRecord>>,
    synced: bool,
    snapshot: Option<LiveSnapshot>,
    /// First and last error of the current failure run.
    failing: Option<(Instant, Instant)>,
    broken: Option<String>,
    /// A probe list of a failing watch is in flight.
    probing: bool,
    subscribers: Subscribers,
    health: HealthState,
    metrics: Metrics,
    log: Logger,
}

impl PodIndex {
    pub fn new(
        guard: RestartGuard,
        client: Client,
        cfg: PodIndexConfig,
        subscribers: Subscribers,
        health: HealthState,
        metrics: Metrics,
        log: Logger,
    ) -> PodIndex {
        PodIndex {
            _guard: guard,
            client,
            cfg,
            pods: HashMap::new(),
            init_buffer: None,
            synced: false,
            snapshot: None,
            failing: None,
            broken: None,
            probing: false,
            subscribers,
            health,
            metrics,
            log,
        }
    }

    fn publish(&self, ev: PodEvent) {
        let subs = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for s in subs.iter() {
            s(ev.clone());
        }
    }

    fn upsert(&mut self, rec: PodRecord, was_finished: Option<bool>) {
        if rec.finished && was_finished != Some(true) {
            self.publish(PodEvent::Finished(rec.clone()));
        }
        self.pods.insert(rec.uid.clone(), rec);
        self.snapshot = None;
    }

    /// A successful list page or event: the watch works.
    fn healthy(&mut self) {
        self.failing = None;
        if self.broken.take().is_some() {
            info!(self.log, "pod watch restored");
            if self.synced {
                self.health.set(
                    &self.cfg.health_check,
                    true,
                    format!("{} pods indexed", self.pods.len()),
                );
            }
            self.publish(PodEvent::WatchRestored);
        }
    }

    fn failed(&mut self, error: String) {
        let now = Instant::now();
        let first = match self.failing {
            Some((first, last)) if now.duration_since(last) < FAILURE_RUN_GAP => first,
            _ => now,
        };
        self.failing = Some((first, now));
        if self.broken.is_none() && now.duration_since(first) >= self.cfg.broken_after {
            let reason = format!(
                "pod watch failing for {}s: {error}",
                now.duration_since(first).as_secs()
            );
            warn!(self.log, "pod watch broken"; "error" => &error);
            self.health
                .set(&self.cfg.health_check, false, reason.clone());
            self.broken = Some(reason.clone());
            self.publish(PodEvent::WatchBroken(reason));
        }
    }
}

impl PodIndex {
    /// One-item list with the watch's selectors: does the apiserver answer again?
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing {
            return;
        }
        self.probing = true;
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut lp = ListParams::default()
            .labels(&self.cfg.label_selector)
            .limit(1);
        if let Some(f) = &self.cfg.field_selector {
            lp = lp.fields(f);
        }
        ctx.spawn(
            async move { tokio::time::timeout(Duration::from_secs(5), api.list(&lp)).await }
                .into_actor(self)
                .map(|res, act, _| {
                    act.probing = false;
                    if matches!(res, Ok(Ok(_))) && act.failing.is_some() {
                        info!(act.log, "apiserver answers again; pod watch resuming");
                        act.healthy();
                    }
                }),
        );
    }
}

impl Actor for PodIndex {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health
            .set(&self.cfg.health_check, false, "listing pods");
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut wc = watcher::Config::default()
            .labels(&self.cfg.label_selector)
            .page_size(500);
        if let Some(f) = &self.cfg.field_selector {
            wc = wc.fields(f);
        }
        let stream = watcher::watcher(api, wc)
            .backoff(WatchBackoff::default())
            .boxed();
        ctx.add_stream(stream);
        // A failure run ends when the apiserver answers again (a successful re-watch emits
        // nothing), or when it stopped erring long ago.
        ctx.run_interval(PROBE_EVERY, |act, ctx| {
            if let Some((_, last)) = act.failing {
                if last.elapsed() >= FAILURE_RUN_GAP {
                    act.healthy();
                } else {
                    act.probe(ctx);
                }
            }
        });
    }
}

impl StreamHandler<Result<Event<Pod>, watcher::Error>> for PodIndex {
    fn handle(&mut self, item: Result<Event<Pod>, watcher::Error>, _ctx: &mut Context<Self>) {
        if matches!(
            item,
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitApply(_) | Event::InitDone)
        ) {
            self.healthy();
        }
        match item {
            Ok(Event::Apply(pod)) => {
                if let Some(rec) = PodRecord::from_pod(&pod) {
                    let was = self.pods.get(&rec.uid).map(|p| p.finished);
                    self.upsert(rec, was);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(rec) = PodRecord::from_pod(&pod) {
                    self.pods.remove(&rec.uid);
                    self.snapshot = None;
                    self.publish(PodEvent::Deleted(rec));
                }
            }
            Ok(Event::Init) => self.init_buffer = Some(HashMap::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(buf), Some(rec)) =
                    (self.init_buffer.as_mut(), PodRecord::from_pod(&pod))
                {
                    buf.insert(rec.uid.clone(), rec);
                }
            }
            Ok(Event::InitDone) => {
                let fresh = self.init_buffer.take().unwrap_or_default();
                // Pods we knew that the re-list no longer has were deleted meanwhile.
                let old = std::mem::take(&mut self.pods);
                let vanished: Vec<PodRecord> = old
                    .values()
                    .filter(|p| !fresh.contains_key(&p.uid))
                    .cloned()
                    .collect();
                for rec in fresh.into_values() {
                    let was = old.get(&rec.uid).map(|p| p.finished);
                    self.upsert(rec, was);
                }
                for rec in vanished {
                    self.publish(PodEvent::Deleted(rec));
                }
                self.synced = true;
                self.snapshot = None;
                self.metrics.renewal.pods_listed(true);
                self.health.set(
                    &self.cfg.health_check,
                    true,
                    format!("{} pods indexed", self.pods.len()),
                );
                info!(self.log, "pod index synchronised"; "pods" => self.pods.len());
                self.publish(PodEvent::Synced);
            }
            Err(e) => {
                self.metrics.renewal.pods_listed(false);
                warn!(self.log, "pod watch error; retrying with backoff"; "error" => %e);
                self.failed(e.to_string());
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The watch stream never ends by itself; if it does, restart through the supervisor.
        warn!(self.log, "pod watch stream ended");
        ctx.stop();
    }
}

impl Handler<Subscribe> for PodIndex {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg.0);
    }
}

impl Handler<Snapshot> for PodIndex {
    type Result = Option<LiveSnapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Option<LiveSnapshot> {
        if !self.synced {
            return None;
        }
        if self.snapshot.is_none() {
            let mut ids = HashSet::new();
            let mut finished = HashSet::new();
            let mut by_id = HashMap::new();
            for p in self.pods.values() {
                by_id.insert(p.uid.clone(), p.uid.clone());
                for u in &p.uuids {
                    by_id.insert(u.clone(), p.uid.clone());
                }
                ids.insert(p.uid.clone());
                ids.extend(p.uuids.iter().cloned());
                if p.finished {
                    finished.insert(p.uid.clone());
                    finished.extend(p.uuids.iter().cloned());
                }
            }
            self.snapshot = Some(LiveSnapshot {
                pods: Arc::new(self.pods.clone()),
                live_ids: Arc::new(ids),
                finished_ids: Arc::new(finished),
                by_id: Arc::new(by_id),
            });
        }
        self.snapshot.clone()
    }
}

impl Handler<WatchStatus> for PodIndex {
    type Result = Option<String>;
    fn handle(&mut self, _: WatchStatus, _: &mut Context<Self>) -> Option<String> {
        self.broken.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = WatchBackoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        for d in &delays {
            assert!(*d <= Duration::from_millis(2400), "{d:?} over the cap");
        }
        assert!(delays[0] < Duration::from_millis(301));
        assert!(delays[7] >= Duration::from_secs(2));
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(250));
    }
}
