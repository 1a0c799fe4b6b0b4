//! The revoker: revocations, pod clean-ups, live pod checks, the sweep's findings.

use super::families::{Families, LATENCY_BUCKETS};
use super::{Entry, EntryLabels, ENTRY_LABELS};
use prometheus::{Counter, CounterVec, HistogramVec};
use std::time::Duration;

#[derive(Clone)]
pub struct RevocationMetrics {
    labels: EntryLabels,
    token_revoked: CounterVec,
    token_failed: CounterVec,
    cleanup_succeeded: Counter,
    cleanup_failed: Counter,
    pod_check_errors: CounterVec,
    hollow_deleted: Counter,
    orphan_found: Counter,
    orphan_revoked: Counter,
    reservation_revoked: Counter,
    reservation_refused: Counter,
    attempts_settled: CounterVec,
    latency: HistogramVec,
}

impl RevocationMetrics {
    pub(super) fn register(f: &mut Families, labels: EntryLabels) -> RevocationMetrics {
        RevocationMetrics {
            labels,
            token_revoked: f.counter_vec(
                "vdbi_revoke_token_count_success",
                "Successful token revocations",
                &["namespace"],
            ),
            token_failed: f.counter_vec(
                "vdbi_revoke_token_count_error",
                "Failed token revocations",
                ENTRY_LABELS,
            ),
            cleanup_succeeded: f.counter(
                "vdbi_pod_cleanup_count_success",
                "Deleted pods whose credentials were all revoked",
            ),
            cleanup_failed: f.counter("vdbi_pod_cleanup_count_error", "Per-uuid cleanup failures"),
            pod_check_errors: f.counter_vec(
                "vdbi_pod_check_errors_total",
                "Live pod checks of the revoker that could not tell whether a pod exists",
                &["reason"],
            ),
            hollow_deleted: f.counter(
                "vdbi_hollow_entries_deleted_total",
                "Bookkeeping entries left without data (metadata only) that the sweep deleted",
            ),
            orphan_found: f.counter(
                "vdbi_orphan_leases_found_total",
                "Database leases with no bookkeeping entry",
            ),
            orphan_revoked: f.counter(
                "vdbi_orphan_leases_revoked_total",
                "Orphan database leases revoked",
            ),
            reservation_revoked: f.counter(
                "vdbi_reservation_tokens_revoked_total",
                "Pod tokens of stale reservations (issuances that never wrote their entry) revoked by accessor",
            ),
            reservation_refused: f.counter(
                "vdbi_reservation_accessors_refused_total",
                "Stale reservations whose accessor was not revoked: malformed, or naming a token of another role or service account",
            ),
            attempts_settled: f.counter_vec(
                "vdbi_nri_attempts_settled_total",
                "NRI fetch attempt records (projected mode) the sweep settled, by outcome: completed (the entry holds its token), revoked (its token revoked or already gone), hollow (nothing to revoke), failed (retried next sweep)",
                &["outcome"],
            ),
            latency: f.histogram_vec(
                "vdbi_revocation_latency_seconds",
                "Time from pod deletion (or end) to revocation",
                &["path"],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// An entry's token revoked (per namespace, as vault-db-injector labels it).
    pub fn token_revoked(&self, namespace: &str) {
        self.token_revoked.with_label_values(&[namespace]).inc();
    }

    pub fn token_failed(&self, e: Entry<'_>) {
        self.token_failed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    /// An entry revoked `after` its pod was deleted or ended; `path` is how the revoker learnt
    /// (`watch`, `sweep`, `finished`).
    pub fn revoked_after(&self, path: &str, after: Duration) {
        self.latency
            .with_label_values(&[path])
            .observe(after.as_secs_f64());
    }

    /// A deleted pod whose credentials were all revoked.
    pub fn pod_cleaned_up(&self) {
        self.cleanup_succeeded.inc();
    }

    /// One entry's revocation failed (retried).
    pub fn cleanup_failed(&self) {
        self.cleanup_failed.inc();
    }

    /// A live pod check could not tell whether the pod exists.
    pub fn pod_check_failed(&self, reason: &str) {
        self.pod_check_errors.with_label_values(&[reason]).inc();
    }

    /// The sweep deleted an entry left with metadata only.
    pub fn hollow_entry_deleted(&self) {
        self.hollow_deleted.inc();
    }

    /// The sweep settled an NRI fetch attempt record (`outcome`: `completed`, `revoked`,
    /// `hollow`) or failed to (`failed`).
    pub fn attempt_settled(&self, outcome: &str) {
        self.attempts_settled.with_label_values(&[outcome]).inc();
    }

    /// A database lease with no bookkeeping entry found.
    pub fn orphan_lease_found(&self) {
        self.orphan_found.inc();
    }

    pub fn orphan_lease_revoked(&self) {
        self.orphan_revoked.inc();
    }

    /// The sweep revoked the pod token a stale reservation recorded.
    pub fn reservation_token_revoked(&self) {
        self.reservation_revoked.inc();
    }

    /// The sweep refused to revoke the accessor of a stale reservation (not vdbi's record).
    pub fn reservation_accessor_refused(&self) {
        self.reservation_refused.inc();
    }

    pub(super) fn forget(&self, labels: &[&str; 2]) {
        let _ = self.token_failed.remove_label_values(labels);
    }
}
