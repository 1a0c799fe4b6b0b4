//! CredentialCache actor: the NRI plugin's per-node map pod UID → (placeholder → value), persisted
//! to the cache file (see [`crate::cache_file`]). Saves run on a blocking thread, one at a time;
//! changes made during a save are coalesced into the next one, so a burst of evictions costs one
//! write. Entries loaded from disk have source `unknown` (as in vault-db-injector).

use super::error::{ActorError, CacheSaveError};
use super::supervision::RestartGuard;
use crate::cache_file::{self, Loaded, PodValues};
use crate::telemetry::metrics::CacheFileError;
use crate::telemetry::Metrics;
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a cache entry came from (`vdbi_nri_cache_hit_total{source}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSource {
    Prewarm,
    Sync,
    Unknown,
}

impl CacheSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSource::Prewarm => "prewarm",
            CacheSource::Sync => "sync",
            CacheSource::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CachedPod {
    pub values: Arc<PodValues>,
    pub source: CacheSource,
}

/// Look up a pod's values.
#[derive(Message)]
#[rtype(result = "Option<CachedPod>")]
pub struct Get {
    pub uid: String,
}

/// Store a pod's values (replaces the previous entry) and persist.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Put {
    pub uid: String,
    pub values: PodValues,
    pub source: CacheSource,
}

/// Drop one pod (RemovePodSandbox, informer delete). Returns whether it was cached.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Evict {
    pub uid: String,
}

/// Keep only these pods (Synchronize, node sweep). Returns how many were evicted.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Retain {
    pub live: HashSet<String>,
}

/// UIDs currently cached.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct Uids;

/// Wait until everything changed so far is on disk.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Flush;

pub struct CredentialCache {
    _guard: RestartGuard,
    path: Option<PathBuf>,
    pods: HashMap<String, CachedPod>,
    /// Bumped on every change; `saved` is the generation last written.
    generation: u64,
    saved: u64,
    saving: bool,
    waiters: Vec<(
        u64,
        tokio::sync::oneshot::Sender<Result<(), CacheSaveError>>,
    )>,
    log: Logger,
    metrics: Metrics,
}

impl CredentialCache {
    /// `path: None` keeps the cache in memory only.
    pub fn new(guard: RestartGuard, path: Option<PathBuf>, log: Logger, metrics: Metrics) -> Self {
        CredentialCache {
            _guard: guard,
            path,
            pods: HashMap::new(),
            generation: 0,
            saved: 0,
            saving: false,
            waiters: Vec::new(),
            log,
            metrics,
        }
    }

    fn changed(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        self.schedule_save(ctx);
    }

    fn schedule_save(&mut self, ctx: &mut Context<Self>) {
        let Some(path) = self.path.clone() else {
            self.saved = self.generation;
            self.notify_waiters(Ok(()));
            return;
        };
        if self.saving || self.saved == self.generation {
            return;
        }
        self.saving = true;
        let generation = self.generation;
        let snapshot: HashMap<String, PodValues> = self
            .pods
            .iter()
            .map(|(k, v)| (k.clone(), (*v.values).clone()))
            .collect();
        let fut = tokio::task::spawn_blocking(move || cache_file::save(&path, &snapshot));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.saving = false;
            let res = match res {
                Ok(Ok(())) => {
                    act.saved = generation;
                    Ok(())
                }
                Ok(Err(e)) => Err(CacheSaveError::File(Arc::new(e))),
                Err(_) => Err(CacheSaveError::Panicked),
            };
            if let Err(e) = &res {
                act.metrics.nri.cache_file_error(CacheFileError::Write);
                warn!(act.log, "cannot persist the NRI credential cache"; "error" => %e);
                act.notify_waiters(res);
                return;
            }
            act.notify_waiters(Ok(()));
            if act.saved != act.generation {
                act.schedule_save(ctx);
            }
        }));
    }

    fn notify_waiters(&mut self, res: Result<(), CacheSaveError>) {
        let saved = self.saved;
        let mut keep = Vec::new();
        for (gen, tx) in self.waiters.drain(..) {
            if res.is_err() || gen <= saved {
                let _ = tx.send(res.clone());
            } else {
                keep.push((gen, tx));
            }
        }
        self.waiters = keep;
    }
}

impl Actor for CredentialCache {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match cache_file::load(&path) {
            Ok(Loaded::Missing) => {}
            Ok(Loaded::Ok(pods)) => {
                info!(self.log, "NRI credential cache loaded"; "pods" => pods.len());
                self.pods = pods
                    .into_iter()
                    .map(|(uid, values)| {
                        (
                            uid,
                            CachedPod {
                                values: Arc::new(values),
                                source: CacheSource::Unknown,
                            },
                        )
                    })
                    .collect();
            }
            Ok(Loaded::Corrupt { reason, set_aside }) => {
                self.metrics.nri.cache_file_error(CacheFileError::Corrupt);
                warn!(self.log, "NRI credential cache file is corrupt; starting empty";
                    "reason" => reason,
                    "set_aside" => set_aside.map(|p| p.display().to_string()).unwrap_or_default());
            }
            Err(e) => {
                self.metrics.nri.cache_file_error(CacheFileError::Read);
                warn!(self.log, "cannot read the NRI credential cache; starting empty"; "error" => %e);
            }
        }
    }
}

impl Handler<Get> for CredentialCache {
    type Result = Option<CachedPod>;
    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        self.pods.get(&msg.uid).cloned()
    }
}

impl Handler<Put> for CredentialCache {
    type Result = ();
    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) {
        self.pods.insert(
            msg.uid,
            CachedPod {
                values: Arc::new(msg.values),
                source: msg.source,
            },
        );
        self.changed(ctx);
    }
}

impl Handler<Evict> for CredentialCache {
    type Result = bool;
    fn handle(&mut self, msg: Evict, ctx: &mut Context<Self>) -> bool {
        let found = self.pods.remove(&msg.uid).is_some();
        if found {
            self.changed(ctx);
        }
        found
    }
}

impl Handler<Retain> for CredentialCache {
    type Result = usize;
    fn handle(&mut self, msg: Retain, ctx: &mut Context<Self>) -> usize {
        let before = self.pods.len();
        self.pods.retain(|uid, _| msg.live.contains(uid));
        let evicted = before - self.pods.len();
        if evicted > 0 {
            self.changed(ctx);
        }
        evicted
    }
}

impl Handler<Uids> for CredentialCache {
    type Result = Vec<String>;
    fn handle(&mut self, _: Uids, _: &mut Context<Self>) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

impl Handler<Flush> for CredentialCache {
    type Result = ResponseFuture<Result<(), ActorError>>;
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        if self.saved == self.generation {
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push((self.generation, tx));
        self.schedule_save(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or(Err(CacheSaveError::Stopped))
                .map_err(ActorError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::supervision::{supervise, Backoff};
    use crate::telemetry::logging::discard;

    fn values(v: &str) -> PodValues {
        HashMap::from([(crate::placeholder::generate(), v.to_string())])
    }

    #[actix::test]
    async fn put_get_evict_retain_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nri/cache.json");
        let m = Metrics::new(true);
        let (p2, m2) = (path.clone(), m.clone());
        let cache = supervise("cache", &discard(), &m, Backoff::default(), move |g| {
            CredentialCache::new(g, Some(p2.clone()), discard(), m2.clone())
        });
        for (uid, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            cache
                .send(Put {
                    uid: uid.into(),
                    values: values(v),
                    source: CacheSource::Sync,
                })
                .await
                .unwrap();
        }
        let hit = cache.send(Get { uid: "a".into() }).await.unwrap().unwrap();
        assert_eq!(hit.source, CacheSource::Sync);
        assert!(cache.send(Evict { uid: "a".into() }).await.unwrap());
        assert!(!cache.send(Evict { uid: "a".into() }).await.unwrap());
        let evicted = cache
            .send(Retain {
                live: HashSet::from(["b".to_string()]),
            })
            .await
            .unwrap();
        assert_eq!(evicted, 1);
        cache.send(Flush).await.unwrap().unwrap();
        match cache_file::load(&path).unwrap() {
            Loaded::Ok(p) => assert_eq!(p.keys().collect::<Vec<_>>(), vec!["b"]),
            other => panic!("{other:?}"),
        }
        // A new instance reloads it, with source `unknown`.
        let m2 = Metrics::new(true);
        let reloaded =
            CredentialCache::new(RestartGuard::detached(), Some(path), discard(), m2).start();
        let hit = reloaded
            .send(Get { uid: "b".into() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.source, CacheSource::Unknown);
    }

    #[actix::test]
    async fn corrupt_file_starts_empty_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, "not json").unwrap();
        let m = Metrics::new(true);
        let cache =
            CredentialCache::new(RestartGuard::detached(), Some(path), discard(), m.clone())
                .start();
        assert!(cache.send(Uids).await.unwrap().is_empty());
        assert_eq!(
            m.count("vdbi_nri_cache_file_errors_total", &[("reason", "corrupt")]),
            1.0
        );
    }
}
