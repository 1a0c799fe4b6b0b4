//! Reconnect schedule for a plugin.
//!
//! After the connection to the runtime ends, [`crate::Stub::run`] waits the schedule's first
//! delay, then the second, and so on before successive attempts; once every wait is used up
//! without a successful registration, it gives up (for a DaemonSet plugin the pod then restarts).
//! The attempt counter goes back to zero after every successful registration, so only
//! consecutive failures count. The schedule itself is the plugin's policy: the crate has no
//! default.

use std::time::Duration;

/// Position in a reconnect schedule. Pure state: the caller does the sleeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectBackoff {
    schedule: Vec<Duration>,
    attempts: usize,
}

impl ReconnectBackoff {
    /// A backoff over the given waits, used in order; an empty schedule gives up at once.
    pub fn new(schedule: Vec<Duration>) -> Self {
        Self {
            schedule,
            attempts: 0,
        }
    }

    /// The wait before the next attempt, or `None` when the schedule is exhausted.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.schedule.get(self.attempts).copied()?;
        self.attempts += 1;
        Some(delay)
    }

    /// Call after each successful registration: the next failure starts the schedule again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Waits handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.attempts).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &[u64]) -> Vec<Option<Duration>> {
        s.iter().map(|&s| Some(Duration::from_secs(s))).collect()
    }

    fn one_two_five_ten_thirty() -> ReconnectBackoff {
        ReconnectBackoff::new([1, 2, 5, 10, 30].map(Duration::from_secs).to_vec())
    }

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let mut b = one_two_five_ten_thirty();
        let got: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(got, secs(&[1, 2, 5, 10, 30]));
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.attempts(), 5);
    }

    #[test]
    fn reset_after_success_restarts_the_schedule() {
        let mut b = one_two_five_ten_thirty();
        // Six disconnects over the process lifetime, each followed by a successful
        // registration, must never exhaust the schedule (a bug of the Go vault-db-injector).
        for _ in 0..6 {
            assert_eq!(b.next_delay(), Some(Duration::from_secs(1)));
            b.reset();
        }
        assert_eq!(b.attempts(), 0);
        let got: Vec<_> = (0..2).map(|_| b.next_delay()).collect();
        assert_eq!(got, secs(&[1, 2]));
    }

    #[test]
    fn empty_schedule_gives_up_at_once() {
        assert_eq!(ReconnectBackoff::new(Vec::new()).next_delay(), None);
    }
}
