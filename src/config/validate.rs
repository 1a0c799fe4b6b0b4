//! Validation: vault-db-injector's `Validate()` rules, plus vdbi's own checks. Every problem is
//! collected with the key path it concerns, so an operator sees all of them at once.

use super::{Config, Mode};
use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One configuration problem, tied to a key path (`nri.fetchTimeout`) or environment name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub key: String,
    pub message: String,
    /// A key vdbi does not know (a warning, refused by `check-config --strict`).
    pub unknown_key: bool,
}

impl Problem {
    pub fn error(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            key: key.to_string(),
            message: message.into(),
            unknown_key: false,
        }
    }
    pub fn warning(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            key: key.to_string(),
            message: message.into(),
            unknown_key: false,
        }
    }
    pub fn unknown_key(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            unknown_key: true,
            ..Problem::warning(key, message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.key.is_empty() {
            write!(f, "{sev}: {}", self.message)
        } else {
            write!(f, "{sev}: {}: {}", self.key, self.message)
        }
    }
}

pub(super) fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn validate(c: &Config, out: &mut Vec<Problem>) {
    if matches!(c.mode, Mode::Injector | Mode::All) {
        if c.cert_file.as_os_str().is_empty() {
            out.push(Problem::error(
                "certFile",
                "required when mode is injector or all",
            ));
        }
        if c.key_file.as_os_str().is_empty() {
            out.push(Problem::error(
                "keyFile",
                "required when mode is injector or all",
            ));
        }
    }
    for (key, value) in [
        ("vaultAddress", &c.vault_address),
        ("vaultAuthPath", &c.vault_auth_path),
        ("kubeRole", &c.kube_role),
        ("vaultSecretName", &c.vault_secret_name),
        ("vaultSecretPrefix", &c.vault_secret_prefix),
    ] {
        if value.trim().is_empty() {
            out.push(Problem::error(key, "required"));
        }
    }
    if !c.vault_address.is_empty() {
        match url::Url::parse(&c.vault_address) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.scheme() == "http" {
                    out.push(Problem::warning(
                        "vaultAddress",
                        "plain http: tokens and credentials cross the network unencrypted",
                    ));
                }
            }
            _ => out.push(Problem::error(
                "vaultAddress",
                format!("{:?} is not an http(s) URL", c.vault_address),
            )),
        }
    }
    if c.vault_secret_prefix
        .trim_end_matches('/')
        .ends_with(crate::bookkeeping::RESERVATIONS_SUFFIX)
    {
        out.push(Problem::warning(
            "vaultSecretPrefix",
            "ends with '-reservations': it is where the release whose prefix is its stem keeps its NRI reservations (entries without a token), which a renewer or revoker listing this prefix would read",
        ));
    }
    if c.vault_secret_prefix.contains('/') {
        out.push(Problem::warning(
            "vaultSecretPrefix",
            "contains '/': the documented KV policies (`<mount>/data/+/+`) expect one segment",
        ));
    }
    if c.sentry && c.sentry_dsn.is_empty() {
        out.push(Problem::error("sentryDsn", "required when sentry is true"));
    } else if c.sentry {
        if let Err(e) = super::sentry_dsn::Dsn::parse(&c.sentry_dsn) {
            out.push(Problem::error("sentryDsn", e.to_string()));
        }
    }
    if c.use_projected_sa {
        if c.token_request_audiences.is_empty() {
            out.push(Problem::error(
                "tokenRequestAudiences",
                "must not be empty when useProjectedSA is true (an audience-less token could be replayed elsewhere)",
            ));
        }
        if c.token_request_expiration_seconds <= 0 {
            out.push(Problem::error(
                "tokenRequestExpirationSeconds",
                "must be > 0 when useProjectedSA is true",
            ));
        } else if c.token_request_expiration_seconds < 600 {
            out.push(Problem::warning(
                "tokenRequestExpirationSeconds",
                "below the apiserver minimum of 600; the apiserver will raise it",
            ));
        }
    }
    if c.token_ttl.is_zero() {
        out.push(Problem::error("tokenTTL", "must be greater than zero"));
    }
    if c.sync_ttl_second == 0 {
        out.push(Problem::error("syncTTLSecond", "must be greater than zero"));
    }
    if c.default_engine.trim().is_empty() {
        out.push(Problem::error("defaultEngine", "must not be empty"));
    }
    if c.injector_label.trim().is_empty() {
        out.push(Problem::error("injectorLabel", "must not be empty"));
    }
    // NRI
    let idx = &c.nri.plugin_index;
    if idx.len() != 2 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        out.push(Problem::error(
            "nri.pluginIndex",
            format!("{idx:?} must be exactly two digits (00-99), as containerd requires"),
        ));
    }
    let name = &c.nri.plugin_name;
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.+-".contains(ch))
    {
        out.push(Problem::error(
            "nri.pluginName",
            format!("{name:?} must be non-empty and use only [a-zA-Z0-9_.+-]"),
        ));
    }
    if c.nri.fetch_timeout.is_zero() {
        out.push(Problem::error(
            "nri.fetchTimeout",
            "must be greater than zero",
        ));
    } else if c.nri.enabled && c.nri.fetch_timeout >= Duration::from_secs(2) {
        out.push(Problem::warning(
            "nri.fetchTimeout",
            "must stay below containerd's plugin_request_timeout (2s by default), or containerd fails open and starts the container with placeholders",
        ));
    }
    if c.nri.pod_label.is_empty() {
        out.push(Problem::warning(
            "nri.podLabel",
            "empty: the NRI plugin inspects every container on the node",
        ));
    }
    // vdbi additions
    if c.admission_timeout.is_zero() || c.admission_timeout > Duration::from_secs(29) {
        out.push(Problem::error(
            "admissionTimeout",
            "must be between 0 and 29s and below the webhook's timeoutSeconds",
        ));
    }
    if c.vault_request_timeout.is_zero() {
        out.push(Problem::error(
            "vaultRequestTimeout",
            "must be greater than zero",
        ));
    }
    for r in &c.orphan_lease_roles {
        let ok = r
            .rsplit_once('/')
            .is_some_and(|(m, role)| !m.is_empty() && !role.is_empty());
        if !ok {
            out.push(Problem::error(
                "orphanLeaseRoles",
                format!("{r:?} is not <mount>/<role>"),
            ));
        }
    }
    if c.revoker_unseen_grace < Duration::from_secs(10) {
        out.push(Problem::warning(
            "revokerUnseenGrace",
            "below 10s: the sweep may revoke the credentials of a pod admitted but not stored yet",
        ));
    }
    if c.orphan_lease_discovery == super::OrphanLeaseMode::Revoke
        && c.orphan_lease_grace < Duration::from_secs(60)
    {
        out.push(Problem::warning(
            "orphanLeaseGrace",
            "below 1m with orphanLeaseDiscovery: revoke: a lease whose admission is still recording it may be revoked",
        ));
    }
    if c.pod_watch_broken_after.is_zero() {
        out.push(Problem::error(
            "podWatchBrokenAfter",
            "must be greater than zero",
        ));
    }
    if c.renewer_concurrency == 0 {
        out.push(Problem::error("renewerConcurrency", "must be at least 1"));
    }
    if c.vault_skip_verify {
        out.push(Problem::warning(
            "vaultSkipVerify",
            "TLS verification of Vault is disabled",
        ));
    }
    if let Some(ca) = &c.vault_ca_cert {
        if !ca.exists() {
            out.push(Problem::error(
                "vaultCACert",
                format!("{} does not exist", ca.display()),
            ));
        }
    }
    if let Some(ca) = &c.webhook_client_ca_file {
        if c.mode.runs_injector() && !ca.exists() {
            out.push(Problem::error(
                "webhookClientCAFile",
                format!("{} does not exist", ca.display()),
            ));
        }
    } else if !c.webhook_client_allowed_names.is_empty() {
        out.push(Problem::error(
            "webhookClientAllowedNames",
            "set without webhookClientCAFile: names are only checked on verified client certificates",
        ));
    } else if c.mode.runs_injector() && !c.nri.enabled {
        out.push(Problem::warning(
            "webhookClientCAFile",
            "unset: any peer that reaches the webhook port gets credentials in its answer; give kube-apiserver a client certificate (docs/security.md)",
        ));
    }
    if c.max_db_configs_per_pod == 0 {
        out.push(Problem::error("maxDbConfigsPerPod", "must be at least 1"));
    }
    if c.max_annotation_bytes < 1024 {
        out.push(Problem::error(
            "maxAnnotationBytes",
            "must be at least 1024",
        ));
    }
    if c.issuance_slots == 0 {
        out.push(Problem::error("issuanceSlots", "must be at least 1"));
    }
    if c.issuance_slots_per_pod == 0 {
        out.push(Problem::error("issuanceSlotsPerPod", "must be at least 1"));
    } else if c.issuance_slots_per_pod > c.issuance_slots && c.issuance_slots > 0 {
        out.push(Problem::warning(
            "issuanceSlotsPerPod",
            format!(
                "greater than issuanceSlots ({}): one pod never holds more than issuanceSlots",
                c.issuance_slots
            ),
        ));
    }
    if c.readiness_vault_grace.is_zero() {
        out.push(Problem::error(
            "readinessVaultGrace",
            "must be greater than zero",
        ));
    }
    let listens = [
        ("webhookListen", c.webhook_listen, c.mode.runs_injector()),
        ("metricsListen", c.metrics_listen, true),
        ("healthListen", c.health_listen, true),
    ];
    for (i, (ka, a, used_a)) in listens.iter().enumerate() {
        for (kb, b, used_b) in &listens[i + 1..] {
            if *used_a && *used_b && a == b {
                out.push(Problem::error(kb, format!("same address as {ka} ({a})")));
            }
        }
    }
    if matches!(c.mode, Mode::Renewer | Mode::Revoker | Mode::All)
        && (c.pod_name.is_empty() || c.pod_namespace.is_empty())
    {
        out.push(Problem::warning(
            "POD_NAME/POD_NAMESPACE",
            "unset: leader election needs both (set them from the downward API)",
        ));
    }
    if c.mode == Mode::Nri && !c.nri.enabled {
        out.push(Problem::warning(
            "nri.enabled",
            "false while mode is nri: the plugin idles until shutdown",
        ));
    }
    if c.mode.runs_injector() && c.is_legacy() {
        out.push(Problem::warning(
            "useProjectedSA/nri.enabled",
            "LEGACY mode: credentials are written in clear into the pod spec",
        ));
    }
}
