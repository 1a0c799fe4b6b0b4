use super::*;
use std::collections::BTreeMap;

const MINIMAL: &str = r#"
mode: injector
certFile: /tls/tls.crt
keyFile: /tls/tls.key
vaultAddress: https://vault:8200
vaultAuthPath: kubernetes
kubeRole: all-rw
vaultSecretName: vault-db-injector
vaultSecretPrefix: kubernetes
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn errors(e: ConfigError) -> Vec<Problem> {
    match e {
        ConfigError::Invalid(p) => p
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .collect(),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn defaults_match_vault_db_injector() {
    let c = Config::default();
    assert_eq!(c.mode, Mode::All);
    assert_eq!(c.token_ttl, std::time::Duration::from_secs(768 * 3600));
    assert_eq!(c.sync_ttl_second, 300);
    assert_eq!(c.vault_rate_limit, 30);
    assert_eq!(c.default_engine, "databases");
    assert_eq!(c.injector_label, "vault-db-injector");
    assert_eq!(c.token_request_expiration_seconds, 600);
    assert_eq!(c.nri.socket_path, PathBuf::from("/var/run/nri/nri.sock"));
    assert_eq!(
        c.nri.cache_path,
        PathBuf::from("/run/vault-db-injector/nri/cache.json")
    );
    assert_eq!(c.nri.plugin_index, "10");
    assert_eq!(c.nri.fetch_timeout, std::time::Duration::from_millis(1500));
    assert!(c.nri.prewarmer.enabled);
    assert_eq!(c.nri.prewarmer.max_concurrent, 50);
    assert_eq!(c.sentry_environment, "production");
    assert_eq!(c.webhook_listen.port(), 8443);
    assert_eq!(c.metrics_listen.port(), 8080);
    assert_eq!(c.health_listen.port(), 8888);
}

#[test]
fn minimal_file_loads() {
    let l = Config::from_sources(Some(MINIMAL), &BTreeMap::new()).unwrap();
    assert_eq!(l.config.mode, Mode::Injector);
    assert_eq!(l.config.kube_role, "all-rw");
    // legacy mode is announced
    assert!(l.warnings.iter().any(|w| w.message.contains("LEGACY")));
}

#[test]
fn env_overrides_yaml_only_with_prefix() {
    let e = env(&[
        ("INJECTOR_KUBE_ROLE", "from-env"),
        ("INJECTOR_NRI_ENABLED", "true"),
        ("INJECTOR_NRI_PREWARMER_MAX_CONCURRENT", "0"),
        ("INJECTOR_TOKEN_TTL", "8766h"),
        ("INJECTOR_INJECTOR_LABEL", "other"),
        ("INJECTOR_TOKEN_REQUEST_AUDIENCES", "vault, other"),
        // un-prefixed names must NOT override (the Go version's envconfig fallback)
        ("MODE", "revoker"),
        ("VAULT_ADDRESS", "http://evil"),
        ("ENABLED", "false"),
    ]);
    let c = Config::from_sources(Some(MINIMAL), &e).unwrap().config;
    assert_eq!(c.kube_role, "from-env");
    assert!(c.nri.enabled);
    assert_eq!(c.nri.prewarmer.max_concurrent, 1, "<=0 is treated as 1");
    assert_eq!(c.token_ttl, std::time::Duration::from_secs(8766 * 3600));
    assert_eq!(c.injector_label, "other");
    assert_eq!(c.token_request_audiences, vec!["vault", "other"]);
    assert_eq!(c.mode, Mode::Injector);
    assert_eq!(c.vault_address, "https://vault:8200");
}

#[test]
fn unknown_keys_are_warnings_with_suggestion() {
    let yaml = format!("{MINIMAL}SyncTTLSecond: 60\nnri:\n  fetchtimeout: 1s\n  bogus: 1\n");
    let loaded = Config::from_sources(Some(&yaml), &BTreeMap::new()).expect("starts");
    let w = &loaded.warnings;
    let sync = w.iter().find(|p| p.key == "SyncTTLSecond").unwrap();
    assert!(sync.unknown_key);
    assert!(
        sync.message.contains("did you mean `syncTTLSecond`"),
        "{sync}"
    );
    let ft = w.iter().find(|p| p.key == "nri.fetchtimeout").unwrap();
    assert!(ft.message.contains("nri.fetchTimeout"), "{ft}");
    assert!(w.iter().any(|p| p.key == "nri.bogus" && p.unknown_key));
    // Ignored, as vault-db-injector ignores them: the defaults stay.
    assert_eq!(loaded.config.sync_ttl_second, 300);
    assert_eq!(loaded.config.nri.fetch_timeout, Duration::from_millis(1500));
}

#[test]
fn log_level_trace_is_accepted() {
    let yaml = format!("{MINIMAL}logLevel: trace\n");
    let c = Config::from_sources(Some(&yaml), &BTreeMap::new())
        .unwrap()
        .config;
    assert_eq!(c.log_level, LogLevel::Trace);
}

#[test]
fn every_problem_is_listed_at_once() {
    let yaml = "mode: injector\ntokenTTL: forever\nsyncTTLSecond: abc\nnri:\n  pluginIndex: '7'\n";
    let errs = errors(Config::from_sources(Some(yaml), &BTreeMap::new()).unwrap_err());
    let keys: Vec<&str> = errs.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "tokenTTL",
        "syncTTLSecond",
        "nri.pluginIndex",
        "certFile",
        "keyFile",
        "vaultAddress",
        "vaultAuthPath",
        "kubeRole",
        "vaultSecretName",
        "vaultSecretPrefix",
    ] {
        assert!(keys.contains(&k), "missing problem for {k}: {keys:?}");
    }
}

#[test]
fn projected_requires_audiences() {
    let yaml = format!("{MINIMAL}useProjectedSA: true\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    assert!(errs.iter().any(|p| p.key == "tokenRequestAudiences"));
    let yaml = format!("{MINIMAL}useProjectedSA: true\ntokenRequestAudiences: [vault]\n");
    assert!(Config::from_sources(Some(&yaml), &BTreeMap::new()).is_ok());
}

#[test]
fn cert_not_required_for_renewer() {
    let yaml = MINIMAL
        .replace("mode: injector", "mode: renewer")
        .replace("certFile: /tls/tls.crt\n", "")
        .replace("keyFile: /tls/tls.key\n", "");
    assert!(Config::from_sources(Some(&yaml), &BTreeMap::new()).is_ok());
}

#[test]
fn sentry_needs_dsn_and_dsn_is_masked() {
    let yaml = format!("{MINIMAL}sentry: true\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    assert!(errs.iter().any(|p| p.key == "sentryDsn"));
    let yaml = format!("{MINIMAL}sentry: true\nsentryDsn: https://secret@sentry/1\n");
    let c = Config::from_sources(Some(&yaml), &BTreeMap::new())
        .unwrap()
        .config;
    let shown = c.render_masked();
    assert!(!shown.contains("secret@"), "{shown}");
    assert!(shown.contains("sentryDsn: ********"));
}

#[test]
fn malformed_sentry_dsn_is_an_error_without_the_key() {
    let yaml = format!("{MINIMAL}sentry: true\nsentryDsn: https://hunter2@sentry.example/\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    let p = errs
        .iter()
        .find(|p| p.key == "sentryDsn")
        .expect("sentryDsn refused");
    assert!(p.message.contains("no project id"), "{}", p.message);
    assert!(!p.message.contains("hunter2"), "{}", p.message);
    // Not checked while Sentry is off (as in the Go version).
    let yaml = format!("{MINIMAL}sentryDsn: nonsense\n");
    assert!(Config::from_sources(Some(&yaml), &BTreeMap::new()).is_ok());
}

#[test]
fn type_errors_name_the_key() {
    let yaml = format!("{MINIMAL}useProjectedSA: maybe\nvaultRateLimit: [1]\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    assert!(errs.iter().any(|p| p.key == "useProjectedSA"));
    assert!(errs.iter().any(|p| p.key == "vaultRateLimit"));
}

#[test]
fn log_level_accepts_error() {
    let yaml = format!("{MINIMAL}logLevel: error\n");
    let c = Config::from_sources(Some(&yaml), &BTreeMap::new())
        .unwrap()
        .config;
    assert_eq!(c.log_level, LogLevel::Error);
}

#[test]
fn unknown_injector_env_is_a_warning() {
    let e = env(&[("INJECTOR_SYNCTTLSECOND", "5")]);
    let l = Config::from_sources(Some(MINIMAL), &e).unwrap();
    assert!(l.warnings.iter().any(|w| w.key == "INJECTOR_SYNCTTLSECOND"));
}

#[test]
fn listen_clash_is_refused() {
    let yaml = format!("{MINIMAL}metricsListen: 0.0.0.0:8888\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    assert!(errs.iter().any(|p| p.key == "healthListen"));
}

#[test]
fn lifecycle_keys_parse_and_validate() {
    let e = env(&[
        ("INJECTOR_ORPHAN_LEASE_DISCOVERY", "revoke"),
        (
            "INJECTOR_ORPHAN_LEASE_ROLES",
            "databases/app-rw, team/db/reporting",
        ),
        ("INJECTOR_POD_WATCH_BROKEN_AFTER", "30s"),
    ]);
    let l = Config::from_sources(Some(MINIMAL), &e).unwrap();
    let c = &l.config;
    assert_eq!(c.orphan_lease_discovery, OrphanLeaseMode::Revoke);
    assert_eq!(
        c.orphan_lease_roles,
        vec!["databases/app-rw", "team/db/reporting"]
    );
    assert_eq!(c.pod_watch_broken_after, std::time::Duration::from_secs(30));
    assert_eq!(
        Config::default().orphan_lease_discovery,
        OrphanLeaseMode::Report
    );

    let yaml = format!(
        "{MINIMAL}orphanLeaseDiscovery: sometimes\norphanLeaseRoles: [app-rw]\npodWatchBrokenAfter: 0s\n"
    );
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    for key in [
        "orphanLeaseDiscovery",
        "orphanLeaseRoles",
        "podWatchBrokenAfter",
    ] {
        assert!(errs.iter().any(|p| p.key == key), "{key}: {errs:?}");
    }

    let yaml = format!(
        "{MINIMAL}revokerUnseenGrace: 2s\norphanLeaseDiscovery: revoke\norphanLeaseGrace: 10s\n"
    );
    let l = Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap();
    for key in ["revokerUnseenGrace", "orphanLeaseGrace"] {
        assert!(
            l.warnings.iter().any(|p| p.key == key),
            "{key}: {:?}",
            l.warnings
        );
    }
}

#[test]
fn nri_reconnect_schedule_is_vault_db_injectors() {
    let secs: Vec<u64> = NRI_RECONNECT_SCHEDULE.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [1, 2, 5, 10, 30]);
}

#[test]
fn a_prefix_ending_in_reservations_is_warned_about() {
    let yaml = MINIMAL.replace(
        "vaultSecretPrefix: kubernetes",
        "vaultSecretPrefix: kubernetes-reservations",
    );
    let l = Config::from_sources(Some(&yaml), &env(&[])).unwrap();
    assert!(l
        .warnings
        .iter()
        .any(|w| w.key == "vaultSecretPrefix" && w.message.contains("reservations")));
    let l = Config::from_sources(Some(MINIMAL), &env(&[])).unwrap();
    assert!(!l.warnings.iter().any(|w| w.key == "vaultSecretPrefix"));
}

#[test]
fn issuance_slot_keys_default_parse_and_validate() {
    let c = Config::default();
    assert_eq!((c.issuance_slots, c.issuance_slots_per_pod), (16, 4));
    let yaml = format!("{MINIMAL}issuanceSlots: 32\nissuanceSlotsPerPod: 2\n");
    let c = Config::from_sources(
        Some(&yaml),
        &env(&[("INJECTOR_ISSUANCE_SLOTS_PER_POD", "1")]),
    )
    .unwrap()
    .config;
    assert_eq!((c.issuance_slots, c.issuance_slots_per_pod), (32, 1));

    let yaml = format!("{MINIMAL}issuanceSlots: 0\nissuanceSlotsPerPod: 0\n");
    let errs = errors(Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap_err());
    for key in ["issuanceSlots", "issuanceSlotsPerPod"] {
        assert!(errs.iter().any(|p| p.key == key), "{key}: {errs:?}");
    }
    let yaml = format!("{MINIMAL}issuanceSlots: 2\nissuanceSlotsPerPod: 4\n");
    let l = Config::from_sources(Some(&yaml), &BTreeMap::new()).unwrap();
    assert!(l.warnings.iter().any(|p| p.key == "issuanceSlotsPerPod"));
}
