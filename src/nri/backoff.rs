//! Reconnect schedule for the NRI plugin.
//!
//! After the connection to the runtime ends the plugin waits 1 s, 2 s, 5 s, 10 s, then 30 s before
//! successive attempts; once those five waits are used up without a successful registration, the
//! caller gives up (the DaemonSet restarts the pod). Unlike the Go version, the attempt counter
//! goes back to zero after every successful registration, so only consecutive failures count.

use std::time::Duration;

/// The default waits between reconnect attempts.
pub const DEFAULT_RECONNECT_SCHEDULE: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Position in a reconnect schedule. Pure state: the caller does the sleeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectBackoff {
    schedule: Vec<Duration>,
    attempts: usize,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self::new(DEFAULT_RECONNECT_SCHEDULE.to_vec())
    }
}

impl ReconnectBackoff {
    /// A backoff over the given waits (tests use short ones).
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

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let mut b = ReconnectBackoff::default();
        let got: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(got, secs(&[1, 2, 5, 10, 30]));
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.attempts(), 5);
    }

    #[test]
    fn reset_after_success_restarts_the_schedule() {
        let mut b = ReconnectBackoff::default();
        // Six disconnects over the process lifetime, each followed by a successful
        // registration, must never exhaust the schedule (the Go version's bug).
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
