//! The pod contract of vault-db-injector: the `db-creds-injector.numberly.io/` annotation grammar.
//!
//! `<prefix><db>.<field>` creates a dbConfig named `<db>` (split at the first `.` after the
//! prefix, so `<field>` may contain dots). Pod-wide keys: `cluster` (DB engine mount), `role`
//! (default role of every dbConfig), `uuid` (written by the webhook). Any `revoke-ttl*` key marks a
//! pod of the v1 injector, which is admitted untouched. dbConfigs are sorted by name (byte order);
//! that order ties each entry of the `uuid` list to its dbConfig. The webhook and the NRI plugin
//! share this parser.

use std::collections::{BTreeMap, BTreeSet};

pub const PREFIX: &str = "db-creds-injector.numberly.io/";
pub const UUID_KEY: &str = "db-creds-injector.numberly.io/uuid";
pub const CLUSTER_KEY: &str = "db-creds-injector.numberly.io/cluster";
pub const ROLE_KEY: &str = "db-creds-injector.numberly.io/role";
const REVOKE_TTL_PREFIX: &str = "revoke-ttl";

/// How a dbConfig's credentials are exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialMode {
    /// Username and password in separate variables.
    Classic,
    /// One connection URI with the credentials in its userinfo.
    Uri,
}

/// One database of a pod: where its credentials come from and where they go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    pub name: String,
    pub role: String,
    pub mode: CredentialMode,
    pub user_env: Vec<String>,
    pub password_env: Vec<String>,
    pub uri_env: Vec<String>,
    pub template: Option<String>,
    /// vdbi addition: only these containers get the variables (`None` = every container).
    pub containers: Option<Vec<String>>,
}

impl DbConfig {
    /// True when the variables of this dbConfig go into the named container.
    pub fn targets(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == container))
    }

    /// Every env name this dbConfig writes.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.user_env
            .iter()
            .chain(&self.password_env)
            .chain(&self.uri_env)
            .map(String::as_str)
    }

    fn annotation(&self, field: &str) -> String {
        format!("{PREFIX}{}.{field}", self.name)
    }
}

/// What the annotations ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDbSpec {
    /// Database secrets-engine mount (`cluster` annotation, else `defaultEngine`).
    pub engine: String,
    /// dbConfigs sorted by name.
    pub configs: Vec<DbConfig>,
    /// The existing `uuid` annotation split on commas (empty if absent).
    pub uuids: Vec<String>,
    /// Non-fatal remarks (ignored keys), for logs and admission warnings.
    pub warnings: Vec<String>,
}

/// Outcome of reading a pod's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodContract {
    /// No dbConfig at all.
    NoDatabases {
        warnings: Vec<String>,
    },
    /// A `revoke-ttl*` annotation of the v1 injector: leave the pod alone.
    LegacyV1,
    Databases(PodDbSpec),
}

/// A pod contract violation; the message names the annotation to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error(
        "dbConfig {db:?}: no role: set annotation {PREFIX}{db}.role (or the pod-wide {ROLE_KEY})"
    )]
    MissingRole { db: String },
    #[error("dbConfig {db:?}: mode {value:?} not supported in annotation {PREFIX}{db}.mode (use classic or uri)")]
    UnknownMode { db: String, value: String },
    #[error("dbConfig {db:?}: classic mode needs {PREFIX}{db}.env-key-dbuser and/or {PREFIX}{db}.env-key-dbpassword")]
    MissingClassicEnv { db: String },
    #[error("dbConfig {db:?}: uri mode needs annotation {PREFIX}{db}.env-key-uri")]
    MissingUriEnv { db: String },
    #[error("dbConfig {db:?}: uri mode needs annotation {PREFIX}{db}.template")]
    MissingTemplate { db: String },
    #[error("dbConfig {db:?}: annotation {PREFIX}{db}.template is not a URL: {reason}")]
    BadTemplate { db: String, reason: TemplateError },
    #[error("dbConfig {db:?}: annotation {key} holds an invalid env var name {name:?}")]
    BadEnvName {
        db: String,
        key: String,
        name: String,
    },
    #[error("env var {name:?} is written by two dbConfigs ({first:?} and {second:?})")]
    DuplicateEnv {
        name: String,
        first: String,
        second: String,
    },
    #[error("dbConfig {db:?}: annotation {PREFIX}{db}.containers names {container:?}, which is not a container of this pod")]
    UnknownContainer { db: String, container: String },
    #[error("dbConfig name in annotation {key} is empty")]
    EmptyDbName { key: String },
    #[error("the pod asks for {count} dbConfigs; at most {max} are allowed per pod (setting maxDbConfigsPerPod)")]
    TooManyDbConfigs { count: usize, max: usize },
    #[error("the pod's {PREFIX}* annotations take {bytes} bytes; at most {max} are allowed (setting maxAnnotationBytes)")]
    AnnotationsTooLarge { bytes: usize, max: usize },
}

/// Bounds on what one pod may ask for (`maxDbConfigsPerPod`, `maxAnnotationBytes`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_db_configs: usize,
    pub max_bytes: usize,
}

/// Refuses a pod whose `db-creds-injector.numberly.io/` annotations exceed `limits`: their total
/// size (keys + values) or the number of distinct dbConfigs they name. One pass over borrowed
/// keys (the body size limit bounds the input); run it before [`parse`] and before any Vault
/// call.
pub fn check_limits<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
    limits: Limits,
) -> Result<(), AnnotationError> {
    let mut bytes = 0usize;
    let mut dbs: BTreeSet<&str> = BTreeSet::new();
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        bytes = bytes.saturating_add(key.len() + value.len());
        if let Some((db, _)) = rest.split_once('.') {
            dbs.insert(db);
        }
    }
    let count = dbs.len();
    if bytes > limits.max_bytes {
        return Err(AnnotationError::AnnotationsTooLarge {
            bytes,
            max: limits.max_bytes,
        });
    }
    if count > limits.max_db_configs {
        return Err(AnnotationError::TooManyDbConfigs {
            count,
            max: limits.max_db_configs,
        });
    }
    Ok(())
}

fn split_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('=')
        && name.chars().all(|c| c.is_ascii_graphic())
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Reads the pod contract from a pod's annotations. `default_engine` is the `defaultEngine`
/// setting. Container-name checks happen in [`check_containers`].
pub fn parse(
    annotations: &BTreeMap<String, String>,
    default_engine: &str,
) -> Result<PodContract, AnnotationError> {
    #[derive(Default)]
    struct Raw {
        role: Option<String>,
        mode: Option<String>,
        user: Option<String>,
        password: Option<String>,
        uri: Option<String>,
        template: Option<String>,
        containers: Option<String>,
    }
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut engine = default_engine.to_string();
    let mut pod_role: Option<String> = None;
    let mut uuids = Vec::new();

    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if rest.starts_with(REVOKE_TTL_PREFIX) {
            return Ok(PodContract::LegacyV1);
        }
        match rest.split_once('.') {
            None => match rest {
                // Empty means the default engine, as in vault-db-injector (charts often
                // template the annotation from a value that may be empty).
                "cluster" => {
                    if !value.trim().is_empty() {
                        engine = value.trim().to_string();
                    }
                }
                "role" => pod_role = Some(value.trim().to_string()).filter(|r| !r.is_empty()),
                "uuid" => uuids = split_names(value),
                other => warnings.push(format!("annotation {PREFIX}{other} is not used; ignored")),
            },
            Some((db, field)) => {
                if db.is_empty() {
                    return Err(AnnotationError::EmptyDbName { key: key.clone() });
                }
                let entry = raw.entry(db.to_string()).or_default();
                let v = Some(value.clone());
                match field {
                    "role" => entry.role = v,
                    "mode" => entry.mode = v,
                    "env-key-dbuser" => entry.user = v,
                    "env-key-dbpassword" => entry.password = v,
                    "env-key-uri" => entry.uri = v,
                    "template" => entry.template = v,
                    "containers" => entry.containers = v,
                    other => warnings.push(format!(
                        "annotation {key}: unknown field {other:?} of dbConfig {db:?}; ignored"
                    )),
                }
            }
        }
    }

    if raw.is_empty() {
        return Ok(PodContract::NoDatabases { warnings });
    }

    let mut configs = Vec::with_capacity(raw.len());
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (name, r) in raw {
        let role = r
            .role
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| pod_role.clone())
            .ok_or_else(|| AnnotationError::MissingRole { db: name.clone() })?;
        let mode = match r.mode.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None => CredentialMode::Classic,
            Some(m) if m.is_empty() || m == "classic" => CredentialMode::Classic,
            Some(m) if m == "uri" => CredentialMode::Uri,
            Some(m) => return Err(AnnotationError::UnknownMode { db: name, value: m }),
        };
        let cfg = DbConfig {
            user_env: r.user.as_deref().map(split_names).unwrap_or_default(),
            password_env: r.password.as_deref().map(split_names).unwrap_or_default(),
            uri_env: r.uri.as_deref().map(split_names).unwrap_or_default(),
            template: r
                .template
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            containers: r.containers.as_deref().map(split_names),
            name,
            role,
            mode,
        };
        match cfg.mode {
            CredentialMode::Classic => {
                if cfg.user_env.is_empty() && cfg.password_env.is_empty() {
                    return Err(AnnotationError::MissingClassicEnv { db: cfg.name });
                }
            }
            CredentialMode::Uri => {
                if cfg.uri_env.is_empty() {
                    return Err(AnnotationError::MissingUriEnv { db: cfg.name });
                }
                let template =
                    cfg.template
                        .as_deref()
                        .ok_or_else(|| AnnotationError::MissingTemplate {
                            db: cfg.name.clone(),
                        })?;
                check_template(template).map_err(|reason| AnnotationError::BadTemplate {
                    db: cfg.name.clone(),
                    reason,
                })?;
            }
        }
        for (field, names) in [
            ("env-key-dbuser", &cfg.user_env),
            ("env-key-dbpassword", &cfg.password_env),
            ("env-key-uri", &cfg.uri_env),
        ] {
            if let Some(bad) = names.iter().find(|n| !valid_env_name(n)) {
                return Err(AnnotationError::BadEnvName {
                    db: cfg.name.clone(),
                    key: cfg.annotation(field),
                    name: bad.clone(),
                });
            }
        }
        // Inside one dbConfig the same name twice is harmless; across dbConfigs it is a clash.
        let own: BTreeSet<&str> = cfg.env_names().collect();
        for n in own {
            if let Some(first) = owners.insert(n.to_string(), cfg.name.clone()) {
                return Err(AnnotationError::DuplicateEnv {
                    name: n.to_string(),
                    first,
                    second: cfg.name.clone(),
                });
            }
        }
        configs.push(cfg);
    }

    Ok(PodContract::Databases(PodDbSpec {
        engine,
        configs,
        uuids,
        warnings,
    }))
}

/// Checks each `<db>.containers` list against the pod's container names.
pub fn check_containers<'a>(
    spec: &PodDbSpec,
    container_names: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), AnnotationError> {
    for cfg in &spec.configs {
        if let Some(list) = &cfg.containers {
            for wanted in list {
                if !container_names.clone().any(|n| n == wanted) {
                    return Err(AnnotationError::UnknownContainer {
                        db: cfg.name.clone(),
                        container: wanted.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Why a uri-mode template cannot become a connection URI. Never quotes the URI: once
/// rendered it holds a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Url(#[from] url::ParseError),
    #[error("it has no host")]
    NoHost,
    #[error("the URL cannot carry a username")]
    NoUsername,
    #[error("the URL cannot carry a password")]
    NoPassword,
}

/// A template either carries `{{user}}`/`{{password}}` markers (the documented form) or is a URL
/// whose userinfo is replaced.
fn check_template(template: &str) -> Result<(), TemplateError> {
    let probe = template
        .replace("{{user}}", "u")
        .replace("{{password}}", "p");
    let url = url::Url::parse(&probe)?;
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(TemplateError::NoHost);
    }
    Ok(())
}

/// Percent-encodes a username or password for a URI (everything but ASCII alphanumerics and
/// `-._~`), as [`render_uri`] does. Placeholders contain only such characters, so they pass
/// through unchanged.
pub fn encode_userinfo(value: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, USERINFO).to_string()
}

/// Builds the connection URI of a uri-mode dbConfig: `{{user}}`/`{{password}}` markers are
/// replaced when present (percent-encoded), otherwise the URL's userinfo is replaced.
pub fn render_uri(template: &str, username: &str, password: &str) -> Result<String, TemplateError> {
    let user = encode_userinfo(username);
    let pass = encode_userinfo(password);
    if template.contains("{{user}}") || template.contains("{{password}}") {
        return Ok(template
            .replace("{{user}}", &user)
            .replace("{{password}}", &pass));
    }
    let mut url = url::Url::parse(template)?;
    url.set_username(&user)
        .map_err(|_| TemplateError::NoUsername)?;
    url.set_password(Some(&pass))
        .map_err(|_| TemplateError::NoPassword)?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests;
