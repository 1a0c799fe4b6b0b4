//! The one-node cluster started by `platform/vdbi-kubelet up`: a real kubelet on a containerd of
//! its own (NRI on). Tests create pods with `nodeName` set to the node, `hostNetwork`, and the
//! image of `vdbi-pgcheck`, a static program that logs in to PostgreSQL with the `DB_USER` /
//! `DB_PASSWORD` it received and appends what it saw as a JSON line to a hostPath file.
//!
//! Used as `vdbi_testkit::kubelet`.

use crate::platform::{Platform, TestNamespace};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The running node, from the env file `platform/vdbi-kubelet up` writes.
pub struct KubeletNode {
    vars: BTreeMap<String, String>,
}

impl KubeletNode {
    /// Panics with the way to start the node when it is not running (tests never skip).
    pub fn get() -> KubeletNode {
        let vars = crate::env_file::EnvFile::load(
            crate::env_file::EnvFile::locate("VDBI_KUBELET_ENV", ".platform/kubelet/env"),
            "the kubelet node",
            "start it with `platform/vdbi-platform up && platform/vdbi-kubelet up`, or run `platform/vdbi-platform test`",
        )
        .vars;
        KubeletNode { vars }
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("node env has no {key}; re-run `platform/vdbi-kubelet up`"))
    }

    pub fn name(&self) -> &str {
        self.var("VDBI_KUBELET_NODE_NAME")
    }

    pub fn nri_socket(&self) -> PathBuf {
        PathBuf::from(self.var("VDBI_KUBELET_NRI_SOCK"))
    }
}

/// Makes a test namespace ready for pods that mount their ServiceAccount token, as
/// kube-controller-manager would: the `kube-root-ca.crt` ConfigMap (without it they stay
/// `ContainerCreating`).
pub async fn root_ca_configmap(p: &Platform, ns: &TestNamespace) {
    let ca = std::fs::read_to_string(p.var("VDBI_KUBE_CA_FILE")).expect("platform CA");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt"},
        "data": {"ca.crt": ca}
    }))
    .unwrap();
    // The node's controller-manager publishes the same ConfigMap (from the same CA): either wins.
    match ns
        .api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("kube-root-ca.crt: {e}"),
    }
}

/// What `vdbi-pgcheck` saw, one per container start.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub unix_millis: u64,
    pub pid: u32,
    pub user: String,
    pub placeholder: bool,
    pub logged_in: bool,
    #[serde(default)]
    pub current_user: String,
    #[serde(default)]
    pub error: String,
}

/// The host directory a pod's `vdbi-pgcheck` reports into (mounted at `/out`).
pub struct Outbox {
    dir: tempfile::TempDir,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            dir: tempfile::Builder::new()
                .prefix("vdbi-kubelet-out")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn reports(&self) -> Vec<Report> {
        match std::fs::read_to_string(self.dir.path().join("report.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("report {l:?}: {e}")))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until at least `n` reports were written.
    pub async fn wait_reports(&self, n: usize, timeout: Duration) -> Vec<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.reports();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} report(s) after {timeout:?}, expected {n}: {r:?}",
                r.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the program does once it reported.
#[derive(Clone, Copy)]
pub enum Then {
    Exit0,
    Exit1,
    Sleep,
}

/// How the pod runs: its `restartPolicy` and what the program does after reporting.
#[derive(Clone, Copy)]
pub struct Run {
    pub restart_policy: &'static str,
    pub then: Then,
}

/// A labelled pod on the node running `vdbi-pgcheck` as ServiceAccount `app`; `annotations` are
/// the `db-creds-injector` keys without the prefix; `labels` are added to `vault-db-injector`.
pub fn app_pod(
    node: &KubeletNode,
    p: &Platform,
    name: &str,
    out: &Outbox,
    annotations: &[(&str, &str)],
    labels: &[&str],
    run: Run,
) -> Pod {
    let ann: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (format!("{}{k}", crate::PREFIX), v.to_string()))
        .collect();
    let mut lab = BTreeMap::from([(crate::LABEL.to_string(), "true".to_string())]);
    for l in labels {
        lab.insert(l.to_string(), "true".to_string());
    }
    let then = match run.then {
        Then::Exit0 => "exit0",
        Then::Exit1 => "exit1",
        Then::Sleep => "sleep",
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": lab, "annotations": ann},
        "spec": {
            "nodeName": node.name(),
            "hostNetwork": true,
            "serviceAccountName": "app",
            "restartPolicy": run.restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app",
                "image": node.var("VDBI_KUBELET_TESTAPP_IMAGE"),
                "imagePullPolicy": "Never",
                "command": ["/bin/vdbi-pgcheck", "-out", "/out/report.jsonl", "-then", then],
                "env": [
                    {"name": "PGHOST", "value": p.var("VDBI_PG_HOST")},
                    {"name": "PGPORT", "value": p.var("VDBI_PG_PORT")},
                    {"name": "PGDATABASE", "value": p.var("VDBI_PG_DATABASE")}
                ],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}]
            }],
            "volumes": [{"name": "out", "hostPath": {"path": out.path(), "type": "Directory"}}]
        }
    }))
    .unwrap()
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls the pod until `cond` holds (panics after `timeout` with the last status).
pub async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get(name).await.expect("pod");
        if cond(&pod) {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name}: not {what} after {timeout:?}: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The `app` container's waiting reason, if it is waiting.
pub fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "app")?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "app"))
        .map_or(0, |c| c.restart_count)
}

/// Waits until the pod object is gone (the kubelet confirmed its containers stopped).
pub async fn wait_gone(pods: &Api<Pod>, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match pods.get_opt(name).await.expect("pod get") {
            None => return,
            Some(p) => assert!(
                Instant::now() < deadline,
                "pod {name} still there after {timeout:?}: {:?}",
                p.status
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every pod of the namespace and waits until the kubelet stopped them all.
pub async fn delete_pods(pods: &Api<Pod>) {
    let list = pods.list(&Default::default()).await.expect("pods");
    for pod in &list.items {
        let name = pod.metadata.name.as_deref().unwrap();
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    for pod in &list.items {
        wait_gone(
            pods,
            pod.metadata.name.as_deref().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    }
}

/// Whether PostgreSQL still has the role `user` (as the platform's admin).
pub async fn pg_role_exists(p: &Platform, user: &str) -> bool {
    let admin = crate::pg_connect(
        p,
        &p.var("VDBI_PG_ADMIN_USER"),
        &p.var("VDBI_PG_ADMIN_PASSWORD"),
    )
    .await
    .expect("admin login");
    let row = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .expect("pg_roles");
    row.get::<_, i64>(0) == 1
}

/// Waits until PostgreSQL no longer has the role `user`.
pub async fn wait_role_gone(p: &Platform, user: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    while pg_role_exists(p, user).await {
        assert!(
            started.elapsed() < timeout,
            "role {user} still exists after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}
