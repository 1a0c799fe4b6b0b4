//! The renewer: its cycles, the token and lease renewals of each entry, the pod listings.

use super::families::{Families, OptionalGauge};
use super::{Entry, EntryLabels, ENTRY_LABELS};
use crate::telemetry::summary::PlainSummary;
use prometheus::{Counter, CounterVec, Gauge, GaugeVec};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct RenewalMetrics {
    labels: EntryLabels,
    token_renewed: CounterVec,
    token_failed: CounterVec,
    lease_renewed: CounterVec,
    lease_failed: CounterVec,
    token_expiration: GaugeVec,
    lease_expiration: GaugeVec,
    cycle_succeeded: Counter,
    cycle_failed: Counter,
    last_success: OptionalGauge,
    interval: Gauge,
    cycle_duration: PlainSummary,
    skipped: Counter,
    pods_listed: Counter,
    pods_list_failed: Counter,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl RenewalMetrics {
    pub(super) fn register(f: &mut Families, labels: EntryLabels) -> RenewalMetrics {
        RenewalMetrics {
            labels,
            token_renewed: f.counter_vec(
                "vdbi_renew_token_count_success",
                "Successful token renewals",
                ENTRY_LABELS,
            ),
            token_failed: f.counter_vec(
                "vdbi_renew_token_count_error",
                "Failed token renewals",
                ENTRY_LABELS,
            ),
            lease_renewed: f.counter_vec(
                "vdbi_renew_lease_count_success",
                "Successful lease renewals",
                ENTRY_LABELS,
            ),
            lease_failed: f.counter_vec(
                "vdbi_renew_lease_count_error",
                "Failed lease renewals (including unrecoverable)",
                ENTRY_LABELS,
            ),
            token_expiration: f.gauge_vec(
                "vdbi_token_expiration",
                "Unix time at which the token expires, after its last renewal",
                ENTRY_LABELS,
            ),
            lease_expiration: f.gauge_vec(
                "vdbi_lease_expiration",
                "Unix time at which the lease expires, after its last renewal",
                ENTRY_LABELS,
            ),
            cycle_succeeded: f.counter(
                "vdbi_synchronization_count_success",
                "Renewer cycles that succeeded",
            ),
            cycle_failed: f.counter(
                "vdbi_synchronization_count_error",
                "Renewer cycles that failed or were partial",
            ),
            last_success: OptionalGauge(f.gauge_vec(
                "vdbi_last_synchronization_success",
                "Unix time of the last successful renewer cycle of this replica while it leads (absent on standbys and other components)",
                &[],
            )),
            interval: f.gauge(
                "vdbi_renewer_sync_interval_seconds",
                "The renewer's cycle interval (syncTTLSecond); 0 in processes that run no renewer",
            ),
            cycle_duration: f.summary(
                "vdbi_last_synchronization_duration",
                "Duration of renewer synchronization cycles, in seconds",
            ),
            skipped: f.counter(
                "vdbi_renew_skipped_total",
                "Renewals skipped because the TTL left covers the next cycles",
            ),
            pods_listed: f.counter(
                "vdbi_fetch_pods_success_count",
                "Pod listings that succeeded",
            ),
            pods_list_failed: f.counter(
                "vdbi_fetch_pods_error_count",
                "Pod listings that failed (zero pods counts as failure)",
            ),
        }
    }

    /// The cycle interval this process renews at (`syncTTLSecond`).
    pub fn interval(&self, every: Duration) {
        self.interval.set(every.as_secs_f64());
    }

    /// A cycle ended after `took`: succeeded (no entry failed) or not.
    pub fn cycle(&self, took: Duration, succeeded: bool) {
        self.cycle_duration.observe(took.as_secs_f64());
        if succeeded {
            self.cycle_succeeded.inc();
        } else {
            self.cycle_failed.inc();
        }
    }

    /// The leading renewer finished a successful cycle at `at`.
    pub fn leader_succeeded_at(&self, at: SystemTime) {
        self.last_success.set(unix(at));
    }

    /// This replica stopped leading: it has no last successful cycle to export.
    pub fn not_leading(&self) {
        self.last_success.clear();
    }

    /// Renewals skipped in a cycle because the TTL left covers the next cycles.
    pub fn skipped(&self, n: u64) {
        self.skipped.inc_by(n as f64);
    }

    /// A pod listing succeeded or failed.
    pub fn pods_listed(&self, ok: bool) {
        if ok {
            self.pods_listed.inc()
        } else {
            self.pods_list_failed.inc()
        }
    }

    /// The entry's token renewed; it now expires at `expires`.
    pub fn token_renewed(&self, e: Entry<'_>, expires: SystemTime) {
        let l = self.labels.of(e);
        self.token_expiration
            .with_label_values(&l)
            .set(unix(expires));
        self.token_renewed.with_label_values(&l).inc();
    }

    /// The entry's token was gone: counted as renewed, as vault-db-injector does (the revoker
    /// cleans up).
    pub fn token_vanished(&self, e: Entry<'_>) {
        self.token_renewed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    pub fn token_failed(&self, e: Entry<'_>) {
        self.token_failed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    /// The entry's lease renewed; it now expires at `expires`.
    pub fn lease_renewed(&self, e: Entry<'_>, expires: SystemTime) {
        let l = self.labels.of(e);
        self.lease_expiration
            .with_label_values(&l)
            .set(unix(expires));
        self.lease_renewed.with_label_values(&l).inc();
    }

    /// The entry's lease was gone: counted as renewed, as vault-db-injector does.
    pub fn lease_vanished(&self, e: Entry<'_>) {
        self.lease_renewed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    /// A lease renewal failed (including an unrecoverable lease).
    pub fn lease_failed(&self, e: Entry<'_>) {
        self.lease_failed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    pub(super) fn forget(&self, labels: &[&str; 2]) {
        for v in [
            &self.token_renewed,
            &self.token_failed,
            &self.lease_renewed,
            &self.lease_failed,
        ] {
            let _ = v.remove_label_values(labels);
        }
        let _ = self.token_expiration.remove_label_values(labels);
        let _ = self.lease_expiration.remove_label_values(labels);
    }
}
