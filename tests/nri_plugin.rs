//! The NRI plugin (`mode: nri`) against the real platform (OpenBao, PostgreSQL, kube-apiserver),
//! driven over the real NRI wire protocol (unix socket, mux, ttrpc) by the runtime-side peer.
//!
//! Pods are admitted by the real webhook in NRI mode or created directly with placeholders and
//! a `uuid` annotation as the webhook writes them; the peer then sends CreateContainer as
//! containerd would (the pod's env, `$(VAR)` already expanded, plus the image's env).

use vdbi_testkit::admitting;

use ::nri::runtime_peer::RuntimePeer;
use ::nri::{EnvAdjustment, NriError};
use admitting::{app_login, Admitting};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vdbi::actors::credential_cache::Flush;
use vdbi::actors::nri_plugin::{Status, Sweep};
use vdbi::placeholder;
use vdbi_testkit::nri_mode::{start_nri, NriOptions};
use vdbi_testkit::nri_runtime::{
    accept, adjusted, peer_config, reserve, runtime_container, sandbox,
};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};
use vdbi_testkit::*;

// ---------------------------------------------------------------------------------------------
// Harness

/// A labelled pod as the webhook writes it in NRI mode: one classic dbConfig per `(db, role)`,
/// each with its own placeholder pair in `<DB>_USER` / `<DB>_PASSWORD` of every container, and
/// the `uuid` annotation. Returns the pod and `(user placeholder, password placeholder)` per db.
fn webhook_like_pod(
    name: &str,
    service_account: &str,
    node: &str,
    dbs: &[(&str, &str)],
    uuids: &[&str],
) -> (Pod, Vec<(String, String)>) {
    let mut annotations = BTreeMap::new();
    let mut env = Vec::new();
    let mut phs = Vec::new();
    for (db, role) in dbs {
        let up = db.to_uppercase();
        annotations.insert(format!("{PREFIX}{db}.role"), role.to_string());
        annotations.insert(format!("{PREFIX}{db}.env-key-dbuser"), format!("{up}_USER"));
        annotations.insert(
            format!("{PREFIX}{db}.env-key-dbpassword"),
            format!("{up}_PASSWORD"),
        );
        let (u, pw) = (placeholder::generate(), placeholder::generate());
        env.push(json!({"name": format!("{up}_USER"), "value": u}));
        env.push(json!({"name": format!("{up}_PASSWORD"), "value": pw}));
        phs.push((u, pw));
    }
    annotations.insert(format!("{PREFIX}uuid"), uuids.join(","));
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {LABEL: "true"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": service_account,
            "nodeName": node,
            "initContainers": [{"name": "init", "image": "busybox", "env": env}],
            "containers": [
                {"name": "app", "image": "busybox", "env": env},
                {"name": "sidecar", "image": "busybox", "env": env}
            ]
        }
    }))
    .unwrap();
    (pod, phs)
}

fn refusal(r: Result<EnvAdjustment, NriError>) -> String {
    match r {
        Err(NriError::Status { message, .. }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn create_pod(ns: &TestNamespace, pod: &Pod) -> Pod {
    ns.api::<Pod>()
        .create(&PostParams::default(), pod)
        .await
        .expect("create pod")
}

/// Pods bound to a node are deleted gracefully by the kubelet, which the platform lacks.
async fn force_delete_pods(ns: &TestNamespace) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = ns
        .api::<Pod>()
        .delete_collection(&dp, &ListParams::default())
        .await;
}

// ---------------------------------------------------------------------------------------------
// Tests

/// The whole path: the webhook writes placeholders; the plugin turns them into real credentials
/// (classic and URI, the URI password percent-encoded) inside the container only; a second
/// container is served from the cache; the pod object never holds a credential.
#[actix_rt::test]
async fn webhook_placeholders_become_working_credentials_in_the_container_only() {
    let adm = Admitting::start("nri-e2e", |o| o.nri = true).await;
    let (p, root, ns, injector) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi);
    let classic_role = unique_name("nri-c");
    let uri_role = unique_name("nri-u");
    own_role(root, p, &classic_role, &ns.name, false).await;
    own_role(root, p, &uri_role, &ns.name, true).await;

    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let node = unique_name("node");
    let mut o = NriOptions::new(&injector.prefix, &node, dir.path());
    o.prewarm = false; // this test counts hits and misses of CreateContainer itself
    let nri = start_nri(p, o).await;
    let conn = accept(&peer).await;
    assert_eq!(conn.registration.plugin_name, "vault-db-injector");
    assert_eq!(conn.registration.plugin_idx, "10");
    eventually("readiness check nri", Duration::from_secs(5), || async {
        nri.running.health.check("nri").is_some_and(|c| c.ready)
    })
    .await;

    let template = format!(
        "postgres://@{}:{}/{}?sslmode=disable",
        p.var("VDBI_PG_HOST"),
        p.var("VDBI_PG_PORT"),
        p.var("VDBI_PG_DATABASE")
    );
    let mut pod = pod(
        "app",
        "app",
        &[
            ("main.role", &classic_role),
            ("main.env-key-dbuser", "DB_USER"),
            ("main.env-key-dbpassword", "DB_PASSWORD"),
            ("reporting.role", &uri_role),
            ("reporting.mode", "uri"),
            ("reporting.env-key-uri", "REPORTING_URL"),
            ("reporting.template", &template),
        ],
    );
    pod.spec.as_mut().unwrap().node_name = Some(node.clone());
    let stored = create_pod(ns, &pod).await;
    let spec_env = env_map(&stored, "app");
    assert!(placeholder::is_placeholder(&spec_env["DB_PASSWORD"]));
    assert!(placeholder::contains_marker(&spec_env["REPORTING_URL"]));
    let ids = uuids(&stored);
    assert_eq!(ids.len(), 2);

    // A container whose args use $(DB_PASSWORD): the kubelet expanded it, so they hold the
    // placeholder too; this runtime (NRI v0.12.3) applies args adjustments.
    let mut app = runtime_container(&stored, "app");
    app.args = vec![
        "/bin/app".into(),
        format!("--db-password={}", spec_env["DB_PASSWORD"]),
    ];
    let started = Instant::now();
    let adj = conn
        .create_container(&sandbox(&stored), &app)
        .await
        .expect("credentials substituted");
    let miss_ms = started.elapsed().as_secs_f64() * 1e3;
    let set = adjusted(&adj);
    let keys: Vec<&str> = set.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["DB_PASSWORD", "DB_USER", "REPORTING_URL"],
        "only the changed keys"
    );
    assert!(!set.values().any(|v| placeholder::contains_marker(v)));
    let args = adj.args.clone().expect("args replaced");
    assert_eq!(args[1], format!("--db-password={}", set["DB_PASSWORD"]));

    // The credentials are real: classic, and the URI as is (percent-decoded by the client).
    let db = pg_connect(p, &set["DB_USER"], &set["DB_PASSWORD"])
        .await
        .expect("classic credentials log in");
    let who: String = db
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, set["DB_USER"]);
    let url = url::Url::parse(&set["REPORTING_URL"]).unwrap();
    let raw_password = percent_encoding::percent_decode_str(url.password().unwrap())
        .decode_utf8()
        .unwrap()
        .to_string();
    assert!(
        raw_password.chars().any(|c| "@:/%?#&+".contains(c)),
        "the special role's password has reserved characters"
    );
    assert_ne!(url.password().unwrap(), raw_password, "percent-encoded");
    let (uri_client, conn_task) = tokio_postgres::connect(
        &format!("{}&connect_timeout=5", set["REPORTING_URL"]),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the URI logs in as it is");
    tokio::spawn(conn_task);
    uri_client.query_one("select 1", &[]).await.unwrap();

    // Bookkeeping: the webhook's reservations now hold the issued token and lease.
    for (id, role) in ids.iter().zip([&classic_role, &uri_role]) {
        let e = kv_entry(root, p, &injector.prefix, id)
            .await
            .expect("entry");
        assert!(
            e["LeaseId"]
                .as_str()
                .unwrap()
                .starts_with(&format!("databases/creds/{role}/")),
            "{}",
            e["LeaseId"]
        );
        assert_ne!(e["TokenId"], "");
        assert_eq!(e["PodName"], "app");
        assert_eq!(e["NodeName"], node.as_str());
        assert_eq!(e["Namespace"], ns.name.as_str());
        assert_eq!(e["ServiceAccountName"], "app");
    }
    assert_eq!(leases(root, "databases", &classic_role).await.len(), 1);
    assert_eq!(nri.hits("sync"), 0.0);

    // Second and init containers: cache hits, the same credentials, nothing new in Vault.
    for c in ["sidecar", "init"] {
        let started = Instant::now();
        let adj = conn
            .create_container(&sandbox(&stored), &runtime_container(&stored, c))
            .await
            .expect("hit");
        eprintln!(
            "CreateContainer {c}: {:.2} ms (hit); first container: {miss_ms:.1} ms (miss)",
            started.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(adjusted(&adj)["DB_PASSWORD"], set["DB_PASSWORD"]);
        assert!(adj.args.is_none(), "args without placeholders untouched");
    }
    assert_eq!(nri.hits("sync"), 2.0);
    assert_eq!(
        nri.metric(|m| m.count("vdbi_nri_substitutions_total", &[])),
        3.0
    );
    assert_eq!(leases(root, "databases", &classic_role).await.len(), 1);

    // The pod object never holds a credential.
    let live = ns.api::<Pod>().get("app").await.unwrap();
    let text = serde_json::to_string(&live).unwrap();
    assert!(!text.contains(&set["DB_PASSWORD"]));
    assert!(!text.contains(&raw_password));
    assert_eq!(
        env_map(&live, "app")["DB_PASSWORD"],
        spec_env["DB_PASSWORD"]
    );

    // An unlabelled pod and a container without placeholders are left alone.
    let mut unlabelled = sandbox(&stored);
    unlabelled.labels.clear();
    assert!(conn
        .create_container(&unlabelled, &app)
        .await
        .unwrap()
        .is_empty());
    let mut plain = runtime_container(&stored, "app");
    plain.env = vec!["A=b".into()];
    assert!(conn
        .create_container(&sandbox(&stored), &plain)
        .await
        .unwrap()
        .is_empty());

    // The cache reaches the file.
    let cache = nri.running.credential_cache.as_ref().unwrap();
    cache.send(Flush).await.unwrap().unwrap();
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&nri.cache_path).unwrap()).unwrap();
    assert_eq!(file["version"], 1);
    assert!(file["pods"][stored.metadata.uid.as_deref().unwrap()].is_object());

    // RemovePodSandbox evicts; a new sandbox of the pod gets new credentials and the previous
    // ones (no container of the old sandbox is left) are revoked, not left unmanaged.
    let old_lease = kv_entry(root, p, &injector.prefix, &ids[0]).await.unwrap()["LeaseId"]
        .as_str()
        .unwrap()
        .to_string();
    conn.remove_pod_sandbox(&sandbox(&stored)).await.unwrap();
    assert!(nri.uids().await.is_empty(), "evicted");
    let again = conn
        .create_container(&sandbox(&stored), &runtime_container(&stored, "app"))
        .await
        .expect("new sandbox, new credentials");
    assert_ne!(adjusted(&again)["DB_PASSWORD"], set["DB_PASSWORD"]);
    let new_lease = kv_entry(root, p, &injector.prefix, &ids[0]).await.unwrap()["LeaseId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_lease, old_lease);
    // The token is revoked in the background (the plugin's undo, on the paced lane) and Vault
    // then revokes its lease, dropping the PostgreSQL user: bounded, but slower on a loaded node.
    eventually(
        "the superseded lease is revoked",
        Duration::from_secs(30),
        || async {
            let l = leases(root, "databases", &classic_role).await;
            l.len() == 1 && new_lease.ends_with(&l[0])
        },
    )
    .await;
    assert!(
        pg_connect(p, &set["DB_USER"], &set["DB_PASSWORD"])
            .await
            .is_err(),
        "superseded credentials no longer log in"
    );

    conn.close();
    nri.running.shutdown().await;
    force_delete_pods(ns).await;
    drop_role(root, p, &classic_role).await;
    drop_role(root, p, &uri_role).await;
    adm.stop().await;
}

/// Concurrent CreateContainer misses for one pod share one fetch: one lease in Vault.
#[actix_rt::test]
async fn concurrent_misses_for_one_pod_share_one_fetch() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-sf").await;
    ns.service_account("app").await;
    let role = unique_name("nri-sf");
    own_role(&root, &p, &role, &ns.name, false).await;
    let prefix = unique_name("t");
    let node = unique_name("node");
    let id = new_uuid();
    let (pod, _) = webhook_like_pod("burst", "app", &node, &[("db", &role)], &[&id]);
    let stored = create_pod(&ns, &pod).await;
    reserve(&root, &p, &prefix, &id, &ns.name, "burst").await;

    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.prewarm = false;
    let nri = start_nri(&p, o).await;
    let conn = accept(&peer).await;

    let n = 8;
    let calls = (0..n).map(|_| {
        let c = runtime_container(&stored, "app");
        let sb = sandbox(&stored);
        let conn = &conn;
        async move { conn.create_container(&sb, &c).await }
    });
    let results = futures::future::join_all(calls).await;
    let passwords: std::collections::HashSet<String> = results
        .into_iter()
        .map(|r| adjusted(&r.expect("served"))["DB_PASSWORD"].clone())
        .collect();
    assert_eq!(
        passwords.len(),
        1,
        "every container got the same credentials"
    );
    assert_eq!(
        leases(&root, "databases", &role).await.len(),
        1,
        "one fetch"
    );
    let shared = nri.metric(|m| m.count("vdbi_nri_resolve_duplicate_total", &[]));
    eprintln!(
        "{n} concurrent misses: {shared} joined the fetch in flight, {} served from the cache",
        nri.hits("sync")
    );
    assert!(shared >= 1.0, "at least one request joined the fetch");
    assert_eq!(shared + nri.hits("sync"), (n - 1) as f64);

    conn.close();
    nri.running.shutdown().await;
    force_delete_pods(&ns).await;
    ns.cleanup().await;
    drop_role(&root, &p, &role).await;
}

/// Every failure refuses the container with a `vault-db-injector:` message and the right
/// reason, and leaves nothing behind: tokens revoked, leases gone, reservations restored.
#[actix_rt::test]
async fn failures_refuse_the_container_and_leave_nothing_behind() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-fail").await;
    ns.service_account("app").await;
    let good = unique_name("nri-ok");
    let ghost = unique_name("nri-ghost");
    own_role(&root, &p, &good, &ns.name, false).await;
    // k8s-auth role and policy, but no DB role: the orphan token is created, the creds read
    // fails.
    own_role(&root, &p, &ghost, &ns.name, false).await;
    root.request(
        reqwest::Method::DELETE,
        &format!("{}/roles/{ghost}", p.var("VDBI_DB_MOUNT")),
        None,
    )
    .await;
    let prefix = unique_name("t");
    let node = unique_name("node");
    let dir = tempfile::tempdir().unwrap();
    let mut pc = peer_config(dir.path());
    pc.runtime.nri_version = String::new(); // a runtime before NRI v0.12: no args adjustment
    let peer = RuntimePeer::bind(pc).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.prewarm = false;
    let nri = start_nri(&p, o).await;
    let conn = accept(&peer).await;

    // 1. Unknown Vault role.
    let (pod1, _) = webhook_like_pod(
        "unknown-role",
        "app",
        &node,
        &[("db", "no-such-role")],
        &[&new_uuid()],
    );
    let pod1 = create_pod(&ns, &pod1).await;
    let msg = refusal(
        conn.create_container(&sandbox(&pod1), &runtime_container(&pod1, "app"))
            .await,
    );
    assert!(msg.starts_with("vault-db-injector: "), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert_eq!(nri.failures("fetch_error"), 1.0);

    // 2. Sandbox UID ≠ API UID (a pod name reused): refused before any Vault call.
    let (pod2, _) = webhook_like_pod("reused", "app", &node, &[("db", &good)], &[&new_uuid()]);
    let pod2 = create_pod(&ns, &pod2).await;
    let mut sb = sandbox(&pod2);
    sb.uid = uuid::Uuid::new_v4().to_string();
    let msg = refusal(
        conn.create_container(&sb, &runtime_container(&pod2, "app"))
            .await,
    );
    assert!(msg.contains("UID"), "{msg}");
    assert!(leases(&root, "databases", &good).await.is_empty());

    // 3. Two dbConfigs, the second fails after the first was issued: all undone.
    let (id_a, id_b) = (new_uuid(), new_uuid());
    let (pod3, _) = webhook_like_pod(
        "half",
        "app",
        &node,
        &[("a", &good), ("b", &ghost)],
        &[&id_a, &id_b],
    );
    let pod3 = create_pod(&ns, &pod3).await;
    reserve(&root, &p, &prefix, &id_a, &ns.name, "half").await;
    reserve(&root, &p, &prefix, &id_b, &ns.name, "half").await;
    let msg = refusal(
        conn.create_container(&sandbox(&pod3), &runtime_container(&pod3, "app"))
            .await,
    );
    assert!(msg.contains(&ghost), "{msg}");
    eventually(
        "the first dbConfig's lease is revoked",
        Duration::from_secs(10),
        || async { leases(&root, "databases", &good).await.is_empty() },
    )
    .await;
    eventually("entries undone", Duration::from_secs(10), || async {
        kv_entry(&root, &p, &prefix, &id_a).await.is_none()
            && kv_entry(&root, &p, &prefix, &id_b).await.is_none()
    })
    .await;
    let reservations = vdbi::bookkeeping::reservation_prefix(&prefix);
    for id in [&id_a, &id_b] {
        let r = kv_entry(&root, &p, &reservations, id).await;
        assert!(r.is_some(), "the reservation stays until a fetch succeeds");
    }
    assert!(nri.uids().await.is_empty(), "failures are not cached");

    // 4. Placeholders, but none under a name the annotations map: empty mapping.
    let mut pod4: Pod =
        webhook_like_pod("unmapped", "app", &node, &[("db", &good)], &[&new_uuid()]).0;
    for c in pod4.spec.as_mut().unwrap().containers.iter_mut() {
        for e in c.env.iter_mut().flatten() {
            e.name = format!("X_{}", e.name);
        }
    }
    pod4.spec.as_mut().unwrap().init_containers = None;
    let pod4 = create_pod(&ns, &pod4).await;
    let msg = refusal(
        conn.create_container(&sandbox(&pod4), &runtime_container(&pod4, "app"))
            .await,
    );
    assert!(msg.contains("no env var"), "{msg}");
    assert_eq!(nri.failures("empty_mapping"), 1.0);

    // 5. A good pod: served; then a container carrying a foreign placeholder besides its own
    //    (residual) and one with only a foreign placeholder (no change).
    let id5 = new_uuid();
    let (pod5, _) = webhook_like_pod("good", "app", &node, &[("db", &good)], &[&id5]);
    let pod5 = create_pod(&ns, &pod5).await;
    reserve(&root, &p, &prefix, &id5, &ns.name, "good").await;
    conn.create_container(&sandbox(&pod5), &runtime_container(&pod5, "app"))
        .await
        .expect("served");
    let mut residual = runtime_container(&pod5, "sidecar");
    residual
        .env
        .push(format!("FOREIGN={}", placeholder::generate()));
    let msg = refusal(conn.create_container(&sandbox(&pod5), &residual).await);
    assert!(msg.contains("FOREIGN"), "{msg}");
    assert_eq!(nri.failures("residual_placeholder"), 1.0);
    let mut foreign = runtime_container(&pod5, "sidecar");
    foreign.env = vec![format!("FOREIGN={}", placeholder::generate())];
    refusal(conn.create_container(&sandbox(&pod5), &foreign).await);
    assert_eq!(nri.failures("no_change"), 1.0);
    // Args with placeholders on a runtime that cannot adjust args: refused, never started with
    // a placeholder in its command line.
    let mut with_args = runtime_container(&pod5, "sidecar");
    let ph = env_map(&pod5, "app")["DB_PASSWORD"].clone();
    with_args.args = vec!["/bin/app".into(), format!("--password={ph}")];
    let msg = refusal(conn.create_container(&sandbox(&pod5), &with_args).await);
    assert!(msg.contains("args"), "{msg}");
    assert_eq!(nri.failures("residual_placeholder"), 2.0);

    // 6. Vault unreachable: a plugin pointed at a dead address refuses within fetchTimeout.
    let dir2 = tempfile::tempdir().unwrap();
    let peer2 = RuntimePeer::bind(peer_config(dir2.path())).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir2.path());
    o.prewarm = false;
    o.vault_address = Some("http://127.0.0.1:1".into());
    let dead = start_nri(&p, o).await;
    let conn2 = accept(&peer2).await;
    let id6 = new_uuid();
    let (pod6, _) = webhook_like_pod("novault", "app", &node, &[("db", &good)], &[&id6]);
    let pod6 = create_pod(&ns, &pod6).await;
    reserve(&root, &p, &prefix, &id6, &ns.name, "novault").await;
    let started = Instant::now();
    let msg = refusal(
        conn2
            .create_container(&sandbox(&pod6), &runtime_container(&pod6, "app"))
            .await,
    );
    let took = started.elapsed();
    eprintln!("Vault unreachable: refused after {took:?}: {msg}");
    assert!(msg.starts_with("vault-db-injector: "), "{msg}");
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert_eq!(dead.failures("fetch_error"), 1.0);
    assert!(
        conn2.end().is_none(),
        "the connection survives (closed, not dropped)"
    );
    assert!(kv_entry(&root, &p, &prefix, &id6).await.is_none());
    let r = kv_entry(
        &root,
        &p,
        &vdbi::bookkeeping::reservation_prefix(&prefix),
        &id6,
    )
    .await;
    assert_eq!(r.expect("reservation kept")["TokenId"], "");

    conn2.close();
    dead.running.shutdown().await;
    conn.close();
    nri.running.shutdown().await;
    force_delete_pods(&ns).await;
    ns.cleanup().await;
    drop_role(&root, &p, &good).await;
    drop_role(&root, &p, &ghost).await;
}

/// Cache file, prewarmer, informer eviction, node sweep, Synchronize and reconnect.
#[actix_rt::test]
async fn cache_prewarm_eviction_and_reconnect() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-life").await;
    ns.service_account("app").await;
    let role = unique_name("nri-life");
    own_role(&root, &p, &role, &ns.name, false).await;
    let prefix = unique_name("t");
    let node = unique_name("node");
    let dir = tempfile::tempdir().unwrap();

    // A corrupt cache file: the plugin starts empty.
    let cache_file = dir.path().join("cache/cache.json");
    std::fs::create_dir_all(cache_file.parent().unwrap()).unwrap();
    std::fs::write(&cache_file, "{ not json").unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let nri = start_nri(&p, NriOptions::new(&prefix, &node, dir.path())).await;
    let conn = accept(&peer).await;
    assert!(nri.uids().await.is_empty());
    assert_eq!(
        nri.running
            .metrics
            .count("vdbi_nri_cache_file_errors_total", &[("reason", "corrupt")]),
        1.0
    );
    let plugin = nri.running.nri_plugin.clone().unwrap();
    eventually("the node watch lists", Duration::from_secs(10), || async {
        plugin.send(Status).await.unwrap().node_pods.is_some()
    })
    .await;

    // Prewarm: a labelled pod with placeholders scheduled here is fetched before its sandbox.
    let id = new_uuid();
    let (warm, _) = webhook_like_pod("warm", "app", &node, &[("db", &role)], &[&id]);
    reserve(&root, &p, &prefix, &id, &ns.name, "warm").await;
    let warm = create_pod(&ns, &warm).await;
    eventually("prewarm", Duration::from_secs(15), || async {
        nri.metric(|m| m.count("vdbi_nri_prewarm_success_total", &[])) == 1.0
    })
    .await;
    assert_eq!(leases(&root, "databases", &role).await.len(), 1);
    let adj = conn
        .create_container(&sandbox(&warm), &runtime_container(&warm, "app"))
        .await
        .expect("served from the prewarmed cache");
    assert_eq!(nri.hits("prewarm"), 1.0);
    pg_connect(
        &p,
        &adjusted(&adj)["DB_USER"],
        &adjusted(&adj)["DB_PASSWORD"],
    )
    .await
    .expect("prewarmed credentials log in");

    // A labelled pod admitted without NRI (real values, a real KV entry) is never prewarmed:
    // its KV entry is not overwritten.
    let legacy_id = new_uuid();
    let legacy_entry = json!({"LeaseId": "databases/creds/x/legacy", "TokenId": "legacy-token",
        "Namespace": ns.name, "ServiceAccountName": "app", "PodName": "legacy", "NodeName": node});
    root.write(
        &format!("{}/data/{prefix}/{legacy_id}", p.var("VDBI_KV_MOUNT")),
        &json!({ "data": legacy_entry }),
    )
    .await;
    let mut legacy: Pod =
        webhook_like_pod("legacy", "app", &node, &[("db", &role)], &[&legacy_id]).0;
    for c in legacy.spec.as_mut().unwrap().containers.iter_mut() {
        for e in c.env.iter_mut().flatten() {
            e.value = Some("real-value".into());
        }
    }
    legacy.spec.as_mut().unwrap().init_containers = None;
    create_pod(&ns, &legacy).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        nri.metric(|m| m.count("vdbi_nri_prewarm_success_total", &[])),
        1.0
    );
    assert_eq!(
        kv_entry(&root, &p, &prefix, &legacy_id).await.unwrap(),
        legacy_entry
    );
    assert_eq!(leases(&root, "databases", &role).await.len(), 1);

    // The informer's delete evicts.
    ns.api::<Pod>()
        .delete(
            "warm",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let warm_uid = warm.metadata.uid.clone().unwrap();
    eventually("informer eviction", Duration::from_secs(10), || async {
        !nri.uids().await.contains(&warm_uid)
    })
    .await;

    // The node sweep evicts a cached pod that is not on this node.
    let other_id = new_uuid();
    let (elsewhere, _) = webhook_like_pod(
        "elsewhere",
        "app",
        "some-other-node",
        &[("db", &role)],
        &[&other_id],
    );
    reserve(&root, &p, &prefix, &other_id, &ns.name, "elsewhere").await;
    let elsewhere = create_pod(&ns, &elsewhere).await;
    conn.create_container(&sandbox(&elsewhere), &runtime_container(&elsewhere, "app"))
        .await
        .expect("served");
    let elsewhere_uid = elsewhere.metadata.uid.clone().unwrap();
    assert!(nri.uids().await.contains(&elsewhere_uid));
    assert_eq!(plugin.send(Sweep).await.unwrap(), Ok(1));
    assert!(!nri.uids().await.contains(&elsewhere_uid));

    // Reconnect: the runtime goes away (plugin unready), comes back (registered again, the
    // backoff restarts) and its Synchronize evicts cached pods without a sandbox that the node
    // watch does not know, keeping the ones it does.
    let id7 = new_uuid();
    let (here, _) = webhook_like_pod("here", "app", &node, &[("db", &role)], &[&id7]);
    reserve(&root, &p, &prefix, &id7, &ns.name, "here").await;
    let here = create_pod(&ns, &here).await;
    let here_uid = here.metadata.uid.clone().unwrap();
    eventually(
        "prewarm of the second pod",
        Duration::from_secs(15),
        || async { nri.uids().await.contains(&here_uid) },
    )
    .await;
    conn.create_container(&sandbox(&elsewhere), &runtime_container(&elsewhere, "app"))
        .await
        .expect("served again");
    assert!(nri.uids().await.contains(&elsewhere_uid));
    conn.close();
    drop(conn);
    drop(peer);
    eventually(
        "unready without the runtime",
        Duration::from_secs(5),
        || async { !nri.running.health.check("nri").unwrap().ready },
    )
    .await;
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let conn = accept(&peer).await;
    eventually("ready again", Duration::from_secs(5), || async {
        nri.running.health.check("nri").unwrap().ready
    })
    .await;
    let reconnect = |r: &str| {
        nri.running
            .metrics
            .count("vdbi_nri_reconnect_total", &[("result", r)])
    };
    assert!(reconnect("attempted") >= 1.0);
    assert_eq!(reconnect("succeeded"), 1.0);
    assert_eq!(reconnect("exhausted"), 0.0);
    eventually(
        "Synchronize evicts the pod without sandbox",
        Duration::from_secs(5),
        || async { !nri.uids().await.contains(&elsewhere_uid) },
    )
    .await;
    assert!(
        nri.uids().await.contains(&here_uid),
        "kept: the node watch knows it"
    );
    let adj = conn
        .create_container(&sandbox(&here), &runtime_container(&here, "app"))
        .await
        .expect("served after the reconnect");
    assert!(!adjusted(&adj).is_empty());

    // The cache survives a restart of the plugin through its file.
    conn.close();
    nri.running.shutdown().await;
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.prewarm = false;
    let again = start_nri(&p, o).await;
    let conn = accept(&peer).await;
    conn.create_container(&sandbox(&here), &runtime_container(&here, "sidecar"))
        .await
        .expect("served from the file");
    assert_eq!(again.hits("unknown"), 1.0);
    conn.close();
    again.running.shutdown().await;

    force_delete_pods(&ns).await;
    ns.cleanup().await;
    drop_role(&root, &p, &role).await;
}

/// Projected mode: the plugin logs in as the pod, with a TokenRequest bound to the pod.
#[actix_rt::test]
async fn projected_mode_logs_in_as_the_pod() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "nri-proj").await;
    ns.service_account("app").await;
    ns.service_account("intruder").await;
    let role = unique_name("nri-proj");
    own_role(&root, &p, &role, &ns.name, false).await;
    let prefix = unique_name("t");
    let node = unique_name("node");
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.projected = true;
    o.prewarm = false;
    let nri = start_nri(&p, o).await;
    let conn = accept(&peer).await;

    let id = new_uuid();
    let (pod, _) = webhook_like_pod("proj", "app", &node, &[("db", &role)], &[&id]);
    reserve(&root, &p, &prefix, &id, &ns.name, "proj").await;
    let pod = create_pod(&ns, &pod).await;
    let adj = conn
        .create_container(&sandbox(&pod), &runtime_container(&pod, "app"))
        .await
        .expect("served");
    let set = adjusted(&adj);
    pg_connect(&p, &set["DB_USER"], &set["DB_PASSWORD"])
        .await
        .expect("credentials log in");
    let e = kv_entry(&root, &p, &prefix, &id).await.unwrap();
    let look = app_login(&root, &e, &ns.name).await;
    assert_ne!(look["data"]["period"], 0, "periodic pod token");

    // A pod whose service account the role does not bind: Vault refuses the login.
    let (intruder, _) =
        webhook_like_pod("intr", "intruder", &node, &[("db", &role)], &[&new_uuid()]);
    let intruder = create_pod(&ns, &intruder).await;
    let msg = refusal(
        conn.create_container(&sandbox(&intruder), &runtime_container(&intruder, "app"))
            .await,
    );
    assert!(msg.contains("login"), "{msg}");
    assert_eq!(
        nri.running.metrics.count(
            "vdbi_vault_login_errors_total",
            &[("reason", "sa_not_bound"), ("auth_mode", "projected")]
        ),
        1.0
    );
    assert_eq!(leases(&root, "databases", &role).await.len(), 1);

    conn.close();
    nri.running.shutdown().await;
    force_delete_pods(&ns).await;
    ns.cleanup().await;
    drop_role(&root, &p, &role).await;
}

/// What vault-db-injector's renewer and revoker do every cycle (compat §3.6, §5): LIST
/// `<mount>/metadata/<prefix>`, then read every key. Returns the keys they would fail on: a
/// folder key, or an entry without `TokenId` or `LeaseId` (renew/revoke-orphan of an empty
/// token fails their cycle), and how many entries were listed.
async fn go_listing_faults(root: &VaultRoot, p: &Platform, prefix: &str) -> (Vec<String>, usize) {
    let mount = p.var("VDBI_KV_MOUNT");
    let r = root
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            &format!("{mount}/metadata/{prefix}"),
            None,
        )
        .await;
    if r.status == 404 {
        return (Vec::new(), 0);
    }
    let keys: Vec<String> = r.ok("kv list")["data"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let mut faults = Vec::new();
    for key in &keys {
        if key.ends_with('/') {
            faults.push(format!("folder {key}"));
            continue;
        }
        if let Some(e) = kv_entry(root, p, prefix, key).await {
            if e["TokenId"] == "" || e["LeaseId"] == "" {
                faults.push(format!("{key}: {e}"));
            }
        }
    }
    (faults, keys.len())
}

/// Mixed fleet, NRI mode: while vdbi's webhook admits pods and its NRI plugin issues (and
/// fails to issue) their credentials, every direct child of the prefix vault-db-injector lists
/// has a real `TokenId` and `LeaseId` — probed all along, as the Go renewer would read it. The
/// reservations live at the sibling prefix and are completed (deleted) once the entry is real,
/// or kept (and the entry undone) when the fetch fails.
#[actix_rt::test]
async fn nri_mode_keeps_the_go_listed_prefix_free_of_tokenless_entries() {
    let adm = Admitting::start("nri-mixed", |o| o.nri = true).await;
    let (p, root, ns, injector) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi);
    let prefix = injector.prefix.clone();
    let reservations = vdbi::bookkeeping::reservation_prefix(&prefix);
    let role = unique_name("mixed");
    let doomed = unique_name("doomed");
    own_role(root, p, &role, &ns.name, false).await;
    own_role(root, p, &doomed, &ns.name, false).await;
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(peer_config(dir.path())).unwrap();
    let node = unique_name("node");
    let mut o = NriOptions::new(&prefix, &node, dir.path());
    o.prewarm = false;
    let nri = start_nri(p, o).await;
    let conn = accept(&peer).await;

    // The probe: a Go renewer's listing, as often as Vault answers, for the whole burst.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (root, p, prefix, stop) = (root.clone(), p.clone(), prefix.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut faults, mut listings, mut most) = (Vec::new(), 0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (f, n) = go_listing_faults(&root, &p, &prefix).await;
                faults.extend(f);
                listings += 1;
                most = most.max(n);
            }
            (faults, listings, most)
        })
    };

    let mut served = Vec::new();
    for i in 0..4 {
        // the last pod's role is dropped between admission and its container: its fetch fails
        let r = if i == 3 { &doomed } else { &role };
        let mut pod = pod(
            &format!("mixed-{i}"),
            "app",
            &[
                ("db.role", r),
                ("db.env-key-dbuser", "DB_USER"),
                ("db.env-key-dbpassword", "DB_PASSWORD"),
            ],
        );
        pod.spec.as_mut().unwrap().node_name = Some(node.clone());
        let stored = create_pod(ns, &pod).await;
        let id = uuids(&stored)[0].clone();
        // admitted: reserved at the sibling prefix only
        assert!(kv_entry(root, p, &prefix, &id).await.is_none());
        let r = kv_entry(root, p, &reservations, &id)
            .await
            .expect("reservation");
        assert_eq!(
            (r["TokenId"].as_str(), r["PodName"].as_str()),
            (Some(""), Some(pod_name(&stored)))
        );
        if i == 3 {
            drop_role(root, p, &doomed).await;
        }
        let result = conn
            .create_container(&sandbox(&stored), &runtime_container(&stored, "app"))
            .await;
        if i == 3 {
            assert!(result.is_err(), "the dropped role's fetch is refused");
            assert!(kv_entry(root, p, &prefix, &id).await.is_none());
            assert!(kv_entry(root, p, &reservations, &id).await.is_some());
        } else {
            result.expect("served");
            let e = kv_entry(root, p, &prefix, &id).await.expect("entry");
            assert_ne!(e["TokenId"], "");
            assert_ne!(e["LeaseId"], "");
            served.push(id);
        }
    }
    eventually(
        "completed reservations deleted",
        Duration::from_secs(10),
        || async {
            let mut all = true;
            for id in &served {
                all &= kv_entry(root, p, &reservations, id).await.is_none();
            }
            all
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (faults, listings, most) = probe.await.unwrap();
    eprintln!("Go-listing probe: {listings} listings, up to {most} entries, faults {faults:?}");
    assert!(faults.is_empty(), "{faults:?}");
    assert!(
        listings >= 2 && most >= served.len(),
        "the probe saw the burst"
    );

    conn.close();
    nri.running.shutdown().await;
    // no revoker runs here: revoke what was issued and delete the entries
    for id in &served {
        let e = kv_entry(root, p, &prefix, id).await.expect("entry");
        root.request(
            reqwest::Method::POST,
            "auth/token/revoke-orphan",
            Some(&json!({"token": e["TokenId"]})),
        )
        .await;
        root.request(
            reqwest::Method::DELETE,
            &format!("{}/metadata/{prefix}/{id}", p.var("VDBI_KV_MOUNT")),
            None,
        )
        .await;
    }
    force_delete_pods(ns).await;
    drop_role(root, p, &role).await;
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

#[path = "nri_plugin/fairness.rs"]
mod fairness;
