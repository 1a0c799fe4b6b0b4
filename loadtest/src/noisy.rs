//! `noisy-neighbour`: normal pods (one dbConfig) admitted at a fixed rate, once alone and once
//! beside a "noisy" pod at the per-pod cap (`maxDbConfigsPerPod` dbConfigs) re-submitted in a
//! loop; the normal pods' latency percentiles of both runs show whether one pod can starve others.

use crate::admission::{admit, LABEL, PREFIX};
use crate::report::{summarize, Summary};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdbi::config::Mode;
use vdbi_testkit::load::{cleanup_prefix, start_vdbi, Leftovers};
use vdbi_testkit::platform::{Platform, TestNamespace};

pub struct Args {
    pub rate: f64,
    pub duration: Duration,
    /// Concurrent loops re-submitting the noisy pod.
    pub noisy_loops: usize,
    pub role: String,
    /// vdbi's `issuanceSlots` and `issuanceSlotsPerPod` (None: vdbi's defaults).
    pub issuance_slots: Option<usize>,
    pub issuance_slots_per_pod: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub noisy: bool,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub latency: Summary,
    /// Noisy admissions completed during the phase, and how many were allowed.
    pub noisy_done: usize,
    pub noisy_allowed: usize,
}

#[derive(Debug, Serialize)]
pub struct NoisyResult {
    pub scenario: &'static str,
    pub rate_per_s: f64,
    pub duration_s: f64,
    pub db_configs_of_noisy_pod: usize,
    pub issuance_slots: usize,
    pub issuance_slots_per_pod: usize,
    pub alone: Phase,
    pub beside_noisy: Phase,
    /// p99 beside the noisy pod / p99 alone.
    pub p99_ratio: f64,
    pub leftovers: Leftovers,
}

/// The noisy pod: `n` dbConfigs of `role`, each its own env var.
fn noisy_review(ns: &str, i: usize, role: &str, n: usize) -> Value {
    let mut ann = serde_json::Map::new();
    for k in 0..n {
        ann.insert(format!("{PREFIX}db{k:02}.role"), json!(role));
        ann.insert(
            format!("{PREFIX}db{k:02}.env-key-dbuser"),
            json!(format!("DB{k:02}_USER")),
        );
    }
    let name = format!("noisy-{i}");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL: "true"},
            "annotations": ann},
        "spec": {"serviceAccountName": "app",
            "containers": [{"name": "app", "image": "busybox"}]}
    });
    let uid = uuid::Uuid::new_v4().to_string();
    vdbi_testkit::review::admission_review(&uid, ns, &json!(name), "CREATE", &pod, false)
}

async fn phase(
    http: &reqwest::Client,
    url: &str,
    ns: &str,
    a: &Args,
    noisy_n: Option<usize>,
    base: usize,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let (noisy_done, noisy_allowed) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut noisy_tasks = Vec::new();
    if let Some(n) = noisy_n {
        for l in 0..a.noisy_loops {
            let (http, url, ns, role) = (
                http.clone(),
                url.to_string(),
                ns.to_string(),
                a.role.clone(),
            );
            let (stop, done, allowed) = (stop.clone(), noisy_done.clone(), noisy_allowed.clone());
            noisy_tasks.push(tokio::spawn(async move {
                let mut i = l * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = noisy_review(&ns, i, &role, n);
                    if let Ok(r) = http.post(&url).json(&body).send().await {
                        if let Ok(v) = r.json::<Value>().await {
                            if v["response"]["allowed"] == true {
                                allowed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let total = (a.rate * a.duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((started + period.mul_f64(i as f64)).into()).await;
        let (http, url, ns, role) = (
            http.clone(),
            url.to_string(),
            ns.to_string(),
            a.role.clone(),
        );
        handles.push(tokio::spawn(async move {
            admit(&http, &url, &ns, &role, base + i).await
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    stop.store(true, Ordering::Relaxed);
    for t in noisy_tasks {
        let _ = t.await;
    }
    let ok: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let errs: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    Phase {
        noisy: noisy_n.is_some(),
        sent: results.len(),
        ok: ok.len(),
        errors: errs.len(),
        error_samples: errs.into_iter().take(5).collect(),
        latency: summarize(&ok),
        noisy_done: noisy_done.load(Ordering::Relaxed),
        noisy_allowed: noisy_allowed.load(Ordering::Relaxed),
    }
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<NoisyResult, String> {
    let kube = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-noisy").await;
    ns.service_account("app").await;
    let vdbi = start_vdbi(p, Mode::Injector, "vdbi-injector", |c| {
        c.admission_timeout = Duration::from_secs(8);
        if let Some(n) = a.issuance_slots {
            c.issuance_slots = n;
        }
        if let Some(n) = a.issuance_slots_per_pod {
            c.issuance_slots_per_pod = n;
        }
    })
    .await;
    if !vdbi.running.health.is_ready() {
        return Err(format!(
            "vdbi not ready: {:?}",
            vdbi.running.health.checks()
        ));
    }
    let cap = vdbi.running.config.max_db_configs_per_pod;
    let slots = (
        vdbi.running.config.issuance_slots,
        vdbi.running.config.issuance_slots_per_pod,
    );
    let url = format!(
        "https://{}/mutate",
        vdbi.running.webhook_addr.expect("webhook bound")
    );
    let http = vdbi_testkit::load::load_client(p)?;
    let _ = admit(&http, &url, &ns.name, &a.role, usize::MAX).await;
    eprintln!(
        "[noisy-neighbour] normal pods alone: {} /s for {:?}",
        a.rate, a.duration
    );
    let alone = phase(&http, &url, &ns.name, &a, None, 0).await;
    eprintln!(
        "[noisy-neighbour] beside {} loop(s) of a {cap}-dbConfig pod",
        a.noisy_loops
    );
    let beside = phase(&http, &url, &ns.name, &a, Some(cap), 1_000_000).await;
    vdbi.running.shutdown().await;
    eprintln!("[noisy-neighbour] cleaning up");
    let leftovers = cleanup_prefix(&root, &kv, &vdbi.prefix, &[], &[]).await;
    ns.cleanup().await;
    let ratio = if alone.latency.p99_ms > 0.0 {
        beside.latency.p99_ms / alone.latency.p99_ms
    } else {
        f64::NAN
    };
    let res = NoisyResult {
        scenario: "noisy-neighbour",
        rate_per_s: a.rate,
        duration_s: a.duration.as_secs_f64(),
        db_configs_of_noisy_pod: cap,
        issuance_slots: slots.0,
        issuance_slots_per_pod: slots.1,
        alone,
        beside_noisy: beside,
        p99_ratio: ratio,
        leftovers,
    };
    crate::report::print_table(
        "noisy-neighbour: normal pods' admission latency",
        &[
            crate::report::summary_row("alone", &res.alone.latency),
            crate::report::summary_row("beside the noisy pod", &res.beside_noisy.latency),
            ("p99 ratio".into(), format!("{ratio:.2}")),
            (
                "noisy admissions (allowed/done)".into(),
                format!(
                    "{}/{}",
                    res.beside_noisy.noisy_allowed, res.beside_noisy.noisy_done
                ),
            ),
            (
                "normal errors (alone/beside)".into(),
                format!("{}/{}", res.alone.errors, res.beside_noisy.errors),
            ),
            res.leftovers.row(),
        ],
    );
    crate::report::write_json(out, "noisy-neighbour", &res).map_err(|e| e.to_string())?;
    Ok(res)
}
