//! The admission webhook: reviews, their outcome and latency, denials by reason.

use super::families::{Families, LATENCY_BUCKETS};
use prometheus::{Counter, CounterVec, HistogramVec};
use std::time::Duration;

/// Buckets of the admission's own time (microseconds to a second).
const OWN_TIME_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone)]
pub struct AdmissionMetrics {
    mutated: Counter,
    failed: Counter,
    duration: HistogramVec,
    own_duration: HistogramVec,
    denied: CounterVec,
    coalesced: Counter,
}

impl AdmissionMetrics {
    pub(super) fn register(f: &mut Families) -> AdmissionMetrics {
        AdmissionMetrics {
            mutated: f.counter(
                "vdbi_mutated_pods_success_count",
                "Admissions that mutated a pod",
            ),
            failed: f.counter("vdbi_mutated_pods_error_count", "Admissions that failed"),
            duration: f.histogram_vec(
                "vdbi_admission_duration_seconds",
                "Admission review latency",
                &["mode", "result"],
                LATENCY_BUCKETS,
            ),
            own_duration: f.histogram_vec(
                "vdbi_admission_own_duration_seconds",
                "Admission latency minus the time spent waiting on Vault and Kubernetes",
                &["mode", "result"],
                OWN_TIME_BUCKETS,
            ),
            denied: f.counter_vec(
                "vdbi_admission_denied_total",
                "Admissions denied, by reason",
                &["reason"],
            ),
            coalesced: f.counter(
                "vdbi_admission_coalesced_total",
                "Admission reviews that joined the issuance in flight for the same pod",
            ),
        }
    }

    /// One review answered: its total latency and, when it waited on Vault or Kubernetes, its
    /// own time (the total minus those waits). `mode` is the auth mode (`legacy`,
    /// `projected`), `result` what the review answered (`allowed`, `denied`, `skipped`, ...).
    pub fn reviewed(&self, mode: &str, result: &str, total: Duration, own: Option<Duration>) {
        self.duration
            .with_label_values(&[mode, result])
            .observe(total.as_secs_f64());
        if let Some(own) = own {
            self.own_duration
                .with_label_values(&[mode, result])
                .observe(own.as_secs_f64());
        }
    }

    /// A pod mutated (credentials issued and patched in).
    pub fn mutated(&self) {
        self.mutated.inc();
    }

    /// A review refused: counted as a failed admission and as a denial for `reason`.
    pub fn refused(&self, reason: &str) {
        self.failed.inc();
        self.denied.with_label_values(&[reason]).inc();
    }

    /// A caller refused at the TLS handshake (no review was read, so no failed admission).
    pub fn handshake_refused(&self) {
        self.denied.with_label_values(&["client_certificate"]).inc();
    }

    /// A review that joined the issuance in flight for the same pod.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }
}
