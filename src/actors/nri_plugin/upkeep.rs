//! Node upkeep: Synchronize after each (re)connect, the periodic node sweep and the prewarmer.

use super::resolve::PodRef;
use super::{lock, NriCore, SweepError, BACKGROUND_FETCH_LIMIT};
use crate::actors::credential_cache::{CacheSource, Evict, Uids};
use crate::actors::pod_index::{LiveSnapshot, Snapshot, WaitSynced};
use crate::substitution as nri_mapping;
use crate::telemetry::metrics::PrewarmFailure;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nri::{NriError, PodSandboxInfo};
use slog::{info, warn};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long Synchronize and the sweep wait for the node index's first list before evicting
/// without its protection.
const NODE_INDEX_WAIT: Duration = Duration::from_secs(60);
/// Pause before asking again a node index that is being restarted by its supervisor.
const NODE_INDEX_RETRY: Duration = Duration::from_millis(100);

impl NriCore {
    /// The node index's pods, waiting at most `wait` for its first list. `None` without a node
    /// index (no `NODE_NAME`) or when it has not listed in time.
    pub(super) async fn node_pods(&self, wait: Duration) -> Option<LiveSnapshot> {
        let index = self.deps.node_pods.as_ref()?;
        let until = Instant::now() + wait;
        loop {
            if let Ok(Some(pods)) = index.send(Snapshot).await {
                return Some(pods);
            }
            match tokio::time::timeout_at(until, index.send(WaitSynced)).await {
                Err(_) => return None,
                Ok(Ok(true)) => {}
                // The instance went away (restarting): its successor lists again.
                Ok(_) => {
                    tokio::time::sleep_until(until.min(Instant::now() + NODE_INDEX_RETRY)).await
                }
            }
            if Instant::now() >= until {
                return None;
            }
        }
    }

    /// Evicts cached pods that are neither among `live` nor protected (on this node according
    /// to the node index, or being fetched). Only pods cached *before* `live` was taken are
    /// considered, so an entry written meanwhile is never dropped by a stale list.
    pub(super) async fn evict_dead(
        &self,
        before: HashSet<String>,
        live: &HashSet<String>,
        node: Option<&LiveSnapshot>,
    ) -> usize {
        let protected: HashSet<String> = {
            let mut p: HashSet<String> = lock(&self.inflight).keys().cloned().collect();
            if let Some(n) = node {
                p.extend(n.pods.keys().cloned());
            }
            p
        };
        let mut evicted = 0;
        for uid in before {
            if live.contains(&uid) || protected.contains(&uid) {
                continue;
            }
            if let Ok(true) = self.deps.cache.send(Evict { uid }).await {
                evicted += 1;
            }
        }
        evicted
    }

    pub(super) async fn cached_uids(&self) -> Result<HashSet<String>, SweepError> {
        self.deps
            .cache
            .send(Uids)
            .await
            .map(|v| v.into_iter().collect())
            .map_err(|e| SweepError::CacheUnavailable(e.to_string()))
    }

    /// Synchronize: cached pods without a sandbox are evicted — except pods the node index knows
    /// (scheduled here, sandbox not created yet: prewarmed). Right after a (re)start the index may
    /// not have listed yet, so the eviction waits for its first list (at most a minute) instead
    /// of dropping what it would have protected.
    pub(super) async fn synchronize(
        self: &Arc<Self>,
        pods: Vec<PodSandboxInfo>,
    ) -> Result<(), NriError> {
        let before = self
            .cached_uids()
            .await
            .map_err(|e| NriError::handler(e.to_string()))?;
        let live: HashSet<String> = pods.into_iter().map(|p| p.uid).collect();
        info!(self.deps.log, "synchronizing with the runtime"; "sandboxes" => live.len(), "cached" => before.len());
        let me = self.clone();
        // One eviction per Synchronize, not a loop: nothing to restart; a panic ends only this
        // task (tokio contains it) and the next Synchronize or sweep evicts instead.
        tokio::spawn(async move {
            let node = me.node_pods_or_warn("synchronize").await;
            let evicted = me.evict_dead(before, &live, node.as_ref()).await;
            if evicted > 0 {
                info!(me.deps.log, "synchronize evicted pods without a sandbox"; "evicted" => evicted);
            }
        });
        Ok(())
    }

    /// [`Self::node_pods`] within [`NODE_INDEX_WAIT`], with a warning when the index has not
    /// listed by then (`what` evicts without its protection).
    async fn node_pods_or_warn(&self, what: &str) -> Option<LiveSnapshot> {
        self.deps.node_pods.as_ref()?;
        let pods = self.node_pods(NODE_INDEX_WAIT).await;
        if pods.is_none() {
            warn!(self.deps.log, "node pod index not listed in time: evicting without it";
                "step" => what, "waited_s" => NODE_INDEX_WAIT.as_secs());
        }
        pods
    }

    /// The node sweep: evicts cached pods no longer on this node (force-deleted pods get no
    /// RemovePodSandbox), by a live LIST of the node's pods. It waits for the node index's first
    /// list, which protects pods being fetched for the first time. Returns how many were evicted.
    pub(super) async fn sweep(&self) -> Result<usize, SweepError> {
        let node = &self.config().node_name;
        if node.is_empty() {
            return Err(SweepError::NoNodeName);
        }
        let node_pods = self.node_pods_or_warn("sweep").await;
        let before = self.cached_uids().await?;
        if before.is_empty() {
            return Ok(0);
        }
        let api: Api<Pod> = Api::all(self.deps.kube.clone());
        let mut lp = ListParams::default()
            .fields(&format!("spec.nodeName={node}"))
            .limit(500);
        let mut live = HashSet::new();
        loop {
            let list = tokio::time::timeout(Duration::from_secs(30), api.list(&lp))
                .await
                .map_err(|_| SweepError::ListTimeout)?
                .map_err(|e| SweepError::List(e.to_string()))?;
            live.extend(list.items.into_iter().filter_map(|p| p.metadata.uid));
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        let evicted = self.evict_dead(before, &live, node_pods.as_ref()).await;
        if evicted > 0 {
            info!(self.deps.log, "node sweep evicted pods gone from this node"; "evicted" => evicted);
        }
        Ok(evicted)
    }

    /// Prewarms a pod seen on this node (compat §4, without the Go version's defects: only pods
    /// whose spec really carries placeholders, never terminating ones).
    pub(super) fn prewarm(self: &Arc<Self>, pod: &Pod, slots: &Arc<tokio::sync::Semaphore>) {
        let m = &self.deps.metrics.nri;
        if !nri_mapping::pod_has_placeholders(pod) {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            m.prewarm_failed(PrewarmFailure::TerminatingPod);
            return;
        }
        let (Some(uid), Some(name), Some(namespace)) = (
            pod.metadata.uid.clone(),
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
        ) else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            m.prewarm_failed(PrewarmFailure::SemaphoreFull);
            warn!(self.deps.log, "prewarmer busy: pod left to CreateContainer"; "namespace" => &namespace, "pod" => &name);
            return;
        };
        m.prewarm_started();
        let me = self.clone();
        let pod = PodRef {
            namespace,
            name,
            uid,
        };
        // One prewarm of one pod: nothing to restart; a panic ends only this task (tokio contains
        // it) and releases its slot, and CreateContainer fetches the pod's credentials instead.
        tokio::spawn(async move {
            let m = &me.deps.metrics.nri;
            let fetched = match me
                .resolve(&pod, CacheSource::Prewarm, BACKGROUND_FETCH_LIMIT)
                .await
            {
                Ok(r) => r.hit.is_none(),
                Err(f) => {
                    m.prewarm_failed(PrewarmFailure::VaultFetch);
                    warn!(me.deps.log, "prewarm failed"; "namespace" => &pod.namespace,
                        "pod" => &pod.name, "reason" => f.reason.as_str(), "error" => &f.message);
                    false
                }
            };
            m.prewarm_finished(fetched);
            drop(permit);
        });
    }
}
