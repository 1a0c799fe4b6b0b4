//! How much of one piece of work was spent waiting on others (Vault, Kubernetes).
//!
//! An [`ExternalClock`] accumulates the wall time during which at least one external call
//! wrapped by [`ExternalClock::external`] is outstanding: an in-flight counter and the busy time.
//! Concurrent calls (several dbConfigs issued at once) count as the union of their intervals, not
//! their sum, so `total − busy` is the time the work spent on its own. The time is taken at the
//! caller's await point: a call that waits in an actor's mailbox counts as external.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Busy time of the external calls of one piece of work (e.g. one admission).
#[derive(Debug, Default)]
pub struct ExternalClock {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// Busy time of the intervals already closed.
    busy: Duration,
    /// Start of the current busy interval (while `in_flight > 0`).
    since: Option<Instant>,
    calls: u64,
}

impl ExternalClock {
    pub fn new() -> ExternalClock {
        ExternalClock::default()
    }

    /// Awaits `fut` as an external call: the clock is busy from the first poll until it ends
    /// (or is dropped).
    pub async fn external<F: Future>(&self, fut: F) -> F::Output {
        let _call = self.enter();
        fut.await
    }

    /// The busy time so far (an interval still open counts up to now).
    pub fn busy(&self) -> Duration {
        let s = self.lock();
        s.busy + s.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// `total` minus the busy time: the work's own share of `total`.
    pub fn own(&self, total: Duration) -> Duration {
        total.saturating_sub(self.busy())
    }

    /// How many external calls were started.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    fn enter(&self) -> InFlight<'_> {
        let mut s = self.lock();
        s.calls += 1;
        s.in_flight += 1;
        if s.in_flight == 1 {
            s.since = Some(Instant::now());
        }
        InFlight { clock: self }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One outstanding call; its drop closes the busy interval when it was the last one.
struct InFlight<'a> {
    clock: &'a ExternalClock,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.clock.lock();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            if let Some(t) = s.since.take() {
                s.busy += t.elapsed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::sleep;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn overlapping_calls_count_as_the_union_of_their_intervals() {
        let clock = ExternalClock::new();
        let started = Instant::now();
        // [0, 30) and [10, 50): busy 50 ms, not 70.
        let a = clock.external(sleep(30 * MS));
        let b = async {
            sleep(10 * MS).await;
            clock.external(sleep(40 * MS)).await
        };
        tokio::join!(a, b);
        sleep(20 * MS).await; // own work
        assert_eq!(clock.busy(), 50 * MS);
        assert_eq!(clock.calls(), 2);
        assert_eq!(clock.own(started.elapsed()), 20 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn disjoint_calls_add_up_and_the_gaps_are_own_time() {
        let clock = ExternalClock::new();
        let started = Instant::now();
        sleep(5 * MS).await;
        clock.external(sleep(20 * MS)).await;
        sleep(7 * MS).await;
        let v = clock.external(async {
            sleep(30 * MS).await;
            42
        });
        assert_eq!(v.await, 42);
        sleep(3 * MS).await;
        assert_eq!(clock.busy(), 50 * MS);
        assert_eq!(clock.own(started.elapsed()), 15 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_call_counts_up_to_now_and_a_dropped_one_closes() {
        let clock = ExternalClock::new();
        let mut never = Box::pin(clock.external(std::future::pending::<()>()));
        assert!(tokio::time::timeout(40 * MS, &mut never).await.is_err());
        assert_eq!(clock.busy(), 40 * MS, "still in flight: counted up to now");
        sleep(10 * MS).await;
        assert_eq!(clock.busy(), 50 * MS);
        drop(never);
        sleep(10 * MS).await;
        assert_eq!(clock.busy(), 50 * MS, "a cancelled call ends its interval");
        assert_eq!(clock.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_call_no_busy_time() {
        let clock = ExternalClock::new();
        sleep(10 * MS).await;
        assert_eq!(clock.busy(), Duration::ZERO);
        assert_eq!(clock.calls(), 0);
        assert_eq!(clock.own(10 * MS), 10 * MS);
    }
}
