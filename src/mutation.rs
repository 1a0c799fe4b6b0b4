//! Building the admission JSON patch: env vars into the targeted init and main containers
//! (an existing variable of the same name is replaced in place, not appended) and the `uuid`
//! annotation. Pure: no I/O, no secrets logged.

use crate::annotations::{render_uri, CredentialMode, PodDbSpec, TemplateError, UUID_KEY};
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

/// The values written for one dbConfig: real credentials (classic/projected) or placeholders (NRI).
#[derive(Clone)]
pub struct InjectedValues {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for InjectedValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectedValues")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    #[error("dbConfig {db:?}: cannot build the connection URI: {reason}")]
    Uri { db: String, reason: TemplateError },
    #[error("{given} credential sets given for {expected} dbConfigs")]
    Arity { expected: usize, given: usize },
}

/// The env vars one container receives, in dbConfig order.
fn env_for(
    spec: &PodDbSpec,
    values: &[InjectedValues],
    container: &str,
) -> Result<Vec<(String, String)>, MutationError> {
    let mut out = Vec::new();
    for (cfg, v) in spec.configs.iter().zip(values) {
        if !cfg.targets(container) {
            continue;
        }
        match cfg.mode {
            CredentialMode::Classic => {
                out.extend(cfg.user_env.iter().map(|n| (n.clone(), v.username.clone())));
                out.extend(
                    cfg.password_env
                        .iter()
                        .map(|n| (n.clone(), v.password.clone())),
                );
            }
            CredentialMode::Uri => {
                let template = cfg.template.as_deref().unwrap_or_default();
                let uri = render_uri(template, &v.username, &v.password).map_err(|reason| {
                    MutationError::Uri {
                        db: cfg.name.clone(),
                        reason,
                    }
                })?;
                out.extend(cfg.uri_env.iter().map(|n| (n.clone(), uri.clone())));
            }
        }
    }
    Ok(out)
}

/// Sets `vars` in `env`: same-name entries are replaced in place (their `valueFrom` dropped),
/// others appended.
pub fn merge_env(env: &mut Vec<EnvVar>, vars: &[(String, String)]) {
    for (name, value) in vars {
        let fresh = EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        };
        let mut replaced = false;
        env.retain_mut(|e| {
            if e.name != *name {
                return true;
            }
            if replaced {
                return false; // drop later duplicates so exactly one remains
            }
            *e = fresh.clone();
            replaced = true;
            true
        });
        if !replaced {
            env.push(fresh);
        }
    }
}

fn container_ops(
    kind: &str,
    containers: &[Container],
    spec: &PodDbSpec,
    values: &[InjectedValues],
    ops: &mut Vec<PatchOperation>,
) -> Result<(), MutationError> {
    for (i, c) in containers.iter().enumerate() {
        let vars = env_for(spec, values, &c.name)?;
        if vars.is_empty() {
            continue;
        }
        let mut env = c.env.clone().unwrap_or_default();
        merge_env(&mut env, &vars);
        let path = PointerBuf::from_tokens(["spec", kind, &i.to_string(), "env"]);
        let value = serde_json::to_value(&env).expect("EnvVar serialises");
        ops.push(if c.env.is_some() {
            PatchOperation::Replace(ReplaceOperation { path, value })
        } else {
            PatchOperation::Add(AddOperation { path, value })
        });
    }
    Ok(())
}

/// The JSON patch for an admitted pod: env vars and the `uuid` annotation (always written,
/// overwriting any user value).
pub fn build_patch(
    pod: &Pod,
    spec: &PodDbSpec,
    values: &[InjectedValues],
    uuids: &[String],
) -> Result<Patch, MutationError> {
    if values.len() != spec.configs.len() {
        return Err(MutationError::Arity {
            expected: spec.configs.len(),
            given: values.len(),
        });
    }
    let mut ops = Vec::new();
    if let Some(pod_spec) = &pod.spec {
        if let Some(init) = &pod_spec.init_containers {
            container_ops("initContainers", init, spec, values, &mut ops)?;
        }
        container_ops("containers", &pod_spec.containers, spec, values, &mut ops)?;
    }
    let joined = uuids.join(",");
    if pod.metadata.annotations.is_some() {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", UUID_KEY]),
            value: serde_json::Value::String(joined),
        }));
    } else {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: serde_json::json!({ UUID_KEY: joined }),
        }));
    }
    Ok(Patch(ops))
}

/// Names of every init and main container of a pod.
pub fn container_names(pod: &Pod) -> Vec<String> {
    all_containers(pod).map(|c| c.name.clone()).collect()
}

/// Every init and main container of a pod, init containers first.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|spec| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{parse, PodContract, PREFIX};
    use std::collections::BTreeMap;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let a: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "annotations": a},
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [
                    {"name": "app", "env": [{"name": "DB_USER", "value": "old"}, {"name": "KEEP", "value": "k"}]},
                    {"name": "sidecar"}
                ]
            }
        }))
        .unwrap()
    }

    fn spec_of(p: &Pod) -> PodDbSpec {
        let a = p.metadata.annotations.clone().unwrap();
        match parse(&a, "databases").unwrap() {
            PodContract::Databases(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn apply(p: &Pod, patch: &Patch) -> Pod {
        let mut doc = serde_json::to_value(p).unwrap();
        json_patch::patch(&mut doc, patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn replaces_in_place_appends_new_and_targets_all_containers() {
        let p = pod(&[
            ("db.role", "r"),
            ("db.env-key-dbuser", "DB_USER"),
            ("db.env-key-dbpassword", "DB_PASS"),
        ]);
        let s = spec_of(&p);
        let v = [InjectedValues {
            username: "u1".into(),
            password: "p1".into(),
        }];
        let out = apply(&p, &build_patch(&p, &s, &v, &["id-1".into()]).unwrap());
        let spec = out.spec.unwrap();
        assert_eq!(
            env_of(&spec.containers[0]),
            vec![
                ("DB_USER".into(), "u1".into()),
                ("KEEP".into(), "k".into()),
                ("DB_PASS".into(), "p1".into())
            ]
        );
        assert_eq!(env_of(&spec.containers[1]).len(), 2);
        assert_eq!(env_of(&spec.init_containers.unwrap()[0]).len(), 2);
        assert_eq!(out.metadata.annotations.unwrap()[UUID_KEY], "id-1");
    }

    #[test]
    fn containers_annotation_limits_targets_and_two_configs() {
        let p = pod(&[
            ("a.role", "r"),
            ("a.env-key-dbuser", "A_USER"),
            ("a.containers", "sidecar"),
            ("b.role", "r"),
            ("b.mode", "uri"),
            ("b.env-key-uri", "B_URL"),
            ("b.template", "postgres://@db:5432/app"),
        ]);
        let s = spec_of(&p);
        let v = [
            InjectedValues {
                username: "ua".into(),
                password: "pa".into(),
            },
            InjectedValues {
                username: "ub".into(),
                password: "p@b".into(),
            },
        ];
        let out = apply(
            &p,
            &build_patch(&p, &s, &v, &["u1".into(), "u2".into()]).unwrap(),
        );
        let spec = out.spec.unwrap();
        let app = env_of(&spec.containers[0]);
        assert!(!app.iter().any(|(n, _)| n == "A_USER"));
        assert!(app.contains(&("B_URL".into(), "postgres://ub:p%40b@db:5432/app".into())));
        let side = env_of(&spec.containers[1]);
        assert!(side.contains(&("A_USER".into(), "ua".into())));
        assert_eq!(out.metadata.annotations.unwrap()[UUID_KEY], "u1,u2");
    }

    #[test]
    fn pod_without_annotations_map_gets_one() {
        let mut p = pod(&[("db.role", "r"), ("db.env-key-dbuser", "U")]);
        let s = spec_of(&p);
        p.metadata.annotations = None;
        let v = [InjectedValues {
            username: "u".into(),
            password: "p".into(),
        }];
        let out = apply(&p, &build_patch(&p, &s, &v, &["x".into()]).unwrap());
        assert_eq!(out.metadata.annotations.unwrap()[UUID_KEY], "x");
    }

    #[test]
    fn merge_env_drops_duplicates() {
        let mut env = vec![
            EnvVar {
                name: "A".into(),
                value: Some("1".into()),
                value_from: None,
            },
            EnvVar {
                name: "A".into(),
                value: Some("2".into()),
                value_from: None,
            },
        ];
        merge_env(&mut env, &[("A".into(), "3".into())]);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].value.as_deref(), Some("3"));
    }
}
