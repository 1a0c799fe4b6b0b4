//! When to retry, renew and give up: the timing decisions of the pod watch, the revoker and the
//! renewer, as pure functions of durations and instants. The actors own the timers and call
//! these; `tests/schedule.rs` drives them on tokio's paused clock.
//!
//! - [`WatchBackoff`]: the pod watch's retry delays (doubling, capped, reset by any success);
//!   [`WatchFailures`]: when a failing watch counts as broken, and when its failure run ends.
//! - [`revocation_retry`]: the revoker's retry of one entry, then parking.
//! - [`renewal_due`]: TTL-aware renewal (renew only what would expire soon).
//! - [`sweep_period`] and [`unseen_grace_over`]: when the sweep gives up on an entry whose pod
//!   it cannot see.

use rand::Rng;
use std::time::{Duration, Instant, SystemTime};

/// First retry delay of the pod watch after an error.
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest delay between two attempts of the pod watch (before jitter of up to
/// [`WATCH_BACKOFF_JITTER`]): the watch is back within this (plus one request) of the apiserver
/// answering again.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// First retry delay of the NRI plugin's node pod watch: one watch per node, so an apiserver
/// outage is not met by every node retrying every 2 s (the schedule of vault-db-injector's
/// informer, client-go's default).
pub const NODE_WATCH_BACKOFF_MIN: Duration = Duration::from_millis(800);
/// Longest delay between two attempts of the node pod watch.
pub const NODE_WATCH_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest jitter added to a pod-watch delay, as a fraction of it.
pub const WATCH_BACKOFF_JITTER: f64 = 0.2;

/// The pod watch's back-off: doubling from [`WATCH_BACKOFF_MIN`] up to [`WATCH_BACKOFF_MAX`],
/// each delay with up to [`WATCH_BACKOFF_JITTER`] added, back to the start on [`Self::reset`]
/// (the watch resets it on any success).
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl WatchBackoff {
    pub fn new(min: Duration, max: Duration) -> WatchBackoff {
        WatchBackoff {
            next: min,
            min,
            max: max.max(min),
        }
    }

    /// The next delay without jitter (what [`Iterator::next`] jitters).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff::new(WATCH_BACKOFF_MIN, WATCH_BACKOFF_MAX)
    }
}

impl WatchBackoff {
    /// The node pod watch's back-off: [`NODE_WATCH_BACKOFF_MIN`] doubling to
    /// [`NODE_WATCH_BACKOFF_MAX`].
    pub fn node() -> WatchBackoff {
        WatchBackoff::new(NODE_WATCH_BACKOFF_MIN, NODE_WATCH_BACKOFF_MAX)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.0..WATCH_BACKOFF_JITTER);
        Some(base.mul_f64(1.0 + jitter))
    }
}

/// Errors further apart than this belong to separate failure runs (the watch's back-off is at
/// most [`WATCH_BACKOFF_MAX`] plus a request timeout, so a persistently failing watch errs more
/// often than this).
pub const FAILURE_RUN_GAP: Duration = Duration::from_secs(45);

/// The pod watch's current run of failures: errors with no success in between, each less than
/// [`FAILURE_RUN_GAP`] after the previous one. The watch is broken once the run has lasted its
/// `broken_after`; any success ends the run, and so does a quiet [`FAILURE_RUN_GAP`].
#[derive(Debug, Clone, Default)]
pub struct WatchFailures {
    /// First and last error of the current run.
    run: Option<(Instant, Instant)>,
}

impl WatchFailures {
    /// An error at `now`; returns how long the run it belongs to has lasted.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let first = match self.run {
            Some((first, last)) if now.saturating_duration_since(last) < FAILURE_RUN_GAP => first,
            _ => now,
        };
        self.run = Some((first, now));
        now.saturating_duration_since(first)
    }

    /// A success: the run, if any, is over.
    pub fn succeeded(&mut self) {
        self.run = None;
    }

    /// Within a run of failures.
    pub fn failing(&self) -> bool {
        self.run.is_some()
    }

    /// No error for [`FAILURE_RUN_GAP`]: the run is over even though no success was seen (a
    /// watch resumed from its resourceVersion emits nothing).
    pub fn quiet_since_gap(&self, now: Instant) -> bool {
        self.run
            .is_some_and(|(_, last)| now.saturating_duration_since(last) >= FAILURE_RUN_GAP)
    }
}

/// Attempts of one entry's revocation before it is parked.
pub const REVOKE_MAX_ATTEMPTS: u32 = 10;
/// How long a parked revocation waits (the entry stays in KV; the sweep picks it up again).
pub const REVOKE_PARK_FOR: Duration = Duration::from_secs(600);
/// Retry delay after the first failed attempt; it doubles with each further failure.
pub const REVOKE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub const REVOKE_RETRY_MAX: Duration = Duration::from_secs(60);

/// What the revoker does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStep {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop retrying for this long (persistently failing: irrevocable lease, Vault policy).
    Park(Duration),
}

/// The step after `failed` attempts of one entry's revocation have failed in a row (1 after the
/// first): 1 s doubling up to a minute, parked after [`REVOKE_MAX_ATTEMPTS`].
pub fn revocation_retry(failed: u32) -> RetryStep {
    if failed >= REVOKE_MAX_ATTEMPTS {
        return RetryStep::Park(REVOKE_PARK_FOR);
    }
    let doublings = failed.saturating_sub(1).min(16);
    RetryStep::RetryAfter(
        REVOKE_RETRY_FIRST
            .saturating_mul(2u32.pow(doublings))
            .min(REVOKE_RETRY_MAX),
    )
}

/// How far ahead a renewal cycle looks: `horizon_cycles` cycles (at least one).
pub fn renewal_horizon(interval: Duration, horizon_cycles: u32) -> Duration {
    interval.saturating_mul(horizon_cycles.max(1))
}

/// Whether a token or lease is due for renewal at `now`, given what the last renewal said:
/// `(expiry, ttl granted)`, `None` when never renewed by this renewer. Due when it would expire
/// within `horizon`, or when less than half of the granted TTL is left (Vault then keeps at
/// least half a TTL of margin should every renewer stop), or when already expired.
pub fn renewal_due(
    last: Option<(SystemTime, Duration)>,
    horizon: Duration,
    now: SystemTime,
) -> bool {
    match last {
        None => true,
        Some((expiry, granted)) => expiry
            .duration_since(now)
            .map(|left| left <= horizon || left < granted / 2)
            .unwrap_or(true),
    }
}

/// The revoker's sweep period: a quarter of the unseen grace (an entry whose pod never appeared
/// goes between 1 and 1.25 graces after it was written), at most `max_interval`, at least 1 s.
pub fn sweep_period(unseen_grace: Duration, max_interval: Duration) -> Duration {
    (unseen_grace / 4)
        .min(max_interval)
        .max(Duration::from_secs(1))
}

/// Whether an entry unseen for `unseen_for` (since the first sweep that missed its pod) may go.
/// Sweeps are periodic: an entry first missed at one sweep is due exactly `grace` later, give or
/// take the sweeps' own jitter, hence a tolerance of a tenth of the sweep period.
pub fn unseen_grace_over(unseen_for: Duration, grace: Duration, sweep_period: Duration) -> bool {
    unseen_for + sweep_period / 10 >= grace
}

/// Longer than any NRI fetch attempt can still be running: a fetch ends by its deadline (at most
/// the plugin's 30 s background limit), and its last calls have then reached Vault. An attempt
/// record older than this is one whose fetch finished (completed, or failed and undone) or died.
pub const FETCH_ATTEMPT_MAX_AGE: Duration = Duration::from_secs(60);

/// When the revoker's sweep settles an NRI fetch attempt's record (revokes its login unless the
/// entry holds it), counted from the first sweep that saw it: after the unseen grace when its
/// pod is gone, and never while the attempt could still be running for a live pod.
pub fn attempt_settle_after(grace: Duration, pod_live: bool) -> Duration {
    if pod_live {
        grace.max(FETCH_ATTEMPT_MAX_AGE)
    } else {
        grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = WatchBackoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        for d in &delays {
            assert!(*d <= Duration::from_millis(2400), "{d:?} over the cap");
        }
        assert!(delays[0] < Duration::from_millis(301));
        assert!(delays[7] >= Duration::from_secs(2));
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(250));
    }

    #[test]
    fn a_live_pods_attempt_is_never_settled_while_its_fetch_may_run() {
        let grace = Duration::from_secs(10);
        assert_eq!(attempt_settle_after(grace, false), grace);
        assert_eq!(attempt_settle_after(grace, true), FETCH_ATTEMPT_MAX_AGE);
        let long = Duration::from_secs(300);
        assert_eq!(attempt_settle_after(long, true), long);
    }

    #[test]
    fn sweep_period_is_a_quarter_of_the_grace_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(sweep_period(s(60), s(300)), s(15));
        assert_eq!(sweep_period(s(3600), s(300)), s(300));
        assert_eq!(sweep_period(s(2), s(300)), s(1));
    }
}
