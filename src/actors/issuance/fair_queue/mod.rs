//! Fair scheduling of dbConfig issuances between pods (admissions and NRI fetches).
//!
//! Each dbConfig of a pod is a short sequence of Vault calls (and, behind Vault, a PostgreSQL
//! role creation). Started all at once, a pod with `maxDbConfigsPerPod` dbConfigs puts that many
//! sequences in front of Vault and PostgreSQL at the same instant, and the single-dbConfig pods
//! admitted meanwhile queue behind all of them. The [`FairQueue`] hands out *issuance slots*:
//!
//! * at most `capacity` (`issuanceSlots`) dbConfigs are being issued at once, all pods
//!   together, admissions and NRI fetches of the process alike;
//! * a *small* pod (no more dbConfigs than `per_owner`, `issuanceSlotsPerPod`) issues all of
//!   them at once: the common pod never waits for its own dbConfigs;
//! * a *big* pod gets `per_owner` slots only while it has the replica to itself; while N pods
//!   share it (holding or waiting for a slot, or done less than [`CONTENTION_WINDOW`] ago) it
//!   gets `per_owner / N`, at least one. Its dbConfigs then take their turn one or two at a
//!   time instead of keeping Vault and PostgreSQL busy for everyone else (a pod at
//!   `maxDbConfigsPerPod` re-submitted in a loop beside a stream of small pods gets one slot).
//!   Half-way to its deadline a big pod is late and gets the whole bound again: on a slow
//!   Vault, waiting its turn must not get it refused;
//! * when a slot frees, the pods that wait are served round-robin (one slot each in turn, in
//!   the order they first asked), so a pod with 16 dbConfigs gets one slot per round and can
//!   never get ahead of 16 pods with one dbConfig each.
//!
//! The decision logic ([`Schedule`]) is pure and unit-tested; [`FairQueue`] wraps it with a
//! mutex, the clock and one-shot channels. A waiter that gives up (its admission's deadline
//! passed, its future dropped) leaves the queue, and a slot granted to it at that instant is
//! handed on.

mod schedule;

pub use schedule::{Owner, Schedule, CONTENTION_WINDOW};

use std::sync::{Arc, Mutex};

use crate::telemetry::metrics::{IssuanceMetrics, SlotUser};
use tokio::sync::oneshot;
use tokio::time::Instant;

struct Inner {
    schedule: Mutex<Schedule<oneshot::Sender<()>>>,
    next_owner: std::sync::atomic::AtomicU64,
    metrics: Option<IssuanceMetrics>,
}

/// The issuance-slot queue of one process, shared by its admissions and NRI fetches.
#[derive(Clone)]
pub struct FairQueue {
    inner: Arc<Inner>,
}

impl Default for FairQueue {
    fn default() -> Self {
        FairQueue::new(
            crate::config::DEFAULT_ISSUANCE_SLOTS,
            crate::config::DEFAULT_ISSUANCE_SLOTS_PER_POD,
        )
    }
}

impl FairQueue {
    pub fn new(capacity: usize, per_owner: usize) -> FairQueue {
        FairQueue::build(capacity, per_owner, None)
    }

    /// The queue of a process: `issuanceSlots` and `issuanceSlotsPerPod`, its occupancy and
    /// waits exported in `metrics`.
    pub fn from_config(config: &crate::config::Config, metrics: IssuanceMetrics) -> FairQueue {
        FairQueue::build(
            config.issuance_slots,
            config.issuance_slots_per_pod,
            Some(metrics),
        )
    }

    fn build(capacity: usize, per_owner: usize, metrics: Option<IssuanceMetrics>) -> FairQueue {
        FairQueue {
            inner: Arc::new(Inner {
                schedule: Mutex::new(Schedule::new(capacity, per_owner, CONTENTION_WINDOW)),
                next_owner: std::sync::atomic::AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// A new owner, one per pod's issuance (an admission, an NRI fetch) of `dbconfigs`
    /// dbConfigs that must be done by `deadline`: half-way there it is late, and no longer held
    /// to its share of the per-pod bound.
    pub fn owner(&self, dbconfigs: usize, deadline: Instant) -> Owner {
        let id = self
            .inner
            .next_owner
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        Owner::new(id, dbconfigs).late_at(now + deadline.saturating_duration_since(now) / 2)
    }

    /// Waits for a slot for `owner` (a dbConfig of `user`); the slot is held until the returned
    /// [`Slot`] is dropped. Cancel-safe: dropping the future leaves the queue (or gives back a
    /// slot granted meanwhile).
    pub async fn acquire(&self, owner: Owner, user: SlotUser) -> Slot {
        let (tx, rx) = oneshot::channel();
        let granted_now = {
            let mut s = self.lock();
            let granted = s.request(owner, tx, Instant::now());
            self.observe(&s);
            granted
        };
        let slot = Slot {
            queue: self.clone(),
            owner,
        };
        if granted_now {
            return slot;
        }
        if let Some(m) = &self.inner.metrics {
            m.slot_waited(user);
        }
        let mut wait = Wait {
            queue: self.clone(),
            owner,
            rx: Some(rx),
        };
        let granted = match wait.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        wait.rx = None; // received (or the sender is gone): nothing left to undo
        debug_assert!(
            granted,
            "a queued waiter's sender is only dropped when granted"
        );
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule<oneshot::Sender<()>>> {
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives a slot back and grants the freed capacity to the next waiters.
    fn release(&self, owner: Owner) {
        let mut s = self.lock();
        s.release(owner, Instant::now());
        Self::dispatch(&mut s);
        self.observe(&s);
    }

    /// Exports the occupancy (under the lock, so the gauges never go back in time).
    fn observe(&self, s: &Schedule<oneshot::Sender<()>>) {
        if let Some(m) = &self.inner.metrics {
            m.slots(s.in_flight(), s.waiting());
        }
    }

    fn dispatch(s: &mut Schedule<oneshot::Sender<()>>) {
        while let Some((owner, tx)) = s.next_grant(Instant::now()) {
            if tx.send(()).is_err() {
                // The waiter gave up between its last poll and now: the slot goes on.
                s.release(owner, Instant::now());
            }
        }
    }
}

/// One issuance slot, given back on drop.
pub struct Slot {
    queue: FairQueue,
    owner: Owner,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.release(self.owner);
    }
}

/// A queued request; on drop before being granted, it leaves the queue, and a grant that raced
/// with the drop is given back.
struct Wait {
    queue: FairQueue,
    owner: Owner,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        rx.close();
        let mut s = self.queue.lock();
        if rx.try_recv().is_ok() {
            s.release(self.owner, Instant::now());
            FairQueue::dispatch(&mut s);
        } else {
            s.forget(self.owner, |tx| tx.is_closed(), Instant::now());
        }
        self.queue.observe(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_no_slot_behind() {
        let q = FairQueue::new(1, 1);
        let end = Instant::now() + std::time::Duration::from_secs(10);
        let (a, b, c) = (q.owner(1, end), q.owner(1, end), q.owner(1, end));
        let held = q.acquire(a, SlotUser::Admission).await;
        // b waits, then gives up.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            q.acquire(b, SlotUser::Admission),
        )
        .await;
        assert!(gave_up.is_err());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.acquire(c, SlotUser::Nri).await }
        });
        tokio::task::yield_now().await;
        drop(held);
        let slot = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("the next waiter gets the freed slot")
            .unwrap();
        drop(slot);
        assert_eq!(q.lock().in_flight(), 0);
    }
}
