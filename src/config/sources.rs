//! Where configuration values come from and go to, driven by the key table
//! ([`super::fields::FIELDS`]): a YAML document, `INJECTOR_*` environment overrides (plus the
//! downward-API pod/node names), and the `check-config` rendering.

use super::fields::{known_paths, Raw, FIELDS};
use super::validate::Problem;
use super::Config;
use std::collections::BTreeMap;

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Applies a YAML document, recording type errors and unknown keys.
pub(super) fn apply_yaml(cfg: &mut Config, doc: &serde_yaml::Value, problems: &mut Vec<Problem>) {
    match doc {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(_) => walk(cfg, doc, "", problems),
        _ => problems.push(Problem::error("", "the config file must be a YAML mapping")),
    }
}

fn walk(cfg: &mut Config, node: &serde_yaml::Value, prefix: &str, problems: &mut Vec<Problem>) {
    let serde_yaml::Value::Mapping(map) = node else {
        return;
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            problems.push(Problem::error(prefix, "keys must be strings"));
            continue;
        };
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(field) = FIELDS.iter().find(|f| f.path == path) {
            let raw = match v {
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Sequence(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        match yaml_scalar(item) {
                            Some(s) => out.push(s),
                            None => {
                                problems.push(Problem::error(&path, "list items must be scalars"));
                            }
                        }
                    }
                    Raw::List(out)
                }
                other => match yaml_scalar(other) {
                    Some(s) => Raw::Scalar(s),
                    None => {
                        problems.push(Problem::error(&path, "expected a value, found a mapping"));
                        continue;
                    }
                },
            };
            if let Err(e) = (field.set)(cfg, raw) {
                problems.push(Problem::error(&path, e.to_string()));
            }
        } else if known_paths().any(|p| p.starts_with(&format!("{path}."))) {
            if v.is_mapping() {
                walk(cfg, v, &path, problems);
            } else if !v.is_null() {
                problems.push(Problem::error(&path, "expected a mapping"));
            }
        } else {
            problems.push(super::unknown::unknown_key(key, prefix));
        }
    }
}

/// Applies `INJECTOR_*` overrides. Only prefixed names count; an unknown `INJECTOR_*` name is
/// reported as a warning (it is probably a typo).
pub(super) fn apply_env(
    cfg: &mut Config,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    for field in FIELDS {
        if let Some(value) = env.get(field.env) {
            if let Err(e) = (field.set)(cfg, Raw::Scalar(value.clone())) {
                problems.push(Problem::error(field.env, e.to_string()));
            }
        }
    }
    for name in env.keys().filter(|k| k.starts_with("INJECTOR_")) {
        if !FIELDS.iter().any(|f| f.env == name) {
            problems.push(Problem::warning(
                name,
                "environment variable is not a vdbi setting and is ignored",
            ));
        }
    }
    for (var, slot) in [
        ("POD_NAME", &mut cfg.pod_name),
        ("POD_NAMESPACE", &mut cfg.pod_namespace),
        ("NODE_NAME", &mut cfg.node_name),
    ] {
        if let Some(v) = env.get(var) {
            *slot = v.clone();
        }
    }
}

/// `key: value` lines of the effective configuration, secrets masked.
pub(super) fn render(cfg: &Config) -> String {
    let mut out = String::new();
    for f in FIELDS {
        let value = (f.get)(cfg);
        let shown = if f.secret && !value.is_empty() {
            "********".to_string()
        } else {
            value
        };
        out.push_str(&format!("{}: {}   # env {}\n", f.path, shown, f.env));
    }
    for (k, v) in [
        ("POD_NAME", &cfg.pod_name),
        ("POD_NAMESPACE", &cfg.pod_namespace),
        ("NODE_NAME", &cfg.node_name),
    ] {
        out.push_str(&format!("# {k}={v}\n"));
    }
    out
}
