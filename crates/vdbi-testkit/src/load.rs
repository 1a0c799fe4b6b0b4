//! In-process vdbi against the local platform, and cleanup of what a scenario created.

use crate::platform::{service_account_token, unique_name, Platform, VaultRoot};
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use vdbi::app::runtime::Running;
use vdbi::config::{Config, Mode};

pub struct Vdbi {
    pub running: Running,
    pub prefix: String,
    /// The webhook's self-signed certificate (PEM), for a webhook registration's caBundle.
    pub cert_pem: String,
    /// The chart's RBAC vdbi runs with when it needs the Kubernetes API (removed on drop).
    _chart: Option<crate::chart_rbac::ChartRelease>,
    _dir: tempfile::TempDir,
}

/// vdbi's log: dropped (the harness prints its own progress), unless `VDBI_TEST_LOG` is set.
/// vdbi never logs secrets either way.
pub fn quiet_logger() -> slog::Logger {
    use slog::Drain;
    if std::env::var("VDBI_TEST_LOG").is_ok() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        slog::Logger::root(drain, slog::o!())
    } else {
        vdbi::telemetry::logging::discard()
    }
}

/// Starts vdbi in `mode` with its own ServiceAccount JWT (Vault roles with the published
/// policies), the chart's RBAC when it needs the Kubernetes API, and a self-signed 127.0.0.1
/// cert ([`crate::launch::start_vdbi`]).
pub async fn start_vdbi(
    p: &Platform,
    mode: Mode,
    sa: &str,
    tweak: impl FnOnce(&mut Config),
) -> Vdbi {
    crate::platform::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed cert");
    let cert: PathBuf = dir.path().join("tls.crt");
    let key: PathBuf = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let client = p.kube_client().await;
    let jwt = service_account_token(&client, &p.var("VDBI_SYSTEM_NAMESPACE"), sa, &["vault"]).await;
    let jwt_path = dir.path().join("jwt");
    std::fs::write(&jwt_path, jwt).unwrap();
    let prefix = unique_name("lt");
    let mut c = Config {
        vault_address: p.vault_addr(),
        vault_auth_path: p.var("VDBI_K8S_AUTH_MOUNT"),
        kube_role: p.var("VDBI_LEGACY_KUBE_ROLE"),
        vault_secret_name: p.var("VDBI_KV_MOUNT"),
        vault_secret_prefix: prefix.clone(),
        vault_rate_limit: 0,
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.mode = mode;
    c.cert_file = cert;
    c.key_file = key;
    c.kube_token_path = jwt_path;
    c.token_request_audiences = vec!["vault".into()];
    // Client authentication on: the load generators present the apiserver's webhook client cert.
    crate::webhook::require_client_auth(p, &mut c);
    tweak(&mut c);
    let (running, chart) = crate::launch::start_vdbi(p, c, "lt-rbac", quiet_logger()).await;
    for _ in 0..400 {
        if running.health.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vdbi {
        running,
        prefix,
        cert_pem: ck.cert.pem(),
        _chart: chart,
        _dir: dir,
    }
}

/// The HTTP client of the load generators: loopback only, vdbi's self-signed webhook
/// certificate accepted, the platform's webhook client certificate presented (vdbi requires it),
/// a pool large enough for every request in flight.
pub fn load_client(p: &Platform) -> Result<reqwest::Client, String> {
    crate::webhook::review_client_builder(p)
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())
}

/// `root.request` with owned arguments (for futures collected in `join_all`).
pub async fn req(
    root: &VaultRoot,
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
) -> crate::platform::VaultResponse {
    root.request(method, &path, body.as_ref()).await
}

/// Keys under `<kv>/metadata/<prefix>`.
pub async fn kv_keys(root: &VaultRoot, kv: &str, prefix: &str) -> Vec<String> {
    let r = root
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            &format!("{kv}/metadata/{prefix}"),
            None,
        )
        .await;
    if r.status == 404 {
        return Vec::new();
    }
    r.body["data"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// What a cleanup left behind (all must be 0).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Leftovers {
    pub kv_entries: usize,
    pub tokens: usize,
    pub leases: usize,
}

impl Leftovers {
    pub fn total(&self) -> usize {
        self.kv_entries + self.tokens + self.leases
    }

    pub fn row(&self) -> (String, String) {
        (
            "leftovers kv/tokens/leases".into(),
            format!("{}/{}/{}", self.kv_entries, self.tokens, self.leases),
        )
    }
}

/// The token and lease ids recorded in the bookkeeping entry `<kv>/data/<prefix>/<uuid>`
/// (empty strings where none), or None when the entry does not exist.
pub async fn recorded_ids(
    root: &VaultRoot,
    kv: &str,
    prefix: &str,
    uuid: &str,
) -> Result<Option<(String, String)>, String> {
    let r = root
        .request(Method::GET, &format!("{kv}/data/{prefix}/{uuid}"), None)
        .await;
    match r.status.as_u16() {
        404 => Ok(None),
        200 => {
            let d = &r.body["data"]["data"];
            Ok(Some((
                d["TokenId"].as_str().unwrap_or_default().to_string(),
                d["LeaseId"].as_str().unwrap_or_default().to_string(),
            )))
        }
        s => Err(format!("KV read answered {s}")),
    }
}

/// Revokes every token (with its child leases) and lease recorded under `<kv>/<prefix>`, plus
/// `extra_tokens`, deletes the entries, then counts what is still alive.
pub async fn cleanup_prefix(
    root: &VaultRoot,
    kv: &str,
    prefix: &str,
    extra_tokens: &[String],
    extra_leases: &[String],
) -> Leftovers {
    let mut tokens: Vec<String> = extra_tokens.to_vec();
    let mut leases: Vec<String> = extra_leases.to_vec();
    let keys = kv_keys(root, kv, prefix).await;
    for chunk in keys.chunks(32) {
        let reads = chunk.iter().map(|k| recorded_ids(root, kv, prefix, k));
        for (t, l) in futures::future::join_all(reads)
            .await
            .into_iter()
            .filter_map(|r| r.ok().flatten())
        {
            if !t.is_empty() {
                tokens.push(t);
            }
            if !l.is_empty() {
                leases.push(l);
            }
        }
    }
    for chunk in leases.chunks(32) {
        futures::future::join_all(chunk.iter().map(|l| {
            req(
                root,
                Method::PUT,
                "sys/leases/revoke".into(),
                Some(json!({ "lease_id": l })),
            )
        }))
        .await;
    }
    for chunk in tokens.chunks(32) {
        futures::future::join_all(chunk.iter().map(|t| {
            req(
                root,
                Method::POST,
                "auth/token/revoke".into(),
                Some(json!({ "token": t })),
            )
        }))
        .await;
    }
    for chunk in keys.chunks(32) {
        futures::future::join_all(chunk.iter().map(|k| {
            req(
                root,
                Method::DELETE,
                format!("{kv}/metadata/{prefix}/{k}"),
                None,
            )
        }))
        .await;
    }
    // Reservations and NRI fetch attempts (no token nor lease) at the sibling prefixes
    for folder in siblings(prefix) {
        for k in kv_keys(root, kv, &folder).await {
            req(
                root,
                Method::DELETE,
                format!("{kv}/metadata/{folder}/{k}"),
                None,
            )
            .await;
        }
    }
    count_alive(root, kv, prefix, &tokens, &leases).await
}

/// The KV folders vdbi keeps beside `<prefix>`: reservations and NRI fetch attempts.
fn siblings(prefix: &str) -> [String; 2] {
    [
        vdbi::bookkeeping::reservation_prefix(prefix),
        vdbi::bookkeeping::attempt_prefix(prefix),
    ]
}

/// Counts the KV entries under `<kv>/<prefix>` (and the reservations and NRI fetch attempts
/// beside it) and the tokens and leases among those given that are still alive.
pub async fn count_alive(
    root: &VaultRoot,
    kv: &str,
    prefix: &str,
    tokens: &[String],
    leases: &[String],
) -> Leftovers {
    let mut left = Leftovers {
        kv_entries: kv_keys(root, kv, prefix).await.len(),
        ..Default::default()
    };
    for folder in siblings(prefix) {
        left.kv_entries += kv_keys(root, kv, &folder).await.len();
    }
    for chunk in tokens.chunks(32) {
        let alive = futures::future::join_all(chunk.iter().map(|t| {
            req(
                root,
                Method::POST,
                "auth/token/lookup".into(),
                Some(json!({ "token": t })),
            )
        }))
        .await;
        left.tokens += alive.iter().filter(|r| r.status.is_success()).count();
    }
    for chunk in leases.chunks(32) {
        let alive = futures::future::join_all(chunk.iter().map(|l| {
            req(
                root,
                Method::PUT,
                "sys/leases/lookup".into(),
                Some(json!({ "lease_id": l })),
            )
        }))
        .await;
        left.leases += alive.iter().filter(|r| r.status.is_success()).count();
    }
    left
}
