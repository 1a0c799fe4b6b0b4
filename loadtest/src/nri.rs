//! `nri`: CreateContainer substitution latency as the container runtime sees it — over the real
//! NRI wire protocol (unix socket, mux, ttrpc) from vdbi's runtime-side peer to an in-process
//! vdbi in `mode: nri`, against the real kube-apiserver, OpenBao and PostgreSQL.
//!
//! Per mode (legacy: vdbi's own token creates an orphan token for the pod; projected: a
//! TokenRequest for the pod's ServiceAccount and a login): `misses` pods, each created on the
//! apiserver with placeholders (as the injector would have written them) and served once — a
//! cache miss issues the pod's credentials; then `hits` requests over the same pods, served
//! from the node cache; then `hits` requests without any placeholder (what every other
//! container on the node pays). Then the harness revokes what vdbi recorded and checks that
//! nothing of the run's own DB role is left.

use crate::report::{self, proc_stats, summarize, summary_row, ProcStats, Summary};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use nri::runtime_peer::{RuntimePeer, RuntimePeerConfig};
use nri::{ContainerInfo, PodSandboxInfo};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use vdbi::config::Mode;
use vdbi::placeholder;
use vdbi_testkit::load::{cleanup_prefix, start_vdbi, Leftovers};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};
use vdbi_testkit::roles::{drop_role, own_role};

const PREFIX: &str = "db-creds-injector.numberly.io/";

pub struct Args {
    pub misses: usize,
    pub hits: usize,
}

#[derive(Debug, Serialize)]
pub struct NriModeResult {
    pub mode: &'static str,
    pub miss: Summary,
    pub hit: Summary,
    pub no_placeholder: Summary,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// Revocation is the revoker's job (not running here): the harness revokes every token and
    /// lease recorded in vdbi's KV entries, then counts what is still alive — plus, in
    /// `leases`, any lease of the run's own DB role that no entry recorded. Must be 0.
    pub issued_alive_after: Leftovers,
    pub proc_before: ProcStats,
    pub proc_after: ProcStats,
}

#[derive(Debug, Serialize)]
pub struct NriResult {
    pub scenario: &'static str,
    pub misses: usize,
    pub hits: usize,
    pub modes: Vec<NriModeResult>,
}

fn pod(name: &str, node: &str, role: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {vdbi_testkit::webhook::LABEL: "true"},
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
    .expect("pod")
}

/// The sandbox and container a runtime would send for `pod` (env as the kubelet expands it).
fn request(pod: &Pod) -> (PodSandboxInfo, ContainerInfo) {
    let env: BTreeMap<String, String> = pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let lines = vec![
        "PATH=/usr/bin:/bin".to_string(),
        format!("DB_USER={}", env["DB_USER"]),
        format!("DB_PASSWORD={}", env["DB_PASSWORD"]),
        format!(
            "DB_URL=postgres://{}:{}@db/app",
            env["DB_USER"], env["DB_PASSWORD"]
        ),
        "HOME=/root".to_string(),
    ];
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    (
        PodSandboxInfo {
            id: format!("sb-{uid}"),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
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

async fn measure(p: &Platform, a: &Args, projected: bool) -> Result<NriModeResult, String> {
    let mode = if projected { "projected" } else { "legacy" };
    let root = p.vault_root();
    let kube = p.kube_client().await;
    let kv = p.var("VDBI_KV_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-nri").await;
    ns.service_account("app").await;
    let role = unique_name("lt-nri");
    own_role(&root, p, &role, &ns.name, false).await;
    let node = unique_name("node");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("nri/nri.sock");
    let peer = RuntimePeer::bind(RuntimePeerConfig::new(&socket)).map_err(|e| e.to_string())?;
    // The plugin registers while vdbi starts (its readiness waits for the registration).
    let start = start_vdbi(p, Mode::Nri, "vdbi-nri", |c| {
        c.nri.enabled = true;
        c.nri.socket_path = socket.clone();
        c.nri.cache_path = dir.path().join("cache/cache.json");
        c.nri.prewarmer.enabled = false;
        c.node_name = node.clone();
        c.use_projected_sa = projected;
        c.token_request_audiences = vec!["vault".into()];
        if projected {
            c.kube_role_nri = "vdbi-nri".into();
        } else {
            c.kube_role = "vdbi".into();
        }
    });
    let (vdbi, conn) = tokio::join!(
        start,
        tokio::time::timeout(Duration::from_secs(15), peer.accept())
    );
    let conn = conn
        .map_err(|_| "the plugin did not connect within 15 s".to_string())?
        .map_err(|e| e.to_string())?;
    let api = ns.api::<Pod>();
    let mut pods = Vec::new();
    for i in 0..a.misses {
        pods.push(
            api.create(&PostParams::default(), &pod(&format!("p{i}"), &node, &role))
                .await
                .map_err(|e| format!("creating pod: {e}"))?,
        );
    }
    let proc_before = proc_stats();
    let mut errors = Vec::new();
    let time = |sb: &PodSandboxInfo, c: &ContainerInfo, want: usize| {
        let conn = &conn;
        let (sb, c) = (sb.clone(), c.clone());
        async move {
            let t = Instant::now();
            let adj = conn
                .create_container(&sb, &c)
                .await
                .map_err(|e| e.to_string())?;
            let d = t.elapsed();
            if adj.set.len() != want {
                return Err(format!(
                    "{} env lines replaced, {want} expected",
                    adj.set.len()
                ));
            }
            Ok::<Duration, String>(d)
        }
    };
    let mut misses = Vec::new();
    for pod in &pods {
        let (sb, c) = request(pod);
        match time(&sb, &c, 3).await {
            Ok(d) => misses.push(d),
            Err(e) => errors.push(format!("miss: {e}")),
        }
    }
    eprintln!("[nri] {mode}: {} misses served", misses.len());
    let mut hits = Vec::new();
    for i in 0..a.hits {
        let (sb, c) = request(&pods[i % pods.len()]);
        match time(&sb, &c, 3).await {
            Ok(d) => hits.push(d),
            Err(e) => errors.push(format!("hit: {e}")),
        }
    }
    let mut skipped = Vec::new();
    for _ in 0..a.hits {
        let (sb, mut c) = request(&pods[0]);
        c.env = vec!["PATH=/bin".into(), "HOME=/root".into()];
        match time(&sb, &c, 0).await {
            Ok(d) => skipped.push(d),
            Err(e) => errors.push(format!("no placeholder: {e}")),
        }
    }
    eprintln!("[nri] {mode}: {} hits, {} skips", hits.len(), skipped.len());
    let proc_after = proc_stats();
    conn.close();
    vdbi.running.shutdown().await;
    let _ = api
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default(),
        )
        .await;
    // No revoker runs here: the harness revokes what vdbi recorded for the pods, then counts
    // what is still alive.
    let mut issued_alive_after = cleanup_prefix(&root, &kv, &vdbi.prefix, &[], &[]).await;
    let listed = root
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            &format!("sys/leases/lookup/{}/creds/{role}", p.var("VDBI_DB_MOUNT")),
            None,
        )
        .await;
    issued_alive_after.leases += listed.body["data"]["keys"].as_array().map_or(0, Vec::len);
    ns.cleanup().await;
    drop_role(&root, p, &role).await;
    let n_err = errors.len();
    errors.truncate(10);
    Ok(NriModeResult {
        mode,
        miss: summarize(&misses),
        hit: summarize(&hits),
        no_placeholder: summarize(&skipped),
        errors: n_err,
        error_samples: errors,
        issued_alive_after,
        proc_before,
        proc_after,
    })
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<NriResult, String> {
    let mut modes = Vec::new();
    for projected in [false, true] {
        modes.push(measure(p, &a, projected).await?);
    }
    let mut rows = Vec::new();
    for m in &modes {
        rows.push(summary_row(&format!("{}: cache miss", m.mode), &m.miss));
        rows.push(summary_row(&format!("{}: cache hit", m.mode), &m.hit));
        rows.push(summary_row(
            &format!("{}: no placeholder", m.mode),
            &m.no_placeholder,
        ));
        rows.push((format!("{}: errors", m.mode), m.errors.to_string()));
        rows.push((
            format!("{}: left after cleanup kv/tokens/leases", m.mode),
            format!(
                "{}/{}/{}",
                m.issued_alive_after.kv_entries,
                m.issued_alive_after.tokens,
                m.issued_alive_after.leases
            ),
        ));
        rows.push((
            format!("{}: RSS peak", m.mode),
            format!("{} KiB", m.proc_after.vm_hwm_kib),
        ));
        for e in &m.error_samples {
            eprintln!("[nri] {} error: {e}", m.mode);
        }
    }
    report::print_table("nri (CreateContainer over the NRI wire)", &rows);
    let res = NriResult {
        scenario: "nri",
        misses: a.misses,
        hits: a.hits,
        modes,
    };
    report::write_json(out, "nri", &res).map_err(|e| e.to_string())?;
    Ok(res)
}
