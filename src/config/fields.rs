//! The table of configuration keys: YAML path, environment name, how to parse and how to print.
//! One table drives YAML loading, environment overrides, unknown-key detection and
//! `check-config` output, so the four can never disagree.

use super::duration::{format_go_duration, parse_go_duration};
use super::{Config, LogLevel, Mode, OrphanLeaseMode, ValueError};
use std::path::PathBuf;

/// A raw value from YAML or the environment.
pub(super) enum Raw {
    Scalar(String),
    List(Vec<String>),
}

type Setter = fn(&mut Config, Raw) -> Result<(), ValueError>;
type Getter = fn(&Config) -> String;

pub(super) struct Field {
    /// Dotted YAML path, e.g. `nri.prewarmer.maxConcurrent`.
    pub path: &'static str,
    /// Full environment variable name, e.g. `INJECTOR_NRI_PREWARMER_MAX_CONCURRENT`.
    pub env: &'static str,
    /// Masked in `check-config` output.
    pub secret: bool,
    pub(super) set: Setter,
    pub(super) get: Getter,
}

fn scalar(raw: Raw) -> Result<String, ValueError> {
    match raw {
        Raw::Scalar(s) => Ok(s),
        Raw::List(_) => Err(ValueError::NotScalar),
    }
}

fn list(raw: Raw) -> Vec<String> {
    match raw {
        Raw::List(v) => v,
        Raw::Scalar(s) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    }
}

fn parse_bool(raw: Raw) -> Result<bool, ValueError> {
    let s = scalar(raw)?;
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" => Ok(true),
        "false" | "0" | "f" | "no" => Ok(false),
        _ => Err(ValueError::NotBool(s)),
    }
}

fn parse_num<T: std::str::FromStr>(raw: Raw) -> Result<T, ValueError> {
    let s = scalar(raw)?;
    s.trim().parse().map_err(|_| ValueError::NotNumber(s))
}

fn parse_dur(raw: Raw) -> Result<std::time::Duration, ValueError> {
    Ok(parse_go_duration(&scalar(raw)?)?)
}

fn parse_addr(raw: Raw) -> Result<std::net::SocketAddr, ValueError> {
    let s = scalar(raw)?;
    s.parse().map_err(|_| ValueError::NotAddress(s))
}

fn parse_log_level(raw: Raw) -> Result<LogLevel, ValueError> {
    let s = scalar(raw)?;
    match s.to_ascii_lowercase().as_str() {
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        _ => Err(ValueError::LogLevel(s)),
    }
}

macro_rules! field {
    ($path:literal, $env:literal, $secret:literal, |$c:ident, $r:ident| $set:expr, |$g:ident| $get:expr) => {
        Field {
            path: $path,
            env: $env,
            secret: $secret,
            set: |$c: &mut Config, $r: Raw| -> Result<(), ValueError> {
                $set;
                Ok(())
            },
            get: |$g: &Config| -> String { $get },
        }
    };
}

pub(super) static FIELDS: &[Field] = &[
    field!(
        "mode",
        "INJECTOR_MODE",
        false,
        |c, r| c.mode = Mode::parse(&scalar(r)?)?,
        |c| c.mode.as_str().into()
    ),
    field!(
        "certFile",
        "INJECTOR_CERT_FILE",
        false,
        |c, r| c.cert_file = scalar(r)?.into(),
        |c| c.cert_file.display().to_string()
    ),
    field!(
        "keyFile",
        "INJECTOR_KEY_FILE",
        false,
        |c, r| c.key_file = scalar(r)?.into(),
        |c| c.key_file.display().to_string()
    ),
    field!(
        "vaultAddress",
        "INJECTOR_VAULT_ADDRESS",
        false,
        |c, r| c.vault_address = scalar(r)?,
        |c| c.vault_address.clone()
    ),
    field!(
        "vaultAuthPath",
        "INJECTOR_VAULT_AUTH_PATH",
        false,
        |c, r| c.vault_auth_path = scalar(r)?,
        |c| c.vault_auth_path.clone()
    ),
    field!(
        "kubeRole",
        "INJECTOR_KUBE_ROLE",
        false,
        |c, r| c.kube_role = scalar(r)?,
        |c| c.kube_role.clone()
    ),
    field!(
        "kubeRoleNri",
        "INJECTOR_KUBE_ROLE_NRI",
        false,
        |c, r| c.kube_role_nri = scalar(r)?,
        |c| c.kube_role_nri.clone()
    ),
    field!(
        "tokenTTL",
        "INJECTOR_TOKEN_TTL",
        false,
        |c, r| c.token_ttl = parse_dur(r)?,
        |c| format_go_duration(c.token_ttl)
    ),
    field!(
        "vaultSecretName",
        "INJECTOR_VAULT_SECRET_NAME",
        false,
        |c, r| c.vault_secret_name = scalar(r)?,
        |c| c.vault_secret_name.clone()
    ),
    field!(
        "vaultSecretPrefix",
        "INJECTOR_VAULT_SECRET_PREFIX",
        false,
        |c, r| c.vault_secret_prefix = scalar(r)?,
        |c| c.vault_secret_prefix.clone()
    ),
    field!(
        "logLevel",
        "INJECTOR_LOG_LEVEL",
        false,
        |c, r| c.log_level = parse_log_level(r)?,
        |c| c.log_level.as_str().into()
    ),
    field!(
        "sentry",
        "INJECTOR_SENTRY",
        false,
        |c, r| c.sentry = parse_bool(r)?,
        |c| c.sentry.to_string()
    ),
    field!(
        "sentryDsn",
        "INJECTOR_SENTRY_DSN",
        true,
        |c, r| c.sentry_dsn = scalar(r)?,
        |c| c.sentry_dsn.clone()
    ),
    field!(
        "sentryEnvironment",
        "INJECTOR_SENTRY_ENVIRONMENT",
        false,
        |c, r| c.sentry_environment = scalar(r)?,
        |c| c.sentry_environment.clone()
    ),
    field!(
        "sentrySampleRate",
        "INJECTOR_SENTRY_SAMPLE_RATE",
        false,
        |c, r| c.sentry_sample_rate = parse_num(r)?,
        |c| c.sentry_sample_rate.to_string()
    ),
    field!(
        "syncTTLSecond",
        "INJECTOR_SYNC_TTL_SECOND",
        false,
        |c, r| c.sync_ttl_second = parse_num(r)?,
        |c| c.sync_ttl_second.to_string()
    ),
    field!(
        "injectorLabel",
        "INJECTOR_INJECTOR_LABEL",
        false,
        |c, r| c.injector_label = scalar(r)?,
        |c| c.injector_label.clone()
    ),
    field!(
        "defaultEngine",
        "INJECTOR_DEFAULT_ENGINE",
        false,
        |c, r| c.default_engine = scalar(r)?,
        |c| c.default_engine.clone()
    ),
    field!(
        "vaultRateLimit",
        "INJECTOR_VAULT_RATE_LIMIT",
        false,
        |c, r| c.vault_rate_limit = parse_num(r)?,
        |c| c.vault_rate_limit.to_string()
    ),
    field!(
        "useProjectedSA",
        "INJECTOR_USE_PROJECTED_SA",
        false,
        |c, r| c.use_projected_sa = parse_bool(r)?,
        |c| c.use_projected_sa.to_string()
    ),
    field!(
        "tokenRequestAudiences",
        "INJECTOR_TOKEN_REQUEST_AUDIENCES",
        false,
        |c, r| c.token_request_audiences = list(r),
        |c| c.token_request_audiences.join(",")
    ),
    field!(
        "tokenRequestExpirationSeconds",
        "INJECTOR_TOKEN_REQUEST_EXPIRATION_SECONDS",
        false,
        |c, r| c.token_request_expiration_seconds = parse_num(r)?,
        |c| c.token_request_expiration_seconds.to_string()
    ),
    field!(
        "nri.enabled",
        "INJECTOR_NRI_ENABLED",
        false,
        |c, r| c.nri.enabled = parse_bool(r)?,
        |c| c.nri.enabled.to_string()
    ),
    field!(
        "nri.socketPath",
        "INJECTOR_NRI_SOCKET_PATH",
        false,
        |c, r| c.nri.socket_path = scalar(r)?.into(),
        |c| c.nri.socket_path.display().to_string()
    ),
    field!(
        "nri.cachePath",
        "INJECTOR_NRI_CACHE_PATH",
        false,
        |c, r| c.nri.cache_path = scalar(r)?.into(),
        |c| c.nri.cache_path.display().to_string()
    ),
    field!(
        "nri.pluginName",
        "INJECTOR_NRI_PLUGIN_NAME",
        false,
        |c, r| c.nri.plugin_name = scalar(r)?,
        |c| c.nri.plugin_name.clone()
    ),
    field!(
        "nri.pluginIndex",
        "INJECTOR_NRI_PLUGIN_INDEX",
        false,
        |c, r| c.nri.plugin_index = scalar(r)?,
        |c| c.nri.plugin_index.clone()
    ),
    field!(
        "nri.podLabel",
        "INJECTOR_NRI_POD_LABEL",
        false,
        |c, r| c.nri.pod_label = scalar(r)?,
        |c| c.nri.pod_label.clone()
    ),
    field!(
        "nri.fetchTimeout",
        "INJECTOR_NRI_FETCH_TIMEOUT",
        false,
        |c, r| c.nri.fetch_timeout = parse_dur(r)?,
        |c| format_go_duration(c.nri.fetch_timeout)
    ),
    field!(
        "nri.sweepInterval",
        "INJECTOR_NRI_SWEEP_INTERVAL",
        false,
        |c, r| c.nri.sweep_interval = parse_dur(r)?,
        |c| format_go_duration(c.nri.sweep_interval)
    ),
    field!(
        "nri.prewarmer.enabled",
        "INJECTOR_NRI_PREWARMER_ENABLED",
        false,
        |c, r| c.nri.prewarmer.enabled = parse_bool(r)?,
        |c| c.nri.prewarmer.enabled.to_string()
    ),
    field!(
        "nri.prewarmer.maxConcurrent",
        "INJECTOR_NRI_PREWARMER_MAX_CONCURRENT",
        false,
        |c, r| {
            let n: i64 = parse_num(r)?;
            c.nri.prewarmer.max_concurrent = n.max(1) as usize
        },
        |c| c.nri.prewarmer.max_concurrent.to_string()
    ),
    // ---- vdbi additions ----
    field!(
        "vaultCACert",
        "INJECTOR_VAULT_CA_CERT",
        false,
        |c, r| {
            let s = scalar(r)?;
            c.vault_ca_cert = (!s.is_empty()).then(|| PathBuf::from(s))
        },
        |c| c
            .vault_ca_cert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ),
    field!(
        "vaultSkipVerify",
        "INJECTOR_VAULT_SKIP_VERIFY",
        false,
        |c, r| c.vault_skip_verify = parse_bool(r)?,
        |c| c.vault_skip_verify.to_string()
    ),
    field!(
        "vaultNamespace",
        "INJECTOR_VAULT_NAMESPACE",
        false,
        |c, r| c.vault_namespace = scalar(r)?,
        |c| c.vault_namespace.clone()
    ),
    field!(
        "vaultRequestTimeout",
        "INJECTOR_VAULT_REQUEST_TIMEOUT",
        false,
        |c, r| c.vault_request_timeout = parse_dur(r)?,
        |c| format_go_duration(c.vault_request_timeout)
    ),
    field!(
        "vaultRateBurst",
        "INJECTOR_VAULT_RATE_BURST",
        false,
        |c, r| c.vault_rate_burst = parse_num(r)?,
        |c| c.vault_rate_burst.to_string()
    ),
    field!(
        "kubeTokenPath",
        "INJECTOR_KUBE_TOKEN_PATH",
        false,
        |c, r| c.kube_token_path = scalar(r)?.into(),
        |c| c.kube_token_path.display().to_string()
    ),
    field!(
        "webhookListen",
        "INJECTOR_WEBHOOK_LISTEN",
        false,
        |c, r| c.webhook_listen = parse_addr(r)?,
        |c| c.webhook_listen.to_string()
    ),
    field!(
        "metricsListen",
        "INJECTOR_METRICS_LISTEN",
        false,
        |c, r| c.metrics_listen = parse_addr(r)?,
        |c| c.metrics_listen.to_string()
    ),
    field!(
        "healthListen",
        "INJECTOR_HEALTH_LISTEN",
        false,
        |c, r| c.health_listen = parse_addr(r)?,
        |c| c.health_listen.to_string()
    ),
    field!(
        "admissionTimeout",
        "INJECTOR_ADMISSION_TIMEOUT",
        false,
        |c, r| c.admission_timeout = parse_dur(r)?,
        |c| format_go_duration(c.admission_timeout)
    ),
    field!(
        "webhookMaxBodyBytes",
        "INJECTOR_WEBHOOK_MAX_BODY_BYTES",
        false,
        |c, r| c.webhook_max_body_bytes = parse_num(r)?,
        |c| c.webhook_max_body_bytes.to_string()
    ),
    field!(
        "certReloadInterval",
        "INJECTOR_CERT_RELOAD_INTERVAL",
        false,
        |c, r| c.cert_reload_interval = parse_dur(r)?,
        |c| format_go_duration(c.cert_reload_interval)
    ),
    field!(
        "webhookClientCAFile",
        "INJECTOR_WEBHOOK_CLIENT_CA_FILE",
        false,
        |c, r| {
            let s = scalar(r)?;
            c.webhook_client_ca_file = (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()))
        },
        |c| c
            .webhook_client_ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ),
    field!(
        "webhookClientAllowedNames",
        "INJECTOR_WEBHOOK_CLIENT_ALLOWED_NAMES",
        false,
        |c, r| c.webhook_client_allowed_names = list(r),
        |c| c.webhook_client_allowed_names.join(",")
    ),
    field!(
        "maxDbConfigsPerPod",
        "INJECTOR_MAX_DB_CONFIGS_PER_POD",
        false,
        |c, r| c.max_db_configs_per_pod = parse_num(r)?,
        |c| c.max_db_configs_per_pod.to_string()
    ),
    field!(
        "maxAnnotationBytes",
        "INJECTOR_MAX_ANNOTATION_BYTES",
        false,
        |c, r| c.max_annotation_bytes = parse_num(r)?,
        |c| c.max_annotation_bytes.to_string()
    ),
    field!(
        "readinessVaultGrace",
        "INJECTOR_READINESS_VAULT_GRACE",
        false,
        |c, r| c.readiness_vault_grace = parse_dur(r)?,
        |c| format_go_duration(c.readiness_vault_grace)
    ),
    field!(
        "revokeTerminatedPods",
        "INJECTOR_REVOKE_TERMINATED_PODS",
        false,
        |c, r| c.revoke_terminated_pods = parse_bool(r)?,
        |c| c.revoke_terminated_pods.to_string()
    ),
    field!(
        "revokerSweepInterval",
        "INJECTOR_REVOKER_SWEEP_INTERVAL",
        false,
        |c, r| c.revoker_sweep_interval = parse_dur(r)?,
        |c| format_go_duration(c.revoker_sweep_interval)
    ),
    field!(
        "revokerUnseenGrace",
        "INJECTOR_REVOKER_UNSEEN_GRACE",
        false,
        |c, r| c.revoker_unseen_grace = parse_dur(r)?,
        |c| format_go_duration(c.revoker_unseen_grace)
    ),
    field!(
        "orphanLeaseGrace",
        "INJECTOR_ORPHAN_LEASE_GRACE",
        false,
        |c, r| c.orphan_lease_grace = parse_dur(r)?,
        |c| format_go_duration(c.orphan_lease_grace)
    ),
    field!(
        "orphanLeaseDiscovery",
        "INJECTOR_ORPHAN_LEASE_DISCOVERY",
        false,
        |c, r| c.orphan_lease_discovery = OrphanLeaseMode::parse(&scalar(r)?)?,
        |c| c.orphan_lease_discovery.as_str().into()
    ),
    field!(
        "orphanLeaseRoles",
        "INJECTOR_ORPHAN_LEASE_ROLES",
        false,
        |c, r| c.orphan_lease_roles = list(r),
        |c| c.orphan_lease_roles.join(",")
    ),
    field!(
        "podWatchBrokenAfter",
        "INJECTOR_POD_WATCH_BROKEN_AFTER",
        false,
        |c, r| c.pod_watch_broken_after = parse_dur(r)?,
        |c| format_go_duration(c.pod_watch_broken_after)
    ),
    field!(
        "renewerConcurrency",
        "INJECTOR_RENEWER_CONCURRENCY",
        false,
        |c, r| c.renewer_concurrency = parse_num(r)?,
        |c| c.renewer_concurrency.to_string()
    ),
    field!(
        "renewHorizonCycles",
        "INJECTOR_RENEW_HORIZON_CYCLES",
        false,
        |c, r| c.renew_horizon_cycles = parse_num(r)?,
        |c| c.renew_horizon_cycles.to_string()
    ),
    field!(
        "perUuidMetrics",
        "INJECTOR_PER_UUID_METRICS",
        false,
        |c, r| c.per_uuid_metrics = parse_bool(r)?,
        |c| c.per_uuid_metrics.to_string()
    ),
];

/// Every YAML key path vdbi knows (leaves and the sections above them).
pub(super) fn known_paths() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|f| f.path)
}

/// Every config key with its environment name: used by the documentation check.
pub fn all_keys() -> Vec<(&'static str, &'static str)> {
    FIELDS.iter().map(|f| (f.path, f.env)).collect()
}
