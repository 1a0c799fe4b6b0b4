//! The runtime's side of the NRI wire protocol, as containerd drives a plugin: the peer's
//! socket, the sandbox and container descriptions it sends for an API pod, and what the plugin's
//! answer sets.

use crate::platform::{unique_name, Platform, VaultRoot};
use k8s_openapi::api::core::v1::Pod;
use nri::runtime_peer::{PluginConnection, RuntimePeer, RuntimePeerConfig};
use nri::{ContainerInfo, EnvAdjustment, PodSandboxInfo};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A peer listening at `<dir>/nri/nri.sock`, introducing itself as containerd.
pub fn peer_config(dir: &Path) -> RuntimePeerConfig {
    let mut c = RuntimePeerConfig::new(dir.join("nri/nri.sock"));
    c.runtime.runtime_name = "containerd".into();
    c.runtime.nri_version = "v0.12.3".into();
    c
}

/// The next plugin's connection (registration, configure and synchronize done), within 15 s.
pub async fn accept(peer: &RuntimePeer) -> PluginConnection {
    tokio::time::timeout(Duration::from_secs(15), peer.accept())
        .await
        .expect("the plugin connects within 15 s")
        .expect("registration, configure and synchronize")
}

/// What containerd sends for a container: the image env, then the pod spec's env.
pub fn runtime_container(pod: &Pod, container: &str) -> ContainerInfo {
    let env = crate::env_map(pod, container);
    let spec = pod.spec.as_ref().unwrap();
    let order = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == container)
        .unwrap()
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect::<Vec<_>>();
    let mut lines = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
    lines.extend(order.iter().map(|k| format!("{k}={}", env[k])));
    ContainerInfo {
        id: unique_name("ctr"),
        pod_sandbox_id: format!("sb-{}", pod.metadata.uid.as_deref().unwrap_or("")),
        name: container.to_string(),
        env: lines,
        args: vec!["/bin/app".into(), "--serve".into()],
        ..Default::default()
    }
}

/// A pod as the webhook writes it in NRI mode, labelled `label=true`, service account `app`: one
/// dbConfig (`role`) whose `DB_USER`/`DB_PASSWORD` hold placeholders in the `app` container's env,
/// and the `uuid` annotation. Callers place it (`nodeName`, `schedulerName`) as they need.
pub fn webhook_nri_pod(name: &str, label: &str, role: &str, uuid: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {label: "true"},
            "annotations": {
                format!("{}db.role", crate::PREFIX): role,
                format!("{}db.env-key-dbuser", crate::PREFIX): "DB_USER",
                format!("{}db.env-key-dbpassword", crate::PREFIX): "DB_PASSWORD",
                format!("{}uuid", crate::PREFIX): uuid,
            }
        },
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": "busybox", "env": [
                {"name": "DB_USER", "value": vdbi::placeholder::generate()},
                {"name": "DB_PASSWORD", "value": vdbi::placeholder::generate()}
            ]}]
        }
    }))
    .unwrap()
}

/// The sandbox of an API pod, as containerd describes it.
pub fn sandbox(pod: &Pod) -> PodSandboxInfo {
    PodSandboxInfo {
        id: format!("sb-{}", pod.metadata.uid.as_deref().unwrap_or("")),
        name: pod.metadata.name.clone().unwrap(),
        uid: pod.metadata.uid.clone().unwrap(),
        namespace: pod.metadata.namespace.clone().unwrap(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// The env the plugin's answer sets.
pub fn adjusted(adj: &EnvAdjustment) -> BTreeMap<String, String> {
    adj.set.iter().cloned().collect()
}

/// The reservation a webhook writes for a uuid in NRI mode (set-up, root; service account
/// `app`).
pub async fn reserve(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
    uuid: &str,
    ns: &str,
    pod: &str,
) {
    root.write(
        &format!(
            "{}/data/{}",
            p.var("VDBI_KV_MOUNT"),
            vdbi::bookkeeping::reservation_path(prefix, uuid)
        ),
        &json!({"data": {"LeaseId": "", "TokenId": "", "Namespace": ns,
            "ServiceAccountName": "app", "PodName": pod, "NodeName": ""}}),
    )
    .await;
}
