//! The lifecycle half against the real platform: the revoker revokes what a pod received when
//! the pod goes (watch, sweep, finished pods, pods that never appeared, orphan leases), the
//! renewer keeps live pods' credentials alive and nothing else, and leader election hands the
//! duties over between replicas (in-process and real processes of the `vdbi` binary).
//!
//! Every test has its own `vaultSecretPrefix`, `injectorLabel` and Lease namespace, so tests run
//! in parallel with each other and with the other test files.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vdbi::actors::leadership::{RENEWER_LEASE, REVOKER_LEASE};
use vdbi::actors::renewer::RunCycle;
use vdbi::actors::revoker::{DiscoverOrphans, Sweep};
use vdbi::app::runtime::{start_with, Running};
use vdbi::config::{Config, Mode, OrphanLeaseMode};
use vdbi::testing::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use vdbi::testing::platform::{unique_name, Platform, TestNamespace, VaultRoot};

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
    vdbi::testing::platform::install_crypto_provider();
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
        vdbi::testing::log_lines::checked_logger(),
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
    async fn run_cycle(&self) -> Result<vdbi::actors::renewer::CycleReport, String> {
        let renewer = self.running.renewer.as_ref().expect("a renewer");
        loop {
            match renewer.send(RunCycle).await.expect("renewer alive") {
                Err(e) if e.contains("already running") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
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

// ---------------------------------------------------------------------------------------------
// Revoker

/// Pods admitted by vdbi's webhook, then deleted: leases, tokens and KV entries are gone within
/// 2 s of the DELETE, and PostgreSQL refuses the credentials.
#[actix_rt::test]
async fn deleted_pods_lose_their_credentials_within_two_seconds() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-watch").await;
    ns.service_account("app").await;
    ns.service_account("default").await;
    let inst = start_instance(&p, &rel, release_config(&p, &rel, Mode::All, "replica-a")).await;
    inst.wait_leading(REVOKER_LEASE).await;
    // The instance's JWT directory stays alive with `_identity` (vdbi re-reads it at login).
    let Instance {
        running,
        _dir: _identity,
        _cert: cert,
    } = inst;
    let vdbi = Vdbi {
        running,
        prefix: rel.prefix.clone(),
        cert,
        jwt_file: tempfile::NamedTempFile::new().unwrap(),
        chart: None,
    };
    let wh = register_webhook(&client, &vdbi, &ns.name).await;
    let pods: Api<Pod> = ns.api();

    // Three pods, two databases each.
    let mut admitted = Vec::new();
    for n in 0..3 {
        let mut pod = pod(
            &format!("app-{n}"),
            "app",
            &[
                ("main.role", "app-rw"),
                ("main.env-key-dbuser", "DB_USER"),
                ("main.env-key-dbpassword", "DB_PASSWORD"),
                ("ro.role", "app-ro"),
                ("ro.env-key-dbuser", "RO_USER"),
                ("ro.env-key-dbpassword", "RO_PASSWORD"),
            ],
        );
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(rel.label.clone(), "true".into());
        let stored = create_pod(&pods, &pod).await;
        let env = env_map(&stored, "app");
        let mut issued = Vec::new();
        for (uuid, (user, pass)) in uuids(&stored)
            .into_iter()
            .zip([("DB_USER", "DB_PASSWORD"), ("RO_USER", "RO_PASSWORD")])
        {
            let e = kv_entry(&root, &p, &rel.prefix, &uuid)
                .await
                .expect("entry written at admission");
            issued.push(Issued {
                uuid,
                token: e["TokenId"].as_str().unwrap().to_string(),
                lease_id: e["LeaseId"].as_str().unwrap().to_string(),
                username: env[user].clone(),
                password: env[pass].clone(),
            });
        }
        for i in &issued {
            assert!(all_alive(&root, &p, &rel.prefix, i).await);
            pg_connect(&p, &i.username, &i.password)
                .await
                .expect("credentials work while the pod lives");
        }
        admitted.push((stored.metadata.name.clone().unwrap(), issued));
    }
    // Let the watch deliver the ADDED events before deleting.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut figures = Vec::new();
    for (name, issued) in &admitted {
        let t0 = Instant::now();
        pods.delete(name, &DeleteParams::default()).await.unwrap();
        let took = t0.elapsed()
            + wait_all_gone(&root, &p, &rel.prefix, issued, Duration::from_secs(10)).await;
        figures.push(took);
        for i in issued {
            assert!(
                pg_connect(&p, &i.username, &i.password).await.is_err(),
                "PostgreSQL still accepts revoked credentials"
            );
        }
    }
    let ms: Vec<u128> = figures.iter().map(|d| d.as_millis()).collect();
    println!("time from DELETE to everything revoked (2 entries per pod): {ms:?} ms");
    for f in &figures {
        assert!(
            *f < Duration::from_secs(2),
            "revocation took {f:?} (> 2 s): {ms:?}"
        );
    }
    let m = &vdbi.running.metrics;
    assert_eq!(m.count("vdbi_pod_cleanup_count_success", &[]), 3.0);
    // Counted per namespace, so the count outlives the entries' own series (scrapeable).
    let deleted = format!(
        "vdbi_delete_data_count_success{{namespace=\"{}\",uuid=\"\"}} 6",
        ns.name
    );
    assert!(m.render().contains(&deleted), "no {deleted}");
    assert_eq!(
        m.observations("vdbi_revocation_latency_seconds", &[("path", "watch")])
            .0,
        6
    );
    wh.delete().await;
    vdbi.running.shutdown().await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// The revoker is stopped while pods are deleted: at restart, its sweep cleans everything, and
/// only that (a live pod's credentials stay).
#[actix_rt::test]
async fn stopped_revoker_sweeps_up_after_restart() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-stopped").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let mut gone = Vec::new();
    for n in 0..4 {
        let i = issue(&root, &p, "app-rw", "768h").await;
        let name = format!("doomed-{n}");
        record(&root, &p, &rel.prefix, &i, &ns.name, &name).await;
        create_pod(&pods, &labelled_pod(&name, &rel.label, &[&i.uuid])).await;
        gone.push(i);
    }
    let keep = issue(&root, &p, "app-ro", "768h").await;
    record(&root, &p, &rel.prefix, &keep, &ns.name, "survivor").await;
    create_pod(&pods, &labelled_pod("survivor", &rel.label, &[&keep.uuid])).await;

    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(4);
    let inst = start_instance(&p, &rel, cfg.clone()).await;
    inst.wait_leading(REVOKER_LEASE).await;
    inst.running.shutdown().await;

    for n in 0..4 {
        pods.delete(&format!("doomed-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in &gone {
        assert!(
            all_alive(&root, &p, &rel.prefix, i).await,
            "nothing may be revoked while the revoker is stopped"
        );
    }

    let t0 = Instant::now();
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let took =
        t0.elapsed() + wait_all_gone(&root, &p, &rel.prefix, &gone, Duration::from_secs(30)).await;
    println!(
        "restart to sweep completion: {:.1} s (unseen grace 4 s)",
        took.as_secs_f64()
    );
    assert!(
        all_alive(&root, &p, &rel.prefix, &keep).await,
        "a live pod lost its credentials"
    );
    assert_eq!(
        inst.running
            .metrics
            .observations("vdbi_revocation_latency_seconds", &[("path", "sweep")])
            .0,
        4
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[keep]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// An entry whose pod never appeared (admission answered, pod never stored) is revoked after the
/// unseen grace — not before (the pod may be on its way), and not 5 minutes later.
#[actix_rt::test]
async fn entry_of_a_pod_that_never_appeared_is_revoked_after_the_grace() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-never").await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;

    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "never-stored").await;
    let t0 = Instant::now();
    tokio::time::sleep(grace / 2).await;
    assert!(
        all_alive(&root, &p, &rel.prefix, &i).await,
        "revoked before the grace"
    );
    let took = t0.elapsed()
        + wait_all_gone(
            &root,
            &p,
            &rel.prefix,
            std::slice::from_ref(&i),
            Duration::from_secs(60),
        )
        .await;
    println!(
        "pod never appeared: revoked {:.1} s after the entry was written (grace {grace:?})",
        took.as_secs_f64()
    );
    assert!(took >= grace);
    // Sweep every grace/4: due 1 to 1.25 graces after the write (plus the confirmation).
    assert!(
        took < grace + grace / 4 + Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(pg_connect(&p, &i.username, &i.password).await.is_err());
    inst.running.shutdown().await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// A pod reaching phase Succeeded has its credentials revoked then (revokeTerminatedPods), not
/// when its object is deleted; a running neighbour keeps its own.
#[actix_rt::test]
async fn finished_pod_credentials_are_revoked() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-finished").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let job = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &job, &ns.name, "job").await;
    create_pod(&pods, &labelled_pod("job", &rel.label, &[&job.uuid])).await;
    let web = issue(&root, &p, "app-ro", "768h").await;
    record(&root, &p, &rel.prefix, &web, &ns.name, "web").await;
    create_pod(&pods, &labelled_pod("web", &rel.label, &[&web.uuid])).await;

    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Revoker, "revoker-0"),
    )
    .await;
    inst.wait_leading(REVOKER_LEASE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_alive(&root, &p, &rel.prefix, &job).await);

    let t0 = Instant::now();
    pods.patch_status(
        "job",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let took = t0.elapsed()
        + wait_all_gone(
            &root,
            &p,
            &rel.prefix,
            std::slice::from_ref(&job),
            Duration::from_secs(10),
        )
        .await;
    println!(
        "phase Succeeded to credentials revoked: {} ms",
        took.as_millis()
    );
    assert!(
        pods.get_opt("job").await.unwrap().is_some(),
        "the pod object still exists"
    );
    assert!(all_alive(&root, &p, &rel.prefix, &web).await);
    assert!(pg_connect(&p, &job.username, &job.password).await.is_err());
    assert_eq!(
        inst.running
            .metrics
            .observations("vdbi_revocation_latency_seconds", &[("path", "finished")])
            .0,
        1
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[web]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// A pod whose label is removed leaves the watched set (the API reports it deleted) but keeps its
/// credentials: it still exists (vault-db-injector revoked them).
#[actix_rt::test]
async fn removing_the_label_does_not_revoke() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-relabel").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "relabelled").await;
    create_pod(&pods, &labelled_pod("relabelled", &rel.label, &[&i.uuid])).await;
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(2);
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pods.patch(
        "relabelled",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {rel.label.clone(): null}}})),
    )
    .await
    .unwrap();
    // Watch path and several sweeps (grace 2 s, sweep every 1 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        all_alive(&root, &p, &rel.prefix, &i).await,
        "relabelled pod lost its credentials"
    );
    let report = inst
        .running
        .revoker
        .as_ref()
        .unwrap()
        .send(Sweep)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.revoked, 0, "{report:?}");
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[i]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Renewer

/// The renewer extends the token and lease of live pods (seen through Vault's own lookups),
/// backfills PodName/ServiceAccountName, and leaves alone the entries of another release (other
/// prefix) and of pods outside its label.
#[actix_rt::test]
async fn renewer_extends_live_pods_and_leaves_other_releases_alone() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let other = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-renew").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    // Ours: a live pod (entry without PodName, to be backfilled).
    let ours = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &ours, &ns.name, "").await;
    create_pod(&pods, &labelled_pod("ours", &rel.label, &[&ours.uuid])).await;
    // Our prefix, but the pod carries the other release's label only.
    let foreign_label = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &foreign_label, &ns.name, "theirs-a").await;
    create_pod(
        &pods,
        &labelled_pod("theirs-a", &other.label, &[&foreign_label.uuid]),
    )
    .await;
    // The other release's prefix and label.
    let foreign = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &other.prefix, &foreign, &ns.name, "theirs-b").await;
    create_pod(
        &pods,
        &labelled_pod("theirs-b", &other.label, &[&foreign.uuid]),
    )
    .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = token_info(&root, &ours.token).await.unwrap();
    assert!(before["last_renewal_time"].is_null());
    assert!(before["ttl"].as_u64().unwrap() < 3600);
    let lease_before = lease_info(&root, &ours.lease_id).await.unwrap();
    assert!(lease_before["ttl"].as_u64().unwrap() <= 3600);

    let mut cfg = release_config(&p, &rel, Mode::Renewer, "renewer-0");
    cfg.sync_ttl_second = 2;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(RENEWER_LEASE).await;
    let m = &inst.running.metrics;
    let t = Instant::now();
    while m.count("vdbi_synchronization_count_success", &[]) < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no renewal cycle ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = token_info(&root, &ours.token).await.unwrap();
    assert!(
        !after["last_renewal_time"].is_null(),
        "token not renewed: {after}"
    );
    assert!(after["ttl"].as_u64().unwrap() >= 3599);
    let lease_after = lease_info(&root, &ours.lease_id).await.unwrap();
    assert!(!lease_after["last_renewal"].is_null(), "lease not renewed");
    assert!(
        lease_after["ttl"].as_u64().unwrap() > 20 * 3600,
        "lease TTL not extended to max_ttl: {lease_after}"
    );
    let e = kv_entry(&root, &p, &rel.prefix, &ours.uuid).await.unwrap();
    assert_eq!(e["PodName"], "ours");
    assert_eq!(e["ServiceAccountName"], "default");
    for i in [&foreign_label, &foreign] {
        let t = token_info(&root, &i.token).await.unwrap();
        assert!(
            t["last_renewal_time"].is_null(),
            "another release's token was renewed"
        );
        let l = lease_info(&root, &i.lease_id).await.unwrap();
        assert!(
            l["last_renewal"].is_null(),
            "another release's lease was renewed"
        );
    }
    // TTL-aware: the next cycle renews nothing (plenty of TTL left).
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.live, 1, "{report:?}");
    assert_eq!(
        (report.tokens_renewed, report.leases_renewed),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(report.skipped, 2, "{report:?}");
    assert_eq!(
        m.count(
            "vdbi_renew_token_count_success",
            &[
                ("uuid", ours.uuid.as_str()),
                ("namespace", ns.name.as_str())
            ]
        ),
        1.0
    );
    assert!(
        m.value("vdbi_last_synchronization_success", &[]).is_some(),
        "the leader exports its last success"
    );
    let gauge = format!(
        "vdbi_lease_expiration{{namespace=\"{}\",uuid=\"{}\"}}",
        ns.name, ours.uuid
    );
    assert!(m.render().contains(&gauge), "no {gauge}");
    // The pod lives on, but its entry is revoked (by the revoker, another process): the renewer's
    // next cycle drops every per-uuid series of it.
    purge(&root, &p, &rel.prefix, std::slice::from_ref(&ours)).await;
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.entries, 0, "{report:?}");
    let text = m.render();
    assert!(
        !text.contains(&ours.uuid),
        "series of a revoked entry remain:\n{text}"
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[ours, foreign_label]).await;
    purge(&root, &p, &other.prefix, &[foreign]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
    other.leases.cleanup().await;
}

/// Zero live pods while entries exist: the cycle refuses and touches nothing.
#[actix_rt::test]
async fn zero_pods_guard_touches_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-zero").await;
    let i = issue(&root, &p, "app-rw", "1h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "").await;
    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Renewer, "renewer-0"),
    )
    .await;
    inst.wait_leading(RENEWER_LEASE).await;
    let err = inst.run_cycle().await.expect_err("the cycle must refuse");
    assert!(err.contains("zero live"), "{err}");
    assert!(token_info(&root, &i.token).await.unwrap()["last_renewal_time"].is_null());
    assert!(lease_info(&root, &i.lease_id).await.unwrap()["last_renewal"].is_null());
    let e = kv_entry(&root, &p, &rel.prefix, &i.uuid).await.unwrap();
    assert_eq!(e["PodName"], "");
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_synchronization_count_error", &[]),
        1.0
    );
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_synchronization_count_success", &[]),
        0.0
    );
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[i]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
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

/// A lease that became unrecoverable (its role was deleted: renew answers 400 `could not find
/// role`) gets its entry purged by the renewer, token revoked.
#[actix_rt::test]
async fn unrecoverable_lease_entry_is_purged() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-unrec").await;
    ns.service_account("default").await;
    let role = OwnRole::create(&root, &p).await;
    let pods: Api<Pod> = ns.api();
    let doomed = issue(&root, &p, &role.name, "1h").await;
    record(&root, &p, &rel.prefix, &doomed, &ns.name, "doomed").await;
    create_pod(&pods, &labelled_pod("doomed", &rel.label, &[&doomed.uuid])).await;
    let fine = issue(&root, &p, "app-ro", "1h").await;
    record(&root, &p, &rel.prefix, &fine, &ns.name, "fine").await;
    create_pod(&pods, &labelled_pod("fine", &rel.label, &[&fine.uuid])).await;
    root.request(
        Method::DELETE,
        &format!("{}/roles/{}", p.var("VDBI_DB_MOUNT"), role.name),
        None,
    )
    .await;

    let inst = start_instance(
        &p,
        &rel,
        release_config(&p, &rel, Mode::Renewer, "renewer-0"),
    )
    .await;
    inst.wait_leading(RENEWER_LEASE).await;
    let report = inst.run_cycle().await.unwrap();
    assert_eq!(report.purged, 1, "{report:?}");
    assert!(kv_entry(&root, &p, &rel.prefix, &doomed.uuid)
        .await
        .is_none());
    assert!(
        token_info(&root, &doomed.token).await.is_none(),
        "token of the purged entry not revoked"
    );
    assert!(all_alive(&root, &p, &rel.prefix, &fine).await);
    assert!(!token_info(&root, &fine.token).await.unwrap()["last_renewal_time"].is_null());
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[fine]).await;
    role.delete(&root, &p).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Orphan leases

/// Leases Vault holds under the roles this release uses but that no entry records (a crash
/// between issuing and recording) are reported, and in `revoke` mode revoked once older than
/// the grace; younger ones, recorded ones and other roles' are left alone.
#[actix_rt::test]
async fn orphan_leases_are_found_and_revoked_after_the_grace() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-orphan").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let role = OwnRole::create(&root, &p).await;
    let grace = Duration::from_secs(10);

    let recorded = issue(&root, &p, &role.name, "1h").await;
    record(&root, &p, &rel.prefix, &recorded, &ns.name, "web").await;
    create_pod(&pods, &labelled_pod("web", &rel.label, &[&recorded.uuid])).await;
    let old_orphan = issue(&root, &p, &role.name, "1h").await;
    // Not a role of this release: never examined, however old.
    let other_role = issue(&root, &p, "app-ro", "1h").await;
    tokio::time::sleep(grace + Duration::from_secs(1)).await;
    let young_orphan = issue(&root, &p, &role.name, "1h").await;
    let young_at = Instant::now();

    // Report mode: counted, nothing revoked.
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = Duration::from_secs(2);
    cfg.orphan_lease_grace = grace;
    cfg.orphan_lease_discovery = OrphanLeaseMode::Report;
    let inst = start_instance(&p, &rel, cfg.clone()).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let revoker = inst.running.revoker.clone().unwrap();
    // A pass learns the roles from the entries, the next one lists their leases.
    let pass = || async {
        loop {
            match revoker.send(DiscoverOrphans).await.unwrap() {
                Err(e) if e.contains("running") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other.unwrap(),
            }
        }
    };
    let mut report = pass().await;
    for _ in 0..20 {
        if report.orphans > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        report = pass().await;
    }
    assert_eq!(report.orphans, 1, "{report:?}");
    assert_eq!(report.revoked, 0, "{report:?}");
    assert_eq!(report.unknown_entries, 0, "{report:?}");
    assert!(report.leases >= 3, "{report:?}");
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_orphan_leases_found_total", &[]),
        1.0
    );
    assert!(lease_info(&root, &old_orphan.lease_id).await.is_some());
    // Counted once, however many passes see it.
    pass().await;
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_orphan_leases_found_total", &[]),
        1.0
    );
    inst.running.shutdown().await;

    // Revoke mode.
    cfg.orphan_lease_discovery = OrphanLeaseMode::Revoke;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let m = inst.running.metrics.clone();
    let t = Instant::now();
    while lease_info(&root, &old_orphan.lease_id).await.is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "old orphan lease not revoked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if young_at.elapsed() < grace {
        assert!(
            lease_info(&root, &young_orphan.lease_id).await.is_some(),
            "an orphan younger than the grace was revoked"
        );
    }
    assert!(pg_connect(&p, &old_orphan.username, &old_orphan.password)
        .await
        .is_err());
    // The young one goes once it is old enough.
    while lease_info(&root, &young_orphan.lease_id).await.is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "young orphan lease never revoked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(young_at.elapsed() >= grace);
    assert!(
        all_alive(&root, &p, &rel.prefix, &recorded).await,
        "a recorded lease was revoked"
    );
    assert!(
        lease_info(&root, &other_role.lease_id).await.is_some(),
        "another role's lease was revoked"
    );
    assert_eq!(m.count("vdbi_orphan_leases_revoked_total", &[]), 2.0);
    assert_eq!(m.count("vdbi_orphan_leases_found_total", &[]), 2.0);
    inst.running.shutdown().await;

    purge(
        &root,
        &p,
        &rel.prefix,
        &[recorded, old_orphan, young_orphan, other_role],
    )
    .await;
    role.delete(&root, &p).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Real processes: kill -9, SIGSTOP, SIGTERM

/// A `vdbi` process.
struct Proc {
    name: String,
    child: Child,
    metrics: String,
    health: String,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    ) -> Proc {
        let (mport, hport) = (free_port(), free_port());
        let (jwt, chart_kubeconfig) = &self.identities[mode];
        let kube_role = if extra.contains("kubeRole:") {
            String::new()
        } else {
            // A legacy injector logs in with the legacy single role, as the chart configures it.
            let c = match mode {
                "renewer" => Component::Renewer,
                "revoker" => Component::Revoker,
                _ => Component::All,
            };
            format!("kubeRole: {}\n", rel.leases.vault_role(c))
        };
        let webhook = if extra.contains("webhookListen:") {
            ""
        } else {
            "webhookListen: 127.0.0.1:0\n"
        };
        let cfg = format!(
            "mode: {mode}\nvaultAddress: {}\nvaultAuthPath: {}\n{kube_role}vaultSecretName: {}\n\
             vaultSecretPrefix: {}\ninjectorLabel: {}\nkubeTokenPath: {}\ncertFile: {}\nkeyFile: {}\n\
             {webhook}metricsListen: 127.0.0.1:{mport}\nhealthListen: 127.0.0.1:{hport}\n\
             vaultRateLimit: 0\nlogLevel: debug\n{extra}",
            p.vault_addr(),
            p.var("VDBI_K8S_AUTH_MOUNT"),
            p.var("VDBI_KV_MOUNT"),
            rel.prefix,
            rel.label,
            jwt.display(),
            self.cert.cert.display(),
            self.cert.key.display(),
        );
        let cfg_path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vdbi"))
            .arg("--config")
            .arg(&cfg_path)
            .env("KUBECONFIG", kubeconfig.unwrap_or(chart_kubeconfig))
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", &rel.leases.namespace.name)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn vdbi");
        Proc {
            name: name.to_string(),
            child,
            metrics: format!("http://127.0.0.1:{mport}/metrics"),
            health: format!("http://127.0.0.1:{hport}/readyz"),
            log,
        }
    }
}

impl Proc {
    /// A sample of a metric (`name{labels}` as exposed), `None` if unreachable or absent.
    async fn metric(&self, series: &str) -> Option<f64> {
        let body = vdbi::testing::platform::http_client()
            .get(&self.metrics)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    async fn leads(&self, lease: &str) -> bool {
        self.metric(&format!("vdbi_is_leader{{lease_name=\"{lease}\"}}"))
            .await
            == Some(1.0)
    }

    /// `/readyz`: (status, body).
    async fn readyz(&self) -> Option<(u16, Value)> {
        let r = vdbi::testing::platform::http_client()
            .get(&self.health)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// The pod index has listed (its readiness check passes).
    async fn index_synced(&self) -> bool {
        self.readyz()
            .await
            .is_some_and(|(_, b)| b["checks"]["pod-index"]["status"] == "healthy")
    }

    async fn leader_check(&self, lease: &str) -> String {
        self.readyz()
            .await
            .map(|(_, b)| b["checks"][format!("leader-election:{lease}")].to_string())
            .unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // Every JSON line the binary logged must parse strictly (no duplicate key).
        let captured = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad = vdbi::testing::log_lines::bad_json_lines(&captured);
        if !bad.is_empty() && !std::thread::panicking() {
            panic!(
                "{}: log lines a strict JSON parser refuses:\n{}",
                self.name,
                bad.join("\n")
            );
        }
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

/// The one process of `procs` leading `lease` (asserting there is exactly one).
async fn sole_leader<'a>(procs: &[&'a Proc], lease: &str) -> &'a Proc {
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

/// Two replicas (each running renewer and revoker): exactly one leads each duty and only it
/// acts; `vdbi_is_leader` and `/readyz` say so; kill -9 of the leader hands over after the lease
/// duration; a replica frozen past the lease duration loses it, notices when thawed, campaigns
/// again and leads again once the new leader stops (SIGTERM releases: immediate hand-over).
#[actix_rt::test]
async fn leader_election_between_real_processes() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-election").await;
    let env = ProcEnv::new(&p, &rel).await;
    let extra = "syncTTLSecond: 2\nrevokerUnseenGrace: 2s\n";
    let a = env.spawn(&p, &rel, "replica-a", "all", extra, None);
    let b = env.spawn(&p, &rel, "replica-b", "all", extra, None);
    for lease in [REVOKER_LEASE, RENEWER_LEASE] {
        until(
            &env,
            &format!("a leader for {lease}"),
            Duration::from_secs(40),
            || async { a.leads(lease).await || b.leads(lease).await },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoker_leader = sole_leader(&[&a, &b], REVOKER_LEASE).await;
    let renewer_leader = sole_leader(&[&a, &b], RENEWER_LEASE).await;
    println!(
        "leaders: revoker={}, renewer={}",
        revoker_leader.name, renewer_leader.name
    );
    // Exactly one acts: only the renewer leader runs cycles; only the revoker leader revokes.
    for proc in [&a, &b] {
        let cycles = proc
            .metric("vdbi_synchronization_count_success")
            .await
            .unwrap_or(0.0)
            + proc
                .metric("vdbi_synchronization_count_error")
                .await
                .unwrap_or(0.0);
        if std::ptr::eq(proc, renewer_leader) {
            assert!(
                cycles >= 1.0,
                "the renewer leader ran no cycle:\n{}",
                proc.log_tail()
            );
        } else {
            assert_eq!(cycles, 0.0, "a standby renewer ran cycles");
        }
        // Only the leader has a last successful cycle: a standby exports none (an alert on its
        // age cannot fire for it).
        let last = proc.metric("vdbi_last_synchronization_success").await;
        if std::ptr::eq(proc, renewer_leader) {
            assert!(last.is_some_and(|t| t > 0.0), "leader: {last:?}");
        } else {
            assert_eq!(
                last, None,
                "a standby exports vdbi_last_synchronization_success"
            );
        }
        let check = proc.leader_check(REVOKER_LEASE).await;
        if std::ptr::eq(proc, revoker_leader) {
            assert!(check.contains("leading"), "{check}");
        } else {
            assert!(check.contains("standby"), "{check}");
        }
    }
    let i = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &i, &ns.name, "never-stored").await;
    wait_all_gone(&root, &p, &rel.prefix, &[i], Duration::from_secs(20)).await;
    let sweep_revocations = "vdbi_revocation_latency_seconds_count{path=\"sweep\"}";
    for proc in [&a, &b] {
        let n = proc.metric(sweep_revocations).await.unwrap_or(0.0);
        let expected = if std::ptr::eq(proc, revoker_leader) {
            1.0
        } else {
            0.0
        };
        assert_eq!(n, expected, "{}: {sweep_revocations}", proc.name);
    }

    // kill -9 the revoker leader: the survivor takes over both duties.
    let (mut dead, survivor) = if std::ptr::eq(revoker_leader, &a) {
        (a, b)
    } else {
        (b, a)
    };
    let t0 = Instant::now();
    dead.kill();
    until(
        &env,
        "hand-over after kill -9",
        Duration::from_secs(30),
        || async { survivor.leads(REVOKER_LEASE).await && survivor.leads(RENEWER_LEASE).await },
    )
    .await;
    let kill_handover = t0.elapsed();
    println!(
        "kill -9 of the leader -> survivor leads: {:.1} s (lease 15 s, retry 2 s)",
        kill_handover.as_secs_f64()
    );
    assert!(kill_handover < Duration::from_secs(15 + 2 + 4));
    drop(dead);

    // A fresh replica; then freeze the leader past the lease duration.
    let c = env.spawn(&p, &rel, "replica-c", "all", extra, None);
    until(&env, "replica-c ready", Duration::from_secs(30), || async {
        c.readyz().await.is_some()
    })
    .await;
    let attempts_before = survivor
        .metric(&format!(
            "vdbi_leader_election_attempts_total{{lease_name=\"{REVOKER_LEASE}\"}}"
        ))
        .await
        .unwrap();
    let t0 = Instant::now();
    survivor.signal(libc::SIGSTOP);
    until(
        &env,
        "hand-over from a frozen leader",
        Duration::from_secs(30),
        || async { c.leads(REVOKER_LEASE).await && c.leads(RENEWER_LEASE).await },
    )
    .await;
    let freeze_handover = t0.elapsed();
    println!(
        "leader frozen (SIGSTOP) -> other replica leads: {:.1} s",
        freeze_handover.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    survivor.signal(libc::SIGCONT);
    // Thawed, it notices it lost the lease and stands by (campaigning).
    until(
        &env,
        "thawed replica stands by",
        Duration::from_secs(10),
        || async {
            !survivor.leads(REVOKER_LEASE).await
                && !survivor.leads(RENEWER_LEASE).await
                && survivor
                    .leader_check(REVOKER_LEASE)
                    .await
                    .contains("standby")
        },
    )
    .await;
    assert!(c.leads(REVOKER_LEASE).await);
    assert_eq!(
        survivor.metric("vdbi_last_synchronization_success").await,
        None,
        "a replica that lost the renewer Lease still exports its last success"
    );
    let attempts_after = survivor
        .metric(&format!(
            "vdbi_leader_election_attempts_total{{lease_name=\"{REVOKER_LEASE}\"}}"
        ))
        .await
        .unwrap();
    assert!(
        attempts_after > attempts_before,
        "no new campaign after losing the lease"
    );

    // SIGTERM the new leader: it releases, and the replica that lost the lease leads again.
    let t0 = Instant::now();
    c.signal(libc::SIGTERM);
    until(
        &env,
        "the thawed replica leads again",
        Duration::from_secs(15),
        || async { survivor.leads(REVOKER_LEASE).await && survivor.leads(RENEWER_LEASE).await },
    )
    .await;
    let release_handover = t0.elapsed();
    println!(
        "SIGTERM of the leader (lease released) -> standby leads: {:.1} s",
        release_handover.as_secs_f64()
    );
    assert!(release_handover < Duration::from_secs(6));
    drop(c);
    drop(survivor);
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// The revoker is killed (-9) twice in the middle of revoking many pods' credentials; after a
/// restart nothing is leaked: every lease and token revoked, every entry gone, metadata included.
#[actix_rt::test]
async fn revoker_killed_mid_revocation_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-kill").await;
    ns.service_account("default").await;
    let pods: Api<Pod> = ns.api();
    let mut issued = Vec::new();
    for n in 0..40 {
        let i = issue(
            &root,
            &p,
            if n % 2 == 0 { "app-rw" } else { "app-ro" },
            "768h",
        )
        .await;
        let name = format!("pod-{n}");
        record(&root, &p, &rel.prefix, &i, &ns.name, &name).await;
        create_pod(&pods, &labelled_pod(&name, &rel.label, &[&i.uuid])).await;
        issued.push(i);
    }
    let env = ProcEnv::new(&p, &rel).await;
    // The revoker policy of the documented split (projected) setup: it may revoke leases, which
    // is what ends a lease whose token was left half revoked by the kill (vault-db-injector's
    // single legacy policy may not: such a lease then lives until its TTL, entry kept).
    let extra = "revokerUnseenGrace: 4s\n";
    let mut r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        r.leads(REVOKER_LEASE).await && r.index_synced().await
    })
    .await;
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    // Kill as soon as the first entry is gone.
    let total = issued.len();
    until(
        &env,
        "revocations start",
        Duration::from_secs(10),
        || async { kv_keys(&root, &p, &rel.prefix).await.len() < total },
    )
    .await;
    r.kill();
    // Restart and kill again as soon as the restarted revoker makes progress.
    let before = kv_keys(&root, &p, &rel.prefix).await.len();
    drop(r);
    let mut r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    until(
        &env,
        "revocations resume",
        Duration::from_secs(40),
        || async { kv_keys(&root, &p, &rel.prefix).await.len() < before },
    )
    .await;
    r.kill();
    let left = kv_keys(&root, &p, &rel.prefix).await.len();
    let mut torn = 0;
    for i in &issued {
        if kv_entry(&root, &p, &rel.prefix, &i.uuid).await.is_some()
            && !token_usable(&root, &i.token).await
        {
            torn += 1;
        }
    }
    println!("killed with {left}/{total} entries left ({torn} with the token already revoked)");
    drop(r);
    // Restart (same pod name, as a restarted container): the sweep finishes the job.
    let r = env.spawn(&p, &rel, "revoker-0", "revoker", extra, None);
    let took = wait_all_gone_or(
        &root,
        &p,
        &rel.prefix,
        &issued,
        Duration::from_secs(60),
        || r.log_tail(),
    )
    .await;
    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
    println!(
        "after restart, everything revoked in {:.1} s ({} token(s) still valid after revoke-orphan, \
         revoked with themselves; {} lease(s) outliving their token)",
        took.as_secs_f64(),
        log.matches("token still valid after revoke-orphan").count(),
        log.matches("lease still held after its token").count(),
    );
    // Not even metadata is left (a kill between an entry's two deletions leaves it alone).
    until(
        &env,
        "no metadata-only entry left",
        Duration::from_secs(30),
        || async { kv_keys(&root, &p, &rel.prefix).await.is_empty() },
    )
    .await;
    for i in issued.iter().take(3) {
        assert!(pg_connect(&p, &i.username, &i.password).await.is_err());
    }
    drop(r);
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// Writes a kubeconfig authenticating as `namespace/sa` with a TokenRequest token.
async fn service_account_kubeconfig(
    p: &Platform,
    client: &kube::Client,
    namespace: &str,
    sa: &str,
    dir: &Path,
) -> PathBuf {
    let token = vdbi::testing::platform::service_account_token(client, namespace, sa, &[]).await;
    let path = dir.join(format!("{sa}.kubeconfig"));
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n",
        p.var("VDBI_KUBE_SERVER"),
        p.var("VDBI_KUBE_CA_FILE"),
    );
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A replica whose pod watch cannot work (no RBAC on pods) gives up the renewer and revoker
/// leases: a healthy peer leads, the blind one stays standby and unready.
#[actix_rt::test]
async fn replica_with_a_broken_watch_steps_down() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let lease_ns = rel.leases.namespace.name.clone();
    // A ServiceAccount that may use Leases in the lease namespace, and nothing else.
    rel.leases.namespace.service_account("blind").await;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: vec!["get", "list", "watch", "create", "update", "patch"]
                .into_iter()
                .map(String::from)
                .collect(),
            ..Default::default()
        }]),
    };
    let roles: Api<Role> = rel.leases.namespace.api();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "leases".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "blind".into(),
            namespace: Some(lease_ns.clone()),
            ..Default::default()
        }]),
    };
    let bindings: Api<RoleBinding> = rel.leases.namespace.api();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let env = ProcEnv::new(&p, &rel).await;
    let kubeconfig =
        service_account_kubeconfig(&p, &client, &lease_ns, "blind", env.dir.path()).await;
    let extra = "podWatchBrokenAfter: 3s\n";
    let blind = env.spawn(&p, &rel, "blind", "all", extra, Some(&kubeconfig));
    let both = [REVOKER_LEASE, RENEWER_LEASE];
    // Alone, it takes the leases, then gives them up once its watch is declared broken.
    for lease in both {
        until(
            &env,
            &format!("the blind replica acquires {lease}"),
            Duration::from_secs(30),
            || async { blind.leads(lease).await },
        )
        .await;
    }
    for lease in both {
        until(
            &env,
            &format!("the blind replica steps down from {lease}"),
            Duration::from_secs(30),
            || async { !blind.leads(lease).await },
        )
        .await;
    }
    let (status, body) = blind.readyz().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["pod-index"]["status"], "unhealthy", "{body}");
    let healthy = env.spawn(&p, &rel, "healthy", "all", extra, None);
    for lease in both {
        until(
            &env,
            &format!("the healthy replica leads {lease}"),
            Duration::from_secs(30),
            || async { healthy.leads(lease).await },
        )
        .await;
    }
    // The blind one campaigns again after its pause but never gets a lease back.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        for lease in both {
            assert!(
                healthy.leads(lease).await,
                "the healthy replica lost {lease}:\n{}",
                env.log_tails()
            );
            assert!(!blind.leads(lease).await, "the blind replica leads {lease}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for lease in both {
        let attempts = blind
            .metric(&format!(
                "vdbi_leader_election_attempts_total{{lease_name=\"{lease}\"}}"
            ))
            .await
            .unwrap();
        assert!(attempts >= 2.0, "{lease}: {attempts} campaigns");
        assert!(
            blind.leader_check(lease).await.contains("standby"),
            "{}",
            blind.leader_check(lease).await
        );
    }
    drop(blind);
    drop(healthy);
    let _ = bindings.delete("leases", &DeleteParams::default()).await;
    let _ = roles.delete("leases", &DeleteParams::default()).await;
    rel.leases.cleanup().await;
}

/// Entries whose data was deleted but whose metadata remains (a deletion cut short, or by hand):
/// the renewer does not count them (no "zero live pods" refusal because of them) and the sweep
/// deletes their metadata once past the grace.
#[actix_rt::test]
async fn metadata_only_entries_are_deleted_by_the_sweep_and_not_counted() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::All, "all-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    inst.wait_leading(RENEWER_LEASE).await;
    let kv = p.var("VDBI_KV_MOUNT");
    for n in 0..3 {
        let path = format!("{kv}/data/{}/hollow-{n}", rel.prefix);
        root.write(
            &path,
            &json!({"data": {"LeaseId": "", "TokenId": "", "Namespace": "x"}}),
        )
        .await;
        root.request(Method::DELETE, &path, None).await;
    }
    let t0 = Instant::now();
    assert_eq!(kv_keys(&root, &p, &rel.prefix).await.len(), 3);
    let report = inst
        .run_cycle()
        .await
        .expect("a cycle despite zero live pods");
    assert_eq!(report.entries, 0, "metadata-only entries are not counted");
    let env = ProcEnv::new(&p, &rel).await;
    let took = until(&env, "metadata deleted", 2 * grace, || async {
        kv_keys(&root, &p, &rel.prefix).await.is_empty()
    })
    .await;
    println!(
        "3 metadata-only entries deleted {:.1} s after they appeared (grace {grace:?})",
        (t0.elapsed().max(took)).as_secs_f64()
    );
    assert_eq!(
        inst.running
            .metrics
            .count("vdbi_hollow_entries_deleted_total", &[]),
        3.0
    );
    inst.running.shutdown().await;
    rel.leases.cleanup().await;
}

/// Reservations (NRI mode, at `<prefix>-reservations`, outside vault-db-injector's listing):
/// one whose entry was completed is deleted at the next sweep; one whose pod never appeared is
/// deleted once unseen for the grace (it names no Vault object), within two graces.
#[actix_rt::test]
async fn stale_and_completed_reservations_are_deleted_by_the_sweep() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-resv").await;
    let grace = Duration::from_secs(10);
    let mut cfg = release_config(&p, &rel, Mode::Revoker, "revoker-0");
    cfg.revoker_unseen_grace = grace;
    let inst = start_instance(&p, &rel, cfg).await;
    inst.wait_leading(REVOKER_LEASE).await;
    let kv = p.var("VDBI_KV_MOUNT");
    let reservations = vdbi::bookkeeping::reservation_prefix(&rel.prefix);
    let reserve = |uuid: String| {
        let (root, path) = (root.clone(), format!("{kv}/data/{reservations}/{uuid}"));
        let ns = ns.name.clone();
        async move {
            root.write(
                &path,
                &json!({"data": {"LeaseId": "", "TokenId": "", "Namespace": ns,
                    "ServiceAccountName": "app", "PodName": "p", "NodeName": ""}}),
            )
            .await
        }
    };
    // completed: the entry holds a real token and lease
    let done = issue(&root, &p, "app-rw", "768h").await;
    record(&root, &p, &rel.prefix, &done, &ns.name, "completed").await;
    reserve(done.uuid.clone()).await;
    // stale: its pod never appeared, no entry
    let stale = uuid::Uuid::new_v4().to_string();
    reserve(stale.clone()).await;
    let t0 = Instant::now();
    let sweep = || async {
        inst.running
            .revoker
            .as_ref()
            .unwrap()
            .send(Sweep)
            .await
            .unwrap()
            .unwrap()
    };
    sweep().await;
    assert!(kv_entry(&root, &p, &reservations, &done.uuid)
        .await
        .is_none());
    assert!(
        kv_entry(&root, &p, &reservations, &stale).await.is_some(),
        "deleted before the grace"
    );
    let env = ProcEnv::new(&p, &rel).await;
    let took = until(&env, "stale reservation deleted", 2 * grace, || async {
        kv_keys(&root, &p, &reservations).await.is_empty()
    })
    .await;
    let took = t0.elapsed().max(took);
    println!(
        "stale reservation deleted {:.1} s after it was written (grace {grace:?})",
        took.as_secs_f64()
    );
    // due a grace after it was first seen, less the sweeps' tolerance (a tenth of a period)
    assert!(took + grace / 20 >= grace, "{took:?}");
    inst.running.shutdown().await;
    purge(&root, &p, &rel.prefix, &[done]).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}

/// The injector is killed (-9) three times during an 8-worker admission burst (legacy mode):
/// once as soon as a bookkeeping entry appears, then at random instants. Whatever it had
/// created — provisional orphan tokens not yet recorded, their leases, entries of pods that
/// were never stored — is gone within two `revokerUnseenGrace` of the last kill: KV keys
/// (metadata included), tokens and their leases of the test's DB role all at zero (a lease
/// Vault itself lost track of, when the kill cut the request that created it, is counted apart;
/// drop_role revokes it).
#[actix_rt::test]
async fn injector_killed_during_an_admission_burst_leaks_nothing() {
    let p = Platform::get();
    let root = p.vault_root();
    let client = p.kube_client().await;
    let rel = Release::new(&client).await;
    let ns = TestNamespace::create(&client, "lc-burst").await;
    let role = unique_name("burst");
    own_role(&root, &p, &role, &ns.name, false).await;
    let env = ProcEnv::new(&p, &rel).await;
    let grace = Duration::from_secs(10);
    let revoker_extra = format!("revokerUnseenGrace: {}s\n", grace.as_secs());
    let revoker = env.spawn(&p, &rel, "revoker-0", "revoker", &revoker_extra, None);
    until(&env, "revoker leads", Duration::from_secs(40), || async {
        revoker.leads(REVOKER_LEASE).await && revoker.index_synced().await
    })
    .await;
    let port = free_port();
    let injector_extra = format!("webhookListen: 127.0.0.1:{port}\n");
    let hook = ReviewClient::new(&format!("https://127.0.0.1:{port}/mutate"), &env.cert.pem);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admitted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (hook, stop, admitted, ns, role) = (
                hook.clone(),
                stop.clone(),
                admitted.clone(),
                ns.name.clone(),
                role.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let name = format!("w{w}-{n}");
                    let pod = pod(
                        &name,
                        "app",
                        &[("db.role", &role), ("db.env-key-dbuser", "U")],
                    );
                    match hook.send(&review(&pod, &ns, &name, &name)).await {
                        Ok(a) if a["allowed"] == true => {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect();
    let mut last_kill = Instant::now();
    for round in 0..3 {
        let mut injector = env.spawn(
            &p,
            &rel,
            &format!("injector-{round}"),
            "injector",
            &injector_extra,
            None,
        );
        until(&env, "injector ready", Duration::from_secs(40), || async {
            injector.readyz().await.is_some_and(|(s, _)| s == 200)
        })
        .await;
        if round == 0 {
            // As soon as an entry shows: issuances are in every state.
            until(&env, "a first entry", Duration::from_secs(20), || async {
                !kv_keys(&root, &p, &rel.prefix).await.is_empty()
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1500)).await;
        }
        injector.kill();
        last_kill = Instant::now();
        println!(
            "kill {round}: {} KV keys, {} leases, {} tokens of the role",
            kv_keys(&root, &p, &rel.prefix).await.len(),
            leases(&root, &p.var("VDBI_DB_MOUNT"), &role).await.len(),
            tokens_with_policy(&root, &role).await
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    // KV keys (metadata included) and tokens must all go. A lease can outlive every token of the
    // role only if Vault itself lost it: a request cut by the kill while Vault registered the
    // lease ("failed to register lease ... context canceled" in its log) leaves the lease without
    // its token index. Those are counted apart (only orphan-lease discovery or the role's TTL
    // end them) and must stay rare: at most one per worker and kill.
    let limit = 2 * grace;
    let mut seen = Vec::new();
    let lease_mount = p.var("VDBI_DB_MOUNT");
    let vault_orphans = loop {
        let left = (
            kv_keys(&root, &p, &rel.prefix).await.len(),
            leases(&root, &lease_mount, &role).await,
            tokens_with_policy(&root, &role).await,
        );
        if left.0 == 0 && left.2 == 0 {
            // Tokens gone: Vault revokes a token's leases with it; give it a moment.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break leases(&root, &lease_mount, &role).await;
        }
        seen.push((last_kill.elapsed().as_secs(), left.0, left.1.len(), left.2));
        assert!(
            last_kill.elapsed() < limit + Duration::from_secs(30),
            "(s after the last kill, kv keys, leases, tokens): {seen:?}\n{}",
            revoker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let since_kill = last_kill.elapsed();
    println!(
        "3 kills -9 during an 8-worker burst ({} admitted): clean {:.1} s after the last kill (bound 2 x revokerUnseenGrace = {limit:?}); {} lease(s) Vault lost track of",
        admitted.load(std::sync::atomic::Ordering::SeqCst),
        since_kill.as_secs_f64(),
        vault_orphans.len()
    );
    assert!(
        since_kill <= limit + Duration::from_secs(1),
        "{since_kill:?} > {limit:?}: {seen:?}"
    );
    assert!(vault_orphans.len() <= 3 * 8, "{vault_orphans:?}");
    drop(revoker);
    drop_role(&root, &p, &role).await;
    ns.cleanup().await;
    rel.leases.cleanup().await;
}
