//! Integration tests of the local real platform (`platform/vdbi-platform up`): kube-apiserver,
//! OpenBao and PostgreSQL as an operator of vault-db-injector configures them.
//!
//! Each test works in its own namespace / object names (tests run in parallel) and cleans up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/vdbi/never-pulled:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

async fn pg_connect(
    p: &Platform,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(p.var("VDBI_PG_HOST"))
        .port(p.var("VDBI_PG_PORT").parse().expect("VDBI_PG_PORT"))
        .dbname(p.var("VDBI_PG_DATABASE"))
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn pg_admin(p: &Platform) -> tokio_postgres::Client {
    pg_connect(
        p,
        &p.var("VDBI_PG_ADMIN_USER"),
        &p.var("VDBI_PG_ADMIN_PASSWORD"),
    )
    .await
    .expect("admin connection to PostgreSQL")
}

async fn pg_role_exists(admin: &tokio_postgres::Client, role: &str) -> bool {
    let row = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .expect("pg_roles query");
    row.get::<_, i64>(0) == 1
}

/// Logs in with a pod JWT, reads DB credentials; returns (token client, creds body).
async fn login_and_read_creds(
    p: &Platform,
    vault: &VaultRoot,
    role: &str,
    jwt: &str,
) -> (VaultRoot, Value) {
    let login = vault
        .k8s_login(&p.var("VDBI_K8S_AUTH_MOUNT"), role, jwt)
        .await
        .ok(&format!("kubernetes login as {role}"));
    let auth = &login["auth"];
    let policies: Vec<&str> = auth["token_policies"]
        .as_array()
        .expect("token_policies")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        policies.contains(&role),
        "policies {policies:?} lack {role}"
    );
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["renewable"], true);
    // token_period=24h: a periodic token
    assert_eq!(auth["lease_duration"], 86400, "login auth: {auth}");
    let pod_vault = vault.with_token(str_at(&login, "/auth/client_token"));
    let lookup = pod_vault.read("auth/token/lookup-self").await;
    assert_eq!(
        lookup["data"]["period"], 86400,
        "lookup-self: {}",
        lookup["data"]
    );
    let creds = pod_vault
        .read(&format!("{}/creds/{role}", p.var("VDBI_DB_MOUNT")))
        .await;
    assert!(
        str_at(&creds, "/lease_id")
            .starts_with(&format!("{}/creds/{role}/", p.var("VDBI_DB_MOUNT"))),
        "lease_id {}",
        creds["lease_id"]
    );
    assert_eq!(creds["lease_duration"], 3600);
    (pod_vault, creds)
}

/// (a) ServiceAccount → TokenRequest(aud=vault) → OpenBao kubernetes login → database creds →
/// PostgreSQL connection; wrong audience and unbound ServiceAccount are refused; revoking the token
/// drops the PostgreSQL role.
#[tokio::test]
async fn kubernetes_login_yields_working_postgres_credentials() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let vault = p.vault_root();
    let ns = TestNamespace::create(&client, "vdbi-t-login").await;
    ns.service_account("app").await;
    ns.service_account("stranger").await;
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");

    // Refusals first: wrong audience, then an SA that the role does not bind.
    let default_aud = ns.token("app", &[]).await;
    let refused = vault.k8s_login(&mount, "app-rw", &default_aud).await;
    assert!(
        refused.status.is_client_error(),
        "login with the default audience must be refused, got {}",
        refused.status
    );
    assert!(
        refused.body.to_string().to_lowercase().contains("aud"),
        "refusal should name the audience: {}",
        refused.body
    );
    let stranger = ns.token("stranger", &["vault"]).await;
    let refused = vault.k8s_login(&mount, "app-rw", &stranger).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused
            .body
            .to_string()
            .contains("service account name not authorized"),
        "{}",
        refused.body
    );

    let jwt = ns.token("app", &["vault"]).await;
    let admin = pg_admin(&p).await;

    // app-rw: read and write.
    let (rw_vault, creds) = login_and_read_creds(&p, &vault, "app-rw", &jwt).await;
    let user = str_at(&creds, "/data/username").to_string();
    let db = pg_connect(&p, &user, str_at(&creds, "/data/password"))
        .await
        .expect("connect with app-rw credentials");
    let row = db
        .query_one(
            "SELECT current_user::text, (SELECT note FROM platform_check WHERE id = 1)",
            &[],
        )
        .await
        .expect("query as app-rw");
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), "vdbi platform");
    let id = i64::from(rand::random::<u32>()) + 1_000;
    let n = db
        .execute(
            "INSERT INTO platform_check (id, note) VALUES ($1, 'rw')",
            &[&id],
        )
        .await
        .expect("app-rw may insert");
    assert_eq!(n, 1);
    db.execute("DELETE FROM platform_check WHERE id = $1", &[&id])
        .await
        .expect("app-rw may delete");
    let valid_until_in_future: bool = admin
        .query_one(
            "SELECT rolvaliduntil > now() AND rolvaliduntil < now() + interval '2 hours' FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .expect("pg_roles")
        .get(0);
    assert!(
        valid_until_in_future,
        "role {user} must be VALID UNTIL the lease expiry"
    );
    drop(db);

    // app-ro: read only.
    let (ro_vault, ro_creds) = login_and_read_creds(&p, &vault, "app-ro", &jwt).await;
    let ro_user = str_at(&ro_creds, "/data/username").to_string();
    let ro = pg_connect(&p, &ro_user, str_at(&ro_creds, "/data/password"))
        .await
        .expect("connect with app-ro credentials");
    ro.query_one("SELECT note FROM platform_check WHERE id = 1", &[])
        .await
        .expect("app-ro may select");
    let err = ro
        .execute(
            "INSERT INTO platform_check (id, note) VALUES (2, 'ro')",
            &[],
        )
        .await
        .expect_err("app-ro must not insert");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    drop(ro);

    // Revoking the pod token revokes its lease: the revocation statements drop the role.
    for (v, role) in [(&rw_vault, &user), (&ro_vault, &ro_user)] {
        v.request(Method::POST, "auth/token/revoke-self", None)
            .await
            .ok("revoke-self");
        let deadline = Instant::now() + WAIT;
        while pg_role_exists(&admin, role).await {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL role {role} still exists {WAIT:?} after its token was revoked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ns.cleanup().await;
}

/// The platform applies the published policy files (deploy/vault/*.hcl, through
/// deploy/vault/setup.sh) unchanged, and the roles vdbi logs in with hold only those policies,
/// without Vault's default policy (docs/vault-setup.md).
#[tokio::test]
async fn vdbi_roles_hold_only_the_published_policies() {
    let p = Platform::get();
    let vault = p.vault_root();
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vault");
    let mut published = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hcl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        if stem == "app" {
            // The example application policy, applied per database role.
            for role in p.var("VDBI_DB_ROLES").split(',') {
                let applied = vault.read(&format!("sys/policies/acl/{role}")).await;
                let want = text.replace(
                    "databases/creds/app-rw\"",
                    &format!("databases/creds/{role}\""),
                );
                assert_eq!(applied["data"]["policy"], json!(want), "policy {role}");
            }
            continue;
        }
        let name = format!("vdbi-{stem}");
        let applied = vault.read(&format!("sys/policies/acl/{name}")).await;
        assert_eq!(applied["data"]["policy"], json!(text), "policy {name}");
        published.push(name);
    }
    published.sort();
    assert_eq!(
        published,
        [
            "vdbi-injector-legacy",
            "vdbi-injector-projected",
            "vdbi-nri-legacy",
            "vdbi-nri-projected",
            "vdbi-renewer",
            "vdbi-revoker"
        ]
    );
    for role in [
        "vdbi",
        "vdbi-injector",
        "vdbi-renewer",
        "vdbi-revoker",
        "vdbi-nri",
    ] {
        let r = vault.read(&format!("auth/{mount}/role/{role}")).await;
        let policies = r["data"]["token_policies"].as_array().unwrap();
        assert!(!policies.is_empty(), "{role}");
        for policy in policies {
            assert!(
                published.iter().any(|n| json!(n) == *policy),
                "role {role} holds {policy}, not a published policy"
            );
        }
        assert_eq!(r["data"]["token_no_default_policy"], json!(true), "{role}");
    }
}

/// The vdbi system ServiceAccounts log in with the legacy role and the projected split roles,
/// and the policies allow what compat §3.10 says (spot checks).
#[tokio::test]
async fn system_service_accounts_have_legacy_and_split_roles() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let vault = p.vault_root();
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");
    let system_ns = p.var("VDBI_SYSTEM_NAMESPACE");
    let kv = p.var("VDBI_KV_MOUNT");
    let jwt =
        vdbi_testkit::platform::service_account_token(&client, &system_ns, "vdbi-injector", &[])
            .await;

    // Legacy kubeRole "vdbi": orphan token for the DB role, KV bookkeeping, role read.
    let login = vault
        .k8s_login(&mount, "vdbi", &jwt)
        .await
        .ok("legacy login");
    assert_eq!(
        login["auth"]["token_policies"],
        json!([
            "vdbi-injector-legacy",
            "vdbi-nri-legacy",
            "vdbi-renewer",
            "vdbi-revoker"
        ])
    );
    let legacy = vault.with_token(str_at(&login, "/auth/client_token"));
    let role = legacy.read(&format!("auth/{mount}/role/app-ro")).await;
    assert_eq!(role["data"]["token_policies"], json!(["app-ro"]));
    assert_eq!(
        role["data"]["bound_service_account_namespaces"],
        json!(["*"])
    );
    let orphan = legacy
        .write(
            "auth/token/create-orphan",
            &json!({"policies": ["app-ro"], "period": "1h", "display_name": "injector-orphan-token"}),
        )
        .await;
    let orphan_vault = vault.with_token(str_at(&orphan, "/auth/client_token"));
    let creds = orphan_vault
        .read(&format!("{}/creds/app-ro", p.var("VDBI_DB_MOUNT")))
        .await;
    assert!(creds["data"]["username"].is_string());
    let key = unique_name("platform-test");
    legacy
        .write(
            &format!("{kv}/data/platform-test/{key}"),
            &json!({"data": {"LeaseId": creds["lease_id"], "TokenId": "x", "Namespace": "n",
                "ServiceAccountName": "app", "PodName": "", "NodeName": ""}}),
        )
        .await;
    let stored = legacy.read(&format!("{kv}/data/platform-test/{key}")).await;
    assert_eq!(stored["data"]["data"]["ServiceAccountName"], "app");
    let list = legacy
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            &format!("{kv}/metadata/platform-test"),
            None,
        )
        .await
        .ok("KV list");
    assert!(list["data"]["keys"]
        .as_array()
        .unwrap()
        .contains(&json!(key)));
    legacy
        .write(
            "auth/token/revoke-orphan",
            &json!({"token": str_at(&orphan, "/auth/client_token")}),
        )
        .await;
    for path in [
        format!("{kv}/data/platform-test/{key}"),
        format!("{kv}/metadata/platform-test/{key}"),
    ] {
        legacy
            .request(Method::DELETE, &path, None)
            .await
            .ok("KV delete");
    }

    // Projected split roles: each logs in with its own policy; the injector cannot list KV.
    for (role, policy) in [
        ("vdbi-injector", "vdbi-injector-projected"),
        ("vdbi-renewer", "vdbi-renewer"),
        ("vdbi-revoker", "vdbi-revoker"),
        ("vdbi-nri", "vdbi-nri-projected"),
    ] {
        let login = vault.k8s_login(&mount, role, &jwt).await.ok(role);
        assert_eq!(login["auth"]["token_policies"], json!([policy]), "{role}");
        let t = vault.with_token(str_at(&login, "/auth/client_token"));
        let listed = t
            .request(
                Method::from_bytes(b"LIST").unwrap(),
                &format!("{kv}/metadata/platform-test"),
                None,
            )
            .await;
        let may_list = matches!(role, "vdbi-renewer" | "vdbi-revoker");
        if may_list {
            assert!(
                listed.status.is_success() || listed.status == StatusCode::NOT_FOUND,
                "{role}: {}",
                listed.status
            );
        } else {
            assert_eq!(
                listed.status,
                StatusCode::FORBIDDEN,
                "{role} must not list KV"
            );
        }
        t.request(Method::POST, "auth/token/revoke-self", None)
            .await
            .ok("revoke-self");
    }
    // An application SA namespace is not bound to the system roles.
    let ns = TestNamespace::create(&client, "vdbi-t-sys").await;
    ns.service_account("vdbi-injector").await;
    let outsider = ns.token("vdbi-injector", &[]).await;
    let refused = vault.k8s_login(&mount, "vdbi", &outsider).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    legacy
        .request(Method::POST, "auth/token/revoke-self", None)
        .await
        .ok("revoke-self");
    ns.cleanup().await;
}

/// (b) A MutatingWebhookConfiguration pointing at a throwaway HTTPS server on 127.0.0.1 is called
/// by the apiserver when a pod is created, and its JSONPatch is applied to the stored pod.
#[tokio::test]
async fn mutating_webhook_is_called_on_pod_create() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "vdbi-t-webhook").await;
    ns.service_account("default").await;

    let calls = Arc::new(AtomicUsize::new(0));
    let server = WebhookServer::start(calls.clone());
    let mwc_name = unique_name("vdbi-t-webhook");
    let mwc = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(mwc_name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "label.platform-test.vdbi.local".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Fail".into()),
            timeout_seconds: Some(5),
            client_config: WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{}/mutate", server.port)),
                ca_bundle: Some(ByteString(server.cert_pem.clone().into_bytes())),
                ..Default::default()
            },
            // Only this test's namespace: other tests create pods in parallel.
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    ns.name.clone(),
                )])),
                ..Default::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..Default::default()
        }]),
    };
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc)
        .await
        .expect("create MutatingWebhookConfiguration");

    // The apiserver picks the configuration up asynchronously: dry-run until it mutates.
    let pods = ns.api::<Pod>();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let probe = pods
            .create(&dry, &pod("probe", &[("app", "probe")]))
            .await
            .expect("dry-run pod create");
        if probe
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("vdbi-test/mutated")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook not active after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before = calls.load(Ordering::SeqCst);
    let created = pods
        .create(&PostParams::default(), &pod("mutated", &[("app", "demo")]))
        .await
        .expect("create pod");
    assert!(
        calls.load(Ordering::SeqCst) > before,
        "the webhook was not called for the real create"
    );
    let stored = pods.get("mutated").await.expect("get pod");
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("vdbi-test/mutated").map(String::as_str),
        Some("true"),
        "{labels:?}"
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("demo"));
    assert_eq!(stored.metadata.uid, created.metadata.uid);

    mwcs.delete(&mwc_name, &DeleteParams::default())
        .await
        .expect("delete MutatingWebhookConfiguration");
    server.stop().await;
    ns.cleanup().await;
}

/// (c) A pod created through the API is stored, seen by a watch (ADDED) and deleted (DELETED);
/// without a kubelet an unscheduled pod is deleted at once.
#[tokio::test]
async fn pod_is_stored_watched_and_deleted() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "vdbi-t-watch").await;
    ns.service_account("default").await;
    let pods = ns.api::<Pod>();

    let list = pods.list(&ListParams::default()).await.expect("list pods");
    assert!(list.items.is_empty());
    let rv = list
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .expect("watch pods")
        .boxed();

    let name = "watched";
    let created = pods
        .create(&PostParams::default(), &pod(name, &[("app", "watched")]))
        .await
        .expect("create pod");
    let uid = created.metadata.uid.clone().expect("uid");
    // The ServiceAccount admission plugin ran: default SA and its projected token volume.
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(spec.node_name.is_none());

    loop {
        match next_event(&mut events).await {
            WatchEvent::Added(p) if p.metadata.uid.as_deref() == Some(&uid) => break,
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
            _ => {}
        }
    }

    let stored = pods.get(name).await.expect("get pod");
    assert_eq!(stored.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        stored.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    pods.delete(name, &DeleteParams::default())
        .await
        .expect("delete pod");
    loop {
        match next_event(&mut events).await {
            WatchEvent::Deleted(p) if p.metadata.uid.as_deref() == Some(&uid) => break,
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
            _ => {}
        }
    }
    match pods.get(name).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        other => panic!("pod should be gone, got {other:?}"),
    }
    ns.cleanup().await;
}

async fn next_event(
    events: &mut BoxStream<'static, kube::Result<WatchEvent<Pod>>>,
) -> WatchEvent<Pod> {
    timeout(WAIT, events.try_next())
        .await
        .expect("no watch event in time")
        .expect("watch error")
        .expect("watch ended")
}

/// The env file holds secrets: it must be private and complete.
#[test]
fn env_file_is_private_and_complete() {
    use std::os::unix::fs::PermissionsExt;
    let p = Platform::get();
    let mode = std::fs::metadata(&p.env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} must be 0600", p.env_file.display());
    for key in [
        "VAULT_ADDR",
        "VDBI_VAULT_ROOT_TOKEN",
        "KUBECONFIG",
        "VDBI_KUBE_SERVER",
        "VDBI_KUBE_CA_FILE",
        "VDBI_PG_HOST",
        "VDBI_PG_PORT",
        "VDBI_PG_DATABASE",
        "VDBI_PG_ADMIN_USER",
        "VDBI_PG_ADMIN_PASSWORD",
        "VDBI_DB_MOUNT",
        "VDBI_KV_MOUNT",
        "VDBI_K8S_AUTH_MOUNT",
        "VDBI_SYSTEM_NAMESPACE",
        "VDBI_PLATFORM_DIR",
    ] {
        assert!(!p.var(key).is_empty(), "{key} is empty");
    }
    assert_eq!(p.var("VDBI_DB_MOUNT"), "databases");
    assert_eq!(p.var("VDBI_KV_MOUNT"), "vault-db-injector");
    assert_eq!(p.var("VDBI_K8S_AUTH_MOUNT"), "kubernetes");
    assert_eq!(p.var("VDBI_SYSTEM_NAMESPACE"), "vdbi-system");
    let dbg = format!("{p:?}");
    assert!(
        !dbg.contains(&p.var("VDBI_VAULT_ROOT_TOKEN")),
        "Debug must not show secrets"
    );
}

/// A throwaway HTTPS admission webhook on 127.0.0.1 (self-signed rcgen certificate) that adds the
/// label `vdbi-test/mutated=true` and counts its calls.
struct WebhookServer {
    port: u16,
    cert_pem: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl WebhookServer {
    fn start(calls: Arc<AtomicUsize>) -> WebhookServer {
        vdbi_testkit::platform::install_crypto_provider();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed cert");
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("rustls server config");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .app_data(actix_web::web::Data::new(calls.clone()))
                        .route("/mutate", actix_web::web::post().to(mutate))
                })
                .workers(1)
                .disable_signals()
                .bind_rustls_0_23(("127.0.0.1", 0), tls)
                .expect("bind webhook server");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                server.await.expect("webhook server");
            })
        });
        let (port, handle) = rx.recv().expect("webhook server start");
        WebhookServer {
            port,
            cert_pem: cert.pem(),
            handle,
            thread,
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        tokio::task::spawn_blocking(move || self.thread.join().expect("webhook thread"))
            .await
            .unwrap();
    }
}

async fn mutate(
    calls: actix_web::web::Data<Arc<AtomicUsize>>,
    review: actix_web::web::Json<AdmissionReview<DynamicObject>>,
) -> actix_web::HttpResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let req: AdmissionRequest<DynamicObject> = match review.into_inner().try_into() {
        Ok(req) => req,
        Err(e) => return actix_web::HttpResponse::BadRequest().body(e.to_string()),
    };
    let patch = json_patch::Patch(vec![json_patch::PatchOperation::Add(
        json_patch::AddOperation {
            path: jsonptr::PointerBuf::parse("/metadata/labels/vdbi-test~1mutated").unwrap(),
            value: json!("true"),
        },
    )]);
    let resp = AdmissionResponse::from(&req)
        .with_patch(patch)
        .expect("serialize patch");
    actix_web::HttpResponse::Ok().json(resp.into_review())
}
