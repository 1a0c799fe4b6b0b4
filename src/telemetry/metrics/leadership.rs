//! Leader election: per lease, whether this replica leads and how its campaigns went.

use super::families::Families;
use prometheus::{CounterVec, GaugeVec};
use std::time::Duration;

#[derive(Clone)]
pub struct LeadershipMetrics {
    is_leader: GaugeVec,
    attempts: CounterVec,
    duration: GaugeVec,
}

impl LeadershipMetrics {
    pub(super) fn register(f: &mut Families) -> LeadershipMetrics {
        LeadershipMetrics {
            is_leader: f.gauge_vec(
                "vdbi_is_leader",
                "1 while this replica holds the lease",
                &["lease_name"],
            ),
            attempts: f.counter_vec(
                "vdbi_leader_election_attempts_total",
                "Leader election campaigns started",
                &["lease_name"],
            ),
            duration: f.gauge_vec(
                "vdbi_leader_election_duration_seconds",
                "Seconds the last campaign took to acquire the lease",
                &["lease_name", "leader_name", "mode"],
            ),
        }
    }

    /// A campaign for `lease` started.
    pub fn campaign_started(&self, lease: &str) {
        self.attempts.with_label_values(&[lease]).inc();
    }

    /// Whether this replica holds `lease` now.
    pub fn leading(&self, lease: &str, leading: bool) {
        self.is_leader
            .with_label_values(&[lease])
            .set(if leading { 1.0 } else { 0.0 });
    }

    /// `identity` acquired `lease` after a campaign of `took`.
    pub fn elected(&self, lease: &str, identity: &str, took: Duration) {
        self.duration
            .with_label_values(&[lease, identity, "lease"])
            .set(took.as_secs_f64());
    }
}
