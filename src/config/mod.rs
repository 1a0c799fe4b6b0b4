//! vdbi's configuration: the keys of vault-db-injector 3.2.x (same YAML names, defaults and
//! `INJECTOR_*` environment overrides) plus the settings an operator needs and the Go version lacks
//! (Vault TLS, listen addresses, deadlines, lifecycle tunables).
//!
//! Loading order: built-in defaults, then the YAML file, then `INJECTOR_*` environment variables
//! (prefixed names only; the Go version's silent un-prefixed fallback is not reproduced). Unknown
//! YAML keys are reported, never silently ignored. [`Config::load`] returns every problem at once.

mod duration;
mod fields;
pub mod sentry_dsn;
mod sources;
mod unknown;
mod validate;

pub use duration::{format_go_duration, parse_go_duration, DurationError};
pub use fields::all_keys;
pub use validate::{Problem, Severity};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the revoker's sweep does with database leases that have no bookkeeping entry
/// (`orphanLeaseDiscovery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrphanLeaseMode {
    /// Do not look at Vault's leases.
    Off,
    /// Count and log them (`vdbi_orphan_leases_found_total`), revoke nothing.
    Report,
    /// Count them and revoke them once older than `orphanLeaseGrace`.
    Revoke,
}

impl OrphanLeaseMode {
    pub fn parse(s: &str) -> Result<OrphanLeaseMode, ValueError> {
        match s {
            "off" | "false" => Ok(OrphanLeaseMode::Off),
            "report" => Ok(OrphanLeaseMode::Report),
            "revoke" => Ok(OrphanLeaseMode::Revoke),
            other => Err(ValueError::OrphanLeaseMode(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrphanLeaseMode::Off => "off",
            OrphanLeaseMode::Report => "report",
            OrphanLeaseMode::Revoke => "revoke",
        }
    }
}

/// The component(s) a process runs, from the `mode` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Injector,
    Renewer,
    Revoker,
    Nri,
    All,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, ValueError> {
        match s {
            "injector" => Ok(Mode::Injector),
            "renewer" => Ok(Mode::Renewer),
            "revoker" => Ok(Mode::Revoker),
            "nri" => Ok(Mode::Nri),
            "all" => Ok(Mode::All),
            other => Err(ValueError::Mode(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Injector => "injector",
            Mode::Renewer => "renewer",
            Mode::Revoker => "revoker",
            Mode::Nri => "nri",
            Mode::All => "all",
        }
    }

    pub fn runs_injector(self) -> bool {
        matches!(self, Mode::Injector | Mode::All)
    }
    pub fn runs_renewer(self) -> bool {
        matches!(self, Mode::Renewer | Mode::All)
    }
    pub fn runs_revoker(self) -> bool {
        matches!(self, Mode::Revoker | Mode::All)
    }
    /// `nri` mode, or `all` with `nri.enabled` (checked by the caller).
    pub fn runs_nri(self) -> bool {
        matches!(self, Mode::Nri | Mode::All)
    }
}

/// Log verbosity (`logLevel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// vault-db-injector accepts `trace` (it warns and logs at info); vdbi logs at its most
    /// verbose level (debug in release builds, where trace records are compiled out).
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `nri.prewarmer.*`
#[derive(Clone, Debug, PartialEq)]
pub struct PrewarmerConfig {
    pub enabled: bool,
    pub max_concurrent: usize,
}

/// Waits between NRI reconnect attempts after the runtime connection ends: 1, 2, 5, 10, 30 s as
/// vault-db-injector (compat), then the plugin gives up and the process exits so that the
/// DaemonSet restarts it. Unlike vault-db-injector, a successful registration starts the schedule
/// again. Not a configuration key.
pub const NRI_RECONNECT_SCHEDULE: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// `nri.*`
#[derive(Clone, Debug, PartialEq)]
pub struct NriConfig {
    pub enabled: bool,
    pub socket_path: PathBuf,
    pub cache_path: PathBuf,
    pub plugin_name: String,
    pub plugin_index: String,
    pub pod_label: String,
    pub fetch_timeout: Duration,
    pub prewarmer: PrewarmerConfig,
    /// Node sweep interval (cache eviction of pods gone from this node).
    pub sweep_interval: Duration,
}

/// The whole configuration. Field names follow the YAML keys (camelCase there).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub vault_address: String,
    pub vault_auth_path: String,
    pub kube_role: String,
    pub kube_role_nri: String,
    pub token_ttl: Duration,
    pub vault_secret_name: String,
    pub vault_secret_prefix: String,
    pub log_level: LogLevel,
    pub sentry: bool,
    pub sentry_dsn: String,
    pub sentry_environment: String,
    pub sentry_sample_rate: f64,
    pub sync_ttl_second: u64,
    pub injector_label: String,
    pub default_engine: String,
    pub vault_rate_limit: u32,
    pub use_projected_sa: bool,
    pub token_request_audiences: Vec<String>,
    pub token_request_expiration_seconds: i64,
    pub nri: NriConfig,

    // ---- vdbi additions (not in vault-db-injector) ----
    /// PEM bundle of CAs to trust for Vault (the Go version only honoured `VAULT_CACERT`).
    pub vault_ca_cert: Option<PathBuf>,
    pub vault_skip_verify: bool,
    pub vault_namespace: String,
    /// Upper bound of one Vault HTTP request.
    pub vault_request_timeout: Duration,
    /// Burst of the Vault client-side rate limiter.
    pub vault_rate_burst: u32,
    /// File holding vdbi's own ServiceAccount JWT for its Vault login.
    pub kube_token_path: PathBuf,
    pub webhook_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub health_listen: SocketAddr,
    /// Deadline shared by every Vault and API call of one admission; must stay below the
    /// webhook's `timeoutSeconds`.
    pub admission_timeout: Duration,
    /// Largest AdmissionReview body accepted.
    pub webhook_max_body_bytes: usize,
    /// How often the webhook's certificate files are checked for rotation.
    pub cert_reload_interval: Duration,
    /// PEM bundle of the CAs whose client certificates may call the webhook; `None` = no client
    /// authentication (any peer that reaches the port is served).
    pub webhook_client_ca_file: Option<PathBuf>,
    /// When non-empty, the verified client certificate must carry one of these names (subject
    /// CN or a DNS subjectAltName).
    pub webhook_client_allowed_names: Vec<String>,
    /// Most dbConfigs one pod may ask for; more is refused before any Vault call.
    pub max_db_configs_per_pod: usize,
    /// Most bytes (keys + values) of a pod's `db-creds-injector.numberly.io/` annotations.
    pub max_annotation_bytes: usize,
    /// The injector reports unready once it has been unable to make Vault calls this long.
    pub readiness_vault_grace: Duration,
    /// Revoke credentials as soon as a pod reaches Succeeded/Failed.
    pub revoke_terminated_pods: bool,
    /// Revoker safety-net sweep interval (5 min in vault-db-injector).
    pub revoker_sweep_interval: Duration,
    /// Admitted-but-never-stored pods are cleaned after this delay (fast sweep).
    pub revoker_unseen_grace: Duration,
    /// Leases with no bookkeeping entry are reported/revoked once older than this.
    pub orphan_lease_grace: Duration,
    /// Orphan-lease discovery: off, report (default) or revoke.
    pub orphan_lease_discovery: OrphanLeaseMode,
    /// `<mount>/<role>` whose leases orphan discovery examines; empty = the roles seen in this
    /// release's bookkeeping entries.
    pub orphan_lease_roles: Vec<String>,
    /// The renewer and revoker give up their lease after the pod watch failed this long.
    pub pod_watch_broken_after: Duration,
    /// Concurrent Vault operations of one renewer cycle.
    pub renewer_concurrency: usize,
    /// Renew only what would expire within this many sync intervals (TTL-aware renewal).
    pub renew_horizon_cycles: u32,
    /// Keep the per-uuid label series (`uuid` label); off = uuid label left empty.
    pub per_uuid_metrics: bool,
    /// `POD_NAME` / `POD_NAMESPACE` / `NODE_NAME` from the downward API.
    pub pod_name: String,
    pub pod_namespace: String,
    pub node_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::All,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            vault_address: String::new(),
            vault_auth_path: String::new(),
            kube_role: String::new(),
            kube_role_nri: String::new(),
            token_ttl: Duration::from_secs(768 * 3600),
            vault_secret_name: String::new(),
            vault_secret_prefix: String::new(),
            log_level: LogLevel::Info,
            sentry: false,
            sentry_dsn: String::new(),
            sentry_environment: "production".into(),
            sentry_sample_rate: 1.0,
            sync_ttl_second: 300,
            injector_label: "vault-db-injector".into(),
            default_engine: "databases".into(),
            vault_rate_limit: 30,
            use_projected_sa: false,
            token_request_audiences: Vec::new(),
            token_request_expiration_seconds: 600,
            nri: NriConfig {
                enabled: false,
                socket_path: "/var/run/nri/nri.sock".into(),
                cache_path: "/run/vault-db-injector/nri/cache.json".into(),
                plugin_name: "vault-db-injector".into(),
                plugin_index: "10".into(),
                pod_label: "vault-db-injector".into(),
                fetch_timeout: Duration::from_millis(1500),
                prewarmer: PrewarmerConfig {
                    enabled: true,
                    max_concurrent: 50,
                },
                sweep_interval: Duration::from_secs(300),
            },
            vault_ca_cert: None,
            vault_skip_verify: false,
            vault_namespace: String::new(),
            vault_request_timeout: Duration::from_secs(30),
            vault_rate_burst: 10,
            kube_token_path: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            webhook_listen: "0.0.0.0:8443".parse().expect("static address"),
            metrics_listen: "0.0.0.0:8080".parse().expect("static address"),
            health_listen: "0.0.0.0:8888".parse().expect("static address"),
            admission_timeout: Duration::from_secs(4),
            webhook_max_body_bytes: 3 * 1024 * 1024,
            cert_reload_interval: Duration::from_secs(30),
            webhook_client_ca_file: None,
            webhook_client_allowed_names: Vec::new(),
            max_db_configs_per_pod: 16,
            max_annotation_bytes: 32 * 1024,
            readiness_vault_grace: Duration::from_secs(30),
            revoke_terminated_pods: true,
            revoker_sweep_interval: Duration::from_secs(300),
            revoker_unseen_grace: Duration::from_secs(60),
            orphan_lease_grace: Duration::from_secs(600),
            orphan_lease_discovery: OrphanLeaseMode::Report,
            orphan_lease_roles: Vec::new(),
            pod_watch_broken_after: Duration::from_secs(60),
            renewer_concurrency: 16,
            renew_horizon_cycles: 3,
            per_uuid_metrics: true,
            pod_name: String::new(),
            pod_namespace: String::new(),
            node_name: String::new(),
        }
    }
}

/// Failure to produce a usable configuration: every problem found, with its key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("invalid config:\n{}", validate::render(.0))]
    Invalid(Vec<Problem>),
}

/// Why one configuration value is refused; recorded as a [`Problem`] under its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected a single value, found a list")]
    NotScalar,
    #[error("expected true or false, found {0:?}")]
    NotBool(String),
    #[error("expected a number, found {0:?}")]
    NotNumber(String),
    #[error("expected an address like 0.0.0.0:8443, found {0:?}")]
    NotAddress(String),
    #[error("unknown log level {0:?}: use trace, debug, info, warn or error")]
    LogLevel(String),
    #[error("invalid mode {0:?}: must be one of injector, renewer, revoker, nri, all")]
    Mode(String),
    #[error("invalid value {0:?}: must be one of off, report, revoke")]
    OrphanLeaseMode(String),
    #[error("{0}")]
    Duration(#[from] DurationError),
}

/// A loaded configuration and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Defaults, then `path` (if any), then `INJECTOR_*` from the process environment, then
    /// validation. Errors carry every problem; warnings are returned beside the config.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(path, &env)
    }

    /// As [`Config::load`], with an explicit environment (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let yaml = match path {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
            ),
            None => None,
        };
        Self::from_sources(yaml.as_deref(), env).map_err(|e| match e {
            ConfigError::Yaml { message, .. } => ConfigError::Yaml {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                message,
            },
            other => other,
        })
    }

    /// Builds a config from YAML text and an environment map.
    pub fn from_sources(
        yaml: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let mut cfg = Config::default();
        let mut problems = Vec::new();
        if let Some(text) = yaml {
            let doc: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
                    path: PathBuf::new(),
                    message: e.to_string(),
                })?;
            sources::apply_yaml(&mut cfg, &doc, &mut problems);
        }
        sources::apply_env(&mut cfg, env, &mut problems);
        validate::validate(&cfg, &mut problems);
        let (errors, warnings): (Vec<_>, Vec<_>) = problems
            .into_iter()
            .partition(|p| p.severity == Severity::Error);
        if errors.is_empty() {
            Ok(Loaded {
                config: cfg,
                warnings,
            })
        } else {
            let mut all = errors;
            all.extend(warnings);
            Err(ConfigError::Invalid(all))
        }
    }

    /// The effective configuration as `key: value` lines, secrets masked.
    pub fn render_masked(&self) -> String {
        sources::render(self)
    }

    /// Neither projected ServiceAccounts nor NRI: vault-db-injector's "legacy" mode.
    pub fn is_legacy(&self) -> bool {
        !self.use_projected_sa && !self.nri.enabled
    }

    /// Vault login role of the NRI plugin's bookkeeping session.
    pub fn nri_kube_role(&self) -> &str {
        if self.kube_role_nri.is_empty() {
            &self.kube_role
        } else {
            &self.kube_role_nri
        }
    }
}

#[cfg(test)]
mod tests;
