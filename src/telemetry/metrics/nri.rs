//! The NRI plugin: substitutions and refusals, the credential cache, prewarming, the
//! connection to the runtime.

use super::families::{Families, LATENCY_BUCKETS};
use prometheus::{Counter, CounterVec, HistogramVec, IntGauge};
use std::time::Duration;

/// Why a prewarm did not happen or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrewarmFailure {
    TerminatingPod,
    SemaphoreFull,
    VaultFetch,
}

impl PrewarmFailure {
    fn as_str(self) -> &'static str {
        match self {
            PrewarmFailure::TerminatingPod => "terminating_pod",
            PrewarmFailure::SemaphoreFull => "semaphore_full",
            PrewarmFailure::VaultFetch => "vault_fetch",
        }
    }
}

/// A step of reconnecting to the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnect {
    Attempted,
    Succeeded,
    Exhausted,
}

impl Reconnect {
    fn as_str(self) -> &'static str {
        match self {
            Reconnect::Attempted => "attempted",
            Reconnect::Succeeded => "succeeded",
            Reconnect::Exhausted => "exhausted",
        }
    }
}

/// What went wrong with the credential cache file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFileError {
    Read,
    Write,
    Corrupt,
}

impl CacheFileError {
    fn as_str(self) -> &'static str {
        match self {
            CacheFileError::Read => "read",
            CacheFileError::Write => "write",
            CacheFileError::Corrupt => "corrupt",
        }
    }
}

#[derive(Clone)]
pub struct NriMetrics {
    substitutions: Counter,
    refusals: CounterVec,
    resolve_shared: Counter,
    prewarmed: Counter,
    prewarm_failed: CounterVec,
    prewarm_inflight: IntGauge,
    cache_hits: CounterVec,
    reconnects: CounterVec,
    create_container: HistogramVec,
    cache_file_errors: CounterVec,
}

impl NriMetrics {
    pub(super) fn register(f: &mut Families) -> NriMetrics {
        NriMetrics {
            substitutions: f.counter(
                "vdbi_nri_substitutions_total",
                "CreateContainer calls that emitted an adjustment",
            ),
            refusals: f.counter_vec(
                "vdbi_nri_unwrap_failures_total",
                "CreateContainer calls refused",
                &["reason"],
            ),
            resolve_shared: f.counter(
                "vdbi_nri_resolve_duplicate_total",
                "Credential resolutions shared by concurrent requests",
            ),
            prewarmed: f.counter(
                "vdbi_nri_prewarm_success_total",
                "Pods whose credentials were prewarmed",
            ),
            prewarm_failed: f.counter_vec(
                "vdbi_nri_prewarm_error_total",
                "Prewarm failures",
                &["reason"],
            ),
            prewarm_inflight: f.int_gauge("vdbi_nri_prewarm_inflight", "Prewarm fetches in flight"),
            cache_hits: f.counter_vec(
                "vdbi_nri_cache_hit_total",
                "CreateContainer calls served from the cache",
                &["source"],
            ),
            reconnects: f.counter_vec(
                "vdbi_nri_reconnect_total",
                "NRI reconnection outcomes",
                &["result"],
            ),
            create_container: f.histogram_vec(
                "vdbi_nri_create_container_duration_seconds",
                "NRI CreateContainer latency",
                &["result"],
                LATENCY_BUCKETS,
            ),
            cache_file_errors: f.counter_vec(
                "vdbi_nri_cache_file_errors_total",
                "NRI cache file load/save errors",
                &["reason"],
            ),
        }
    }

    /// A CreateContainer call answered after `took`; `result` is `hit`, `miss`, `error`, ...
    pub fn create_container(&self, result: &str, took: Duration) {
        self.create_container
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
    }

    /// A CreateContainer call emitted an adjustment; `cache_source` is set when the
    /// credentials came from the cache (the source that filled it).
    pub fn substituted(&self, cache_source: Option<&str>) {
        if let Some(source) = cache_source {
            self.cache_hits.with_label_values(&[source]).inc();
        }
        self.substitutions.inc();
    }

    /// A CreateContainer call refused.
    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// A resolution shared with a concurrent request for the same pod.
    pub fn resolve_shared(&self) {
        self.resolve_shared.inc();
    }

    /// A prewarm fetch started (in flight until [`NriMetrics::prewarm_finished`]).
    pub fn prewarm_started(&self) {
        self.prewarm_inflight.inc();
    }

    /// A prewarm fetch ended; `fetched` when it put new credentials in the cache.
    pub fn prewarm_finished(&self, fetched: bool) {
        if fetched {
            self.prewarmed.inc();
        }
        self.prewarm_inflight.dec();
    }

    pub fn prewarm_failed(&self, why: PrewarmFailure) {
        self.prewarm_failed.with_label_values(&[why.as_str()]).inc();
    }

    pub fn reconnect(&self, step: Reconnect) {
        self.reconnects.with_label_values(&[step.as_str()]).inc();
    }

    pub fn cache_file_error(&self, what: CacheFileError) {
        self.cache_file_errors
            .with_label_values(&[what.as_str()])
            .inc();
    }
}
