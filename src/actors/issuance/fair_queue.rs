//! Fair scheduling of dbConfig issuances between admissions.
//!
//! Each dbConfig of a pod is a short sequence of Vault calls (and, behind Vault, a PostgreSQL
//! role creation). Started all at once, a pod with `maxDbConfigsPerPod` dbConfigs puts that many
//! sequences in front of Vault and PostgreSQL at the same instant, and the single-dbConfig pods
//! admitted meanwhile queue behind all of them. The [`FairQueue`] hands out *issuance slots*:
//!
//! * at most `capacity` dbConfigs are being issued at once, all admissions together;
//! * at most `per_owner` of them belong to one admission (one pod);
//! * when a slot frees, the admissions that wait are served round-robin (one slot each in turn,
//!   in the order they first asked), so a pod with 16 dbConfigs gets one slot per round and can
//!   never get ahead of 16 pods with one dbConfig each.
//!
//! The decision logic ([`Schedule`]) is pure and unit-tested; [`FairQueue`] wraps it with a
//! mutex and one-shot channels. A waiter that gives up (its admission's deadline passed, its
//! future dropped) leaves the queue, and a slot granted to it at that instant is handed on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Identifies one admission (one pod's issuance) in the queue.
pub type Owner = u64;

/// Default bound on dbConfigs issued at once, all admissions together.
pub const DEFAULT_CAPACITY: usize = 16;
/// Default bound on dbConfigs of one admission issued at once.
pub const DEFAULT_PER_OWNER: usize = 4;

/// The pure scheduling state: who holds slots, who waits, whose turn is next.
#[derive(Debug)]
pub struct Schedule<W> {
    capacity: usize,
    per_owner: usize,
    in_flight: usize,
    held: HashMap<Owner, usize>,
    waiting: HashMap<Owner, VecDeque<W>>,
    /// Owners with at least one waiter, in round-robin order (front: next to serve).
    ring: VecDeque<Owner>,
}

impl<W> Schedule<W> {
    pub fn new(capacity: usize, per_owner: usize) -> Schedule<W> {
        Schedule {
            capacity: capacity.max(1),
            per_owner: per_owner.max(1),
            in_flight: 0,
            held: HashMap::new(),
            waiting: HashMap::new(),
            ring: VecDeque::new(),
        }
    }

    /// Slots currently held, all owners together.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn can_take(&self, owner: Owner) -> bool {
        self.in_flight < self.capacity
            && self.held.get(&owner).copied().unwrap_or(0) < self.per_owner
    }

    fn take(&mut self, owner: Owner) {
        self.in_flight += 1;
        *self.held.entry(owner).or_insert(0) += 1;
    }

    /// A request for a slot: granted at once (`true`, the slot counted) when a slot is free, the
    /// owner is under its bound and has no earlier request waiting; otherwise queued (`false`).
    /// (After every release the free slots are granted, so a free slot means every waiting
    /// owner is at its bound: taking it jumps ahead of nobody.)
    pub fn request(&mut self, owner: Owner, waiter: W) -> bool {
        if !self.waiting.contains_key(&owner) && self.can_take(owner) {
            self.take(owner);
            return true;
        }
        let queue = self.waiting.entry(owner).or_default();
        if queue.is_empty() {
            self.ring.push_back(owner);
        }
        queue.push_back(waiter);
        false
    }

    /// A slot of `owner` is given back.
    pub fn release(&mut self, owner: Owner) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.held.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&owner);
            }
        }
    }

    /// The next waiter to grant a slot to, in round-robin order (the slot is counted as taken);
    /// `None` when no slot is free or every waiting owner is at its bound. Call until `None`
    /// after every [`release`](Self::release).
    pub fn next_grant(&mut self) -> Option<(Owner, W)> {
        if self.in_flight >= self.capacity {
            return None;
        }
        for _ in 0..self.ring.len() {
            let owner = self.ring.pop_front()?;
            if !self.can_take(owner) {
                self.ring.push_back(owner);
                continue;
            }
            let queue = self.waiting.get_mut(&owner)?;
            let waiter = queue.pop_front()?;
            if queue.is_empty() {
                self.waiting.remove(&owner);
            } else {
                self.ring.push_back(owner);
            }
            self.take(owner);
            return Some((owner, waiter));
        }
        None
    }

    /// Drops the waiters of `owner` for which `gone` holds (their callers gave up).
    pub fn forget(&mut self, owner: Owner, mut gone: impl FnMut(&W) -> bool) {
        if let Some(queue) = self.waiting.get_mut(&owner) {
            queue.retain(|w| !gone(w));
            if queue.is_empty() {
                self.waiting.remove(&owner);
                self.ring.retain(|o| *o != owner);
            }
        }
    }
}

struct Inner {
    schedule: Mutex<Schedule<oneshot::Sender<()>>>,
    next_owner: std::sync::atomic::AtomicU64,
}

/// The shared issuance-slot queue of one replica's admissions.
#[derive(Clone)]
pub struct FairQueue {
    inner: Arc<Inner>,
}

impl Default for FairQueue {
    fn default() -> Self {
        FairQueue::new(DEFAULT_CAPACITY, DEFAULT_PER_OWNER)
    }
}

impl FairQueue {
    pub fn new(capacity: usize, per_owner: usize) -> FairQueue {
        FairQueue {
            inner: Arc::new(Inner {
                schedule: Mutex::new(Schedule::new(capacity, per_owner)),
                next_owner: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// A new owner id, one per admission.
    pub fn owner(&self) -> Owner {
        self.inner
            .next_owner
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for a slot for `owner`; the slot is held until the returned [`Slot`] is dropped.
    /// Cancel-safe: dropping the future leaves the queue (or gives back a slot granted
    /// meanwhile).
    pub async fn acquire(&self, owner: Owner) -> Slot {
        let (tx, rx) = oneshot::channel();
        let granted_now = self.lock().request(owner, tx);
        let slot = Slot {
            queue: self.clone(),
            owner,
        };
        if granted_now {
            return slot;
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
        s.release(owner);
        Self::dispatch(&mut s);
    }

    fn dispatch(s: &mut Schedule<oneshot::Sender<()>>) {
        while let Some((owner, tx)) = s.next_grant() {
            if tx.send(()).is_err() {
                // The waiter gave up between its last poll and now: the slot goes on.
                s.release(owner);
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
            s.release(self.owner);
            FairQueue::dispatch(&mut s);
        } else {
            s.forget(self.owner, |tx| tx.is_closed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order in which slots are granted when one owner asks for 16 and then 16 owners ask
    /// for one each, with every granted slot released in grant order.
    fn grant_order(capacity: usize, per_owner: usize) -> Vec<Owner> {
        let mut s: Schedule<u32> = Schedule::new(capacity, per_owner);
        let mut granted: VecDeque<Owner> = VecDeque::new();
        let mut order = Vec::new();
        // Owner 0: the noisy pod, 16 dbConfigs asked at once.
        for i in 0..16 {
            if s.request(0, i) {
                granted.push_back(0);
                order.push(0);
            }
        }
        // Owners 1..=16: one dbConfig each, arriving after the noisy pod.
        for o in 1..=16 {
            if s.request(o, 0) {
                granted.push_back(o);
                order.push(o);
            }
        }
        while let Some(done) = granted.pop_front() {
            s.release(done);
            while let Some((o, _)) = s.next_grant() {
                granted.push_back(o);
                order.push(o);
            }
        }
        assert_eq!(s.in_flight(), 0);
        order
    }

    #[test]
    fn a_big_pod_cannot_get_ahead_of_single_dbconfig_pods() {
        let order = grant_order(4, 2);
        assert_eq!(order.len(), 32, "every request is granted once");
        // The noisy pod starts with its per-admission bound (2), not the whole capacity.
        assert_eq!(&order[..2], &[0, 0]);
        // Every single-dbConfig pod is served before the noisy pod's 6th dbConfig: one slot per
        // owner per round (FIFO by arrival would serve all 16 of owner 0 first).
        let last_single = order.iter().rposition(|o| *o != 0).unwrap();
        let noisy_before = order[..last_single].iter().filter(|o| **o == 0).count();
        assert!(
            noisy_before <= 5,
            "noisy pod got {noisy_before} slots before the last single pod: {order:?}"
        );
        // Round-robin: after the noisy pod's first slots, the singles come one per turn.
        assert_eq!(&order[2..4], &[1, 2]);
    }

    #[test]
    fn never_over_capacity_nor_over_the_per_owner_bound() {
        let mut s: Schedule<u32> = Schedule::new(3, 2);
        let mut held: HashMap<Owner, usize> = HashMap::new();
        let mut granted = VecDeque::new();
        for o in 0..4 {
            for i in 0..5 {
                if s.request(o, i) {
                    granted.push_back(o);
                    *held.entry(o).or_default() += 1;
                }
            }
        }
        while let Some(done) = granted.pop_front() {
            s.release(done);
            *held.get_mut(&done).unwrap() -= 1;
            while let Some((o, _)) = s.next_grant() {
                granted.push_back(o);
                *held.entry(o).or_default() += 1;
                assert!(held[&o] <= 2, "owner {o} over its bound");
                assert!(held.values().sum::<usize>() <= 3, "over capacity");
            }
        }
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_lone_big_pod_uses_its_whole_bound_at_once() {
        let mut s: Schedule<u32> = Schedule::new(16, 4);
        let immediate = (0..16).filter(|i| s.request(7, *i)).count();
        assert_eq!(immediate, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_no_slot_behind() {
        let q = FairQueue::new(1, 1);
        let (a, b, c) = (q.owner(), q.owner(), q.owner());
        let held = q.acquire(a).await;
        // b waits, then gives up.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), q.acquire(b)).await;
        assert!(gave_up.is_err());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.acquire(c).await }
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
