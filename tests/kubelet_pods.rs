//! Pods that really run: a real kubelet (`platform/vdbi-kubelet`) runs the pods the apiserver
//! admitted through vdbi's webhook, and the container's own process — `vdbi-pgcheck`, which logs
//! in to PostgreSQL with the `DB_USER` / `DB_PASSWORD` it received and reports what it saw into a
//! hostPath file — proves the credentials work, in each mode:
//!
//! - legacy and projected: the webhook writes the credentials into the pod spec;
//! - NRI: the stored pod spec holds placeholders only, kubelet → containerd → vdbi's NRI plugin
//!   gives the process working credentials; a crash-looping container's restart is served from
//!   the node cache (no second issuance); a pod whose credentials cannot be fetched never has its
//!   container started;
//! - revocation: a `restartPolicy: Never` pod that exits reaches `Succeeded` and, with
//!   `revokeTerminatedPods`, loses its credentials; a deleted pod loses them once the kubelet
//!   stopped it and the object is gone — asserted in PostgreSQL (role dropped, login refused).
//!
//! Each test prints the time from pod creation to the process holding working credentials
//! (docs/performance.md). Needs the platform and the node: `platform/vdbi-platform test` starts
//! both; without them the tests panic with that instruction.

use vdbi_testkit::admitting;
use vdbi_testkit::kubelet;

use admitting::Admitting;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kubelet::*;
use std::time::{Duration, Instant};
use vdbi::actors::leadership::REVOKER_LEASE;
use vdbi::app::runtime::Running;
use vdbi::config::Mode;
use vdbi_testkit::nri_mode::{start_nri, NriOptions, NriVdbi};
use vdbi_testkit::platform::{unique_name, Platform};
use vdbi_testkit::*;

const START: Duration = Duration::from_secs(60);

/// The annotations of one dbConfig `db` with role `role`, into DB_USER / DB_PASSWORD.
fn db_annotations(role: &str) -> Vec<(&'static str, String)> {
    vec![
        ("db.role", role.to_string()),
        ("db.env-key-dbuser", "DB_USER".into()),
        ("db.env-key-dbpassword", "DB_PASSWORD".into()),
    ]
}

fn borrowed<'a>(a: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    a.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A namespace (with `app` and `kube-root-ca.crt`), vdbi's webhook for it, and a DB role of the
/// test's own bound to `<ns>/app`.
struct Setup {
    adm: Admitting,
    node: KubeletNode,
    role: String,
}

impl Setup {
    async fn start(name: &str, tune: impl FnOnce(&mut Options)) -> Setup {
        let node = KubeletNode::get();
        let adm = Admitting::start(name, tune).await;
        root_ca_configmap(&adm.p, &adm.ns).await;
        let role = unique_name(name);
        own_role(&adm.root, &adm.p, &role, &adm.ns.name, false).await;
        Setup { adm, node, role }
    }

    /// Creates the pod; returns the stored object and the creation time (ms since the epoch).
    async fn create(&self, pod: &Pod) -> (Pod, u64) {
        let t0 = now_millis();
        let stored = self
            .adm
            .pods
            .create(&PostParams::default(), pod)
            .await
            .unwrap_or_else(|e| panic!("pod admitted: {e}"));
        (stored, t0)
    }

    fn pod(
        &self,
        name: &str,
        out: &Outbox,
        labels: &[&str],
        policy: &'static str,
        then: Then,
    ) -> Pod {
        let ann = db_annotations(&self.role);
        app_pod(
            &self.node,
            &self.adm.p,
            name,
            out,
            &borrowed(&ann),
            labels,
            Run {
                restart_policy: policy,
                then,
            },
        )
    }

    async fn stop(self) {
        delete_pods(&self.adm.pods).await;
        drop_role(&self.adm.root, &self.adm.p, &self.role).await;
        self.adm.stop().await;
    }
}

/// The first report must show a working login with the env the stored pod spec holds.
fn assert_logged_in(r: &Report, user: &str) {
    assert!(r.logged_in, "the process could not log in: {r:?}");
    assert!(!r.placeholder, "{r:?}");
    assert_eq!(r.user, user);
    assert_eq!(r.current_user, user);
}

async fn injected_mode(name: &str, mode: &str, tune: impl FnOnce(&mut Options)) {
    let s = Setup::start(name, tune).await;
    let out = Outbox::new();
    let (stored, t0) = s
        .create(&s.pod("app", &out, &[], "Never", Then::Exit0))
        .await;
    let env = env_map(&stored, "app");
    let r = out.wait_reports(1, START).await;
    assert_logged_in(&r[0], &env["DB_USER"]);
    println!(
        "{mode}: pod creation -> process logged in to PostgreSQL: {} ms",
        r[0].unix_millis - t0
    );
    wait_pod(&s.adm.pods, "app", "Succeeded", START, |p| {
        phase(p) == "Succeeded"
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn legacy_pod_process_logs_in_with_its_credentials() {
    injected_mode("kl-legacy", "legacy", |_| {}).await;
}

#[actix_rt::test]
async fn projected_pod_process_logs_in_with_its_credentials() {
    injected_mode("kl-proj", "projected", |o| o.projected = true).await;
}

/// vdbi's NRI plugin on the node's containerd, for pods labelled `label`.
async fn node_plugin(
    s: &Setup,
    label: &str,
    vault: Option<String>,
) -> (NriVdbi, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = NriOptions::new(&s.adm.vdbi.prefix, s.node.name(), dir.path());
    o.socket_path = s.node.nri_socket();
    o.pod_label = label.to_string();
    o.plugin_name = unique_name("vdbi-kubelet-e2e");
    o.vault_address = vault;
    let nri = start_nri(&s.adm.p, o).await;
    nri.wait_registered().await;
    (nri, dir)
}

fn total_hits(nri: &NriVdbi) -> f64 {
    ["prewarm", "sync", "unknown"]
        .iter()
        .map(|s| nri.hits(s))
        .sum()
}

#[actix_rt::test]
async fn nri_pod_gets_credentials_in_its_process_only_and_restarts_from_the_cache() {
    let s = Setup::start("kl-nri", |o| o.nri = true).await;
    // The plugin serves this test's pods only (other tests' plugins share the containerd).
    let label = unique_name("vdbi-kl-nri");
    let (nri, _dir) = node_plugin(&s, &label, None).await;
    let out = Outbox::new();
    // A container that exits 1 after reporting: the kubelet restarts it (CrashLoopBackOff).
    let (stored, t0) = s
        .create(&s.pod("app", &out, &[&label], "Always", Then::Exit1))
        .await;
    let env = env_map(&stored, "app");
    assert!(vdbi::placeholder::is_placeholder(&env["DB_USER"]));
    assert!(vdbi::placeholder::is_placeholder(&env["DB_PASSWORD"]));

    let first = out.wait_reports(1, START).await[0].clone();
    assert!(first.logged_in, "{first:?}");
    assert!(!first.placeholder, "{first:?}");
    assert_eq!(first.current_user, first.user);
    println!(
        "nri: pod creation -> process logged in to PostgreSQL: {} ms",
        first.unix_millis - t0
    );
    // The pod object (etcd) never held the credentials.
    let live = s.adm.pods.get("app").await.unwrap();
    let text = serde_json::to_string(&live).unwrap();
    assert!(
        !text.contains(&first.user),
        "the stored pod names the DB user"
    );
    assert_eq!(env_map(&live, "app")["DB_USER"], env["DB_USER"]);
    assert_eq!(
        leases(&s.adm.root, &s.adm.p.var("VDBI_DB_MOUNT"), &s.role)
            .await
            .len(),
        1
    );
    let hits = total_hits(&nri);

    // The restart: same credentials, from the node cache, nothing issued again.
    let reports = out.wait_reports(2, Duration::from_secs(90)).await;
    let second = &reports[1];
    assert!(second.logged_in, "{second:?}");
    assert_eq!(second.user, first.user, "the restart got other credentials");
    assert!(
        total_hits(&nri) > hits,
        "the restart was not served from the cache"
    );
    assert_eq!(
        leases(&s.adm.root, &s.adm.p.var("VDBI_DB_MOUNT"), &s.role)
            .await
            .len(),
        1,
        "the restart issued new credentials"
    );
    // The kubelet counted the restart (its status may trail the process by a moment).
    wait_pod(&s.adm.pods, "app", "restarted", START, |p| {
        restart_count(p) >= 1
    })
    .await;
    println!(
        "nri: container restart {} ms after the first start, served from the cache",
        second.unix_millis - first.unix_millis
    );

    delete_pods(&s.adm.pods).await;
    nri.running.shutdown().await;
    s.stop().await;
}

#[actix_rt::test]
async fn nri_pod_whose_credentials_cannot_be_fetched_never_starts() {
    let s = Setup::start("kl-nri-dead", |o| o.nri = true).await;
    // The node's plugin cannot reach Vault.
    let label = unique_name("vdbi-kl-dead");
    let (dead, _dir) = node_plugin(&s, &label, Some("http://127.0.0.1:1".into())).await;
    let out = Outbox::new();
    s.create(&s.pod("app", &out, &[&label], "Always", Then::Sleep))
        .await;
    let pod = wait_pod(&s.adm.pods, "app", "refused", START, |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerError")
    })
    .await;
    let message = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    println!("refused: {message}");
    assert!(message.contains("vault-db-injector"), "{message}");
    assert!(dead.failures("fetch_error") >= 1.0);
    // The kubelet tries again; the container never runs.
    let t = Instant::now();
    while dead.failures("fetch_error") < 2.0 {
        assert!(t.elapsed() < START, "the kubelet did not retry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = s.adm.pods.get("app").await.unwrap();
    assert_eq!(restart_count(&pod), 0);
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().all(|c| c
                .state
                .as_ref()
                .is_some_and(|st| st.running.is_none() && st.terminated.is_none()))),
        "{:?}",
        pod.status
    );
    assert!(
        out.reports().is_empty(),
        "the container ran: {:?}",
        out.reports()
    );

    delete_pods(&s.adm.pods).await;
    dead.running.shutdown().await;
    s.stop().await;
}

/// A revoker of the webhook's bookkeeping (`revokeTerminatedPods: true`), leading in the test's
/// namespace.
struct Revoker {
    running: Running,
    _chart: Option<vdbi_testkit::chart_rbac::ChartRelease>,
    _jwt: tempfile::NamedTempFile,
    _cert: TestCert,
}

async fn start_revoker(s: &Setup) -> Revoker {
    let p = &s.adm.p;
    let jwt = own_jwt(p, "vdbi-revoker").await;
    let cert = make_cert();
    let mut c = base_config(p, &s.adm.vdbi.prefix);
    c.mode = Mode::Revoker;
    c.revoke_terminated_pods = true;
    c.pod_name = unique_name("revoker");
    c.pod_namespace = s.adm.ns.name.clone();
    c.kube_token_path = jwt.path().to_path_buf();
    c.cert_file = cert.cert.clone();
    c.key_file = cert.key.clone();
    // The chart's revoker RBAC and the published policies (launch::start_vdbi checks both).
    let (running, chart) = vdbi_testkit::launch::start_vdbi(
        p,
        c,
        "kl-revoker",
        vdbi_testkit::log_lines::checked_logger(),
    )
    .await;
    let t = Instant::now();
    let leading = |r: &Running| {
        r.metrics
            .count("vdbi_is_leader", &[("lease_name", REVOKER_LEASE)])
            == 1.0
    };
    let indexed = |r: &Running| r.health.check("pod-index").is_some_and(|c| c.ready);
    while !(leading(&running) && indexed(&running)) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "revoker not leading: {:?}",
            running.health.checks()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Revoker {
        running,
        _chart: chart,
        _jwt: jwt,
        _cert: cert,
    }
}

async fn assert_login_refused(p: &Platform, user: &str, password: &str) {
    let Err(err) = pg_connect(p, user, password).await else {
        panic!("revoked credentials still log in");
    };
    assert!(
        err.to_string().contains("password authentication failed") || err.as_db_error().is_some(),
        "{err}"
    );
}

#[actix_rt::test]
async fn succeeded_and_deleted_pods_lose_their_credentials() {
    let s = Setup::start("kl-revoke", |_| {}).await;
    let revoker = start_revoker(&s).await;
    let p = &s.adm.p;

    // 1. restartPolicy Never: the process logs in and exits 0; the pod reaches Succeeded.
    let out = Outbox::new();
    let (stored, _) = s
        .create(&s.pod("done", &out, &[], "Never", Then::Exit0))
        .await;
    let env = env_map(&stored, "app");
    let r = out.wait_reports(1, START).await;
    assert_logged_in(&r[0], &env["DB_USER"]);
    wait_pod(&s.adm.pods, "done", "Succeeded", START, |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let took = wait_role_gone(p, &env["DB_USER"], Duration::from_secs(30)).await;
    assert_login_refused(p, &env["DB_USER"], &env["DB_PASSWORD"]).await;
    println!(
        "Succeeded -> role dropped in PostgreSQL: {} ms",
        took.as_millis()
    );
    // The Succeeded pod object is still there: revocation followed the phase, not a deletion.
    assert!(s.adm.pods.get_opt("done").await.unwrap().is_some());

    // 2. A running pod is deleted: the kubelet stops it, the object goes, then the credentials.
    let out = Outbox::new();
    let (stored, _) = s
        .create(&s.pod("live", &out, &[], "Always", Then::Sleep))
        .await;
    let env = env_map(&stored, "app");
    let r = out.wait_reports(1, START).await;
    assert_logged_in(&r[0], &env["DB_USER"]);
    wait_pod(&s.adm.pods, "live", "Running", START, |p| {
        phase(p) == "Running"
    })
    .await;
    s.adm
        .pods
        .delete("live", &DeleteParams::default())
        .await
        .expect("delete");
    // Graceful deletion: the object stays (Terminating) until the kubelet stopped the container.
    wait_gone(&s.adm.pods, "live", START).await;
    let took = wait_role_gone(p, &env["DB_USER"], Duration::from_secs(30)).await;
    assert_login_refused(p, &env["DB_USER"], &env["DB_PASSWORD"]).await;
    println!(
        "deleted pod gone -> role dropped in PostgreSQL: {} ms",
        took.as_millis()
    );

    revoker.running.shutdown().await;
    s.stop().await;
}
