//! vdbi installed by its own chart, for real, on the kubelet node (`platform/vdbi-kubelet`):
//! `helm install` of `chart/` with the values an operator of a cluster without a pod network
//! writes (`hostNetwork`, a port per listener, the webhook by URL with the chart's generated
//! certificate, client certificates from the apiserver, projected ServiceAccounts + NRI), vdbi's
//! image imported into the node's containerd from its archive, the chart's RBAC as rendered, and
//! Vault roles carrying the published policies (`deploy/vault`), one per component, bound to the
//! component's ServiceAccount: each component logs in with its pod's own mounted token.
//!
//! Then, with nothing but the installed pods serving:
//! - an annotated application pod's process (`vdbi-pgcheck`) logs in to PostgreSQL with the
//!   credentials vdbi gave it (the stored pod holds placeholders only: NRI mode);
//! - `helm upgrade` with a changed value rolls every component; the running pod's credentials
//!   survive it, and a new pod is served by the new pods;
//! - deleting the pods revokes their credentials (roles dropped in PostgreSQL, leases and
//!   bookkeeping gone);
//! - `helm uninstall` leaves no object of the release behind.
//!
//! Each phase's wall time is printed (docs/performance.md). Needs the platform, the node and
//! vdbi's image archive: `platform/vdbi-platform test` provides all three; without them the test
//! panics with that instruction, like the other kubelet tests.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use vdbi_testkit::chart_install::{import_image, NodeRelease};
use vdbi_testkit::chart_rbac::Component;
use vdbi_testkit::kubelet::*;
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};
use vdbi_testkit::*;

/// Pods started and Ready (readiness probes run every 10 s).
const ROLLOUT: Duration = Duration::from_secs(120);
const START: Duration = Duration::from_secs(60);

/// The `vaultDbInjector.configuration.logLevel` of a release's ConfigMaps.
async fn log_levels(rel: &NodeRelease) -> Vec<String> {
    let cms = rel
        .namespace
        .api::<k8s_openapi::api::core::v1::ConfigMap>()
        .list(&Default::default())
        .await
        .unwrap();
    cms.items
        .iter()
        .filter_map(|cm| cm.data.as_ref()?.get("config.yaml"))
        .map(|y| {
            let v: serde_yaml::Value = serde_yaml::from_str(y).unwrap();
            v["logLevel"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[actix_rt::test]
async fn chart_installed_on_the_node_serves_pods_survives_an_upgrade_and_uninstalls_clean() {
    let t_all = Instant::now();
    let p = Platform::get();
    let node = KubeletNode::get();
    let client = p.kube_client().await;
    let root = p.vault_root();
    let t = Instant::now();
    let image = import_image(&node);
    println!(
        "image imported into the node's containerd: {} ms",
        t.elapsed().as_millis()
    );

    // The application side: a namespace, its ServiceAccount, a database role of its own.
    let app = TestNamespace::create(&client, "vdbi-t-chart-app").await;
    app.service_account("app").await;
    root_ca_configmap(&p, &app).await;
    let db_role = unique_name("chart");
    own_role(&root, &p, &db_role, &app.name, false).await;
    let mount = p.var("VDBI_DB_MOUNT");

    // The release.
    let mut rel = NodeRelease::prepare(&p, &client, "vdbi-t-chart").await;
    root_ca_configmap(&p, &rel.namespace).await;
    let mut values = rel.values(&p, &node, &app.name, &image);
    let t = Instant::now();
    rel.apply(&values, false);
    let ready = rel.wait_rolled_out(ROLLOUT).await;
    println!(
        "helm install -> injector, renewer, revoker and NRI pods Ready: {} ms",
        ready.as_millis()
    );
    // Every component logged in to Vault with its own pod's token, to its own role.
    for (component, body) in rel.readiness().await {
        assert_eq!(
            body["checks"]["vault-session"]["status"], "healthy",
            "{component}: {body}"
        );
    }
    for c in [Component::Renewer, Component::Revoker] {
        let m = rel.metrics(c).await;
        assert!(
            m.lines()
                .any(|l| l.starts_with("vdbi_is_leader{") && l.ends_with(" 1")),
            "{c:?} does not lead its Lease:\n{m}"
        );
    }
    rel.wait_webhook_called(&app.name, "app", START).await;
    println!(
        "install to serving (webhook called by the apiserver): {} ms",
        t.elapsed().as_millis()
    );

    // 1. A pod served by the installed release.
    let ann = [
        ("db.role", db_role.as_str()),
        ("db.env-key-dbuser", "DB_USER"),
        ("db.env-key-dbpassword", "DB_PASSWORD"),
    ];
    let sleep = Run {
        restart_policy: "Always",
        then: Then::Sleep,
    };
    let pods = app.api::<k8s_openapi::api::core::v1::Pod>();
    let out_a = Outbox::new();
    let t0 = now_millis();
    let a = pods
        .create(
            &PostParams::default(),
            &app_pod(&node, &p, "a", &out_a, &ann, &[&rel.name], sleep),
        )
        .await
        .expect("pod a admitted");
    let env = env_map(&a, "app");
    assert!(
        vdbi::placeholder::is_placeholder(&env["DB_USER"])
            && vdbi::placeholder::is_placeholder(&env["DB_PASSWORD"]),
        "the stored pod holds credentials: {env:?}"
    );
    let ra = out_a.wait_reports(1, START).await[0].clone();
    assert!(
        ra.logged_in && !ra.placeholder && ra.current_user == ra.user,
        "{ra:?}"
    );
    println!(
        "pod creation -> process logged in with the chart's vdbi: {} ms",
        ra.unix_millis - t0
    );
    let live = pods.get("a").await.unwrap();
    assert!(
        !serde_json::to_string(&live).unwrap().contains(&ra.user),
        "the stored pod names the DB user"
    );

    // 2. helm upgrade: a changed value rolls every component (new ConfigMaps); pod a keeps its
    // credentials, and a new pod is served by the new pods.
    let before: Vec<String> = rel
        .namespace
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    values["vaultDbInjector"]["configuration"]["logLevel"] = "info".into();
    let t = Instant::now();
    rel.apply(&values, true);
    let rolled = rel.wait_rolled_out(ROLLOUT).await;
    println!(
        "helm upgrade -> every component rolled and Ready: {} ms",
        rolled.as_millis()
    );
    assert!(log_levels(&rel).await.iter().all(|l| l == "info"));
    // Pods of the previous revision may still be terminating.
    let after: Vec<_> = rel
        .namespace
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(after.len(), 4, "{}", rel.diagnose().await);
    for pod in &after {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(!before.contains(&name), "{name} was not replaced");
    }
    rel.readiness().await;
    rel.wait_webhook_called(&app.name, "app", START).await;
    println!("upgrade to serving again: {} ms", t.elapsed().as_millis());
    assert!(
        pg_role_exists(&p, &ra.user).await,
        "the upgrade revoked a live pod's credentials"
    );
    let out_b = Outbox::new();
    let t0 = now_millis();
    pods.create(
        &PostParams::default(),
        &app_pod(&node, &p, "b", &out_b, &ann, &[&rel.name], sleep),
    )
    .await
    .expect("pod b admitted after the upgrade");
    let rb = out_b.wait_reports(1, START).await[0].clone();
    assert!(rb.logged_in && !rb.placeholder, "{rb:?}");
    assert_ne!(rb.user, ra.user);
    println!(
        "after the upgrade: pod creation -> process logged in: {} ms",
        rb.unix_millis - t0
    );
    assert_eq!(leases(&root, &mount, &db_role).await.len(), 2);

    // 3. Deleted pods lose their credentials (the kubelet stops them, the revoker revokes).
    let t = Instant::now();
    for name in ["a", "b"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["a", "b"] {
        wait_gone(&pods, name, START).await;
    }
    for user in [&ra.user, &rb.user] {
        wait_role_gone(&p, user, Duration::from_secs(30)).await;
    }
    println!(
        "pods deleted -> both roles dropped in PostgreSQL: {} ms",
        t.elapsed().as_millis()
    );
    assert!(leases(&root, &mount, &db_role).await.is_empty());
    let t = Instant::now();
    while !kv_keys(&root, &p, &rel.name).await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "bookkeeping entries left: {:?}",
            kv_keys(&root, &p, &rel.name).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 4. helm uninstall: nothing of the release is left but the Leases vdbi itself made (its
    // RBAC goes with the release, so a stopping pod cannot hand its Lease back).
    // What the leftover check sees while the release is installed (so it can fail).
    let (installed, _) = rel.leftovers().await;
    for kind in [
        "Deployment ",
        "DaemonSet ",
        "ReplicaSet ",
        "Pod ",
        "ConfigMap ",
        "ServiceAccount ",
        "ClusterRole ",
        "ClusterRoleBinding ",
        "MutatingWebhookConfiguration ",
        "helm release record ",
    ] {
        assert!(
            installed.iter().any(|o| o.starts_with(kind)),
            "no {kind}among {installed:?}"
        );
    }
    let took = rel.uninstall(START).await;
    println!(
        "helm uninstall -> every pod of the release gone: {} ms",
        took.as_millis()
    );
    // The garbage collector may still be removing a ReplicaSet or revision.
    let t = Instant::now();
    let (left, leases_left) = loop {
        let (left, leases_left) = rel.leftovers().await;
        if left.is_empty() || t.elapsed() > Duration::from_secs(30) {
            break (left, leases_left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    assert!(
        leases_left
            .iter()
            .all(|l| l == "lock-injector-renewer" || l == "lock-injector-revoker"),
        "{leases_left:?}"
    );
    // On the node: the NRI plugin's cache file (hostPath on tmpfs), which the operator removes
    // (chart/README.md); cleanup() does here.
    let cache = rel.nri_cache_dir().join("cache.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let v: serde_json::Value = serde_json::from_str(&text).expect("cache file is JSON");
        println!(
            "left on the node: {} ({} pod entries)",
            cache.display(),
            v["pods"].as_object().map_or(0, |m| m.len())
        );
    }

    drop_role(&root, &p, &db_role).await;
    rel.cleanup().await;
    app.cleanup().await;
    println!(
        "chart on the node, whole test: {} ms",
        t_all.elapsed().as_millis()
    );
}
