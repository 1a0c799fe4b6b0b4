//! Client-side token-bucket rate limiter shared by every Vault call (compat `vaultRateLimit`).
//!
//! Implemented as GCRA ("virtual scheduling"): each caller reserves the next free slot under a
//! short lock and then sleeps until its slot, so waiters are served in arrival order and no
//! background task is needed. `burst` calls may go at once; after that calls are spaced
//! `1/rate` apart, so `n` back-to-back calls take at least `(n - burst) / rate`. A caller that
//! gives up (its future is dropped) while waiting loses its slot: the limiter errs on the slow
//! side. Uses `tokio::time`, so it honours `tokio::time::pause`.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// Burst tolerance: (burst - 1) * interval.
    tolerance: Duration,
    /// Theoretical arrival time of the next call.
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

    /// Reserves a slot and returns when the caller may proceed.
    pub async fn acquire(&self) {
        let at = self.reserve(Instant::now());
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Reserves the next slot for a call arriving at `now`; returns when it may run.
    fn reserve(&self, now: Instant) -> Instant {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let start = match *tat {
            Some(t) if t > now => t,
            _ => now,
        };
        *tat = Some(start + self.interval);
        // may run `tolerance` ahead of its theoretical time, but never before `now`
        start
            .checked_sub(self.tolerance)
            .map_or(now, |t| t.max(now))
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
