//! NRI mode, pure part: which placeholder of a pod stands for which credential, and the
//! substitution of a container's environment and arguments.
//!
//! The mapping is read from the **API** pod spec (the trust anchor), never from what the runtime
//! sends: for each dbConfig of the annotations,
//! * classic: a variable named in `env-key-dbuser` (`env-key-dbpassword`) whose value is exactly
//!   a placeholder stands for the username (password);
//! * uri: in a variable named in `env-key-uri`, a placeholder in the URL's userinfo user
//!   (password) stands for the username (password); with a `{{user}}`/`{{password}}` template the
//!   value is matched against the rendered template instead. URI values are **percent-encoded**
//!   (vault-db-injector inserted them raw, breaking URIs whose password holds `@`, `/`, `%`…).
//!
//! Nothing here performs I/O or logs; values never appear in errors.

use crate::annotations::{encode_userinfo, render_uri, CredentialMode, PodDbSpec};
use crate::cache_file::PodValues;
use crate::mutation::all_containers;
use crate::placeholder;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;

/// How a credential is written where a placeholder stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Encoding {
    /// As is (classic variables).
    Raw,
    /// Percent-encoded for a URI.
    Uri,
}

/// The placeholders standing for one dbConfig's username and password.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbSlots {
    pub username: BTreeSet<(String, Encoding)>,
    pub password: BTreeSet<(String, Encoding)>,
}

impl DbSlots {
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty()
    }
}

/// One [`DbSlots`] per dbConfig, in the spec's (sorted) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingPlan {
    pub dbs: Vec<DbSlots>,
}

impl MappingPlan {
    /// True when no dbConfig has any placeholder (vault-db-injector's "empty mapping").
    pub fn is_empty(&self) -> bool {
        self.dbs.iter().all(DbSlots::is_empty)
    }

    /// Fills the plan with issued credentials: `creds[i]` are dbConfig `i`'s (username,
    /// password), `None` for dbConfigs that were not issued (no placeholder).
    pub fn resolve(&self, creds: &[Option<(String, String)>]) -> PodValues {
        let mut out = PodValues::new();
        for (slots, cred) in self.dbs.iter().zip(creds) {
            let Some((user, pass)) = cred else { continue };
            for (set, value) in [(&slots.username, user), (&slots.password, pass)] {
                for (ph, enc) in set {
                    let v = match enc {
                        Encoding::Raw => value.clone(),
                        Encoding::Uri => encode_userinfo(value),
                    };
                    out.insert(ph.clone(), v);
                }
            }
        }
        out
    }
}

/// Every `name → value` of the env of every init and main container of the API pod.
fn spec_env(pod: &Pod) -> Vec<(&str, &str)> {
    all_containers(pod)
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| e.value.as_deref().map(|v| (e.name.as_str(), v)))
        .collect()
}

/// True when any container of the API pod spec carries a well-formed placeholder in its env
/// (the prewarmer's filter: pods admitted without NRI must never get credentials issued here).
pub fn pod_has_placeholders(pod: &Pod) -> bool {
    spec_env(pod)
        .iter()
        .any(|(_, v)| !placeholder::find_all(v).is_empty())
}

/// Reads which placeholder stands for what, from the API pod spec and the parsed annotations.
pub fn plan(spec: &PodDbSpec, pod: &Pod) -> MappingPlan {
    let env = spec_env(pod);
    let mut dbs = Vec::with_capacity(spec.configs.len());
    for cfg in &spec.configs {
        let mut slots = DbSlots::default();
        match cfg.mode {
            CredentialMode::Classic => {
                for (name, value) in &env {
                    let value = value.trim();
                    if !placeholder::is_placeholder(value) {
                        continue;
                    }
                    let key = (value.to_string(), Encoding::Raw);
                    if cfg.user_env.iter().any(|n| n == name) {
                        slots.username.insert(key.clone());
                    }
                    if cfg.password_env.iter().any(|n| n == name) {
                        slots.password.insert(key);
                    }
                }
            }
            CredentialMode::Uri => {
                for (name, value) in &env {
                    if !cfg.uri_env.iter().any(|n| n == name) {
                        continue;
                    }
                    let (user, pass) = uri_placeholders(value, cfg.template.as_deref());
                    if let Some(u) = user {
                        slots.username.insert((u, Encoding::Uri));
                    }
                    if let Some(p) = pass {
                        slots.password.insert((p, Encoding::Uri));
                    }
                }
            }
        }
        dbs.push(slots);
    }
    MappingPlan { dbs }
}

/// The placeholders standing for the user and the password in a URI value.
fn uri_placeholders(value: &str, template: Option<&str>) -> (Option<String>, Option<String>) {
    let value = value.trim();
    let mut user = None;
    let mut pass = None;
    if let Ok(url) = url::Url::parse(value) {
        if placeholder::is_placeholder(url.username()) {
            user = Some(url.username().to_string());
        }
        if let Some(p) = url.password().filter(|p| placeholder::is_placeholder(p)) {
            pass = Some(p.to_string());
        }
    }
    if user.is_some() || pass.is_some() {
        return (user, pass);
    }
    // `{{user}}`/`{{password}}` templates (vdbi): find the assignment that renders the value.
    let Some(template) = template else {
        return (None, None);
    };
    let uses_user = template.contains("{{user}}");
    let uses_pass = template.contains("{{password}}");
    if !uses_user && !uses_pass {
        return (None, None);
    }
    let found: Vec<&str> = placeholder::find_all(value);
    let users: Vec<&str> = if uses_user { found.clone() } else { vec!["u"] };
    let passes: Vec<&str> = if uses_pass { found.clone() } else { vec!["p"] };
    for u in &users {
        for p in &passes {
            if uses_user && uses_pass && u == p {
                continue;
            }
            if render_uri(template, u, p).as_deref() == Ok(value) {
                return (
                    uses_user.then(|| u.to_string()),
                    uses_pass.then(|| p.to_string()),
                );
            }
        }
    }
    (None, None)
}

/// What a container gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSubstitution {
    /// Changed variables only, `(key, new value)`, each key once.
    pub env: Vec<(String, String)>,
    /// Replacement arguments, when they changed.
    pub args: Option<Vec<String>>,
}

/// Why a container cannot be given its credentials (`vdbi_nri_unwrap_failures_total{reason}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubstitutionError {
    /// Placeholders are present but none is known: nothing changed.
    NoChange,
    /// A placeholder marker is still present after substitution, in these env keys (and/or the
    /// arguments).
    Residual { keys: Vec<String>, in_args: bool },
}

impl SubstitutionError {
    pub fn reason(&self) -> &'static str {
        match self {
            SubstitutionError::NoChange => "no_change",
            SubstitutionError::Residual { .. } => "residual_placeholder",
        }
    }
}

/// True when the container's env or args hold the placeholder marker.
pub fn container_has_marker(env: &[String], args: &[String]) -> bool {
    env.iter().any(|kv| {
        kv.split_once('=')
            .is_some_and(|(_, v)| placeholder::contains_marker(v))
    }) || args.iter().any(|a| placeholder::contains_marker(a))
}

/// Substitutes every known placeholder in every `KEY=VALUE` line and every argument; returns only
/// what changed, or why the result is unusable.
pub fn substitute_container(
    env: &[String],
    args: &[String],
    values: &PodValues,
) -> Result<ContainerSubstitution, SubstitutionError> {
    let mut changed: Vec<(String, String)> = Vec::new();
    let mut residual: BTreeSet<String> = BTreeSet::new();
    for line in env {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !placeholder::contains_marker(value) {
            continue;
        }
        let new = placeholder::substitute(value, values);
        if placeholder::contains_marker(&new) {
            residual.insert(key.to_string());
        }
        if new != value {
            changed.retain(|(k, _)| k != key);
            changed.push((key.to_string(), new));
        }
    }
    let mut new_args = None;
    let mut args_residual = false;
    if args.iter().any(|a| placeholder::contains_marker(a)) {
        let substituted: Vec<String> = args
            .iter()
            .map(|a| placeholder::substitute(a, values))
            .collect();
        args_residual = substituted.iter().any(|a| placeholder::contains_marker(a));
        if substituted != args {
            new_args = Some(substituted);
        }
    }
    if changed.is_empty() && new_args.is_none() {
        return Err(SubstitutionError::NoChange);
    }
    if !residual.is_empty() || args_residual {
        return Err(SubstitutionError::Residual {
            keys: residual.into_iter().collect(),
            in_args: args_residual,
        });
    }
    Ok(ContainerSubstitution {
        env: changed,
        args: new_args,
    })
}

/// Does a runtime announcing NRI version `version` (`v0.12.3`; empty before v0.12) apply
/// `ContainerAdjustment.args`? Args adjustments exist since NRI v0.10; runtimes before v0.12 do
/// not announce their version, so they are assumed not to (an ignored args adjustment would start
/// the container with the placeholder).
pub fn runtime_adjusts_args(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']);
    let major: Option<u64> = parts.next().and_then(|p| p.parse().ok());
    let minor: Option<u64> = parts.next().and_then(|p| p.parse().ok());
    match (major, minor) {
        (Some(0), Some(minor)) => minor >= 10,
        (Some(major), Some(_)) => major >= 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{parse, PodContract, PREFIX};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn spec_and_pod(annotations: &[(&str, &str)], env: serde_json::Value) -> (PodDbSpec, Pod) {
        let a: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": a},
            "spec": {
                "initContainers": [{"name": "init", "env": [{"name": "INIT_ONLY", "value": "x"}]}],
                "containers": [{"name": "app", "env": env}]
            }
        }))
        .unwrap();
        let spec = match parse(&a, "databases").unwrap() {
            PodContract::Databases(s) => s,
            other => panic!("{other:?}"),
        };
        (spec, pod)
    }

    #[test]
    fn classic_and_uri_mapping_with_percent_encoding() {
        let (u1, p1, u2, p2) = (
            placeholder::generate(),
            placeholder::generate(),
            placeholder::generate(),
            placeholder::generate(),
        );
        let uri = render_uri("postgres://@db:5432/app?sslmode=disable", &u2, &p2).unwrap();
        let (spec, pod) = spec_and_pod(
            &[
                ("main.role", "r"),
                ("main.env-key-dbuser", "DB_USER"),
                ("main.env-key-dbpassword", "DB_PASSWORD, PGPASSWORD"),
                ("rep.role", "r2"),
                ("rep.mode", "uri"),
                ("rep.env-key-uri", "REP_URL"),
                ("rep.template", "postgres://@db:5432/app?sslmode=disable"),
            ],
            json!([
                {"name": "DB_USER", "value": u1},
                {"name": "DB_PASSWORD", "value": p1},
                {"name": "PGPASSWORD", "value": p1},
                {"name": "OTHER", "value": placeholder::generate()},
                {"name": "REP_URL", "value": uri},
            ]),
        );
        let plan = plan(&spec, &pod);
        assert!(!plan.is_empty());
        let values = plan.resolve(&[
            Some(("alice".into(), "pa:ss".into())),
            Some(("bob@x".into(), "p@ss/w%rd".into())),
        ]);
        assert_eq!(values.len(), 4, "OTHER is not a credential of any dbConfig");
        assert_eq!(values[&u1], "alice");
        assert_eq!(values[&p1], "pa:ss");
        assert_eq!(values[&u2], "bob%40x");
        assert_eq!(values[&p2], "p%40ss%2Fw%25rd");
        let out = placeholder::substitute(&uri, &values);
        let parsed = url::Url::parse(&out).unwrap();
        assert_eq!(parsed.host_str(), Some("db"));
        assert_eq!(parsed.username(), "bob%40x");
        assert_eq!(parsed.password(), Some("p%40ss%2Fw%25rd"));
    }

    #[test]
    fn marker_templates_are_matched_by_rendering() {
        let (u, p) = (placeholder::generate(), placeholder::generate());
        let template = "postgres://db/app?user={{user}}&password={{password}}";
        let value = render_uri(template, &u, &p).unwrap();
        let (spec, pod) = spec_and_pod(
            &[
                ("db.role", "r"),
                ("db.mode", "uri"),
                ("db.env-key-uri", "URL"),
                ("db.template", template),
            ],
            json!([{"name": "URL", "value": value}]),
        );
        let values = plan(&spec, &pod).resolve(&[Some(("u".into(), "a&b".into()))]);
        assert_eq!(values[&u], "u");
        assert_eq!(values[&p], "a%26b");
    }

    #[test]
    fn empty_mapping_when_names_do_not_match() {
        let (spec, pod) = spec_and_pod(
            &[("db.role", "r"), ("db.env-key-dbuser", "DB_USER")],
            json!([{"name": "SOMETHING_ELSE", "value": placeholder::generate()},
                   {"name": "DB_USER", "value": "not-a-placeholder"}]),
        );
        assert!(plan(&spec, &pod).is_empty());
        assert!(pod_has_placeholders(&pod));
        let (_, plain) = spec_and_pod(
            &[("db.role", "r"), ("db.env-key-dbuser", "DB_USER")],
            json!([{"name": "DB_USER", "value": "real"}]),
        );
        assert!(!pod_has_placeholders(&plain));
    }

    #[test]
    fn substitution_reports_changes_no_change_and_residuals() {
        let (a, b, unknown) = (
            placeholder::generate(),
            placeholder::generate(),
            placeholder::generate(),
        );
        let values = PodValues::from([(a.clone(), "s3cret".into()), (b.clone(), "user".into())]);
        let env = vec![
            format!("DB_PASSWORD={a}"),
            format!("DERIVED=postgres://{b}:{a}@h/db"),
            "PLAIN=keep".to_string(),
            "NOVALUE".to_string(),
        ];
        let args = vec!["/app".to_string(), format!("--password={a}")];
        let out = substitute_container(&env, &args, &values).unwrap();
        assert_eq!(
            out.env,
            vec![
                ("DB_PASSWORD".to_string(), "s3cret".to_string()),
                (
                    "DERIVED".to_string(),
                    "postgres://user:s3cret@h/db".to_string()
                ),
            ]
        );
        assert_eq!(
            out.args,
            Some(vec!["/app".to_string(), "--password=s3cret".to_string()])
        );

        let only_unknown = vec![format!("X={unknown}")];
        assert_eq!(
            substitute_container(&only_unknown, &[], &values),
            Err(SubstitutionError::NoChange)
        );
        let mixed = vec![format!("DB_PASSWORD={a}"), format!("X={unknown}")];
        let err = substitute_container(&mixed, &[], &values).unwrap_err();
        assert_eq!(err.reason(), "residual_placeholder");
        assert_eq!(
            err,
            SubstitutionError::Residual {
                keys: vec!["X".into()],
                in_args: false
            }
        );
        // Errors never carry values.
        assert!(!format!("{err:?}").contains("s3cret"));
        assert!(container_has_marker(&mixed, &[]));
        assert!(!container_has_marker(&["A=b".into()], &["x".into()]));
    }

    #[test]
    fn args_support_follows_the_runtime_nri_version() {
        assert!(runtime_adjusts_args("v0.12.3"));
        assert!(runtime_adjusts_args("0.10.0"));
        assert!(runtime_adjusts_args("v1.0.0"));
        assert!(!runtime_adjusts_args("v0.9.1"));
        assert!(!runtime_adjusts_args(""));
        assert!(!runtime_adjusts_args("unknown"));
    }
}
