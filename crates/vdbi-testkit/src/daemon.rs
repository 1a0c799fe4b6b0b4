//! Shared harness of the integration tests: runs vdbi in-process against the local platform
//! (real OpenBao, PostgreSQL and kube-apiserver) and registers its webhook with the apiserver.

use crate::platform::{service_account_token, unique_name, Platform, VaultRoot};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use vdbi::app::runtime::Running;
use vdbi::config::{Config, Mode};

pub use crate::roles::{drop_role, fresh_role, own_role, revoke_role_leases};
pub use crate::webhook::Webhook;

pub const LABEL: &str = "vault-db-injector";
pub const PREFIX: &str = "db-creds-injector.numberly.io/";

/// A self-signed serving certificate for 127.0.0.1, written to disk.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: String,
}

pub fn make_cert() -> TestCert {
    let dir = tempfile::tempdir().unwrap();
    let (pem, key_pem) = new_cert_pem();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    TestCert {
        dir,
        cert,
        key,
        pem,
    }
}

/// (certificate PEM, key PEM) for 127.0.0.1 / localhost.
pub fn new_cert_pem() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// Options of an in-process vdbi.
pub struct Options {
    pub mode: Mode,
    pub projected: bool,
    pub nri: bool,
    pub vault_address: Option<String>,
    pub admission_timeout: Duration,
    pub kube_role: String,
    pub service_account: String,
    /// Last changes to the configuration (rate limit, grace, ...).
    pub configure: Box<dyn FnOnce(&mut Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Injector,
            projected: false,
            nri: false,
            vault_address: None,
            admission_timeout: Duration::from_secs(4),
            kube_role: "vdbi".into(),
            service_account: "vdbi-injector".into(),
            configure: Box::new(|_| {}),
        }
    }
}

pub struct Vdbi {
    pub running: Running,
    pub prefix: String,
    pub cert: TestCert,
    pub jwt_file: tempfile::NamedTempFile,
    /// The chart's RBAC vdbi runs with, when it talks to the Kubernetes API (projected mode).
    pub chart: Option<crate::chart_rbac::ChartRelease>,
}

/// Writes a JWT of vdbi's own ServiceAccount (vdbi-system/<sa>, audience vault).
pub async fn own_jwt(p: &Platform, sa: &str) -> tempfile::NamedTempFile {
    let client = p.kube_client().await;
    let ns = p.var("VDBI_SYSTEM_NAMESPACE");
    let jwt = service_account_token(&client, &ns, sa, &["vault"]).await;
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), jwt).unwrap();
    f
}

pub fn base_config(p: &Platform, prefix: &str) -> Config {
    let mut c = Config {
        vault_address: p.vault_addr(),
        vault_auth_path: p.var("VDBI_K8S_AUTH_MOUNT"),
        kube_role: "vdbi".into(),
        vault_secret_name: p.var("VDBI_KV_MOUNT"),
        vault_secret_prefix: prefix.to_string(),
        vault_rate_limit: 0,
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: "127.0.0.1:0".parse().unwrap(),
        cert_reload_interval: Duration::from_millis(200),
        ..Config::default()
    };
    // Client authentication on, as in production: only the platform's apiserver may call.
    crate::webhook::require_client_auth(p, &mut c);
    c
}

/// Starts vdbi in-process through [`crate::launch::start_vdbi`]: the chart's RBAC when it
/// needs the Kubernetes API, Vault roles with the published policies only.
pub async fn start_vdbi(p: &Platform, opts: Options) -> Vdbi {
    crate::platform::install_crypto_provider();
    let prefix = unique_name("t");
    let cert = make_cert();
    let jwt_file = own_jwt(p, &opts.service_account).await;
    let mut c = base_config(p, &prefix);
    c.mode = opts.mode;
    c.cert_file = cert.cert.clone();
    c.key_file = cert.key.clone();
    c.kube_token_path = jwt_file.path().to_path_buf();
    c.kube_role = opts.kube_role;
    c.use_projected_sa = opts.projected;
    c.token_request_audiences = vec!["vault".into()];
    c.nri.enabled = opts.nri;
    c.admission_timeout = opts.admission_timeout;
    if let Some(a) = opts.vault_address {
        c.vault_address = a;
    }
    (opts.configure)(&mut c);
    let (running, chart) =
        crate::launch::start_vdbi(p, c, "vdbi-rbac", crate::log_lines::checked_logger()).await;
    Vdbi {
        running,
        prefix,
        cert,
        jwt_file,
        chart,
    }
}

impl Vdbi {
    /// Waits until vdbi's own Vault session is established.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.running.health.is_ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("vdbi not ready: {:?}", self.running.health.checks());
    }

    pub fn webhook_url(&self) -> String {
        format!("https://{}/mutate", self.running.webhook_addr.unwrap())
    }
}

/// Registers a MutatingWebhookConfiguration for one namespace, pointing at `vdbi`, and waits
/// until the apiserver calls it.
pub async fn register_webhook(client: &kube::Client, vdbi: &Vdbi, namespace: &str) -> Webhook {
    crate::webhook::register(client, &vdbi.webhook_url(), &vdbi.cert.pem, namespace)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A labelled pod with `db-creds-injector` annotations (keys given without the prefix).
pub fn pod(name: &str, service_account: &str, annotations: &[(&str, &str)]) -> Pod {
    let ann: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {LABEL: "true"}, "annotations": ann},
        "spec": {
            "serviceAccountName": service_account,
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "app", "image": "busybox", "env": [{"name": "DB_USER", "value": "placeholder-to-replace"}]},
                {"name": "sidecar", "image": "busybox"}
            ]
        }
    }))
    .unwrap()
}

/// `name -> value` of a container's env.
pub fn env_map(pod: &Pod, container: &str) -> BTreeMap<String, String> {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == container)
        .unwrap_or_else(|| panic!("no container {container}"))
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

pub fn uuids(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{PREFIX}uuid")))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Bookkeeping entry `<kv>/data/<prefix>/<uuid>` as JSON, or None.
pub async fn kv_entry(root: &VaultRoot, p: &Platform, prefix: &str, uuid: &str) -> Option<Value> {
    let r = root
        .request(
            reqwest::Method::GET,
            &format!("{}/data/{prefix}/{uuid}", p.var("VDBI_KV_MOUNT")),
            None,
        )
        .await;
    if r.status == 404 {
        return None;
    }
    Some(r.ok("kv read")["data"]["data"].clone())
}

/// Keys under `<kv>/metadata/<prefix>`.
pub async fn kv_keys(root: &VaultRoot, p: &Platform, prefix: &str) -> Vec<String> {
    list_keys(
        root,
        &format!("{}/metadata/{prefix}", p.var("VDBI_KV_MOUNT")),
        "kv list",
    )
    .await
}

/// Lease ids Vault holds under `<mount>/creds/<role>/`.
pub async fn leases(root: &VaultRoot, mount: &str, role: &str) -> Vec<String> {
    list_keys(
        root,
        &format!("sys/leases/lookup/{mount}/creds/{role}"),
        "lease list",
    )
    .await
}

/// `LIST <path>` (root): its keys, none on 404; any other failure fails the test (`what`).
async fn list_keys(root: &VaultRoot, path: &str, what: &str) -> Vec<String> {
    let r = root
        .request(reqwest::Method::from_bytes(b"LIST").unwrap(), path, None)
        .await;
    if r.status == 404 {
        return Vec::new();
    }
    r.ok(what)["data"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Connects to the platform's PostgreSQL as `user`.
pub async fn pg_connect(
    p: &Platform,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn_str = format!(
        "host={} port={} dbname={} user={} password={} connect_timeout=5",
        p.var("VDBI_PG_HOST"),
        p.var("VDBI_PG_PORT"),
        p.var("VDBI_PG_DATABASE"),
        user,
        password
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Tokens (any) whose policies include `policy`, found through the accessor list (root).
pub async fn tokens_with_policy(root: &VaultRoot, policy: &str) -> usize {
    use futures::StreamExt;
    let list = root
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await
        .ok("accessor list");
    let accessors = list["data"]["keys"].as_array().cloned().unwrap_or_default();
    futures::stream::iter(accessors)
        .map(|acc| async move {
            let r = root
                .request(
                    reqwest::Method::POST,
                    "auth/token/lookup-accessor",
                    Some(&json!({ "accessor": acc })),
                )
                .await;
            r.status == 200
                && r.ok("lookup-accessor")["data"]["policies"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x == policy))
        })
        .buffer_unordered(16)
        .filter(|has| std::future::ready(*has))
        .count()
        .await
}

/// An AdmissionReview (v1) of a pod CREATE, as the apiserver sends it.
pub fn review(pod: &Pod, namespace: &str, name: &str, uid: &str) -> Value {
    let object = serde_json::to_value(pod).expect("a Pod serialises");
    crate::review::admission_review(uid, namespace, &json!(name), "CREATE", &object, false)
}

/// Posts AdmissionReviews straight to a vdbi webhook (as the apiserver does), trusting `pem`.
#[derive(Clone)]
pub struct ReviewClient {
    http: reqwest::Client,
    url: String,
}

impl ReviewClient {
    pub fn new(url: &str, pem: &str) -> ReviewClient {
        let http = crate::webhook::review_client_builder(&Platform::get())
            .tls_certs_only(vec![reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        ReviewClient {
            http,
            url: url.to_string(),
        }
    }

    /// The review's `response` (`allowed`, `patch`, `status.message`), or the transport error.
    pub async fn send(&self, review: &Value) -> Result<Value, String> {
        let r = self
            .http
            .post(&self.url)
            .json(review)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let v: Value = r.json().await.map_err(|e| format!("{e:?}"))?;
        Ok(v["response"].clone())
    }
}

/// Test cleanup (root): revokes the token of every entry under `prefix` and deletes the entries
/// (metadata included).
pub async fn purge_prefix(root: &VaultRoot, p: &Platform, prefix: &str) {
    let kv = p.var("VDBI_KV_MOUNT");
    for key in kv_keys(root, p, prefix).await {
        if let Some(e) = kv_entry(root, p, prefix, &key).await {
            if let Some(t) = e["TokenId"].as_str().filter(|t| !t.is_empty()) {
                root.request(
                    reqwest::Method::POST,
                    "auth/token/revoke-orphan",
                    Some(&json!({ "token": t })),
                )
                .await;
            }
        }
        root.request(
            reqwest::Method::DELETE,
            &format!("{kv}/metadata/{prefix}/{key}"),
            None,
        )
        .await;
    }
}
