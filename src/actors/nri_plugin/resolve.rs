//! Resolution of a pod's mapping: the credential cache, then one fetch per pod UID shared by
//! concurrent callers (single-flight), run as its own task so a caller giving up does not
//! cancel it.

use super::{lock, Failure, NriCore, BACKGROUND_FETCH_LIMIT};
use crate::actors::credential_cache::{CacheSource, Get, Put};
use crate::actors::issuance::{undo, Exposure, UndoLog};
use crate::actors::supervision::spawn_detached;
use crate::cache_file::PodValues;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use slog::{info, o, warn};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

/// A resolved mapping and whether it came from the cache (and from which source).
#[derive(Clone)]
pub(super) struct Resolved {
    pub(super) values: Arc<PodValues>,
    pub(super) hit: Option<CacheSource>,
}

pub(super) type SharedFetch = Shared<BoxFuture<'static, Result<Resolved, Failure>>>;

/// The pod a request is about, as the runtime (or the watch) names it.
#[derive(Clone, Debug)]
pub(super) struct PodRef {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: String,
}

impl NriCore {
    /// The pod's mapping: from the cache, or from the fetch in flight for this pod, or from a new
    /// one; waits at most `wait` (the fetch itself carries on in the background).
    pub(super) async fn resolve(
        self: &Arc<Self>,
        pod: &PodRef,
        source: CacheSource,
        wait: Duration,
    ) -> Result<Resolved, Failure> {
        match self
            .deps
            .cache
            .send(Get {
                uid: pod.uid.clone(),
            })
            .await
        {
            Ok(Some(hit)) => {
                return Ok(Resolved {
                    values: hit.values,
                    hit: Some(hit.source),
                })
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::fetch(format!("credential cache unavailable: {e}"))),
        }
        let (fetch, joined) = self.join_or_start(pod, source);
        if joined {
            self.deps.metrics.nri.resolve_shared();
        }
        match tokio::time::timeout(wait, fetch).await {
            Ok(r) => r,
            Err(_) => {
                let session = self
                    .deps
                    .health
                    .check(crate::actors::vault_session::HEALTH_CHECK)
                    .filter(|c| !c.ready)
                    .map(|c| format!(": vdbi has no Vault session ({})", c.message))
                    .unwrap_or_else(|| {
                        " (Vault or the apiserver is slow); the fetch goes on and a retry will use its result".into()
                    });
                Err(Failure::fetch(format!(
                    "no credentials within {} ms{session}",
                    wait.as_millis()
                )))
            }
        }
    }

    pub(super) fn join_or_start(
        self: &Arc<Self>,
        pod: &PodRef,
        source: CacheSource,
    ) -> (SharedFetch, bool) {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&pod.uid) {
            return (f.clone(), true);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fetch: SharedFetch = async move {
            rx.await
                .unwrap_or_else(|_| Err(Failure::fetch("the credential fetch was interrupted")))
        }
        .boxed()
        .shared();
        inflight.insert(pod.uid.clone(), fetch.clone());
        // Spawned under the lock: the task's removal of its entry comes after this insert.
        let me = self.clone();
        let pod = pod.clone();
        // One fetch of one pod, not a long-lived loop: nothing to restart. A panic ends only this
        // task (counted); the guard still removes the in-flight entry (else every later request
        // for the pod would join the dead fetch) and the dropped `tx` tells the waiters the fetch
        // was interrupted.
        let (log, metrics) = (self.deps.log.clone(), self.deps.metrics.clone());
        let task = async move {
            let entry = InflightEntry {
                core: me.clone(),
                uid: pod.uid.clone(),
            };
            let result = me.fetch_and_store(&pod, source).await;
            drop(entry);
            let _ = tx.send(result);
        };
        spawn_detached("nri_fetch", &log, &metrics, task, || {});
        (fetch, false)
    }

    pub(super) async fn fetch_and_store(
        self: &Arc<Self>,
        pod: &PodRef,
        source: CacheSource,
    ) -> Result<Resolved, Failure> {
        // A fetch that ended just before this one started has filled the cache.
        if let Ok(Some(hit)) = self
            .deps
            .cache
            .send(Get {
                uid: pod.uid.clone(),
            })
            .await
        {
            return Ok(Resolved {
                values: hit.values,
                hit: Some(hit.source),
            });
        }
        let started = Instant::now();
        // Never longer, whatever `nri.fetchTimeout` says: the revoker settles a live pod's fetch
        // attempt record only once no fetch can still be running (`FETCH_ATTEMPT_MAX_AGE`).
        let deadline = Deadline::now() + BACKGROUND_FETCH_LIMIT;
        let log = self.deps.log.new(o!(
            "namespace" => pod.namespace.clone(), "pod" => pod.name.clone(),
            "pod_uid" => pod.uid.clone(), "source" => source.as_str()));
        let undo_log = UndoLog::default();
        // Every call inside is bounded by `deadline`; the fetch is not cut from outside, so
        // whatever it creates is recorded and undone on failure.
        match self.fetch(pod, deadline, &undo_log).await {
            Ok(values) => {
                let values = Arc::new(values);
                if let Err(e) = self
                    .deps
                    .cache
                    .send(Put {
                        uid: pod.uid.clone(),
                        values: (*values).clone(),
                        source,
                    })
                    .await
                {
                    warn!(log, "cannot cache the pod's credentials"; "error" => %e);
                }
                info!(log, "credentials issued for the pod";
                    "placeholders" => values.len(),
                    "duration_ms" => started.elapsed().as_secs_f64() * 1e3);
                Ok(Resolved { values, hit: None })
            }
            Err(f) => {
                warn!(log, "credential fetch failed"; "reason" => f.reason.as_str(), "error" => &f.message,
                    "duration_ms" => started.elapsed().as_secs_f64() * 1e3);
                let (created, exposure) = undo_log.abandon();
                if !created.is_empty() {
                    let vault = self.deps.vault.clone();
                    let log = log.clone();
                    // A one-shot clean-up; a panic ends only this task (counted).
                    let (task_log, metrics) = (log.clone(), self.deps.metrics.clone());
                    spawn_detached(
                        "nri_undo",
                        &task_log,
                        &metrics,
                        async move {
                            undo(&vault, created, &log).await;
                        },
                        || {},
                    );
                }
                Err(match exposure {
                    Exposure::Nothing => f,
                    _ => Failure {
                        message: format!("{}; {}", f.message, exposure.phrase()),
                        ..f
                    },
                })
            }
        }
    }
}

/// Removes a pod's in-flight fetch when dropped (the fetch ended, or its task panicked).
struct InflightEntry {
    core: Arc<NriCore>,
    uid: String,
}

impl Drop for InflightEntry {
    fn drop(&mut self) {
        lock(&self.core.inflight).remove(&self.uid);
    }
}
