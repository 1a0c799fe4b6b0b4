//! Access to the local real platform (PostgreSQL, OpenBao, etcd, kube-apiserver) started by
//! `platform/vdbi-platform up`. The platform writes `.platform/env` (KEY=VALUE lines); tests read it
//! through [`Platform::get`]. A test that needs the platform and does not find it panics with a
//! message saying how to start it: it never silently passes or skips.
//!
//! Small helpers on top (see `platform/README.md`):
//! * [`Platform::kube_client`]: a `kube::Client` from the admin kubeconfig (group `system:masters`);
//! * [`TestNamespace`]: a fresh, uniquely named namespace per test, with explicit cleanup (there is no
//!   kube-controller-manager: no `default` ServiceAccount appears by itself, and a deleted namespace
//!   is finalized by the helper);
//! * [`Platform::vault_root`]: a root-token OpenBao HTTP client ([`VaultRoot`]);
//! * [`unique_name`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Key/value view of `.platform/env`. Its `Debug` output lists keys only (the file holds secrets).
#[derive(Clone)]
pub struct Platform {
    vars: BTreeMap<String, String>,
    pub env_file: PathBuf,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Platform")
            .field("env_file", &self.env_file)
            .field("keys", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Platform {
    /// Location of the env file: `$VDBI_PLATFORM_ENV`, else `<repo>/.platform/env`.
    pub fn env_file() -> PathBuf {
        crate::env_file::EnvFile::locate("VDBI_PLATFORM_ENV", ".platform/env")
    }

    /// Loads the platform description or panics with instructions.
    pub fn get() -> Platform {
        let file = crate::env_file::EnvFile::load(
            Self::env_file(),
            "the local platform",
            "start it with `platform/vdbi-platform up`",
        );
        Platform {
            vars: file.vars,
            env_file: file.path,
        }
    }

    /// A required variable of the platform env file.
    pub fn var(&self, key: &str) -> String {
        self.vars.get(key).cloned().unwrap_or_else(|| {
            panic!(
                "{} has no {key}; re-run `platform/vdbi-platform up`",
                self.env_file.display()
            )
        })
    }

    pub fn try_var(&self, key: &str) -> Option<String> {
        self.vars.get(key).cloned()
    }

    /// `VAULT_ADDR` without a trailing slash.
    pub fn vault_addr(&self) -> String {
        self.var("VAULT_ADDR").trim_end_matches('/').to_string()
    }

    /// A Kubernetes client with the platform's admin credentials (`KUBECONFIG` of the env file).
    pub async fn kube_client(&self) -> kube::Client {
        install_crypto_provider();
        let path = self.var("KUBECONFIG");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("cannot read platform kubeconfig {path}: {e}"));
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("invalid platform kubeconfig {path}: {e}"));
        kube::Client::try_from(config).expect("kube client from the platform kubeconfig")
    }

    /// An OpenBao client holding the root token (for test setup and assertions only).
    pub fn vault_root(&self) -> VaultRoot {
        VaultRoot {
            http: http_client(),
            addr: self.vault_addr(),
            token: self.var("VDBI_VAULT_ROOT_TOKEN"),
        }
    }
}

/// Installs rustls' `ring` provider as the process default (needed by reqwest built with
/// `rustls-no-provider` and by rustls server configs). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP client for the platform (no proxy: everything is on 127.0.0.1).
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// `<prefix>-<8 random hex>`: a valid Kubernetes name when `prefix` is one (and short enough).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A response of OpenBao: status and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct VaultResponse {
    pub status: StatusCode,
    pub body: Value,
}

impl VaultResponse {
    /// The body, after asserting a 2xx status.
    pub fn ok(self, what: &str) -> Value {
        assert!(
            self.status.is_success(),
            "{what}: OpenBao answered {}: {}",
            self.status,
            self.body
        );
        self.body
    }
}

/// OpenBao HTTP API with a given token. `Debug` never shows the token.
#[derive(Clone)]
pub struct VaultRoot {
    http: reqwest::Client,
    addr: String,
    token: String,
}

impl fmt::Debug for VaultRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultRoot")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl VaultRoot {
    /// The same server and token through another HTTP client (e.g. one of another runtime).
    pub fn with_http(&self, http: reqwest::Client) -> VaultRoot {
        VaultRoot {
            http,
            ..self.clone()
        }
    }

    /// The same server with another token (e.g. one obtained by a login).
    pub fn with_token(&self, token: &str) -> VaultRoot {
        VaultRoot {
            token: token.to_string(),
            ..self.clone()
        }
    }

    /// `METHOD /v1/<path>` with an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> VaultResponse {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        VaultResponse { status, body }
    }

    /// `GET /v1/<path>`, asserting success.
    pub async fn read(&self, path: &str) -> Value {
        self.request(Method::GET, path, None)
            .await
            .ok(&format!("GET {path}"))
    }

    /// `POST /v1/<path>`, asserting success.
    pub async fn write(&self, path: &str, body: &Value) -> Value {
        self.request(Method::POST, path, Some(body))
            .await
            .ok(&format!("POST {path}"))
    }

    /// Kubernetes-auth login (`auth/<mount>/login`); returns the raw response (tests assert on
    /// refusals too).
    pub async fn k8s_login(&self, mount: &str, role: &str, jwt: &str) -> VaultResponse {
        let body = serde_json::json!({ "role": role, "jwt": jwt });
        self.request(Method::POST, &format!("auth/{mount}/login"), Some(&body))
            .await
    }
}

/// A uniquely named namespace for one test. Call [`TestNamespace::cleanup`] at the end; if the
/// test panics first, `Drop` deletes the namespace from a helper thread (set
/// `VDBI_KEEP_TEST_NAMESPACES=1` to keep it for debugging).
pub struct TestNamespace {
    pub name: String,
    client: kube::Client,
    cleaned: bool,
}

impl fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`. No ServiceAccount exists in it unless the kubelet node's
    /// controller-manager runs: create the ones pods need with
    /// [`TestNamespace::service_account`], including `default`.
    pub async fn create(client: &kube::Client, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "vdbi.test/platform".to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace {
            name,
            client: client.clone(),
            cleaned: false,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a ServiceAccount in this namespace, or returns it when it exists already (while
    /// the kubelet node runs, kube-controller-manager creates `default` in every namespace).
    pub async fn service_account(&self, name: &str) -> ServiceAccount {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api = self.api::<ServiceAccount>();
        match api.create(&PostParams::default(), &sa).await {
            Ok(sa) => sa,
            Err(kube::Error::Api(e)) if e.code == 409 => api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("reading ServiceAccount {}/{name}: {e}", self.name)),
            Err(e) => panic!("creating ServiceAccount {}/{name}: {e}", self.name),
        }
    }

    /// A TokenRequest JWT for a ServiceAccount of this namespace (empty audiences = the
    /// apiserver's default audience).
    pub async fn token(&self, service_account: &str, audiences: &[&str]) -> String {
        service_account_token(&self.client, &self.name, service_account, audiences).await
    }

    /// Deletes what tests usually create in the namespace, then the namespace itself, and
    /// finalizes it (without kube-controller-manager it would stay `Terminating` forever).
    pub async fn cleanup(mut self) {
        self.cleanup_in_place().await;
    }

    /// [`TestNamespace::cleanup`] for an owner that cannot give the namespace away.
    pub async fn cleanup_in_place(&mut self) {
        if self.cleaned {
            return;
        }
        let lp = ListParams::default();
        let dp = DeleteParams::default();
        let _ = self.api::<Pod>().delete_collection(&dp, &lp).await;
        let _ = self
            .api::<ServiceAccount>()
            .delete_collection(&dp, &lp)
            .await;
        let _ = self.api::<Secret>().delete_collection(&dp, &lp).await;
        let _ = self.api::<ConfigMap>().delete_collection(&dp, &lp).await;
        let _ = self.api::<Lease>().delete_collection(&dp, &lp).await;
        delete_namespace(&self.client, &self.name).await;
        self.cleaned = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned || std::env::var_os("VDBI_KEEP_TEST_NAMESPACES").is_some() {
            return;
        }
        // The test's runtime may be the current thread: use a fresh runtime and client elsewhere.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async {
                let client = Platform::get().kube_client().await;
                delete_namespace(&client, &name).await;
            });
        })
        .join();
    }
}

/// Deletes a namespace and clears its finalizers (without the kubelet node, no namespace
/// controller runs on the platform; with it, the controller may update or finalize the namespace
/// concurrently: a conflict is retried on the fresh object, a 404 means it is gone).
pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => panic!("deleting namespace {name}: {e}"),
    }
    const ATTEMPTS: usize = 10;
    for attempt in 1..=ATTEMPTS {
        let mut ns = match api.get(name).await {
            Ok(ns) => ns,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => panic!("reading namespace {name}: {e}"),
        };
        if let Some(spec) = ns.spec.as_mut() {
            spec.finalizers = Some(Vec::new());
        }
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => panic!("finalizing namespace {name}: {e}"),
        }
    }
}

/// A TokenRequest JWT for `namespace/service_account`.
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    audiences: &[&str],
) -> String {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let resp: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource("token", service_account, &PostParams::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{service_account}: {e}"));
    resp.status.expect("TokenRequest status").token
}
