//! The Prometheus registry: every `vdbi_*` family of vault-db-injector 3.2.x with the same names,
//! types and labels (dashboards and alerts keep working), with its bugs fixed:
//! `vdbi_synchronization_count_success` counts successful cycles only, a KV write failure is a
//! `vdbi_store_data_count_error` (not a delete error), `vdbi_leader_election_duration_seconds` is
//! set, and the per-uuid series can be switched off (`perUuidMetrics: false` leaves `uuid` empty).
//! vdbi's own additions follow the same `vdbi_` prefix.

use super::cardinality::{BoundedCounterVec, DEFAULT_MAX_SERIES};
use super::summary::PlainSummary;
use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntGauge, Opts, Registry,
};

/// A gauge whose single series exists only while it has a meaningful value: set, it is
/// exported; cleared, the family is empty. `vdbi_last_synchronization_success` is one: only the
/// renewer that leads and has finished a cycle has a "last successful cycle", so standbys and
/// the other components export nothing an alert could mistake for a stale renewer.
#[derive(Clone)]
pub struct OptionalGauge(GaugeVec);

impl OptionalGauge {
    pub fn set(&self, v: f64) {
        self.0.with_label_values(&[] as &[&str]).set(v);
    }
    pub fn clear(&self) {
        self.0.reset();
    }
    /// The current value, `None` while cleared.
    pub fn get(&self) -> Option<f64> {
        use prometheus::core::Collector;
        let families = self.0.collect();
        let metric = families.first()?.get_metric().first()?;
        Some(metric.get_gauge().value())
    }
}

/// All metrics of one process. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    per_uuid: bool,

    pub renew_token_success: CounterVec,
    pub renew_token_error: CounterVec,
    pub renew_lease_success: CounterVec,
    pub renew_lease_error: CounterVec,
    pub revoke_token_success: CounterVec,
    pub revoke_token_error: CounterVec,
    pub token_expiration: GaugeVec,
    pub lease_expiration: GaugeVec,
    pub sync_success: Counter,
    pub sync_error: Counter,
    pub pod_cleanup_success: Counter,
    pub pod_cleanup_error: Counter,
    pub last_sync_success: OptionalGauge,
    pub renewer_interval: Gauge,
    pub last_sync_duration: PlainSummary,
    pub orphan_ticket_success: Counter,
    pub orphan_ticket_error: Counter,
    pub store_data_success: Counter,
    pub store_data_error: CounterVec,
    pub delete_data_success: CounterVec,
    pub delete_data_error: CounterVec,
    pub connect_vault_success: Counter,
    pub connect_vault_error: Counter,
    pub sa_authorized: Counter,
    /// Labels from request content: bounded (`telemetry::cardinality`).
    pub sa_denied: BoundedCounterVec,
    pub is_leader: GaugeVec,
    pub leader_election_attempts: CounterVec,
    pub leader_election_duration: GaugeVec,
    pub fetch_pods_success: Counter,
    pub fetch_pods_error: Counter,
    pub mutated_pods_success: Counter,
    pub mutated_pods_error: Counter,
    pub nri_substitutions: Counter,
    pub nri_unwrap_failures: CounterVec,
    pub token_request_errors: CounterVec,
    pub pod_check_errors: CounterVec,
    pub vault_login_errors: CounterVec,
    /// Label from request content: bounded (`telemetry::cardinality`).
    pub projected_role_misconfigured: BoundedCounterVec,
    pub nri_resolve_duplicate: Counter,
    pub nri_prewarm_success: Counter,
    pub nri_prewarm_error: CounterVec,
    pub nri_prewarm_inflight: IntGauge,
    pub nri_cache_hit: CounterVec,
    pub nri_reconnect: CounterVec,

    // ---- vdbi additions ----
    pub admission_duration: HistogramVec,
    pub admission_own_duration: HistogramVec,
    pub admission_denied: CounterVec,
    pub vault_request_duration: HistogramVec,
    pub actor_restarts: CounterVec,
    pub cert_reloads: CounterVec,
    pub cache_file_errors: CounterVec,
    pub renew_skipped: Counter,
    /// Admission reviews that joined the issuance in flight for the same pod.
    pub admission_coalesced: Counter,
    /// Bookkeeping entries without data (metadata only) whose metadata the sweep deleted.
    pub hollow_entries_deleted: Counter,
    pub orphan_leases_found: Counter,
    pub orphan_leases_revoked: Counter,
    pub revocation_latency: HistogramVec,
    pub nri_create_container_duration: HistogramVec,
    pub vault_session_ready: IntGauge,
    pub sentry_events: CounterVec,
}

const UUID_NS: &[&str] = &["uuid", "namespace"];

fn counter(r: &Registry, name: &str, help: &str) -> Counter {
    let c = Counter::with_opts(Opts::new(name, help)).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("valid counter vec");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::with_opts(Opts::new(name, help)).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge vec");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid histogram");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// A fresh registry with every family registered. `per_uuid` keeps the `uuid` label values.
    pub fn new(per_uuid: bool) -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(pc)).expect("process collector");
        }
        let lat = || LATENCY_BUCKETS.to_vec();
        let last_sync_duration = PlainSummary::new(
            "vdbi_last_synchronization_duration",
            "Duration of renewer synchronization cycles, in seconds",
        );
        r.register(Box::new(last_sync_duration.clone()))
            .expect("unique metric");
        Metrics {
            per_uuid,
            renew_token_success: counter_vec(
                &r,
                "vdbi_renew_token_count_success",
                "Successful token renewals",
                UUID_NS,
            ),
            renew_token_error: counter_vec(
                &r,
                "vdbi_renew_token_count_error",
                "Failed token renewals",
                UUID_NS,
            ),
            renew_lease_success: counter_vec(
                &r,
                "vdbi_renew_lease_count_success",
                "Successful lease renewals",
                UUID_NS,
            ),
            renew_lease_error: counter_vec(
                &r,
                "vdbi_renew_lease_count_error",
                "Failed lease renewals (including unrecoverable)",
                UUID_NS,
            ),
            revoke_token_success: counter_vec(
                &r,
                "vdbi_revoke_token_count_success",
                "Successful token revocations",
                &["namespace"],
            ),
            revoke_token_error: counter_vec(
                &r,
                "vdbi_revoke_token_count_error",
                "Failed token revocations",
                UUID_NS,
            ),
            token_expiration: gauge_vec(
                &r,
                "vdbi_token_expiration",
                "Unix time at which the token expires, after its last renewal",
                UUID_NS,
            ),
            lease_expiration: gauge_vec(
                &r,
                "vdbi_lease_expiration",
                "Unix time at which the lease expires, after its last renewal",
                UUID_NS,
            ),
            sync_success: counter(
                &r,
                "vdbi_synchronization_count_success",
                "Renewer cycles that succeeded",
            ),
            sync_error: counter(
                &r,
                "vdbi_synchronization_count_error",
                "Renewer cycles that failed or were partial",
            ),
            pod_cleanup_success: counter(
                &r,
                "vdbi_pod_cleanup_count_success",
                "Deleted pods whose credentials were all revoked",
            ),
            pod_cleanup_error: counter(
                &r,
                "vdbi_pod_cleanup_count_error",
                "Per-uuid cleanup failures",
            ),
            last_sync_success: OptionalGauge(gauge_vec(
                &r,
                "vdbi_last_synchronization_success",
                "Unix time of the last successful renewer cycle of this replica while it leads (absent on standbys and other components)",
                &[],
            )),
            renewer_interval: gauge(
                &r,
                "vdbi_renewer_sync_interval_seconds",
                "The renewer's cycle interval (syncTTLSecond); 0 in processes that run no renewer",
            ),
            last_sync_duration,
            orphan_ticket_success: counter(
                &r,
                "vdbi_orphan_ticket_created_count_success",
                "Orphan tokens created",
            ),
            orphan_ticket_error: counter(
                &r,
                "vdbi_orphan_ticket_created_count_error",
                "Orphan token creation failures",
            ),
            store_data_success: counter(
                &r,
                "vdbi_store_data_count_success",
                "Bookkeeping entries written",
            ),
            store_data_error: counter_vec(
                &r,
                "vdbi_store_data_count_error",
                "Bookkeeping entry write failures",
                UUID_NS,
            ),
            delete_data_success: counter_vec(
                &r,
                "vdbi_delete_data_count_success",
                "Bookkeeping entries deleted",
                UUID_NS,
            ),
            delete_data_error: counter_vec(
                &r,
                "vdbi_delete_data_count_error",
                "Bookkeeping entry delete failures",
                UUID_NS,
            ),
            connect_vault_success: counter(
                &r,
                "vdbi_connect_vault_count_success",
                "Successful logins of vdbi's own Vault session",
            ),
            connect_vault_error: counter(
                &r,
                "vdbi_connect_vault_count_error",
                "Failed logins of vdbi's own Vault session",
            ),
            sa_authorized: counter(
                &r,
                "vdbi_service_account_authorized_count",
                "Role checks that authorised the pod's ServiceAccount",
            ),
            sa_denied: BoundedCounterVec::new(
                counter_vec(
                    &r,
                    "vdbi_service_account_denied_count",
                    "Role checks that denied the pod's ServiceAccount",
                    &["service_account_name", "namespace", "db_role", "cause"],
                ),
                &[true, true, true, false],
                DEFAULT_MAX_SERIES,
            ),
            is_leader: gauge_vec(
                &r,
                "vdbi_is_leader",
                "1 while this replica holds the lease",
                &["lease_name"],
            ),
            leader_election_attempts: counter_vec(
                &r,
                "vdbi_leader_election_attempts_total",
                "Leader election campaigns started",
                &["lease_name"],
            ),
            leader_election_duration: gauge_vec(
                &r,
                "vdbi_leader_election_duration_seconds",
                "Seconds the last campaign took to acquire the lease",
                &["lease_name", "leader_name", "mode"],
            ),
            fetch_pods_success: counter(
                &r,
                "vdbi_fetch_pods_success_count",
                "Pod listings that succeeded",
            ),
            fetch_pods_error: counter(
                &r,
                "vdbi_fetch_pods_error_count",
                "Pod listings that failed (zero pods counts as failure)",
            ),
            mutated_pods_success: counter(
                &r,
                "vdbi_mutated_pods_success_count",
                "Admissions that mutated a pod",
            ),
            mutated_pods_error: counter(
                &r,
                "vdbi_mutated_pods_error_count",
                "Admissions that failed",
            ),
            nri_substitutions: counter(
                &r,
                "vdbi_nri_substitutions_total",
                "CreateContainer calls that emitted an adjustment",
            ),
            nri_unwrap_failures: counter_vec(
                &r,
                "vdbi_nri_unwrap_failures_total",
                "CreateContainer calls refused",
                &["reason"],
            ),
            token_request_errors: counter_vec(
                &r,
                "vdbi_token_request_errors_total",
                "TokenRequest failures",
                &["reason"],
            ),
            pod_check_errors: counter_vec(
                &r,
                "vdbi_pod_check_errors_total",
                "Live pod checks of the revoker that could not tell whether a pod exists",
                &["reason"],
            ),
            vault_login_errors: counter_vec(
                &r,
                "vdbi_vault_login_errors_total",
                "Vault login failures",
                &["reason", "auth_mode"],
            ),
            projected_role_misconfigured: BoundedCounterVec::new(
                counter_vec(
                    &r,
                    "vdbi_projected_role_misconfigured_total",
                    "Projected logins whose role has no token_period",
                    &["role"],
                ),
                &[true],
                DEFAULT_MAX_SERIES,
            ),
            nri_resolve_duplicate: counter(
                &r,
                "vdbi_nri_resolve_duplicate_total",
                "Credential resolutions shared by concurrent requests",
            ),
            nri_prewarm_success: counter(
                &r,
                "vdbi_nri_prewarm_success_total",
                "Pods whose credentials were prewarmed",
            ),
            nri_prewarm_error: counter_vec(
                &r,
                "vdbi_nri_prewarm_error_total",
                "Prewarm failures",
                &["reason"],
            ),
            nri_prewarm_inflight: int_gauge(
                &r,
                "vdbi_nri_prewarm_inflight",
                "Prewarm fetches in flight",
            ),
            nri_cache_hit: counter_vec(
                &r,
                "vdbi_nri_cache_hit_total",
                "CreateContainer calls served from the cache",
                &["source"],
            ),
            nri_reconnect: counter_vec(
                &r,
                "vdbi_nri_reconnect_total",
                "NRI reconnection outcomes",
                &["result"],
            ),
            admission_duration: histogram_vec(
                &r,
                "vdbi_admission_duration_seconds",
                "Admission review latency",
                &["mode", "result"],
                lat(),
            ),
            admission_own_duration: histogram_vec(
                &r,
                "vdbi_admission_own_duration_seconds",
                "Admission latency minus the time spent waiting on Vault and Kubernetes",
                &["mode", "result"],
                vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0,
                ],
            ),
            admission_denied: counter_vec(
                &r,
                "vdbi_admission_denied_total",
                "Admissions denied, by reason",
                &["reason"],
            ),
            vault_request_duration: histogram_vec(
                &r,
                "vdbi_vault_request_duration_seconds",
                "Vault call latency",
                &["operation", "outcome"],
                lat(),
            ),
            actor_restarts: counter_vec(
                &r,
                "vdbi_actor_restarts_total",
                "Supervisor restarts of an actor",
                &["actor"],
            ),
            cert_reloads: counter_vec(
                &r,
                "vdbi_webhook_certificate_reloads_total",
                "Webhook certificate reloads",
                &["result"],
            ),
            cache_file_errors: counter_vec(
                &r,
                "vdbi_nri_cache_file_errors_total",
                "NRI cache file load/save errors",
                &["reason"],
            ),
            renew_skipped: counter(
                &r,
                "vdbi_renew_skipped_total",
                "Renewals skipped because the TTL left covers the next cycles",
            ),
            admission_coalesced: counter(
                &r,
                "vdbi_admission_coalesced_total",
                "Admission reviews that joined the issuance in flight for the same pod",
            ),
            hollow_entries_deleted: counter(
                &r,
                "vdbi_hollow_entries_deleted_total",
                "Bookkeeping entries left without data (metadata only) that the sweep deleted",
            ),
            orphan_leases_found: counter(
                &r,
                "vdbi_orphan_leases_found_total",
                "Database leases with no bookkeeping entry",
            ),
            orphan_leases_revoked: counter(
                &r,
                "vdbi_orphan_leases_revoked_total",
                "Orphan database leases revoked",
            ),
            revocation_latency: histogram_vec(
                &r,
                "vdbi_revocation_latency_seconds",
                "Time from pod deletion (or end) to revocation",
                &["path"],
                lat(),
            ),
            nri_create_container_duration: histogram_vec(
                &r,
                "vdbi_nri_create_container_duration_seconds",
                "NRI CreateContainer latency",
                &["result"],
                lat(),
            ),
            vault_session_ready: int_gauge(
                &r,
                "vdbi_vault_session_ready",
                "1 while vdbi's own Vault session is logged in",
            ),
            sentry_events: counter_vec(
                &r,
                "vdbi_sentry_events_total",
                "Sentry events by outcome (sent, failed, dropped)",
                &["result"],
            ),
            registry: r,
        }
    }

    /// The `uuid` label value to use (empty when per-uuid series are switched off).
    pub fn uuid<'a>(&self, uuid: &'a str) -> &'a str {
        if self.per_uuid {
            uuid
        } else {
            ""
        }
    }

    /// Counts one deleted bookkeeping entry. The series is per namespace (`uuid` left empty):
    /// the entry's own per-uuid series are dropped right after, so a per-uuid count would be
    /// deleted in the call that sets it and never reach a scrape.
    pub fn entry_deleted(&self, namespace: &str) {
        self.delete_data_success
            .with_label_values(&["", namespace])
            .inc();
    }

    /// Drops the per-uuid series of one bookkeeping entry (on revoke or purge).
    pub fn forget_uuid(&self, uuid: &str, namespace: &str) {
        if !self.per_uuid {
            return;
        }
        let labels = [uuid, namespace];
        for v in [
            &self.renew_token_success,
            &self.renew_token_error,
            &self.renew_lease_success,
            &self.renew_lease_error,
            &self.revoke_token_error,
            &self.store_data_error,
            &self.delete_data_error,
        ] {
            let _ = v.remove_label_values(&labels);
        }
        let _ = self.token_expiration.remove_label_values(&labels);
        let _ = self.lease_expiration.remove_label_values(&labels);
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding error: {e}\n"))
    }
}

/// Every `vdbi_*` family name: used by the documentation check.
pub fn family_names() -> Vec<String> {
    let m = Metrics::new(true);
    let mut names: Vec<String> = m
        .registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| n.starts_with("vdbi_"))
        .collect();
    // Vec families without samples are not gathered; list them from their descriptors.
    names.extend(descriptor_names(&m));
    names.sort();
    names.dedup();
    names
}

fn descriptor_names(m: &Metrics) -> Vec<String> {
    use prometheus::core::Collector;
    let cols: Vec<Box<dyn Collector>> = vec![
        Box::new(m.renew_token_success.clone()),
        Box::new(m.renew_token_error.clone()),
        Box::new(m.renew_lease_success.clone()),
        Box::new(m.renew_lease_error.clone()),
        Box::new(m.revoke_token_success.clone()),
        Box::new(m.revoke_token_error.clone()),
        Box::new(m.token_expiration.clone()),
        Box::new(m.last_sync_success.0.clone()),
        Box::new(m.lease_expiration.clone()),
        Box::new(m.store_data_error.clone()),
        Box::new(m.delete_data_success.clone()),
        Box::new(m.delete_data_error.clone()),
        Box::new(m.sa_denied.clone()),
        Box::new(m.is_leader.clone()),
        Box::new(m.leader_election_attempts.clone()),
        Box::new(m.leader_election_duration.clone()),
        Box::new(m.nri_unwrap_failures.clone()),
        Box::new(m.token_request_errors.clone()),
        Box::new(m.pod_check_errors.clone()),
        Box::new(m.vault_login_errors.clone()),
        Box::new(m.projected_role_misconfigured.clone()),
        Box::new(m.nri_prewarm_error.clone()),
        Box::new(m.nri_cache_hit.clone()),
        Box::new(m.nri_reconnect.clone()),
        Box::new(m.admission_duration.clone()),
        Box::new(m.admission_own_duration.clone()),
        Box::new(m.admission_denied.clone()),
        Box::new(m.vault_request_duration.clone()),
        Box::new(m.actor_restarts.clone()),
        Box::new(m.cert_reloads.clone()),
        Box::new(m.cache_file_errors.clone()),
        Box::new(m.revocation_latency.clone()),
        Box::new(m.nri_create_container_duration.clone()),
        Box::new(m.sentry_events.clone()),
    ];
    cols.iter()
        .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families of vault-db-injector 3.2.x (compat §7), all of which must exist.
    const GO_FAMILIES: &[&str] = &[
        "vdbi_renew_token_count_success",
        "vdbi_renew_token_count_error",
        "vdbi_renew_lease_count_success",
        "vdbi_renew_lease_count_error",
        "vdbi_revoke_token_count_success",
        "vdbi_revoke_token_count_error",
        "vdbi_token_expiration",
        "vdbi_lease_expiration",
        "vdbi_synchronization_count_success",
        "vdbi_synchronization_count_error",
        "vdbi_pod_cleanup_count_success",
        "vdbi_pod_cleanup_count_error",
        "vdbi_last_synchronization_success",
        "vdbi_last_synchronization_duration",
        "vdbi_orphan_ticket_created_count_success",
        "vdbi_orphan_ticket_created_count_error",
        "vdbi_store_data_count_success",
        "vdbi_store_data_count_error",
        "vdbi_delete_data_count_success",
        "vdbi_delete_data_count_error",
        "vdbi_connect_vault_count_success",
        "vdbi_connect_vault_count_error",
        "vdbi_service_account_authorized_count",
        "vdbi_service_account_denied_count",
        "vdbi_is_leader",
        "vdbi_leader_election_attempts_total",
        "vdbi_leader_election_duration_seconds",
        "vdbi_fetch_pods_success_count",
        "vdbi_fetch_pods_error_count",
        "vdbi_mutated_pods_success_count",
        "vdbi_mutated_pods_error_count",
        "vdbi_nri_substitutions_total",
        "vdbi_nri_unwrap_failures_total",
        "vdbi_token_request_errors_total",
        "vdbi_vault_login_errors_total",
        "vdbi_projected_role_misconfigured_total",
        "vdbi_nri_resolve_duplicate_total",
        "vdbi_nri_prewarm_success_total",
        "vdbi_nri_prewarm_error_total",
        "vdbi_nri_prewarm_inflight",
        "vdbi_nri_cache_hit_total",
        "vdbi_nri_reconnect_total",
    ];

    #[test]
    fn every_go_family_is_registered() {
        let names = family_names();
        for f in GO_FAMILIES {
            assert!(names.iter().any(|n| n == f), "missing {f}");
        }
    }

    #[test]
    fn labels_match_the_go_version() {
        let m = Metrics::new(true);
        m.sa_denied
            .with_label_values(&["sa", "ns", "role", "NamespaceNotInRole"])
            .inc();
        m.revoke_token_success.with_label_values(&["ns"]).inc();
        m.renew_token_success.with_label_values(&["u", "ns"]).inc();
        let text = m.render();
        assert!(text.contains(
            r#"vdbi_service_account_denied_count{cause="NamespaceNotInRole",db_role="role",namespace="ns",service_account_name="sa"} 1"#
        ), "{text}");
        assert!(text.contains(r#"vdbi_revoke_token_count_success{namespace="ns"} 1"#));
        assert!(text.contains(r#"vdbi_renew_token_count_success{namespace="ns",uuid="u"} 1"#));
        assert!(text.contains("process_"), "process collector present");
    }

    #[test]
    fn uuid_series_can_be_dropped_and_switched_off() {
        let m = Metrics::new(true);
        m.renew_token_success.with_label_values(&["u1", "ns"]).inc();
        m.forget_uuid("u1", "ns");
        assert!(!m.render().contains("u1"));
        let off = Metrics::new(false);
        assert_eq!(off.uuid("u1"), "");
    }

    /// The count of deleted entries survives the entry's own per-uuid series: it is scrapeable.
    #[test]
    fn deleted_entries_stay_counted_after_their_series_go() {
        let m = Metrics::new(true);
        m.renew_lease_success.with_label_values(&["u1", "ns"]).inc();
        m.entry_deleted("ns");
        m.forget_uuid("u1", "ns");
        m.entry_deleted("ns");
        let text = m.render();
        assert!(
            text.contains(r#"vdbi_delete_data_count_success{namespace="ns",uuid=""} 2"#),
            "{text}"
        );
        assert!(!text.contains("u1"), "{text}");
    }

    /// A replica that never led (or stopped leading) exports no last-success time at all, so an
    /// alert on its age cannot fire for it.
    #[test]
    fn last_synchronization_success_exists_only_while_set() {
        let m = Metrics::new(true);
        let line = |m: &Metrics| {
            m.render()
                .lines()
                .find(|l| l.starts_with("vdbi_last_synchronization_success"))
                .map(str::to_string)
        };
        assert_eq!(line(&m), None);
        assert_eq!(m.last_sync_success.get(), None);
        m.last_sync_success.set(1700000000.0);
        assert_eq!(
            line(&m).as_deref(),
            Some("vdbi_last_synchronization_success 1700000000")
        );
        assert_eq!(m.last_sync_success.get(), Some(1700000000.0));
        m.last_sync_success.clear();
        assert_eq!(line(&m), None);
    }
}
