//! vdbi runs with the rights an operator gives it, never more: the chart's RBAC and the published
//! Vault policies. The harness refuses the platform's admin identity and roles with other
//! policies, and no test, demo or load scenario gives vdbi the admin kubeconfig or starts it
//! around the harness.

use std::path::Path;
use vdbi_testkit::chart_rbac::{
    assert_least_privilege, kinds, published_policies, render_rbac, whoami, ChartRelease, Component,
};
use vdbi_testkit::platform::Platform;

/// Every source file under `dir` (recursively) with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn no_test_demo_or_scenario_hands_vdbi_admin_credentials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in [
        "tests",
        "examples",
        "loadtest/src",
        "crates/vdbi-testkit/src",
    ] {
        sources(&root.join(d), &mut files);
    }
    let this = file!().rsplit('/').next().unwrap();
    let mut bad = Vec::new();
    for (path, text) in &files {
        if path.ends_with(this) {
            continue;
        }
        // The admin kubeconfig may serve the test itself (set-up, counting), never vdbi's process
        // environment.
        for needle in [
            "set_var(\"KUBECONFIG\"",
            ".env(\"KUBECONFIG\", p.var(\"KUBECONFIG\")",
            "unwrap_or_else(|| p.var(\"KUBECONFIG\"))",
        ] {
            if text.contains(needle) {
                bad.push(format!("{path}: {needle}"));
            }
        }
        // vdbi started in-process around the guard.
        let starts = text.contains("runtime::start(")
            || text.contains("runtime::{start,")
            || text.contains("start_with_metrics(")
            || text.contains("start_with(");
        if starts && !text.contains("assert_least_privilege") {
            bad.push(format!(
                "{path}: starts vdbi without vdbi_testkit::launch::start_vdbi or assert_least_privilege"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "admin credentials for vdbi:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_chart_rbac_renders_what_the_harness_applies() {
    let objs = render_rbac("vdbi-render-check", "vdbi-render-ns");
    let k = kinds(&objs);
    assert_eq!(k.get("ServiceAccount"), Some(&4), "{k:?}");
    assert!(k.get("ClusterRole").is_some_and(|n| *n >= 3), "{k:?}");
    assert!(k.get("Role").is_some_and(|n| *n >= 2), "{k:?}");
    let pod_watcher = objs
        .iter()
        .find(|o| o["metadata"]["name"] == "vdbi-render-check-pod-watcher")
        .expect("the renewer/revoker ClusterRole");
    assert_eq!(
        pod_watcher["rules"][0]["verbs"],
        serde_json::json!(["list", "watch"])
    );
    let published = published_policies();
    for c in [
        Component::Injector,
        Component::Renewer,
        Component::Revoker,
        Component::Nri,
        Component::All,
    ] {
        for pol in c.policies() {
            assert!(
                published.iter().any(|p| p == pol),
                "{pol} not in deploy/vault"
            );
        }
    }
}

#[actix_rt::test]
async fn the_guard_refuses_the_admin_identity_and_unpublished_policies() {
    let p = Platform::get();
    let admin = p.kube_client().await;
    let (user, groups) = whoami(&admin).await;
    assert!(
        groups.iter().any(|g| g == "system:masters"),
        "{user} {groups:?}"
    );
    let rel = ChartRelease::install(&p, &admin, "lp-guard").await;
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");
    // The chart's identity and a published role pass.
    let revoker = rel.kube_client(Component::Revoker).await;
    let (user, _) = whoami(&revoker).await;
    assert_eq!(
        user,
        format!(
            "system:serviceaccount:{}:{}",
            rel.namespace.name,
            rel.service_account(Component::Revoker)
        )
    );
    assert_least_privilege(
        &p,
        Some(&revoker),
        &mount,
        &[&rel.vault_role(Component::Revoker)],
    )
    .await;
    // The admin kubeconfig is refused.
    let (p2, m2) = (p.clone(), mount.clone());
    let refused = tokio::spawn(async move {
        assert_least_privilege(&p2, Some(&admin), &m2, &[]).await;
    })
    .await;
    assert!(
        refused.is_err_and(|e| e.is_panic()),
        "admin identity accepted"
    );
    // A role with a policy that is not published is refused.
    let root = p.vault_root();
    let wide = format!("{}-wide", rel.fullname);
    root.write(
        &format!("auth/{mount}/role/{wide}"),
        &serde_json::json!({
            "bound_service_account_names": ["x"],
            "bound_service_account_namespaces": ["x"],
            "token_policies": ["vdbi-revoker", "root-like"],
        }),
    )
    .await;
    let (p3, m3, w3) = (p.clone(), mount.clone(), wide.clone());
    let refused = tokio::spawn(async move {
        assert_least_privilege(&p3, None, &m3, &[&w3]).await;
    })
    .await;
    assert!(
        refused.is_err_and(|e| e.is_panic()),
        "unpublished policy accepted"
    );
    root.request(
        reqwest::Method::DELETE,
        &format!("auth/{mount}/role/{wide}"),
        None,
    )
    .await;
    rel.cleanup().await;
}
