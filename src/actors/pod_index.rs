//! PodIndex actor: a watch-fed index of pods. Two uses ([`PodIndexConfig`]): the live labelled
//! pods of every namespace (`<injectorLabel>=true`) for the renewer and the revoker — it replaces
//! vault-db-injector's cluster-wide LIST per cycle: they read snapshots from memory, and the
//! revoker is told about deletions as they happen —, and the NRI plugin's node index
//! (`spec.nodeName=<NODE_NAME>`, `<nri.podLabel>=true`), which feeds the prewarmer with the pods
//! it has not seen before ([`PodEvent::Added`]), evicts deleted pods from the credential cache
//! and tells Synchronize which pods are scheduled here without a sandbox yet.
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
pub use crate::schedule::{WatchBackoff, WatchFailures, WATCH_BACKOFF_MAX, WATCH_BACKOFF_MIN};
use crate::telemetry::Metrics;
use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use slog::{info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often a failing watch probes the apiserver with a one-item list.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The watch's retries go through kube's `StreamBackoff`, which resets the back-off on any
/// success.
impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        WatchBackoff::reset(self);
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
    /// A pod the index had not seen (first list, re-list or creation); only from an index with
    /// [`PodIndexConfig::report_added`]. Carries the whole object (the prewarmer reads its spec).
    Added(Arc<Pod>),
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

/// Resolves once the index has completed its first list: `true`, or `false` if this instance
/// went away first (restarted by its supervisor: ask again).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WaitSynced;

/// Stop the index (shutdown; the caller stops its supervision first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Where and what to watch.
#[derive(Clone, Debug)]
pub struct PodIndexConfig {
    /// `None`: every pod the field selector lets through.
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// Name of the readiness check this index feeds (`None`: no probe depends on it).
    pub health_check: Option<String>,
    /// Continuous watch failure for this long means the watch is broken.
    pub broken_after: Duration,
    /// Emit [`PodEvent::Added`] for every pod seen for the first time.
    pub report_added: bool,
    /// The watch's retry delays.
    pub backoff: WatchBackoff,
    /// While the watch fails, probe the apiserver every second so that its return is noticed
    /// (and the watch reported restored) at once.
    pub probe_while_failing: bool,
    /// Count listings in `vdbi_fetch_pods_success_count` / `vdbi_fetch_pods_error_count`
    /// (vault-db-injector's renewer pod LIST metrics).
    pub count_listings: bool,
}

/// Name of the readiness check of the renewer's and revoker's index.
pub const DUTIES_HEALTH_CHECK: &str = "pod-index";

impl PodIndexConfig {
    /// The renewer's and revoker's index: the pods this release injects, in every namespace; it
    /// feeds the readiness check `pod-index`.
    pub fn duties(injector_label: &str, broken_after: Duration) -> PodIndexConfig {
        PodIndexConfig {
            label_selector: Some(format!("{injector_label}=true")),
            field_selector: None,
            health_check: Some(DUTIES_HEALTH_CHECK.into()),
            broken_after,
            report_added: false,
            backoff: WatchBackoff::default(),
            probe_while_failing: true,
            count_listings: true,
        }
    }

    /// The NRI plugin's node index: the pods scheduled on `node` (labelled `<pod_label>=true`,
    /// or all of them when `pod_label` is empty, as vault-db-injector's informer), with
    /// [`PodEvent::Added`]. No readiness check (the plugin's readiness is its runtime connection)
    /// and no fast recovery: one such watch runs on every node, so it backs off as
    /// vault-db-injector's informer did, up to 30 s, and does not probe a failing apiserver.
    pub fn node(node: &str, pod_label: &str, broken_after: Duration) -> PodIndexConfig {
        PodIndexConfig {
            label_selector: (!pod_label.is_empty()).then(|| format!("{pod_label}=true")),
            field_selector: Some(format!("spec.nodeName={node}")),
            health_check: None,
            broken_after,
            report_added: true,
            backoff: WatchBackoff::node(),
            probe_while_failing: false,
            count_listings: false,
        }
    }
}

pub struct PodIndex {
    _guard: RestartGuard,
    client: Client,
    cfg: PodIndexConfig,
    pods: HashMap<String, PodRecord>,
    init_buffer: Option<HashMap<String, PodRecord>>,
    /// Pods of the re-list in progress the index did not know (with `report_added`).
    init_added: Vec<Arc<Pod>>,
    synced: bool,
    sync_waiters: Vec<oneshot::Sender<()>>,
    snapshot: Option<LiveSnapshot>,
    failures: WatchFailures,
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
            init_added: Vec::new(),
            synced: false,
            sync_waiters: Vec::new(),
            snapshot: None,
            failures: WatchFailures::default(),
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

    fn set_health(&self, ready: bool, message: impl Into<String>) {
        if let Some(check) = &self.cfg.health_check {
            self.health.set(check, ready, message);
        }
    }

    fn count_listing(&self, ok: bool) {
        if self.cfg.count_listings {
            self.metrics.renewal.pods_listed(ok);
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
        self.failures.succeeded();
        if self.broken.take().is_some() {
            info!(self.log, "pod watch restored");
            if self.synced {
                self.set_health(true, format!("{} pods indexed", self.pods.len()));
            }
            self.publish(PodEvent::WatchRestored);
        }
    }

    fn failed(&mut self, error: String) {
        let failing_for = self.failures.failed(Instant::now());
        if self.broken.is_none() && failing_for >= self.cfg.broken_after {
            let reason = format!("pod watch failing for {}s: {error}", failing_for.as_secs());
            warn!(self.log, "pod watch broken"; "error" => &error);
            self.set_health(false, reason.clone());
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
        let mut lp = ListParams::default().limit(1);
        if let Some(l) = &self.cfg.label_selector {
            lp = lp.labels(l);
        }
        if let Some(f) = &self.cfg.field_selector {
            lp = lp.fields(f);
        }
        ctx.spawn(
            async move { tokio::time::timeout(Duration::from_secs(5), api.list(&lp)).await }
                .into_actor(self)
                .map(|res, act, _| {
                    act.probing = false;
                    if matches!(res, Ok(Ok(_))) && act.failures.failing() {
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
        self.set_health(false, "listing pods");
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut wc = watcher::Config::default().page_size(500);
        if let Some(l) = &self.cfg.label_selector {
            wc = wc.labels(l);
        }
        if let Some(f) = &self.cfg.field_selector {
            wc = wc.fields(f);
        }
        let stream = watcher::watcher(api, wc)
            .backoff(self.cfg.backoff.clone())
            .boxed();
        ctx.add_stream(stream);
        // A failure run ends when the apiserver answers again (a successful re-watch emits
        // nothing), or when it stopped erring long ago.
        ctx.run_interval(PROBE_EVERY, |act, ctx| {
            if act.failures.quiet_since_gap(Instant::now()) {
                act.healthy();
            } else if act.failures.failing() && act.cfg.probe_while_failing {
                act.probe(ctx);
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
                    if was.is_none() && self.cfg.report_added {
                        self.publish(PodEvent::Added(Arc::new(pod)));
                    }
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(rec) = PodRecord::from_pod(&pod) {
                    self.pods.remove(&rec.uid);
                    self.snapshot = None;
                    self.publish(PodEvent::Deleted(rec));
                }
            }
            Ok(Event::Init) => {
                self.init_buffer = Some(HashMap::new());
                self.init_added.clear();
            }
            Ok(Event::InitApply(pod)) => {
                if let (Some(buf), Some(rec)) =
                    (self.init_buffer.as_mut(), PodRecord::from_pod(&pod))
                {
                    let new = !self.pods.contains_key(&rec.uid);
                    buf.insert(rec.uid.clone(), rec);
                    if new && self.cfg.report_added {
                        self.init_added.push(Arc::new(pod));
                    }
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
                for pod in std::mem::take(&mut self.init_added) {
                    self.publish(PodEvent::Added(pod));
                }
                for rec in vanished {
                    self.publish(PodEvent::Deleted(rec));
                }
                self.synced = true;
                self.snapshot = None;
                self.count_listing(true);
                self.set_health(true, format!("{} pods indexed", self.pods.len()));
                info!(self.log, "pod index synchronised"; "pods" => self.pods.len());
                for w in self.sync_waiters.drain(..) {
                    let _ = w.send(());
                }
                self.publish(PodEvent::Synced);
            }
            Err(e) => {
                self.count_listing(false);
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

impl Handler<WaitSynced> for PodIndex {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, _: WaitSynced, _: &mut Context<Self>) -> Self::Result {
        if self.synced {
            return Box::pin(async { true });
        }
        let (tx, rx) = oneshot::channel();
        self.sync_waiters.push(tx);
        Box::pin(async move { rx.await.is_ok() })
    }
}

impl Handler<Stop> for PodIndex {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<WatchStatus> for PodIndex {
    type Result = Option<String>;
    fn handle(&mut self, _: WatchStatus, _: &mut Context<Self>) -> Option<String> {
        self.broken.clone()
    }
}
