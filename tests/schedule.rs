//! The timing logic on tokio's paused clock: the pod watch's back-off, the revoker's retries,
//! TTL-aware renewal and the sweep's unseen grace (`vdbi::schedule`, the decisions the actors
//! call). No platform and no real waiting: with `start_paused`, virtual time jumps to the next
//! timer whenever every task waits on one, so each delay is measured exactly and the tests are
//! deterministic. Periodic work is driven by `tokio::time::interval`, the timer under actix's
//! `run_interval` and `run_later`.

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vdbi::schedule::{
    renewal_due, renewal_horizon, revocation_retry, sweep_period, unseen_grace_over, RetryStep,
    WatchBackoff, WatchFailures, FAILURE_RUN_GAP, REVOKE_MAX_ATTEMPTS, WATCH_BACKOFF_JITTER,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// The wall clock of a test: a fixed date plus the virtual time elapsed since `start`.
fn wall(start: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + secs(1_700_000_000) + start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// The pod watch's back-off

/// The pod index's watch retries through kube's `StreamBackoff` with [`WatchBackoff`] (the same
/// combinator the index puts on its watcher): 250 ms doubling to the 2 s cap, each with up to
/// 20 % jitter, and any success starts the schedule over.
#[tokio::test(start_paused = true)]
async fn pod_watch_retries_double_to_two_seconds_and_start_over_after_a_success() {
    let script: Vec<Result<&str, &str>> = vec![
        Err("e1"),
        Err("e2"),
        Err("e3"),
        Err("e4"),
        Err("e5"),
        Ok("listed"),
        Err("e6"),
        Err("e7"),
        Ok("watching"),
    ];
    // How long the stream held back each item: the delay after the error before it.
    let expected = [0, 250, 500, 1000, 2000, 2000, 0, 250, 500].map(ms);
    let mut stream = std::pin::pin!(futures::stream::iter(script).backoff(WatchBackoff::default()));
    let mut last = Instant::now();
    let mut waits = Vec::new();
    while let Some(item) = stream.next().await {
        waits.push((item, last.elapsed()));
        last = Instant::now();
    }
    assert_eq!(waits.len(), expected.len());
    for ((item, waited), base) in waits.iter().zip(expected) {
        // The timer wheel rounds a deadline up to the next millisecond.
        let most = base.mul_f64(1.0 + WATCH_BACKOFF_JITTER) + ms(1);
        assert!(
            *waited >= base && *waited <= most,
            "{item:?} came {waited:?} after the previous item; expected {base:?} to {most:?}"
        );
    }
}

/// The NRI plugin's node watch (one per node) backs off further: 0.8 s doubling to 30 s.
#[tokio::test(start_paused = true)]
async fn the_node_watch_backs_off_to_thirty_seconds() {
    let errors = futures::stream::repeat(Err::<(), _>("apiserver down")).take(9);
    let mut stream = std::pin::pin!(errors.backoff(WatchBackoff::node()));
    let expected = [0, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000].map(ms);
    for base in expected {
        let before = Instant::now();
        let _ = stream.next().await.expect("nine errors");
        let waited = before.elapsed();
        let most = base.mul_f64(1.0 + WATCH_BACKOFF_JITTER) + ms(1);
        assert!(
            waited >= base && waited <= most,
            "waited {waited:?}; expected {base:?} to {most:?}"
        );
    }
}

/// A watch failing for a minute retries at most every 2.4 s (the cap plus jitter), never
/// slower: the apiserver answering again is noticed within one capped delay.
#[tokio::test(start_paused = true)]
async fn a_pod_watch_failing_for_a_minute_keeps_retrying_every_two_seconds() {
    let errors = futures::stream::repeat(Err::<(), _>("apiserver down"));
    let mut stream = std::pin::pin!(errors.backoff(WatchBackoff::default()));
    let start = Instant::now();
    let mut attempts = 0u32;
    let mut longest = Duration::ZERO;
    let mut last = start;
    while start.elapsed() < mins(1) {
        let _ = stream.next().await.expect("the back-off never gives up");
        longest = longest.max(last.elapsed());
        last = Instant::now();
        attempts += 1;
    }
    assert!(longest >= secs(2), "{longest:?}");
    assert!(longest <= ms(2401), "{longest:?}");
    // At 0, 0.25, 0.75 and 1.75 s, then one attempt per 2-2.4 s until the first at or past
    // a minute.
    assert!(
        (29..=34).contains(&attempts),
        "{attempts} attempts in a minute"
    );
}

/// The virtual now, as the std `Instant` the index's failure tracking takes.
fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

/// A watch erring without pause (every retry of the back-off fails) is reported broken at the
/// first error at least `podWatchBrokenAfter` (60 s) into the run — within one capped delay of
/// it —; a success ends the run and the next error starts a new one.
#[tokio::test(start_paused = true)]
async fn a_watch_failing_without_pause_is_broken_after_a_minute_and_a_success_starts_over() {
    let broken_after = secs(60);
    let errors = futures::stream::repeat(Err::<(), _>("apiserver down"));
    let mut stream = std::pin::pin!(errors.backoff(WatchBackoff::default()));
    let mut failures = WatchFailures::default();
    let start = Instant::now();
    let broken_at = loop {
        let _ = stream.next().await.expect("the back-off never gives up");
        let failing_for = failures.failed(now_std());
        assert_eq!(
            failing_for,
            start.elapsed(),
            "one run since the first error"
        );
        if failing_for >= broken_after {
            break start.elapsed();
        }
    };
    assert!(
        broken_at >= broken_after && broken_at <= broken_after + ms(2401),
        "{broken_at:?}"
    );
    failures.succeeded();
    assert!(!failures.failing());
    tokio::time::advance(secs(1)).await;
    assert_eq!(failures.failed(now_std()), Duration::ZERO, "a new run");
}

/// Errors less than 45 s apart belong to one run (a watch that keeps failing its re-watch after
/// quiet stretches is still broken); further apart, each starts a new run. A run with no error
/// for 45 s is over (the index then reports the watch restored).
#[tokio::test(start_paused = true)]
async fn errors_within_45_seconds_of_each_other_form_one_run() {
    assert_eq!(FAILURE_RUN_GAP, secs(45));
    let mut close = WatchFailures::default();
    let mut apart = WatchFailures::default();
    let (mut close_runs, mut apart_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        close_runs.push(close.failed(now_std()));
        tokio::time::advance(secs(40)).await;
    }
    for _ in 0..3 {
        apart_runs.push(apart.failed(now_std()));
        tokio::time::advance(secs(46)).await;
    }
    assert_eq!(close_runs, [secs(0), secs(40), secs(80)]);
    assert_eq!(apart_runs, [Duration::ZERO; 3]);
    let mut quiet = WatchFailures::default();
    quiet.failed(now_std());
    tokio::time::advance(secs(44)).await;
    assert!(!quiet.quiet_since_gap(now_std()));
    tokio::time::advance(secs(1)).await;
    assert!(quiet.quiet_since_gap(now_std()));
    assert!(!WatchFailures::default().quiet_since_gap(now_std()));
}

// ---------------------------------------------------------------------------------------------
// The revoker's retries

/// After the n-th failure in a row: 1 s doubling to a minute; parked for 10 minutes after the
/// tenth.
#[test]
fn revocation_retries_double_from_one_second_to_a_minute_then_park() {
    let steps: Vec<RetryStep> = (1..=11).map(revocation_retry).collect();
    let mut expected: Vec<RetryStep> = [1, 2, 4, 8, 16, 32, 60, 60, 60]
        .map(|s| RetryStep::RetryAfter(secs(s)))
        .to_vec();
    expected.extend([RetryStep::Park(mins(10)), RetryStep::Park(mins(10))]);
    assert_eq!(steps, expected);
}

/// An entry whose revocation always fails, retried on a timer as the revoker does (each retry
/// scheduled `revocation_retry` after the failure): ten attempts over 243 s, then parked; the
/// sweep may pick it up again 10 minutes after that.
#[tokio::test(start_paused = true)]
async fn a_persistently_failing_revocation_is_parked_after_ten_attempts_in_243_seconds() {
    let start = Instant::now();
    let mut attempts_at = vec![start.elapsed()];
    let parked_until = loop {
        // The attempt fails.
        match revocation_retry(attempts_at.len() as u32) {
            RetryStep::RetryAfter(delay) => {
                tokio::time::sleep(delay).await;
                attempts_at.push(start.elapsed());
            }
            RetryStep::Park(park_for) => break Instant::now() + park_for,
        }
    };
    assert_eq!(attempts_at.len() as u32, REVOKE_MAX_ATTEMPTS);
    assert_eq!(
        attempts_at,
        [0, 1, 3, 7, 15, 31, 63, 123, 183, 243].map(secs).to_vec()
    );
    assert_eq!(parked_until - start, secs(243 + 600));
}

// ---------------------------------------------------------------------------------------------
// TTL-aware renewal

/// Runs `cycles` renewal cycles `interval` apart (looking `horizon_cycles` ahead) over a token
/// granted `ttl` at the start; `grant` gives the (expiry, ttl granted) of a renewal at a wall
/// time. Returns when, after the start, each renewal happened.
async fn renewals(
    interval: Duration,
    horizon_cycles: u32,
    cycles: usize,
    first: (Duration, Duration),
    grant: impl Fn(Duration) -> (Duration, Duration),
) -> Vec<Duration> {
    let start = Instant::now();
    let horizon = renewal_horizon(interval, horizon_cycles);
    let at = |(expires_after_start, granted): (Duration, Duration)| {
        (wall(start) - start.elapsed() + expires_after_start, granted)
    };
    let mut last = Some(at(first));
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await; // the immediate first tick: the grant itself
    let mut renewed = Vec::new();
    for _ in 0..cycles {
        ticker.tick().await;
        if renewal_due(last, horizon, wall(start)) {
            renewed.push(start.elapsed());
            last = Some(at(grant(start.elapsed())));
        }
    }
    renewed
}

/// A token granted 1 h, cycles every 5 minutes looking 2 cycles ahead: renewed at the first
/// cycle with less than half its TTL left (35 min: 25 min left), never before — 3 renewals in 2
/// hours instead of 24.
#[tokio::test(start_paused = true)]
async fn a_one_hour_token_is_renewed_every_35_minutes_with_five_minute_cycles() {
    let ttl = mins(60);
    let renewed = renewals(mins(5), 2, 24, (ttl, ttl), |now| (now + ttl, ttl)).await;
    assert_eq!(renewed, [mins(35), mins(70), mins(105)]);
}

/// A lease capped at its max TTL (60 min after issue, whatever the increment asked): renewed
/// past half its TTL, then at every cycle once its end is within the horizon (10 min).
#[tokio::test(start_paused = true)]
async fn a_capped_lease_is_renewed_every_cycle_once_its_end_is_within_the_horizon() {
    let end = mins(60);
    let renewed = renewals(mins(5), 2, 11, (end, end), |now| (end, end - now)).await;
    assert_eq!(renewed, [mins(35), mins(50), mins(55)]);
}

/// Renewal decisions at the edges: never renewed (unknown), expired, exactly half left.
#[test]
fn renewal_is_due_when_unknown_expired_or_past_half_the_ttl() {
    let now = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
    let horizon = renewal_horizon(mins(5), 2);
    assert_eq!(horizon, mins(10));
    assert_eq!(renewal_horizon(mins(5), 0), mins(5), "at least one cycle");
    assert!(renewal_due(None, horizon, now));
    assert!(renewal_due(Some((now - secs(1), mins(60))), horizon, now));
    assert!(!renewal_due(Some((now + mins(30), mins(60))), horizon, now));
    assert!(renewal_due(
        Some((now + mins(30) - secs(1), mins(60))),
        horizon,
        now
    ));
    assert!(renewal_due(Some((now + mins(10), mins(15))), horizon, now));
    assert!(!renewal_due(
        Some((now + mins(10) + secs(1), mins(15))),
        horizon,
        now
    ));
}

// ---------------------------------------------------------------------------------------------
// The sweep's unseen grace

/// Sweeps every `period` from the start; an entry written `written` after the start whose pod
/// never appears. Returns when (after the start) the sweep lets it go.
async fn swept_at(grace: Duration, max_interval: Duration, written: Duration) -> Duration {
    let start = Instant::now();
    let period = sweep_period(grace, max_interval);
    let mut ticker = tokio::time::interval(period);
    let mut first_unseen: Option<Instant> = None;
    loop {
        ticker.tick().await;
        if start.elapsed() < written {
            continue; // not listed yet
        }
        let first = *first_unseen.get_or_insert_with(Instant::now);
        if unseen_grace_over(first.elapsed(), grace, period) {
            return start.elapsed();
        }
        assert!(start.elapsed() < grace * 3, "never let go");
    }
}

/// Default grace (60 s): sweeps every 15 s; an entry whose pod never appeared goes at the fourth
/// sweep after the first that missed it — 60 to 75 s after it was written.
#[tokio::test(start_paused = true)]
async fn an_entry_without_pod_goes_between_one_and_one_and_a_quarter_graces_after_it_was_written() {
    let (grace, max) = (secs(60), mins(5));
    assert_eq!(sweep_period(grace, max), secs(15));
    for (written, expected) in [
        (ms(0), secs(60)),
        (ms(100), secs(75)),
        (secs(7), secs(75)),
        (ms(14_900), secs(75)),
        (secs(15), secs(75)),
    ] {
        let at = swept_at(grace, max, written).await;
        assert_eq!(at, expected, "written at {written:?}");
        let after = at - written;
        assert!(after >= grace && after <= grace + grace / 4, "{after:?}");
    }
}

/// A long grace (1 h) with the 5-minute sweep interval: the sweep runs every 5 minutes and the
/// entry goes one grace after the first sweep that missed it.
#[tokio::test(start_paused = true)]
async fn with_a_long_grace_the_sweep_interval_bounds_the_period() {
    assert_eq!(sweep_period(mins(60), mins(5)), mins(5));
    assert_eq!(swept_at(mins(60), mins(5), mins(2)).await, mins(65));
}

/// The tolerance: a sweep that runs up to a tenth of a period late (or early) still counts the
/// grace as over; one more second short is not.
#[test]
fn the_grace_tolerates_a_tenth_of_a_sweep_period() {
    let (grace, period) = (secs(60), secs(15));
    assert!(unseen_grace_over(secs(60), grace, period));
    assert!(unseen_grace_over(ms(58_500), grace, period));
    assert!(!unseen_grace_over(ms(58_499), grace, period));
    assert!(!unseen_grace_over(secs(45), grace, period));
}
