//! `churn`: N annotated pods created and deleted through the real kube-apiserver, with an
//! in-process vdbi (`mode: all`: injector, renewer, revoker) registered as the apiserver's
//! webhook. Per pod: CREATE (the apiserver calls vdbi, which issues credentials and writes the
//! KV entry), read the entry (its token and lease), DELETE, then poll the entry until the
//! revoker has removed it — the revoker deletes the entry last, after revoking the lease and the
//! token, so its absence marks the end of revocation. Time-to-revocation runs from just before
//! the DELETE is sent. At the end, before any cleanup by the harness, whatever vdbi left alive
//! (KV entries, tokens, leases) is counted: it must be 0.

use crate::report::{self, proc_stats, summarize, summary_row, ProcStats, Summary};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vdbi::actors::leadership::REVOKER_LEASE;
use vdbi::config::Mode;
use vdbi_testkit::load::{
    cleanup_prefix, count_alive, kv_keys, recorded_ids, start_vdbi, Leftovers,
};
use vdbi_testkit::platform::{Platform, TestNamespace, VaultRoot};

const PREFIX: &str = "db-creds-injector.numberly.io/";
/// How often a deleted pod's KV entry is polled.
const POLL: Duration = Duration::from_millis(10);
/// A pod whose entry is still there this long after its DELETE counts as an error.
const REVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Args {
    pub pods: usize,
    /// Pods in their create → delete → revoked cycle at once.
    pub concurrency: usize,
    /// How long each pod lives between CREATE and DELETE.
    pub hold: Duration,
    pub role: String,
}

#[derive(Debug, Serialize)]
pub struct ChurnResult {
    pub scenario: &'static str,
    pub pods: usize,
    pub concurrency: usize,
    pub hold_ms: u64,
    pub created: usize,
    pub revoked: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub wall_s: f64,
    /// CREATE through the apiserver, webhook call included.
    pub create_latency: Summary,
    /// From just before the DELETE to the KV entry's removal (10 ms polling resolution).
    pub time_to_revocation: Summary,
    /// vdbi's own `vdbi_revocation_latency_seconds{path="watch"}`: count and mean.
    pub vdbi_watch_revocations: u64,
    pub vdbi_watch_mean_ms: f64,
    /// What vdbi left alive, counted before the harness cleans anything.
    pub leftovers: Leftovers,
    pub proc_idle: ProcStats,
    pub proc_after: ProcStats,
}

#[derive(Default)]
struct Tally {
    create: Vec<Duration>,
    revocation: Vec<Duration>,
    tokens: Vec<String>,
    leases: Vec<String>,
    errors: usize,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.samples.len() < 10 {
            self.samples.push(e);
        }
    }
}

/// A pod labelled for vdbi with one dbConfig of `role` (user and password in env).
pub(crate) fn pod(name: &str, role: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {vdbi_testkit::webhook::LABEL: "true"},
            "annotations": {
                format!("{PREFIX}main.role"): role,
                format!("{PREFIX}main.env-key-dbuser"): "DB_USER",
                format!("{PREFIX}main.env-key-dbpassword"): "DB_PASSWORD",
            }
        },
        "spec": {"serviceAccountName": "app",
            "containers": [{"name": "app", "image": "busybox"}]}
    }))
    .expect("pod")
}

/// One pod's life: create, record its entry, hold, delete, wait for revocation.
async fn one_pod(
    pods: &Api<Pod>,
    root: &VaultRoot,
    kv: &str,
    prefix: &str,
    a: &Args,
    i: usize,
    tally: &Mutex<Tally>,
) {
    let name = format!("churn-{i}");
    let t = Instant::now();
    let created = match pods
        .create(&PostParams::default(), &pod(&name, &a.role))
        .await
    {
        Ok(p) => p,
        Err(e) => return tally.lock().unwrap().error(format!("{name}: create: {e}")),
    };
    let create = t.elapsed();
    let injected =
        created.spec.as_ref().is_some_and(|s| {
            s.containers[0].env.iter().flatten().any(|e| {
                e.name == "DB_USER" && e.value.as_deref().is_some_and(|v| v.starts_with("v-"))
            })
        });
    let uuid = created
        .metadata
        .annotations
        .as_ref()
        .and_then(|m| m.get(&format!("{PREFIX}uuid")))
        .cloned()
        .unwrap_or_default();
    if !injected || uuid.is_empty() {
        tally
            .lock()
            .unwrap()
            .error(format!("{name}: stored without credentials or uuid"));
    } else {
        match recorded_ids(root, kv, prefix, &uuid).await {
            Ok(Some((token, lease))) => {
                let mut t = tally.lock().unwrap();
                t.tokens.push(token);
                t.leases.push(lease);
            }
            Ok(None) => tally
                .lock()
                .unwrap()
                .error(format!("{name}: no KV entry after admission")),
            Err(e) => tally.lock().unwrap().error(format!("{name}: {e}")),
        }
    }
    tokio::time::sleep(a.hold).await;
    let t = Instant::now();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    if let Err(e) = pods.delete(&name, &dp).await {
        return tally.lock().unwrap().error(format!("{name}: delete: {e}"));
    }
    if uuid.is_empty() {
        return;
    }
    loop {
        match recorded_ids(root, kv, prefix, &uuid).await {
            Ok(None) => break,
            Ok(Some(_)) | Err(_) if t.elapsed() > REVOCATION_TIMEOUT => {
                return tally.lock().unwrap().error(format!(
                    "{name}: entry still present {REVOCATION_TIMEOUT:?} after DELETE"
                ))
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    let revocation = t.elapsed();
    let mut t = tally.lock().unwrap();
    t.create.push(create);
    t.revocation.push(revocation);
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<ChurnResult, String> {
    let kube = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-churn").await;
    ns.service_account("app").await;
    let leases_ns = TestNamespace::create(&kube, "lt-churn-l").await;
    let vdbi = start_vdbi(p, Mode::All, "vdbi-revoker", |c| {
        c.pod_name = "churn-0".into();
        c.pod_namespace = leases_ns.name.clone();
        c.sync_ttl_second = 3600;
        c.admission_timeout = Duration::from_secs(4);
    })
    .await;
    let url = format!(
        "https://{}/mutate",
        vdbi.running.webhook_addr.ok_or("webhook not bound")?
    );
    let webhook = vdbi_testkit::webhook::register(&kube, &url, &vdbi.cert_pem, &ns.name).await?;
    let t = Instant::now();
    while vdbi
        .running
        .metrics
        .count("vdbi_is_leader", &[("lease_name", REVOKER_LEASE)])
        != 1.0
    {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("vdbi never led the revoker lease".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the revoker's pod watch start before the first DELETE.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let proc_idle = proc_stats();
    eprintln!(
        "[churn] vdbi up and leading, RSS {} KiB; {} pods, {} at once",
        proc_idle.vm_rss_kib, a.pods, a.concurrency
    );

    let a = Arc::new(a);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (pods, root, kv, prefix, a, tally, next) = (
            ns.api::<Pod>(),
            root.clone(),
            kv.clone(),
            vdbi.prefix.clone(),
            a.clone(),
            tally.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.pods {
                    break;
                }
                one_pod(&pods, &root, &kv, &prefix, &a, i, &tally).await;
            }
        }));
    }
    let progress = {
        let (tally, pods) = (tally.clone(), a.pods);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (done, errors) = {
                    let t = tally.lock().unwrap();
                    (t.revocation.len(), t.errors)
                };
                if done != last {
                    eprintln!(
                        "[churn] {done}/{pods} revoked, {errors} errors ({:.1} pods/s)",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                    last = done;
                }
            }
        })
    };
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    progress.abort();
    let wall = started.elapsed();
    let proc_after = proc_stats();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    // What vdbi left, before the harness touches anything.
    let tokens: Vec<String> = tally
        .tokens
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    let leases: Vec<String> = tally
        .leases
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    // A pod counts as revoked once its entry's data is gone; the entry's metadata delete (the
    // revocation's last call) may still be in flight for the last pods: wait for it, bounded.
    let settle = Instant::now();
    while !kv_keys(&root, &kv, &vdbi.prefix).await.is_empty()
        && settle.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leftovers = count_alive(&root, &kv, &vdbi.prefix, &tokens, &leases).await;
    let (watch_n, watch_sum) = vdbi
        .running
        .metrics
        .observations("vdbi_revocation_latency_seconds", &[("path", "watch")]);
    eprintln!("[churn] done; cleaning up");
    webhook.delete().await;
    vdbi.running.shutdown().await;
    if leftovers.total() > 0 || !kv_keys(&root, &kv, &vdbi.prefix).await.is_empty() {
        cleanup_prefix(&root, &kv, &vdbi.prefix, &tokens, &leases).await;
    }
    ns.cleanup().await;
    leases_ns.cleanup().await;

    let res = ChurnResult {
        scenario: "churn",
        pods: a.pods,
        concurrency: a.concurrency,
        hold_ms: a.hold.as_millis() as u64,
        created: tally.create.len(),
        revoked: tally.revocation.len(),
        errors: tally.errors,
        error_samples: tally.samples,
        wall_s: wall.as_secs_f64(),
        create_latency: summarize(&tally.create),
        time_to_revocation: summarize(&tally.revocation),
        vdbi_watch_revocations: watch_n,
        vdbi_watch_mean_ms: if watch_n > 0 {
            watch_sum / watch_n as f64 * 1e3
        } else {
            0.0
        },
        leftovers,
        proc_idle,
        proc_after,
    };
    let mut rows = vec![
        (
            "pods / concurrency / hold".into(),
            format!("{} / {} / {:?}", res.pods, res.concurrency, a.hold),
        ),
        (
            "revoked / errors".into(),
            format!("{} / {}", res.revoked, res.errors),
        ),
        (
            "wall / rate".into(),
            format!(
                "{:.1}s / {:.1} pods/s",
                res.wall_s,
                res.revoked as f64 / res.wall_s
            ),
        ),
        summary_row("create (via apiserver)", &res.create_latency),
        summary_row("time to revocation", &res.time_to_revocation),
        (
            "vdbi's watch revocations / mean".into(),
            format!(
                "{} / {:.1}ms",
                res.vdbi_watch_revocations, res.vdbi_watch_mean_ms
            ),
        ),
        res.leftovers.row(),
    ];
    rows.extend(report::resource_rows(
        "load",
        &res.proc_idle,
        &res.proc_after,
    ));
    report::print_table("churn", &rows);
    for e in &res.error_samples {
        eprintln!("[churn] error: {e}");
    }
    report::write_json(out, &format!("churn-{}", res.pods), &res).map_err(|e| e.to_string())?;
    report::write_svg(
        out,
        &format!("churn-{}", res.pods),
        "churn: time from DELETE to revocation, and CREATE latency",
        &[
            ("time to revocation", &tally.revocation),
            ("create", &tally.create),
        ],
    )
    .map_err(|e| e.to_string())?;
    Ok(res)
}
