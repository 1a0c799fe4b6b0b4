//! vdbi's `/metrics` text with one series in every family, built from the real registry
//! ([`Metrics::new`]): labelled families have no series until first used, so each one is given a
//! sample with empty label values. The dashboard and alert checks read the `# TYPE` lines of it.

use crate::telemetry::Metrics;
use prometheus::core::Collector;
use std::collections::BTreeMap;

fn arity(c: &dyn Collector) -> usize {
    c.desc().first().map_or(0, |d| d.variable_labels.len())
}

/// The exposition text of a fresh registry with a series in every family.
pub fn every_family() -> String {
    let m = Metrics::new(true);
    let counters = [
        &m.renew_token_success,
        &m.renew_token_error,
        &m.renew_lease_success,
        &m.renew_lease_error,
        &m.revoke_token_success,
        &m.revoke_token_error,
        &m.store_data_error,
        &m.delete_data_success,
        &m.delete_data_error,
        &m.leader_election_attempts,
        &m.nri_unwrap_failures,
        &m.token_request_errors,
        &m.pod_check_errors,
        &m.vault_login_errors,
        &m.nri_prewarm_error,
        &m.nri_cache_hit,
        &m.nri_reconnect,
        &m.admission_denied,
        &m.actor_restarts,
        &m.cert_reloads,
        &m.cache_file_errors,
        &m.sentry_events,
    ];
    for c in counters {
        c.with_label_values(&vec![""; arity(c)]).inc();
    }
    // Label sets bounded by telemetry::cardinality.
    m.sa_denied.with_label_values(&["", "", "", ""]).inc();
    m.projected_role_misconfigured
        .with_label_values(&[""])
        .inc();
    for g in [
        &m.token_expiration,
        &m.lease_expiration,
        &m.is_leader,
        &m.leader_election_duration,
    ] {
        g.with_label_values(&vec![""; arity(g)]).set(1.0);
    }
    m.last_sync_success.set(1.0);
    for h in [
        &m.admission_duration,
        &m.admission_own_duration,
        &m.vault_request_duration,
        &m.revocation_latency,
        &m.nri_create_container_duration,
    ] {
        h.with_label_values(&vec![""; arity(h)]).observe(0.1);
    }
    m.last_sync_duration.observe(1.0);
    m.render()
}

/// Family name -> type (`counter`, `gauge`, `histogram`, `summary`) of [`every_family`].
pub fn family_types() -> BTreeMap<String, String> {
    every_family()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_registered_family_has_a_type_line() {
        let types = super::family_types();
        for name in crate::telemetry::metrics::family_names() {
            assert!(types.contains_key(&name), "{name} has no series");
        }
    }
}
