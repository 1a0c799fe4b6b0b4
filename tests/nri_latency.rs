//! Substitution latency of the NRI plugin, cache miss and cache hit, legacy and projected, as the
//! runtime sees it: CreateContainer over the real wire protocol (unix socket, mux, ttrpc) from
//! the runtime-side peer to vdbi in `mode: nri`, against the real platform (kube-apiserver,
//! OpenBao, PostgreSQL). Prints the figures; asserts only that every request was served.
//!
//! `cargo test --release --test nri_latency -- --nocapture` for representative numbers.

mod common;

use common::nri::{start_nri, NriOptions};
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use vdbi::nri::runtime_peer::{RuntimePeer, RuntimePeerConfig};
use vdbi::nri::{ContainerInfo, PodSandboxInfo};
use vdbi::placeholder;
use vdbi::testing::platform::{unique_name, Platform, TestNamespace};

const MISSES: usize = 20;
const HITS: usize = 500;

fn pod(name: &str, node: &str, role: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {LABEL: "true"},
            "annotations": {
                format!("{PREFIX}db.role"): role,
                format!("{PREFIX}db.env-key-dbuser"): "DB_USER",
                format!("{PREFIX}db.env-key-dbpassword"): "DB_PASSWORD",
                format!("{PREFIX}uuid"): uuid::Uuid::new_v4().to_string(),
            }
        },
        "spec": {
            "serviceAccountName": "app",
            "nodeName": node,
            "containers": [{"name": "app", "image": "busybox", "env": [
                {"name": "DB_USER", "value": placeholder::generate()},
                {"name": "DB_PASSWORD", "value": placeholder::generate()},
                {"name": "DB_URL", "value": "postgres://$(DB_USER):$(DB_PASSWORD)@db/app"}
            ]}]
        }
    }))
    .unwrap()
}

fn request(pod: &Pod) -> (PodSandboxInfo, ContainerInfo) {
    let env = env_map(pod, "app");
    let lines = vec![
        "PATH=/usr/bin:/bin".to_string(),
        format!("DB_USER={}", env["DB_USER"]),
        format!("DB_PASSWORD={}", env["DB_PASSWORD"]),
        // `$(VAR)` expanded by the kubelet.
        format!(
            "DB_URL=postgres://{}:{}@db/app",
            env["DB_USER"], env["DB_PASSWORD"]
        ),
        "HOME=/root".to_string(),
    ];
    let uid = pod.metadata.uid.clone().unwrap();
    (
        PodSandboxInfo {
            id: format!("sb-{uid}"),
            name: pod.metadata.name.clone().unwrap(),
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: Default::default(),
        },
        ContainerInfo {
            id: unique_name("ctr"),
            pod_sandbox_id: format!("sb-{uid}"),
            name: "app".into(),
            env: lines,
            args: vec!["/bin/app".into()],
            ..Default::default()
        },
    )
}

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |f: f64| v[((v.len() as f64 - 1.0) * f).round() as usize].as_secs_f64() * 1e3;
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e3;
    format!(
        "{what:<28} n={:<4} mean {mean:7.2} ms  p50 {:7.2}  p90 {:7.2}  p99 {:7.2}  max {:7.2}",
        v.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    )
}

async fn measure(p: &Platform, projected: bool) -> Vec<String> {
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-bench").await;
    ns.service_account("app").await;
    let role = unique_name("nri-bench");
    own_role(&root, p, &role, &ns.name, false).await;
    let node = unique_name("node");
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(RuntimePeerConfig::new(dir.path().join("nri/nri.sock"))).unwrap();
    let mut o = NriOptions::new(&unique_name("t"), &node, dir.path());
    o.projected = projected;
    o.prewarm = false;
    let nri = start_nri(p, o).await;
    let conn = tokio::time::timeout(Duration::from_secs(15), peer.accept())
        .await
        .expect("plugin connects")
        .expect("registered");
    // vdbi's own Vault login happens once at start; not part of any request.
    for _ in 0..100 {
        if nri
            .running
            .health
            .check("vault-session")
            .is_some_and(|c| c.ready)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let api = ns.api::<Pod>();
    let mut pods = Vec::new();
    for i in 0..MISSES {
        pods.push(
            api.create(&PostParams::default(), &pod(&format!("p{i}"), &node, &role))
                .await
                .unwrap(),
        );
    }
    let mut misses = Vec::new();
    for pod in &pods {
        let (sb, c) = request(pod);
        let t = Instant::now();
        let adj = conn.create_container(&sb, &c).await.expect("miss served");
        misses.push(t.elapsed());
        assert_eq!(adj.set.len(), 3);
    }
    let mut hits = Vec::new();
    for i in 0..HITS {
        let (sb, c) = request(&pods[i % pods.len()]);
        let t = Instant::now();
        let adj = conn.create_container(&sb, &c).await.expect("hit served");
        hits.push(t.elapsed());
        assert_eq!(adj.set.len(), 3);
    }
    // Requests the plugin leaves alone (no placeholder): the price every other container pays.
    let mut skipped = Vec::new();
    for _ in 0..HITS {
        let (sb, mut c) = request(&pods[0]);
        c.env = vec!["PATH=/bin".into(), "HOME=/root".into()];
        let t = Instant::now();
        assert!(conn.create_container(&sb, &c).await.unwrap().is_empty());
        skipped.push(t.elapsed());
    }
    let mode = if projected { "projected" } else { "legacy" };
    let lines = vec![
        summary(&format!("miss ({mode})"), misses),
        summary(&format!("hit ({mode})"), hits),
        summary(&format!("no placeholder ({mode})"), skipped),
    ];
    conn.close();
    nri.running.shutdown().await;
    let _ = api
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default(),
        )
        .await;
    ns.cleanup().await;
    drop_role(&root, p, &role).await;
    lines
}

#[actix_rt::test]
async fn substitution_latency_on_cache_hit_and_miss() {
    let p = Platform::get();
    let mut lines = measure(&p, false).await;
    lines.extend(measure(&p, true).await);
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    eprintln!("\nNRI CreateContainer round trip through the wire protocol ({profile}):");
    for l in &lines {
        eprintln!("  {l}");
    }
}
