//! The pure scheduling state of the issuance slots: who holds slots, who waits, whose turn is
//! next, and how many slots a pod may hold given how many pods share the replica. Time is
//! passed in (`now`), so every decision is a function of the calls made: unit-tested here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// One pod's issuance (an admission, or an NRI fetch) in the queue: an id, the number of
/// dbConfigs it issues (what makes it a small or a big pod) and the instant from which it is
/// late (half-way to its deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    id: u64,
    dbconfigs: usize,
    late_at: Option<Instant>,
}

impl Owner {
    pub fn new(id: u64, dbconfigs: usize) -> Owner {
        Owner {
            id,
            dbconfigs,
            late_at: None,
        }
    }

    /// From `late_at` on, the pod is no longer held to its share: it gets the whole per-pod
    /// bound, so that a big pod on a slow Vault is not refused at its deadline for having
    /// waited its turn.
    pub fn late_at(self, at: Instant) -> Owner {
        Owner {
            late_at: Some(at),
            ..self
        }
    }

    fn is_late(&self, now: Instant) -> bool {
        self.late_at.is_some_and(|at| now >= at)
    }
}

/// How long a pod that held slots still counts as sharing the replica after it is done: long
/// enough that a steady stream of small admissions (each holding a slot a few tens of
/// milliseconds, tens of them per second) keeps a big pod at its fair share between two of
/// them, short enough that a big pod alone soon gets its whole bound again.
pub const CONTENTION_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Schedule<W> {
    capacity: usize,
    per_owner: usize,
    window: Duration,
    in_flight: usize,
    held: HashMap<Owner, usize>,
    waiting: HashMap<Owner, VecDeque<W>>,
    /// Owners with at least one waiter, in round-robin order (front: next to serve).
    ring: VecDeque<Owner>,
    /// Owners that held slots and are done, with the time they left (oldest first).
    departed: VecDeque<(Instant, Owner)>,
}

impl<W> Schedule<W> {
    pub fn new(capacity: usize, per_owner: usize, window: Duration) -> Schedule<W> {
        Schedule {
            capacity: capacity.max(1),
            per_owner: per_owner.max(1),
            window,
            in_flight: 0,
            held: HashMap::new(),
            waiting: HashMap::new(),
            ring: VecDeque::new(),
            departed: VecDeque::new(),
        }
    }

    /// Slots currently held, all owners together.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests waiting for a slot, all owners together.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Pods sharing the replica at `now`: holding or waiting for a slot, done less than the
    /// window ago, and `asking` (the owner whose request is being decided).
    fn active(&mut self, now: Instant, asking: Owner) -> usize {
        self.forget_departed(now);
        let mut pods: HashSet<Owner> = self.held.keys().copied().collect();
        pods.extend(self.waiting.keys().copied());
        pods.extend(self.departed.iter().map(|(_, o)| *o));
        pods.insert(asking);
        pods.len()
    }

    /// Drops the departures older than the window (they no longer count).
    fn forget_departed(&mut self, now: Instant) {
        while let Some((left, _)) = self.departed.front() {
            if now.saturating_duration_since(*left) <= self.window {
                break;
            }
            self.departed.pop_front();
        }
    }

    /// Slots `owner` may hold while `active` pods share the replica. A small pod (no more
    /// dbConfigs than the per-pod bound) issues all of them at once: it is done in one round.
    /// A big pod gets the whole bound only while it is alone; with others it gets its share of
    /// it, the bound divided by the pods sharing the replica, at least one.
    fn bound(&self, owner: Owner, active: usize) -> usize {
        if owner.dbconfigs <= self.per_owner {
            self.per_owner
        } else {
            (self.per_owner / active.max(1)).max(1)
        }
    }

    fn can_take(&mut self, owner: Owner, now: Instant) -> bool {
        if self.in_flight >= self.capacity {
            return false;
        }
        let held = self.held.get(&owner).copied().unwrap_or(0);
        if held == 0 {
            return true; // every pod may always have one dbConfig in progress
        }
        let active = if owner.dbconfigs <= self.per_owner || owner.is_late(now) {
            1 // a small pod's bound, or a late pod's, does not depend on it
        } else {
            self.active(now, owner)
        };
        held < self.bound(owner, active)
    }

    fn take(&mut self, owner: Owner) {
        self.in_flight += 1;
        *self.held.entry(owner).or_insert(0) += 1;
    }

    /// The owner has nothing held and nothing waiting: it leaves, and counts as sharing the
    /// replica for one more window.
    fn left_if_done(&mut self, owner: Owner, now: Instant) {
        if !self.held.contains_key(&owner) && !self.waiting.contains_key(&owner) {
            self.forget_departed(now);
            self.departed.push_back((now, owner));
        }
    }

    /// A request for a slot: granted at once (`true`, the slot counted) when a slot is free, the
    /// owner is under its bound and has no earlier request waiting; otherwise queued (`false`).
    /// (After every release the free slots are granted, so a free slot means every waiting
    /// owner is at its bound: taking it jumps ahead of nobody.)
    pub fn request(&mut self, owner: Owner, waiter: W, now: Instant) -> bool {
        if !self.waiting.contains_key(&owner) && self.can_take(owner, now) {
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
    pub fn release(&mut self, owner: Owner, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.held.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&owner);
                self.left_if_done(owner, now);
            }
        }
    }

    /// The next waiter to grant a slot to, in round-robin order (the slot is counted as taken);
    /// `None` when no slot is free or every waiting owner is at its bound. Call until `None`
    /// after every [`release`](Self::release).
    pub fn next_grant(&mut self, now: Instant) -> Option<(Owner, W)> {
        if self.in_flight >= self.capacity {
            return None;
        }
        for _ in 0..self.ring.len() {
            let owner = self.ring.pop_front()?;
            if !self.can_take(owner, now) {
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
    pub fn forget(&mut self, owner: Owner, mut gone: impl FnMut(&W) -> bool, now: Instant) {
        if let Some(queue) = self.waiting.get_mut(&owner) {
            queue.retain(|w| !gone(w));
            if queue.is_empty() {
                self.waiting.remove(&owner);
                self.ring.retain(|o| *o != owner);
                self.left_if_done(owner, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The order in which slots are granted when one owner asks for 16 and then 16 owners ask
    /// for one each, with every granted slot released in grant order (all at one instant).
    fn grant_order(capacity: usize, per_owner: usize) -> Vec<u64> {
        let now = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(capacity, per_owner, WINDOW);
        let mut granted: VecDeque<Owner> = VecDeque::new();
        let mut order = Vec::new();
        // Owner 0: the noisy pod, 16 dbConfigs asked at once.
        let noisy = Owner::new(0, 16);
        for i in 0..16 {
            if s.request(noisy, i, now) {
                granted.push_back(noisy);
                order.push(0);
            }
        }
        // Owners 1..=16: one dbConfig each, arriving after the noisy pod.
        for o in 1..=16 {
            if s.request(Owner::new(o, 1), 0, now) {
                granted.push_back(Owner::new(o, 1));
                order.push(o);
            }
        }
        while let Some(done) = granted.pop_front() {
            s.release(done, now);
            while let Some((o, _)) = s.next_grant(now) {
                granted.push_back(o);
                order.push(o.id);
            }
        }
        assert_eq!(s.in_flight(), 0);
        order
    }

    #[test]
    fn a_big_pod_cannot_get_ahead_of_single_dbconfig_pods() {
        let order = grant_order(4, 2);
        assert_eq!(order.len(), 32, "every request is granted once");
        // Alone, the noisy pod starts with its per-pod bound (2), not the whole capacity.
        assert_eq!(&order[..2], &[0, 0]);
        // Every single-dbConfig pod is served before the noisy pod's 5th dbConfig: one slot per
        // owner per round (FIFO by arrival would serve all 16 of owner 0 first).
        let last_single = order.iter().rposition(|o| *o != 0).unwrap();
        let noisy_before = order[..last_single].iter().filter(|o| **o == 0).count();
        assert!(
            noisy_before <= 4,
            "noisy pod got {noisy_before} slots before the last single pod: {order:?}"
        );
        // Round-robin: after the noisy pod's first slots, the singles come one per turn.
        assert_eq!(&order[2..4], &[1, 2]);
    }

    #[test]
    fn never_over_capacity_nor_over_the_per_owner_bound() {
        let now = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(3, 2, WINDOW);
        let mut held: HashMap<u64, usize> = HashMap::new();
        let mut granted = VecDeque::new();
        for o in 0..4 {
            for i in 0..5 {
                if s.request(Owner::new(o, 5), i, now) {
                    granted.push_back(Owner::new(o, 5));
                    *held.entry(o).or_default() += 1;
                }
            }
        }
        while let Some(done) = granted.pop_front() {
            s.release(done, now);
            *held.get_mut(&done.id).unwrap() -= 1;
            while let Some((o, _)) = s.next_grant(now) {
                granted.push_back(o);
                *held.entry(o.id).or_default() += 1;
                assert!(held[&o.id] <= 2, "owner {o:?} over its bound");
                assert!(held.values().sum::<usize>() <= 3, "over capacity");
            }
        }
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_lone_big_pod_uses_its_whole_bound_at_once() {
        let now = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        let big = Owner::new(7, 16);
        let immediate = (0..16).filter(|i| s.request(big, *i, now)).count();
        assert_eq!(immediate, 4);
    }

    /// Beside a stream of small pods a big pod issues one dbConfig at a time; once the stream
    /// has been gone for a window, it gets its whole bound back.
    #[test]
    fn a_big_pod_gets_its_share_while_others_share_the_replica() {
        let t0 = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        for o in 1..=5 {
            let small = Owner::new(o, 1);
            assert!(s.request(small, 0, t0 + ms(20 * o)));
            s.release(small, t0 + ms(20 * o + 15));
        }
        let big = Owner::new(100, 16);
        let now = t0 + ms(200);
        let immediate = (0..16).filter(|i| s.request(big, *i, now)).count();
        assert_eq!(
            immediate, 1,
            "six pods share the replica: 4 / 6 rounds down to 1"
        );
        s.release(big, t0 + ms(250));
        assert!(s.next_grant(t0 + ms(250)).is_some());
        assert!(s.next_grant(t0 + ms(250)).is_none(), "still one at a time");
        // The small pods left more than a window ago: the big pod alone gets 4 again.
        let later = t0 + ms(1500);
        s.release(big, later);
        let regrown = std::iter::from_fn(|| s.next_grant(later)).count();
        assert_eq!(regrown, 4);
    }

    /// Departures are remembered for one window only, whether or not a big pod ever asks.
    #[test]
    fn departures_are_forgotten_after_the_window() {
        let t0 = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        for o in 0..10_000u64 {
            let at = t0 + ms(o); // 1,000 small pods per second
            assert!(s.request(Owner::new(o, 1), 0, at));
            s.release(Owner::new(o, 1), at);
        }
        assert!(s.departed.len() <= 1_001, "{} remembered", s.departed.len());
    }

    /// A big pod held to one slot gets the whole bound once half its time is gone.
    #[test]
    fn a_late_big_pod_gets_its_whole_bound() {
        let t0 = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        for o in 1..=5 {
            assert!(s.request(Owner::new(o, 1), 0, t0));
            s.release(Owner::new(o, 1), t0);
        }
        let big = Owner::new(100, 16).late_at(t0 + ms(2000));
        assert_eq!((0..16).filter(|i| s.request(big, *i, t0)).count(), 1);
        s.release(big, t0 + ms(500));
        assert!(s.next_grant(t0 + ms(500)).is_some());
        assert!(s.next_grant(t0 + ms(500)).is_none(), "on time: its share");
        // More small pods pass: still not alone, but late now, so 4 at once.
        for o in 6..=10 {
            assert!(s.request(Owner::new(o, 1), 0, t0 + ms(1500)));
            s.release(Owner::new(o, 1), t0 + ms(1500));
        }
        let late = t0 + ms(2000);
        s.release(big, late);
        assert_eq!(std::iter::from_fn(|| s.next_grant(late)).count(), 4);
    }

    #[test]
    fn two_big_pods_alone_share_the_per_pod_bound() {
        let now = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        let (a, b) = (Owner::new(1, 16), Owner::new(2, 16));
        assert_eq!((0..16).filter(|i| s.request(a, *i, now)).count(), 4);
        // b arrives: 4 / 2 pods = 2 each; a keeps what it holds until it drains below 2.
        assert_eq!((0..16).filter(|i| s.request(b, *i, now)).count(), 2);
        s.release(a, now);
        s.release(a, now);
        assert!(
            s.next_grant(now).is_none(),
            "a holds 2, its share; b holds 2"
        );
        s.release(a, now);
        assert_eq!(s.next_grant(now).map(|(o, _)| o), Some(a));
    }

    #[test]
    fn small_pods_keep_their_fast_path_beside_a_big_one() {
        let now = Instant::now();
        let mut s: Schedule<u32> = Schedule::new(16, 4, WINDOW);
        let big = Owner::new(1, 16);
        let _ = (0..16).filter(|i| s.request(big, *i, now)).count();
        for o in 2..6 {
            let small = Owner::new(o, 1);
            assert!(s.request(small, 0, now));
            s.release(small, now);
        }
        // A pod with 4 dbConfigs (the per-pod bound) issues them all at once, however busy.
        let four = Owner::new(9, 4);
        assert_eq!((0..4).filter(|i| s.request(four, *i, now)).count(), 4);
    }
}
