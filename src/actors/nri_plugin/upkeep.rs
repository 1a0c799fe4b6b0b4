//! Node upkeep: Synchronize after each (re)connect, the periodic node sweep and the prewarmer.

use super::resolve::PodRef;
use super::{lock, NriCore, SweepError, BACKGROUND_FETCH_LIMIT};
use crate::actors::credential_cache::{CacheSource, Evict, Uids};
use crate::substitution as nri_mapping;
use crate::telemetry::metrics::PrewarmFailure;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use nri::{NriError, PodSandboxInfo};
use slog::{info, warn};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl NriCore {
    /// Evicts cached pods that are neither among `live` nor protected (known to the node watch,
    /// or being fetched). Only pods cached *before* `live` was taken are considered, so an entry
    /// written meanwhile is never dropped by a stale list.
    pub(super) async fn evict_dead(
        &self,
        before: HashSet<String>,
        live: &HashSet<String>,
    ) -> usize {
        let protected: HashSet<String> = {
            let mut p: HashSet<String> = lock(&self.inflight).keys().cloned().collect();
            if let Some(n) = lock(&self.node_pods).as_ref() {
                p.extend(n.iter().cloned());
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

    /// Synchronize: cached pods without a sandbox are evicted — except pods the node watch knows
    /// (scheduled here, sandbox not created yet: prewarmed). Right after a (re)start the watch may
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
            if !me.config().node_name.is_empty() {
                let waited = Instant::now();
                while lock(&me.node_pods).is_none() {
                    if waited.elapsed() > Duration::from_secs(60) {
                        warn!(
                            me.deps.log,
                            "node pod watch not listed after 60 s: synchronize evicts without it"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let evicted = me.evict_dead(before, &live).await;
            if evicted > 0 {
                info!(me.deps.log, "synchronize evicted pods without a sandbox"; "evicted" => evicted);
            }
        });
        Ok(())
    }

    /// The node sweep: evicts cached pods no longer on this node (force-deleted pods get no
    /// RemovePodSandbox). Returns how many were evicted.
    pub(super) async fn sweep(&self) -> Result<usize, SweepError> {
        let node = &self.config().node_name;
        if node.is_empty() {
            return Err(SweepError::NoNodeName);
        }
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
        let evicted = self.evict_dead(before, &live).await;
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
