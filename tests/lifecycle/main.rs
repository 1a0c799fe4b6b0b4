//! The lifecycle half against the real platform: the revoker revokes what a pod received when
//! the pod goes (watch, sweep, finished pods, pods that never appeared, orphan leases), the
//! renewer keeps live pods' credentials alive and nothing else, and leader election hands the
//! duties over between replicas (in-process and real processes of the `vdbi` binary).
//!
//! Every test has its own `vaultSecretPrefix`, `injectorLabel` and Lease namespace, so tests run
//! in parallel with each other and with the other test files.
//!
//! One file per duty (revocation, renewal, orphans, leadership, crash); this one holds the
//! harness they share.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vdbi::actors::error::ActorError;
use vdbi::actors::leadership::{RENEWER_LEASE, REVOKER_LEASE};
use vdbi::actors::pod_index::Snapshot;
use vdbi::actors::renewer::RunCycle;
use vdbi::actors::revoker::{DiscoverOrphans, Sweep};
use vdbi::app::runtime::{start_with, Running};
use vdbi::config::{Config, Mode, OrphanLeaseMode};
use vdbi_testkit::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};
use vdbi_testkit::process::{free_port, ProcessSpec, VdbiProcess};
use vdbi_testkit::*;

mod crash;
mod crash_nri;
mod crash_projected;
mod leadership;
mod orphans;
mod renewal;
mod revocation;

// ---------------------------------------------------------------------------------------------
// Harness

/// One "release" of vdbi: its bookkeeping prefix, its pod label and the chart's RBAC installed
/// in its own namespace (where its Leases live), with Vault roles carrying the published policies.
struct Release {
    prefix: String,
    label: String,
    leases: ChartRelease,
}

impl Release {
    async fn new(client: &kube::Client) -> Release {
        Release {
            prefix: unique_name("lc"),
            label: unique_name("vdbi-lc"),
            leases: ChartRelease::install(&Platform::get(), client, "lc-leases").await,
        }
    }
}

/// An in-process vdbi of a release.
struct Instance {
    running: Running,
    _dir: tempfile::TempDir,
    _cert: TestCert,
}

fn release_config(p: &Platform, rel: &Release, mode: Mode, identity: &str) -> Config {
    let mut c = base_config(p, &rel.prefix);
    c.mode = mode;
    c.injector_label = rel.label.clone();
    c.pod_name = identity.to_string();
    c.pod_namespace = rel.leases.namespace.name.clone();
    c.kube_role = rel.leases.vault_role(Component::of_mode(mode));
    c.sync_ttl_second = 3600;
    c.revoker_unseen_grace = Duration::from_secs(60);
    c
}

/// Starts vdbi in-process with the chart's RBAC of its mode's component and the release's Vault
/// role (through the least-privilege guard).
async fn start_instance(p: &Platform, rel: &Release, mut c: Config) -> Instance {
    vdbi_testkit::platform::install_crypto_provider();
    let component = Component::of_mode(c.mode);
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    c.kube_token_path = rel.leases.jwt_file(component, dir.path()).await;
    c.cert_file = cert.cert.clone();
    c.key_file = cert.key.clone();
    let kube = rel.leases.kube_client(component).await;
    assert_least_privilege(p, Some(&kube), &c.vault_auth_path, &[&c.kube_role]).await;
    let running = start_with(
        c,
        vdbi_testkit::log_lines::checked_logger(),
        vdbi::telemetry::Metrics::new(true),
        Some(kube),
    )
    .await
    .expect("vdbi starts");
    Instance {
        running,
        _dir: dir,
        _cert: cert,
    }
}

impl Instance {
    /// One renewer cycle now (waiting for a scheduled one to finish first).
    async fn run_cycle(&self) -> Result<vdbi::actors::renewer::CycleReport, ActorError> {
        let renewer = self.running.renewer.as_ref().expect("a renewer");
        loop {
            match renewer.send(RunCycle).await.expect("renewer alive") {
                Err(ActorError::Busy(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => return other,
            }
        }
    }

    fn leads(&self, lease: &str) -> bool {
        self.running
            .metrics
            .count("vdbi_is_leader", &[("lease_name", lease)])
            == 1.0
    }

    async fn wait_leading(&self, lease: &str) {
        let t = Instant::now();
        while !self.leads(lease) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{lease} not acquired: {:?}",
                self.running.health.checks()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The pod index must have listed before the duty can act.
        while self
            .running
            .health
            .check("pod-index")
            .is_none_or(|c| !c.ready)
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "pod index never synced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Credentials issued as vdbi's legacy webhook does: an orphan token with the role's policy,
/// then `<mount>/creds/<role>` read with it.
#[derive(Clone, Debug)]
struct Issued {
    uuid: String,
    token: String,
    lease_id: String,
    username: String,
    password: String,
}

async fn issue(root: &VaultRoot, p: &Platform, role: &str, period: &str) -> Issued {
    let auth = root
        .write(
            "auth/token/create-orphan",
            &json!({"policies": [role], "period": period, "display_name": "injector-orphan-token"}),
        )
        .await;
    let token = auth["auth"]["client_token"].as_str().unwrap().to_string();
    let creds = root
        .with_token(&token)
        .read(&format!("{}/creds/{role}", p.var("VDBI_DB_MOUNT")))
        .await;
    Issued {
        uuid: uuid::Uuid::new_v4().to_string(),
        token,
        lease_id: creds["lease_id"].as_str().unwrap().to_string(),
        username: creds["data"]["username"].as_str().unwrap().to_string(),
        password: creds["data"]["password"].as_str().unwrap().to_string(),
    }
}

/// Writes the bookkeeping entry of `i` (vault-db-injector's layout).
async fn record(root: &VaultRoot, p: &Platform, prefix: &str, i: &Issued, ns: &str, pod: &str) {
    root.write(
        &format!("{}/data/{prefix}/{}", p.var("VDBI_KV_MOUNT"), i.uuid),
        &json!({"data": {
            "LeaseId": i.lease_id, "TokenId": i.token, "Namespace": ns,
            "ServiceAccountName": "", "PodName": pod, "NodeName": ""
        }}),
    )
    .await;
}

/// `sys/leases/lookup` data, `None` once Vault no longer holds the lease.
async fn lease_info(root: &VaultRoot, lease_id: &str) -> Option<Value> {
    let r = root
        .request(
            Method::PUT,
            "sys/leases/lookup",
            Some(&json!({ "lease_id": lease_id })),
        )
        .await;
    if r.status.is_success() {
        Some(r.body["data"].clone())
    } else {
        assert!(
            r.body.to_string().contains("invalid lease"),
            "lease lookup: {} {}",
            r.status,
            r.body
        );
        None
    }
}

/// `auth/token/lookup` data, `None` once the token is revoked.
async fn token_info(root: &VaultRoot, token: &str) -> Option<Value> {
    let r = root
        .request(
            Method::POST,
            "auth/token/lookup",
            Some(&json!({ "token": token })),
        )
        .await;
    if r.status.is_success() {
        Some(r.body["data"].clone())
    } else {
        assert!(
            r.body.to_string().contains("bad token"),
            "token lookup: {} {}",
            r.status,
            r.body
        );
        None
    }
}

/// Can the token still authenticate? A revoked token is unknown to Vault; a token whose
/// revocation was cut short (client killed during revoke-orphan) is kept by Vault marked
/// "revocation pending" (`num_uses: -1`) and refuses every use: that counts as revoked.
async fn token_usable(root: &VaultRoot, token: &str) -> bool {
    match token_info(root, token).await {
        None => false,
        Some(data) if data["num_uses"] == -1 => root
            .with_token(token)
            .request(Method::GET, "auth/token/lookup-self", None)
            .await
            .status
            .is_success(),
        Some(_) => true,
    }
}

/// True when the lease, the token and the KV entry are all gone.
async fn all_gone(root: &VaultRoot, p: &Platform, prefix: &str, i: &Issued) -> bool {
    kv_entry(root, p, prefix, &i.uuid).await.is_none()
        && lease_info(root, &i.lease_id).await.is_none()
        && !token_usable(root, &i.token).await
}

async fn all_alive(root: &VaultRoot, p: &Platform, prefix: &str, i: &Issued) -> bool {
    kv_entry(root, p, prefix, &i.uuid).await.is_some()
        && lease_info(root, &i.lease_id).await.is_some()
        && token_usable(root, &i.token).await
}

/// Waits until everything of `issued` is gone; returns how long it took.
async fn wait_all_gone(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
    issued: &[Issued],
    limit: Duration,
) -> Duration {
    wait_all_gone_or(root, p, prefix, issued, limit, String::new).await
}

/// [`wait_all_gone`], with `context()` (e.g. a process log) in the failure message.
async fn wait_all_gone_or(
    root: &VaultRoot,
    p: &Platform,
    prefix: &str,
    issued: &[Issued],
    limit: Duration,
    context: impl Fn() -> String,
) -> Duration {
    let t = Instant::now();
    for i in issued {
        while !all_gone(root, p, prefix, i).await {
            assert!(
                t.elapsed() < limit,
                "{} not revoked after {limit:?}: kv={:?} lease={} token={}\n{}",
                i.uuid,
                kv_entry(root, p, prefix, &i.uuid).await.is_some(),
                lease_info(root, &i.lease_id).await.is_some(),
                token_usable(root, &i.token).await,
                context()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    t.elapsed()
}

/// Test cleanup: revoke and delete whatever is left (best effort).
async fn purge(root: &VaultRoot, p: &Platform, prefix: &str, issued: &[Issued]) {
    for i in issued {
        root.request(
            Method::POST,
            "auth/token/revoke-orphan",
            Some(&json!({"token": i.token})),
        )
        .await;
        root.request(
            Method::PUT,
            "sys/leases/revoke",
            Some(&json!({"lease_id": i.lease_id})),
        )
        .await;
    }
    for k in kv_keys(root, p, prefix).await {
        root.request(
            Method::DELETE,
            &format!("{}/metadata/{prefix}/{k}", p.var("VDBI_KV_MOUNT")),
            None,
        )
        .await;
    }
}

/// A pod carrying `label=true` and the given `uuid` annotation (no webhook involved).
fn labelled_pod(name: &str, label: &str, uuids: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {label: "true"},
            "annotations": {format!("{PREFIX}uuid"): uuids.join(",")}
        },
        "spec": {
            "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "busybox"}]
        }
    }))
    .unwrap()
}

async fn create_pod(pods: &Api<Pod>, pod: &Pod) -> Pod {
    pods.create(&PostParams::default(), pod)
        .await
        .expect("pod created")
}

/// A database connection and role of the test's own (the platform's `pg` connection only allows
/// app-rw/app-ro), with a policy of the same name that may read its credentials.
struct OwnRole {
    name: String,
}

impl OwnRole {
    async fn create(root: &VaultRoot, p: &Platform) -> OwnRole {
        let name = unique_name("lc-role");
        let mount = p.var("VDBI_DB_MOUNT");
        root.write(
            &format!("{mount}/config/{name}"),
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
                    p.var("VDBI_PG_HOST"), p.var("VDBI_PG_PORT"), p.var("VDBI_PG_DATABASE")),
                "username": p.var("VDBI_PG_ADMIN_USER"),
                "password": p.var("VDBI_PG_ADMIN_PASSWORD"),
                "allowed_roles": [name],
            }),
        )
        .await;
        root.write(
            &format!("{mount}/roles/{name}"),
            &json!({
                "db_name": name,
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
                "default_ttl": "1h",
                "max_ttl": "24h"
            }),
        )
        .await;
        root.write(
            &format!("sys/policies/acl/{name}"),
            &json!({"policy": format!("path \"{mount}/creds/{name}\" {{ capabilities = [\"read\"] }}\n")}),
        )
        .await;
        OwnRole { name }
    }

    async fn delete(self, root: &VaultRoot, p: &Platform) {
        let mount = p.var("VDBI_DB_MOUNT");
        root.request(
            Method::PUT,
            &format!("sys/leases/revoke-prefix/{mount}/creds/{}", self.name),
            None,
        )
        .await;
        root.request(
            Method::DELETE,
            &format!("{mount}/roles/{}", self.name),
            None,
        )
        .await;
        root.request(
            Method::DELETE,
            &format!("{mount}/config/{}", self.name),
            None,
        )
        .await;
        root.request(
            Method::DELETE,
            &format!("sys/policies/acl/{}", self.name),
            None,
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Real processes: kill -9, SIGSTOP, SIGTERM

struct ProcEnv {
    dir: tempfile::TempDir,
    cert: TestCert,
    /// Per component: (Vault JWT file, kubeconfig) of the chart's ServiceAccount.
    identities: BTreeMap<&'static str, (PathBuf, PathBuf)>,
}

impl ProcEnv {
    /// The last lines of every process log of this test.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for log in logs
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let s = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            out.push_str(&format!("--- {}\n", log.display()));
            out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            out.push('\n');
        }
        out
    }

    async fn new(p: &Platform, rel: &Release) -> ProcEnv {
        let dir = tempfile::tempdir().unwrap();
        let mut identities = BTreeMap::new();
        for c in [
            Component::All,
            Component::Renewer,
            Component::Revoker,
            Component::Injector,
            Component::Nri,
        ] {
            let jwt = rel.leases.jwt_file(c, dir.path()).await;
            let kubeconfig = rel.leases.kubeconfig(c, dir.path()).await;
            let kube = rel.leases.kube_client(c).await;
            assert_least_privilege(
                p,
                Some(&kube),
                &p.var("VDBI_K8S_AUTH_MOUNT"),
                &[&rel.leases.vault_role(c)],
            )
            .await;
            identities.insert(c.as_str(), (jwt, kubeconfig));
        }
        ProcEnv {
            dir,
            cert: make_cert(),
            identities,
        }
    }

    /// Starts `vdbi --config` with `extra` YAML lines appended.
    fn spawn(
        &self,
        p: &Platform,
        rel: &Release,
        name: &str,
        mode: &str,
        extra: &str,
        kubeconfig: Option<&Path>,
    ) -> VdbiProcess {
        let (jwt, chart_kubeconfig) = &self.identities[mode];
        let kube_role = if extra.contains("kubeRole:") {
            String::new()
        } else {
            // A legacy injector logs in with the legacy single role, as the chart configures it.
            let c = match mode {
                "renewer" => Component::Renewer,
                "revoker" => Component::Revoker,
                "nri" => Component::Nri,
                _ => Component::All,
            };
            format!("kubeRole: {}\n", rel.leases.vault_role(c))
        };
        let webhook = if extra.contains("webhookListen:") {
            ""
        } else {
            "webhookListen: 127.0.0.1:0\n"
        };
        let config = format!(
            "mode: {mode}\nvaultAddress: {}\nvaultAuthPath: {}\n{kube_role}vaultSecretName: {}\n\
             vaultSecretPrefix: {}\ninjectorLabel: {}\nkubeTokenPath: {}\ncertFile: {}\nkeyFile: {}\n\
             {webhook}vaultRateLimit: 0\nlogLevel: debug\n{extra}",
            p.vault_addr(),
            p.var("VDBI_K8S_AUTH_MOUNT"),
            p.var("VDBI_KV_MOUNT"),
            rel.prefix,
            rel.label,
            jwt.display(),
            self.cert.cert.display(),
            self.cert.key.display(),
        );
        VdbiProcess::spawn(
            p,
            ProcessSpec {
                bin: Path::new(env!("CARGO_BIN_EXE_vdbi")),
                dir: self.dir.path(),
                name,
                config,
                kubeconfig: kubeconfig.unwrap_or(chart_kubeconfig),
                pod_namespace: &rel.leases.namespace.name,
            },
        )
    }
}

/// Waits until `cond` holds, up to `limit`; returns the time it took. On failure, the tails of
/// the test's process logs are shown.
async fn until<F, Fut>(env: &ProcEnv, what: &str, limit: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !cond().await {
        assert!(
            t.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            env.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}

/// Vault holds more leases of `role` (on `mount`) than `prefix` has entries: a credentials read
/// whose bookkeeping entry is not written yet.
async fn lease_unrecorded(
    root: &VaultRoot,
    p: &Platform,
    mount: &str,
    role: &str,
    prefix: &str,
) -> bool {
    leases(root, mount, role).await.len() > kv_keys(root, p, prefix).await.len()
}

/// Freezes `proc` (SIGSTOP) at random instants, each time letting Vault finish what it was
/// serving, until `cond` holds while it is frozen; resumes it between tries. Leaves it frozen and
/// returns true once `cond` held, false after `limit`.
async fn freeze_when<F, Fut>(proc: &VdbiProcess, limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 250)).await;
        proc.signal(libc::SIGSTOP);
        // Less than the runtime's 2 s request timeout: the creations under way survive a miss.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if cond().await {
            return true;
        }
        proc.signal(libc::SIGCONT);
    }
    false
}

/// `workers` loops posting reviews of new one-dbConfig pods (role `role`, namespace `ns`) to
/// `hook` until stopped: the admission burst the crash tests kill vdbi during.
struct Burst {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Burst {
    fn start(hook: &ReviewClient, ns: &str, role: &str, workers: usize) -> Burst {
        use std::sync::atomic::Ordering::SeqCst;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admitted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|w| {
                let (hook, stop, admitted) = (hook.clone(), stop.clone(), admitted.clone());
                let (ns, role) = (ns.to_string(), role.to_string());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(SeqCst) {
                        n += 1;
                        let name = format!("w{w}-{n}");
                        let pod = pod(
                            &name,
                            "app",
                            &[("db.role", &role), ("db.env-key-dbuser", "U")],
                        );
                        match hook.send(&review(&pod, &ns, &name, &name)).await {
                            Ok(a) if a["allowed"] == true => {
                                admitted.fetch_add(1, SeqCst);
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Burst {
            stop,
            admitted,
            workers,
        }
    }

    /// Stops the workers, waits for them; how many pods were admitted.
    async fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.workers {
            w.await.unwrap();
        }
        self.admitted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits until `running`'s pod index knows every pod of `uids` (its watch delivered them).
async fn wait_indexed(running: &Running, uids: &[String]) {
    let index = running.pod_index.as_ref().expect("a pod index");
    let t = Instant::now();
    loop {
        if let Ok(Some(s)) = index.send(Snapshot).await {
            if uids.iter().all(|u| s.is_live(u)) {
                return;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the pod index never saw {uids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one process of `procs` leading `lease` (asserting there is exactly one).
async fn sole_leader<'a>(procs: &[&'a VdbiProcess], lease: &str) -> &'a VdbiProcess {
    let mut leaders = Vec::new();
    for p in procs {
        if p.leads(lease).await {
            leaders.push(*p);
        }
    }
    assert_eq!(
        leaders.len(),
        1,
        "{lease}: leaders {:?}",
        leaders.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    leaders[0]
}
