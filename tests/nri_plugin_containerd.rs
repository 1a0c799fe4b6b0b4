//! The real NRI plugin (`mode: nri`, the NriPlugin actor) registered with a real containerd 2.x
//! (`platform/vdbi-node`), the real platform behind it (kube-apiserver, OpenBao, PostgreSQL).
//!
//! A pod object is created through the apiserver as the webhook writes it in NRI mode
//! (placeholders in the env, the dbConfig annotations, the `uuid` annotation); its sandbox is
//! created through CRI with the pod's UID, as the kubelet does; a container created through CRI
//! then holds real credentials in its OCI config (and its process), while the CRI request and
//! the pod object keep the placeholders. With Vault unreachable, container creation fails
//! instead of starting with a placeholder.
//!
//! Needs both: `platform/vdbi-platform up` and `platform/vdbi-node up` (or `platform/vdbi-node
//! test`); without them the test panics with that instruction.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use vdbi::placeholder;
use vdbi_testkit::node::{strings, Node, Sandbox};
use vdbi_testkit::nri_mode::{start_nri, NriOptions};
use vdbi_testkit::nri_runtime::webhook_nri_pod;
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};
use vdbi_testkit::*;

/// The plugin's pod label here (not `vault-db-injector`, so that the stub-level e2e test's pods
/// on the same containerd are never this plugin's business).
const E2E_LABEL: &str = "vdbi-e2e-nri";

/// The sandbox of an API pod, created through CRI as the kubelet does (the pod's UID).
async fn run_sandbox(node: &Node, pod: &Pod) -> Sandbox {
    let meta = &pod.metadata;
    let (name, namespace) = (
        meta.name.as_deref().unwrap(),
        meta.namespace.as_deref().unwrap(),
    );
    let uid = meta.uid.as_deref().unwrap();
    Sandbox::run(node, name, namespace, uid, &format!("{E2E_LABEL}=true")).await
}

/// The API pod as the webhook writes it in NRI mode, on `node_name`, with a plain env var beside.
fn nri_pod(name: &str, node_name: &str, role: &str, uuid: &str) -> Pod {
    let mut pod = webhook_nri_pod(name, E2E_LABEL, role, uuid);
    let spec = pod.spec.as_mut().unwrap();
    spec.node_name = Some(node_name.to_string());
    spec.containers[0]
        .env
        .get_or_insert_with(Vec::new)
        .push(serde_json::from_value(json!({"name": "PLAIN", "value": "keep"})).unwrap());
    pod
}

/// The env the kubelet sends for the pod's container: `K=V` of the pod spec.
fn kubelet_env(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
        .collect()
}

fn env_value(env: &[String], key: &str) -> String {
    env.iter()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in the env"))
        .to_string()
}

#[actix_rt::test]
async fn real_containerd_gets_credentials_only_inside_the_container() {
    let node = Node::get();
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-ctrd").await;
    ns.service_account("app").await;
    let role = unique_name("nri-ctrd");
    own_role(&root, &p, &role, &ns.name, false).await;
    let prefix = unique_name("t");
    let node_name = unique_name("node");
    let state = tempfile::tempdir().unwrap();
    let nri_options = |vault_address: Option<String>| {
        let mut o = NriOptions::new(&prefix, &node_name, state.path());
        o.socket_path = PathBuf::from(node.var("VDBI_NODE_NRI_SOCK"));
        o.pod_label = E2E_LABEL.into();
        o.plugin_name = unique_name("vdbi-e2e-plugin");
        o.vault_address = vault_address;
        o.prewarm = false;
        o
    };

    // The real plugin registers with containerd.
    let nri = start_nri(&p, nri_options(None)).await;
    nri.wait_registered().await;
    let status = nri
        .running
        .nri_plugin
        .as_ref()
        .unwrap()
        .send(vdbi::actors::nri_plugin::Status)
        .await
        .unwrap();
    eprintln!(
        "registered with {} {} (NRI {:?}, request timeout {:?})",
        status.runtime.runtime_name,
        status.runtime.runtime_version,
        status.runtime.nri_version,
        status.runtime.request_timeout
    );
    assert_eq!(status.runtime.runtime_name, "containerd");

    // The pod object, as the webhook writes it; the sandbox with the pod's UID.
    let id = uuid::Uuid::new_v4().to_string();
    let pods = ns.api::<Pod>();
    let pod = pods
        .create(
            &PostParams::default(),
            &nri_pod("app", &node_name, &role, &id),
        )
        .await
        .expect("pod object");
    let placeholders = kubelet_env(&pod);
    let ph_password = env_value(&placeholders, "DB_PASSWORD");
    assert!(placeholder::is_placeholder(&ph_password));
    let sandbox = run_sandbox(&node, &pod).await;

    // A container whose command line also carries the placeholder (as `$(DB_PASSWORD)` in a pod
    // spec's args would, once the kubelet expanded it).
    let mut args = sandbox.create_args(&node, "app", &placeholders);
    args.extend([
        "--".to_string(),
        "sh".into(),
        "-c".into(),
        "sleep 300".into(),
        format!("--db-password={ph_password}"),
    ]);
    let started = Instant::now();
    let created = node.cri_ok(&args).await;
    let miss = started.elapsed();
    let ctr = created["id"].as_str().unwrap().to_string();
    let inspect = node.cri_ok(&["inspect", &ctr]).await;
    let env = strings(&inspect["env"]);
    let user = env_value(&env, "DB_USER");
    let password = env_value(&env, "DB_PASSWORD");
    assert!(
        !env.iter().any(|e| e.contains("__VDBI_PH_")),
        "OCI env has no placeholder"
    );
    assert_eq!(env_value(&env, "PLAIN"), "keep");
    let oci_args = strings(&inspect["args"]);
    assert!(
        !oci_args.iter().any(|a| a.contains("__VDBI_PH_")),
        "OCI args have no placeholder"
    );
    assert!(oci_args.contains(&format!("--db-password={password}")));
    // What the kubelet sent (the pod spec) still holds the placeholders only.
    let cri_env = strings(&inspect["criEnv"]);
    assert!(cri_env.contains(&format!("DB_PASSWORD={ph_password}")));
    assert!(!cri_env.iter().any(|e| e.contains(&password)));

    // The credentials are real, and the process sees them.
    pg_connect(&p, &user, &password)
        .await
        .expect("the container's credentials log in to PostgreSQL");
    node.cri_ok(&["start", &ctr]).await;
    let out = node
        .cri_ok(&["exec", &ctr, "--", "sh", "-c", "echo \"$DB_PASSWORD\""])
        .await;
    assert_eq!(
        out["stdout"].as_str(),
        Some(format!("{password}\n").as_str())
    );

    // The pod object never holds them; the bookkeeping entry does hold the token and lease.
    let live = pods.get("app").await.unwrap();
    let text = serde_json::to_string(&live).unwrap();
    assert!(!text.contains(&password));
    assert!(text.contains(&ph_password));
    let entry = kv_entry(&root, &p, &prefix, &id).await.expect("KV entry");
    assert!(entry["LeaseId"]
        .as_str()
        .unwrap()
        .starts_with(&format!("databases/creds/{role}/")));
    assert_eq!(entry["NodeName"], node_name.as_str());

    // A second container of the pod: from the cache, the same credentials.
    let mut args = sandbox.create_args(&node, "sidecar", &placeholders);
    args.extend(["--", "sleep", "300"].map(String::from));
    let started = Instant::now();
    let second = node.cri_ok(&args).await;
    let hit = started.elapsed();
    let env2 = strings(
        &node
            .cri_ok(&["inspect", second["id"].as_str().unwrap()])
            .await["env"],
    );
    assert_eq!(env_value(&env2, "DB_PASSWORD"), password);
    assert_eq!(nri.hits("sync"), 1.0);
    assert_eq!(leases(&root, "databases", &role).await.len(), 1);
    eprintln!(
        "CRI CreateContainer wall time (vdbi-cri process + containerd + NRI): miss {miss:?}, hit {hit:?}"
    );

    // Vault unreachable: the plugin is replaced by one pointed at a dead Vault; a new pod's
    // container is refused instead of starting with placeholders.
    nri.running.shutdown().await;
    let dead = start_nri(&p, nri_options(Some("http://127.0.0.1:1".into()))).await;
    dead.wait_registered().await;
    let id2 = uuid::Uuid::new_v4().to_string();
    let pod2 = pods
        .create(
            &PostParams::default(),
            &nri_pod("app2", &node_name, &role, &id2),
        )
        .await
        .expect("pod object");
    let sandbox2 = run_sandbox(&node, &pod2).await;
    let mut args = sandbox2.create_args(&node, "app", &kubelet_env(&pod2));
    args.extend(["--", "sleep", "300"].map(String::from));
    let started = Instant::now();
    let err = node
        .cri(&args)
        .await
        .expect_err("CreateContainer must fail without Vault");
    eprintln!(
        "Vault unreachable: refused after {:?}: {}",
        started.elapsed(),
        err.trim()
    );
    assert!(err.contains("CreateContainer"), "{err}");
    assert!(err.contains("vault-db-injector:"), "{err}");
    let containers = node.cri_ok(&["ps", "-sandbox", &sandbox2.id]).await;
    assert_eq!(
        containers,
        json!([]),
        "no container of the refused pod exists"
    );
    assert_eq!(dead.failures("fetch_error"), 1.0);

    dead.running.shutdown().await;
    for c in [&ctr, second["id"].as_str().unwrap()] {
        let _ = node.cri(&["stop", c]).await;
        let _ = node.cri(&["rm", c]).await;
    }
    let _ = sandbox.remove(&node).await;
    let _ = sandbox2.remove(&node).await;
    let _ = pods
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default(),
        )
        .await;
    ns.cleanup().await;
    drop_role(&root, &p, &role).await;
}
