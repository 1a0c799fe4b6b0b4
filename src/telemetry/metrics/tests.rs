use super::*;
use std::time::{Duration, SystemTime};

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

/// Records through every method once: every family then has a series.
fn touch_everything(m: &Metrics) {
    let e = Entry::new("u", "ns");
    let t = Duration::from_millis(5);
    let a = &m.admission;
    a.reviewed("legacy", "allowed", t, Some(t));
    a.mutated();
    a.refused("invalid_request");
    a.handshake_refused();
    a.coalesced();
    let i = &m.issuance;
    i.authorized();
    i.denied(Denial {
        service_account: "sa",
        namespace: "ns",
        db_role: "role",
        cause: "NamespaceNotInRole",
    });
    i.orphan_token(true);
    i.orphan_token(false);
    i.token_request_failed("forbidden");
    i.login_failed("denied", "projected");
    i.projected_role_misconfigured("role");
    i.slots(3, 1);
    i.slot_waited(SlotUser::Nri);
    let b = &m.bookkeeping;
    b.stored();
    b.store_failed(e);
    b.deleted("ns");
    b.delete_failed(e);
    let r = &m.renewal;
    r.interval(Duration::from_secs(60));
    r.cycle(t, true);
    r.cycle(t, false);
    r.leader_succeeded_at(SystemTime::now());
    r.skipped(2);
    r.pods_listed(true);
    r.pods_listed(false);
    r.token_renewed(e, SystemTime::now());
    r.token_failed(e);
    r.lease_renewed(e, SystemTime::now());
    r.lease_failed(e);
    let v = &m.revocation;
    v.token_revoked("ns");
    v.token_failed(e);
    v.revoked_after("watch", t);
    v.pod_cleaned_up();
    v.cleanup_failed();
    v.pod_check_failed("timeout");
    v.hollow_entry_deleted();
    v.attempt_settled("revoked");
    v.orphan_lease_found();
    v.orphan_lease_revoked();
    let l = &m.leadership;
    l.campaign_started("lease");
    l.leading("lease", true);
    l.elected("lease", "me", t);
    let n = &m.nri;
    n.create_container("hit", t);
    n.substituted(Some("prewarm"));
    n.refused("no_entry");
    n.resolve_shared();
    n.prewarm_started();
    n.prewarm_finished(true);
    n.prewarm_failed(PrewarmFailure::SemaphoreFull);
    n.reconnect(Reconnect::Attempted);
    n.cache_file_error(CacheFileError::Corrupt);
    m.vault.logged_in();
    m.vault.login_failed();
    m.vault.call("kv_put", CallOutcome::Ok, t);
    m.process.restarts_of("cache").inc();
    m.process.task_panicked("revocation");
    m.process.cert_reload(true);
    m.process.sentry_events().count("sent");
}

/// The catalogue (what documentation and dashboards are checked against) says what the
/// exposition says: every family is exported under its name with its type and label names.
#[test]
fn the_catalogue_matches_the_exposition() {
    let m = Metrics::new(true);
    touch_everything(&m);
    let text = m.render();
    for f in m.families() {
        let type_line = format!("# TYPE {} {}", f.name, f.kind.as_str());
        assert!(text.contains(&type_line), "no {type_line:?}");
        let sample = text
            .lines()
            .find(|l| !l.starts_with('#') && l.starts_with(f.name))
            .unwrap_or_else(|| panic!("no sample of {}", f.name));
        for label in f.labels {
            assert!(
                sample.contains(&format!("{label}=\"")),
                "{sample}: no {label}"
            );
        }
    }
}

#[test]
fn labels_match_the_go_version() {
    let m = Metrics::new(true);
    m.issuance.denied(Denial {
        service_account: "sa",
        namespace: "ns",
        db_role: "role",
        cause: "NamespaceNotInRole",
    });
    m.revocation.token_revoked("ns");
    m.renewal
        .token_renewed(Entry::new("u", "ns"), SystemTime::now());
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
    m.renewal.token_vanished(Entry::new("u1", "ns"));
    m.forget_entry(Entry::new("u1", "ns"));
    assert!(!m.render().contains("u1"));
    let off = Metrics::new(false);
    off.renewal.token_failed(Entry::new("u1", "ns"));
    assert!(!off.render().contains("u1"));
    assert_eq!(
        off.value(
            "vdbi_renew_token_count_error",
            &[("uuid", ""), ("namespace", "ns")]
        ),
        Some(1.0)
    );
}

/// The count of deleted entries survives the entry's own per-uuid series: it is scrapeable.
#[test]
fn deleted_entries_stay_counted_after_their_series_go() {
    let m = Metrics::new(true);
    m.renewal.lease_vanished(Entry::new("u1", "ns"));
    m.bookkeeping.deleted("ns");
    m.forget_entry(Entry::new("u1", "ns"));
    m.bookkeeping.deleted("ns");
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
    let last = |m: &Metrics| m.value("vdbi_last_synchronization_success", &[]);
    assert_eq!(line(&m), None);
    assert_eq!(last(&m), None);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    m.renewal.leader_succeeded_at(at);
    assert_eq!(
        line(&m).as_deref(),
        Some("vdbi_last_synchronization_success 1700000000")
    );
    assert_eq!(last(&m), Some(1700000000.0));
    m.renewal.not_leading();
    assert_eq!(line(&m), None);
}

#[test]
fn reads_find_series_by_label_name_in_any_order() {
    let m = Metrics::new(true);
    m.issuance.login_failed("denied", "projected");
    let v = |labels: &[(&str, &str)]| m.count("vdbi_vault_login_errors_total", labels);
    assert_eq!(v(&[("reason", "denied"), ("auth_mode", "projected")]), 1.0);
    assert_eq!(v(&[("auth_mode", "projected"), ("reason", "denied")]), 1.0);
    assert_eq!(v(&[("auth_mode", "projected"), ("reason", "other")]), 0.0);
    m.admission
        .reviewed("legacy", "allowed", Duration::from_millis(250), None);
    let (n, sum) = m.observations(
        "vdbi_admission_duration_seconds",
        &[("mode", "legacy"), ("result", "allowed")],
    );
    assert_eq!((n, sum), (1, 0.25));
    let (n, _) = m.observations(
        "vdbi_admission_own_duration_seconds",
        &[("mode", "legacy"), ("result", "allowed")],
    );
    assert_eq!(n, 0, "no own time without an external wait");
    m.renewal.cycle(Duration::from_secs(2), true);
    assert_eq!(
        m.observations("vdbi_last_synchronization_duration", &[]),
        (1, 2.0)
    );
}

#[test]
#[should_panic(expected = "no metric family")]
fn a_misspelt_family_fails_the_read() {
    Metrics::new(true).count("vdbi_no_such_family", &[]);
}

#[test]
#[should_panic(expected = "labels of vdbi_admission_denied_total")]
fn wrong_label_names_fail_the_read() {
    Metrics::new(true).count("vdbi_admission_denied_total", &[("cause", "x")]);
}
