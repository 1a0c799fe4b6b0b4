//! Client-side pacing of Vault calls: the `vaultRateLimit` token bucket and the two lanes.
//!
//! * [`RateLimiter`] is a GCRA ("virtual scheduling") token bucket: `burst` calls may go at
//!   once; after that calls are spaced `1/rate` apart, so `n` back-to-back calls take at least
//!   `(n - burst) / rate`. Waiters are served in arrival order (a fair async mutex). A slot is
//!   taken only at the moment its caller proceeds: a caller that gives up while waiting (its
//!   future is dropped, e.g. at its deadline) leaves the queue without taking a slot, so it
//!   never delays the callers behind it. Uses `tokio::time` (honours `tokio::time::pause`).
//! * [`Pacer`] puts calls in one of two [`Lane`]s. The **paced** lane (the renewer and the
//!   revoker, as vault-db-injector's `vaultRateLimit` did) goes through the rate limiter and
//!   yields to the **foreground** lane (admissions, NRI fetches, the session's own login):
//!   while [`YIELD_AT_FOREGROUND_IN_FLIGHT`] or more foreground calls are in flight — Vault
//!   is then the bottleneck — paced calls wait before starting. Foreground calls are never
//!   rate-limited client-side and never wait for paced work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// Paced calls do not start while this many foreground calls are in flight. At 50 admissions/s
/// of ~5 calls each, a Vault answering in 10 ms keeps ~2.5 foreground calls in flight; 8 means
/// Vault's latency has grown severalfold (Little's law), so background work steps aside.
pub const YIELD_AT_FOREGROUND_IN_FLIGHT: usize = 8;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// Burst tolerance: (burst - 1) * interval.
    tolerance: Duration,
    /// Theoretical arrival time of the next call; the lock is the FIFO queue of waiters.
    tat: Mutex<Option<Instant>>,
    rate: u32,
    burst: u32,
}

impl RateLimiter {
    /// `rate` calls per second (must be > 0), `burst` calls at once (0 is taken as 1).
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        assert!(rate > 0, "RateLimiter::new: rate must be > 0");
        let burst = burst.max(1);
        let interval = Duration::from_secs(1) / rate;
        RateLimiter {
            interval,
            tolerance: interval * (burst - 1),
            tat: Mutex::new(None),
            rate,
            burst,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Returns when the caller may proceed, having taken its slot. Cancel-safe: dropping the
    /// future before it completes takes no slot.
    pub async fn acquire(&self) {
        // The lock is held while sleeping: the head of the queue waits for its time, the
        // others wait behind it in order. Nothing is committed before the sleep ends.
        let mut tat = self.tat.lock().await;
        let now = Instant::now();
        let start = match *tat {
            Some(t) if t > now => t,
            _ => now,
        };
        // may run `tolerance` ahead of its theoretical time, but never before `now`
        let at = start
            .checked_sub(self.tolerance)
            .map_or(now, |t| t.max(now));
        if at > now {
            tokio::time::sleep_until(at).await;
        }
        *tat = Some(start + self.interval);
    }
}

/// Which budget a Vault call belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Admissions, NRI fetches and the session's own calls: never rate-limited client-side.
    Foreground,
    /// Renewer and revoker: `vaultRateLimit`, and yields to the foreground lane.
    Paced,
}

/// The lanes of one Vault client (shared by all its clones).
#[derive(Debug, Default)]
pub struct Pacer {
    limiter: Option<RateLimiter>,
    foreground_in_flight: AtomicUsize,
    foreground_done: Notify,
}

/// Held for the duration of a call; releases its place in the lane when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    foreground: Option<&'a Pacer>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.foreground {
            let before = p.foreground_in_flight.fetch_sub(1, Ordering::AcqRel);
            if before <= YIELD_AT_FOREGROUND_IN_FLIGHT {
                p.foreground_done.notify_waiters();
            }
        }
    }
}

impl Pacer {
    /// `limiter` paces the [`Lane::Paced`] calls (`None`: unlimited).
    pub fn new(limiter: Option<RateLimiter>) -> Pacer {
        Pacer {
            limiter,
            ..Pacer::default()
        }
    }

    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }

    /// Foreground calls now in flight.
    pub fn foreground_in_flight(&self) -> usize {
        self.foreground_in_flight.load(Ordering::Acquire)
    }

    /// Waits for the lane's turn. Cancel-safe: a caller dropped while waiting holds nothing.
    pub async fn admit(&self, lane: Lane) -> Permit<'_> {
        match lane {
            Lane::Foreground => {
                self.foreground_in_flight.fetch_add(1, Ordering::AcqRel);
                Permit {
                    foreground: Some(self),
                }
            }
            Lane::Paced => {
                loop {
                    let notified = self.foreground_done.notified();
                    tokio::pin!(notified);
                    // register before checking, so a release in between is not missed
                    notified.as_mut().enable();
                    if self.foreground_in_flight() < YIELD_AT_FOREGROUND_IN_FLIGHT {
                        break;
                    }
                    notified.await;
                }
                if let Some(l) = &self.limiter {
                    l.acquire().await;
                }
                Permit { foreground: None }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn run(rate: u32, burst: u32, n: usize) -> Duration {
        let l = Arc::new(RateLimiter::new(rate, burst));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn n_calls_take_n_minus_burst_over_rate() {
        // 10 calls at 5/s with burst 2: (10 - 2) / 5 = 1.6 s exactly (paused clock).
        assert_eq!(run(5, 2, 10).await, Duration::from_millis(1600));
        // burst 1 (the Go limiter): (20 - 1) / 10 = 1.9 s
        assert_eq!(run(10, 1, 20).await, Duration::from_millis(1900));
        // within the burst: no wait at all
        assert_eq!(run(30, 30, 30).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_the_bucket_up_to_burst() {
        let l = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // one second idle: refills, but only up to the burst of 3
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert_eq!(t1.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_calls_are_spaced() {
        let l = RateLimiter::new(4, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn zero_burst_is_one() {
        assert_eq!(RateLimiter::new(3, 0).burst(), 1);
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_takes_no_slot() {
        // 1/s, burst 1: the first call goes, the second would wait 1 s.
        let l = Arc::new(RateLimiter::new(1, 1));
        l.acquire().await;
        // Ten callers give up after 100 ms of waiting (their deadline).
        let quitters: Vec<_> = (0..10)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(100), l.acquire()).await
                })
            })
            .collect();
        for q in quitters {
            assert!(q.await.unwrap().is_err());
        }
        // They took nothing: the next caller waits only for the one slot really taken (1 s
        // after the first call), not behind ten phantom slots (11 s).
        let t0 = Instant::now();
        l.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_head_of_queue_lets_the_next_caller_through() {
        let l = Arc::new(RateLimiter::new(2, 1));
        l.acquire().await; // t = 0; next slot at 0.5 s
        let head = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let l = l.clone();
            async move {
                l.acquire().await;
                Instant::now()
            }
        });
        tokio::task::yield_now().await;
        head.abort();
        let t0 = Instant::now();
        // the second caller gets the head's slot (0.5 s), not the one after it (1 s)
        assert_eq!(second.await.unwrap() - t0, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn foreground_never_waits_for_a_paced_flood() {
        let p = Arc::new(Pacer::new(Some(RateLimiter::new(1, 1))));
        // 100 paced callers queue on the 1/s limiter
        let flood: Vec<_> = (0..100)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let _permit = p.admit(Lane::Paced).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        let permit = p.admit(Lane::Foreground).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(permit);
        for f in flood {
            f.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paced_calls_yield_while_the_foreground_is_busy() {
        let p = Arc::new(Pacer::new(None));
        let mut permits = Vec::new();
        for _ in 0..YIELD_AT_FOREGROUND_IN_FLIGHT {
            permits.push(p.admit(Lane::Foreground).await);
        }
        let paced = tokio::spawn({
            let p = p.clone();
            async move {
                let _permit = p.admit(Lane::Paced).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !paced.is_finished(),
            "a paced call started while Vault was busy"
        );
        // one foreground call ends: below the threshold, the paced call goes
        permits.pop();
        tokio::time::timeout(Duration::from_secs(1), paced)
            .await
            .expect("the paced call starts once the foreground calms down")
            .unwrap();
        assert_eq!(p.foreground_in_flight(), YIELD_AT_FOREGROUND_IN_FLIGHT - 1);
    }
}
