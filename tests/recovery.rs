//! Recovery and shutdown of real `vdbi` processes running with the chart's RBAC and the published
//! Vault policies: a pod deleted while the kube-apiserver restarts or while the leading revoker is
//! killed is revoked within the lease duration + 10 s of the replica being able to act (the sweep
//! is set far out, so only the watch path can pass), and SIGTERM ends every mode within its bound.
//!
//! The apiserver test restarts the platform's kube-apiserver (`platform/vdbi-platform fault`):
//! other tests of this binary run one at a time (`serial`).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vdbi::actors::leadership::REVOKER_LEASE;
use vdbi_testkit::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use vdbi_testkit::credentials::{all_gone, issue, purge, record, Issued};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};
use vdbi_testkit::process::{free_port, platform_fault, ProcessSpec, VdbiProcess};
use vdbi_testkit::{pod, PREFIX};

/// The Lease duration of leader election (client-go's 15 s).
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// One test at a time in this binary: the apiserver restart would disturb the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    p: Platform,
    root: VaultRoot,
    client: kube::Client,
    rel: ChartRelease,
    prefix: String,
    label: String,
    dir: tempfile::TempDir,
    cert: vdbi_testkit::TestCert,
}

impl Setup {
    async fn new(what: &str) -> Setup {
        let p = Platform::get();
        let client = p.kube_client().await;
        let rel = ChartRelease::install(&p, &client, what).await;
        Setup {
            root: p.vault_root(),
            p,
            client,
            rel,
            prefix: unique_name("rc"),
            label: unique_name("vdbi-rc"),
            dir: tempfile::tempdir().unwrap(),
            cert: vdbi_testkit::make_cert(),
        }
    }

    /// Starts `vdbi --config` as `component` (its ServiceAccount, its Vault role).
    async fn spawn(
        &self,
        name: &str,
        component: Component,
        mode: &str,
        extra: &str,
    ) -> VdbiProcess {
        let kubeconfig = self.rel.kubeconfig(component, self.dir.path()).await;
        let jwt = self.rel.jwt_file(component, self.dir.path()).await;
        let kube = self.rel.kube_client(component).await;
        let role = self.rel.vault_role(component);
        assert_least_privilege(
            &self.p,
            Some(&kube),
            &self.p.var("VDBI_K8S_AUTH_MOUNT"),
            &[&role],
        )
        .await;
        let config = format!(
            "mode: {mode}\nvaultAddress: {}\nvaultAuthPath: {}\nkubeRole: {role}\nvaultSecretName: {}\n\
             vaultSecretPrefix: {}\ninjectorLabel: {}\nkubeTokenPath: {}\ncertFile: {}\nkeyFile: {}\n\
             vaultRateLimit: 0\nlogLevel: debug\n{extra}",
            self.p.vault_addr(),
            self.p.var("VDBI_K8S_AUTH_MOUNT"),
            self.p.var("VDBI_KV_MOUNT"),
            self.prefix,
            self.label,
            jwt.display(),
            self.cert.cert.display(),
            self.cert.key.display(),
        );
        VdbiProcess::spawn(
            &self.p,
            ProcessSpec {
                bin: Path::new(env!("CARGO_BIN_EXE_vdbi")),
                dir: self.dir.path(),
                name,
                config,
                kubeconfig: &kubeconfig,
                pod_namespace: &self.rel.namespace.name,
            },
        )
    }

    /// `n` labelled pods in `ns`, each with recorded credentials.
    async fn pods_with_credentials(&self, ns: &TestNamespace, n: usize) -> Vec<Issued> {
        let pods: Api<Pod> = ns.api();
        let mut out = Vec::new();
        for i in 0..n {
            let cred = issue(&self.root, &self.p, "app-rw", "768h").await;
            let name = format!("doomed-{i}");
            record(&self.root, &self.p, &self.prefix, &cred, &ns.name, &name).await;
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {&self.label: "true"},
                             "annotations": {format!("{PREFIX}uuid"): cred.uuid}},
                "spec": {"serviceAccountName": "default", "containers": [{"name": "app", "image": "busybox"}]}
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            out.push(cred);
        }
        out
    }

    async fn wait_gone(
        &self,
        issued: &[Issued],
        limit: Duration,
        logs: &[&VdbiProcess],
    ) -> Duration {
        let t = Instant::now();
        for i in issued {
            while !all_gone(&self.root, &self.p, &self.prefix, i).await {
                if t.elapsed() > limit {
                    let tails: Vec<String> = logs
                        .iter()
                        .map(|l| format!("--- {}\n{}", l.name, l.log_tail(40)))
                        .collect();
                    panic!(
                        "{} not revoked within {limit:?}\n{}",
                        i.uuid,
                        tails.join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        t.elapsed()
    }
}

async fn until(
    what: &str,
    limit: Duration,
    logs: &[&VdbiProcess],
    mut cond: impl AsyncFnMut() -> bool,
) {
    let t = Instant::now();
    while !cond().await {
        if t.elapsed() > limit {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| format!("--- {}\n{}", l.name, l.log_tail(40)))
                .collect();
            panic!("{what}: not within {limit:?}\n{}", tails.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The kube-apiserver is killed (-9) while a revoker leads; its lease lapses and its watch is
/// declared broken. Pods deleted as soon as the apiserver answers again are revoked within the
/// lease duration + 10 s, by the watch (re-watch or re-list) — the sweep is 5 minutes out.
#[actix_rt::test]
async fn pods_deleted_across_an_apiserver_restart_are_revoked_promptly() {
    let _serial = SERIAL.lock().await;
    let s = Setup::new("rc-apiserver").await;
    let ns = TestNamespace::create(&s.client, "rc-apiserver-pods").await;
    ns.service_account("default").await;
    let issued = s.pods_with_credentials(&ns, 3).await;
    let extra = "revokerUnseenGrace: 300s\npodWatchBrokenAfter: 3s\n";
    let r = s
        .spawn("revoker-0", Component::Revoker, "revoker", extra)
        .await;
    until(
        "the revoker leads with a synced index",
        Duration::from_secs(40),
        &[&r],
        async || r.leads(REVOKER_LEASE).await && r.check_healthy("pod-index").await,
    )
    .await;

    platform_fault("kill", "kube-apiserver");
    until(
        "the revoker sees its watch broken",
        Duration::from_secs(30),
        &[&r],
        async || !r.leads(REVOKER_LEASE).await && !r.check_healthy("pod-index").await,
    )
    .await;
    let restart = platform_fault("start", "kube-apiserver");
    let back = Instant::now();
    let client = s.p.kube_client().await;
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    for i in 0..issued.len() {
        pods.delete(&format!("doomed-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let limit = LEASE_DURATION + Duration::from_secs(10);
    s.wait_gone(&issued, limit, &[&r]).await;
    println!(
        "apiserver restart took {:.1} s; pods deleted on its return revoked {:.1} s after it answered (target {} s)",
        restart.as_secs_f64(),
        back.elapsed().as_secs_f64(),
        limit.as_secs()
    );
    drop(r);
    purge(&s.root, &s.p, &s.prefix, &issued).await;
    ns.cleanup().await;
    s.rel.cleanup().await;
}

/// Two revoker replicas; the leader is killed (-9) and pods are deleted at once: the standby sees
/// the deletions while the dead leader's lease runs out, and acts on them when it takes over.
#[actix_rt::test]
async fn standby_acts_on_deletions_after_the_leader_is_killed() {
    let _serial = SERIAL.lock().await;
    let s = Setup::new("rc-failover").await;
    let ns = TestNamespace::create(&s.client, "rc-failover-pods").await;
    ns.service_account("default").await;
    let issued = s.pods_with_credentials(&ns, 4).await;
    let extra = "revokerUnseenGrace: 300s\n";
    let a = s
        .spawn("revoker-a", Component::Revoker, "revoker", extra)
        .await;
    let b = s
        .spawn("revoker-b", Component::Revoker, "revoker", extra)
        .await;
    until(
        "one replica leads, both synced",
        Duration::from_secs(40),
        &[&a, &b],
        async || {
            (a.leads(REVOKER_LEASE).await || b.leads(REVOKER_LEASE).await)
                && a.check_healthy("pod-index").await
                && b.check_healthy("pod-index").await
        },
    )
    .await;
    let (mut leader, standby) = if a.leads(REVOKER_LEASE).await {
        (a, b)
    } else {
        (b, a)
    };
    leader.kill();
    let killed = Instant::now();
    let pods: Api<Pod> = ns.api();
    for i in 0..issued.len() {
        pods.delete(&format!("doomed-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let limit = LEASE_DURATION + Duration::from_secs(10);
    s.wait_gone(&issued, limit, &[&standby]).await;
    println!(
        "leader killed: the standby revoked the pods deleted meanwhile {:.1} s after the kill (target {} s)",
        killed.elapsed().as_secs_f64(),
        limit.as_secs()
    );
    assert!(standby.leads(REVOKER_LEASE).await);
    drop(standby);
    purge(&s.root, &s.p, &s.prefix, &issued).await;
    ns.cleanup().await;
    s.rel.cleanup().await;
}

/// SIGTERM ends every mode quickly (the documented bound is `SHUTDOWN_BOUND`, 20 s; on a healthy
/// platform it must be far below), with exit code 0 — the injectors after admitting a pod, so the
/// apiserver holds a keep-alive connection to their webhook.
#[actix_rt::test]
async fn sigterm_ends_every_mode_within_its_bound() {
    let _serial = SERIAL.lock().await;
    let s = Setup::new("rc-sigterm").await;
    let ns = TestNamespace::create(&s.client, "rc-sigterm-pods").await;
    ns.service_account("app").await;
    ns.service_account("default").await;
    let healthy_limit = Duration::from_secs(8);
    let nri_socket = s.dir.path().join("nri.sock");
    let cases: Vec<(&str, Component, &str, String)> = vec![
        ("legacy-injector", Component::All, "injector", String::new()),
        (
            "projected-injector",
            Component::Injector,
            "injector",
            "useProjectedSA: true\ntokenRequestAudiences: [vault]\n".into(),
        ),
        ("renewer", Component::Renewer, "renewer", String::new()),
        ("revoker", Component::Revoker, "revoker", String::new()),
        ("all", Component::All, "all", String::new()),
        (
            "nri",
            Component::Nri,
            "nri",
            format!(
                "nri:\n  enabled: true\n  socketPath: {}\n  cachePath: {}\n",
                nri_socket.display(),
                s.dir.path().join("nri-cache.json").display()
            ),
        ),
    ];
    for (n, (name, component, mode, extra)) in cases.into_iter().enumerate() {
        let port = free_port();
        let extra = format!("webhookListen: 127.0.0.1:{port}\n{extra}");
        let mut proc = s.spawn(name, component, mode, &extra).await;
        // The NRI plugin has no runtime to register with here: it is up once logged in.
        until(
            &format!("{name} is ready"),
            Duration::from_secs(40),
            &[&proc],
            async || {
                if mode == "nri" {
                    proc.check_healthy(vdbi::actors::vault_session::HEALTH_CHECK)
                        .await
                } else {
                    proc.readyz().await.is_some_and(|(st, _)| st == 200)
                }
            },
        )
        .await;
        let mut webhook = None;
        if mode == "injector" || mode == "all" {
            let url = format!("https://127.0.0.1:{port}/mutate");
            let wh = vdbi_testkit::webhook::register(&s.client, &url, &s.cert.pem, &ns.name)
                .await
                .unwrap();
            let pods: Api<Pod> = ns.api();
            let mut p = pod(
                &format!("admitted-{n}"),
                "app",
                &[("db.role", "app-rw"), ("db.env-key-dbuser", "DB_USER")],
            );
            if let Some(l) = p.metadata.labels.as_mut() {
                l.insert(s.label.clone(), "true".into());
            }
            pods.create(&PostParams::default(), &p)
                .await
                .unwrap_or_else(|e| panic!("{name}: admission: {e}\n{}", proc.log_tail(30)));
            // Registered until the process is gone: the apiserver keeps its connection open.
            webhook = Some(wh);
        }
        proc.signal(libc::SIGTERM);
        let exit = proc.wait_exit(Duration::from_secs(30)).await;
        if let Some(wh) = webhook {
            wh.delete().await;
        }
        let Some((took, code)) = exit else {
            panic!(
                "{name}: still running 30 s after SIGTERM\n{}",
                proc.log_tail(30)
            );
        };
        println!(
            "{name}: exited {:.2} s after SIGTERM (code {code:?})",
            took.as_secs_f64()
        );
        assert_eq!(code, Some(0), "{name}\n{}", proc.log_tail(30));
        assert!(
            took < healthy_limit,
            "{name}: exit took {took:?} after SIGTERM\n{}",
            proc.log_tail(30)
        );
    }
    ns.cleanup().await;
    s.rel.cleanup().await;
}
