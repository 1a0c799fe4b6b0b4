//! One run per key at a time: concurrent requests for the same thing share one issuance.
//!
//! The run is its own task: a caller that gives up does not cancel it, and callers arriving
//! while it runs get its result. The key is forgotten when the run ends, so a later, repeated
//! request starts a new run.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

type Run<T> = Shared<BoxFuture<'static, Option<T>>>;

/// Runs in flight, by key. `T` is the run's result, cloned to every caller (`None`: the run's
/// task panicked).
pub struct Coalescer<T: Clone> {
    inflight: Arc<Mutex<HashMap<String, Run<T>>>>,
}

impl<T: Clone> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// The run for `key`: the one in flight (joined: `true`), or `run` started as a task.
    pub fn join_or_start<F>(&self, key: &str, run: impl FnOnce() -> F) -> (Run<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = inflight.get(key) {
            return (r.clone(), true);
        }
        let task = tokio::spawn(run());
        let map = self.inflight.clone();
        let owned_key = key.to_string();
        let shared = async move {
            let out = task.await.ok();
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&owned_key);
            out
        }
        .boxed()
        .shared();
        inflight.insert(key.to_string(), shared.clone());
        // Drive the run's bookkeeping even if every caller gives up.
        tokio::spawn(shared.clone());
        (shared, false)
    }

    /// Runs in flight now.
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_share_one_run_and_later_ones_start_anew() {
        let c: Coalescer<usize> = Coalescer::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let r = runs.clone();
        let (first, joined) = c.join_or_start("ns/pod", move || async move {
            let _ = rx.await;
            r.fetch_add(1, Ordering::SeqCst) + 1
        });
        assert!(!joined);
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (w, joined) = c.join_or_start("ns/pod", || async { unreachable!() });
            assert!(joined);
            waiters.push(w);
        }
        tx.send(()).unwrap();
        assert_eq!(first.await, Some(1));
        for w in waiters {
            assert_eq!(w.await, Some(1));
        }
        while !c.is_empty() {
            tokio::task::yield_now().await;
        }
        let r = runs.clone();
        let (again, joined) = c.join_or_start("ns/pod", move || async move {
            r.fetch_add(1, Ordering::SeqCst) + 1
        });
        assert!(!joined);
        assert_eq!(again.await, Some(2));
    }
}
