//! `renewal`: N bookkeeping entries backed by real tokens (and leases), live pods carrying their
//! uuids, then one renewer cycle via `RunCycle`.

use crate::report::{self, proc_stats, ProcStats};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vdbi::actors::error::ActorError;
use vdbi::actors::leadership::RENEWER_LEASE;
use vdbi::actors::pod_index::Snapshot;
use vdbi::actors::renewer::{RunCycle, FIRST_CYCLE_AFTER};
use vdbi::config::Mode;
use vdbi_testkit::load::{cleanup_prefix, start_vdbi, Leftovers};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};

const PREFIX: &str = "db-creds-injector.numberly.io/";

pub struct Args {
    pub entries: usize,
    /// How many of the entries also hold a real DB lease (the rest: token only).
    pub leases: usize,
    pub rate_limit: u32,
    /// Token/credential creations in flight during setup.
    pub concurrency: usize,
    /// vdbi's `renewerConcurrency` (entries renewed at once).
    pub renewer_concurrency: usize,
    /// vdbi's `perUuidMetrics` (one series per credential and metric when true).
    pub per_uuid_metrics: bool,
    pub uuids_per_pod: usize,
    pub role: String,
    pub backfill: bool,
}

#[derive(Debug, Serialize)]
pub struct RenewalResult {
    pub scenario: &'static str,
    pub entries: usize,
    pub backfill: bool,
    pub with_lease: usize,
    pub rate_limit_per_s: u32,
    pub renewer_concurrency: usize,
    pub per_uuid_metrics: bool,
    pub setup_s: f64,
    pub cycle_s: f64,
    pub live: usize,
    pub tokens_renewed: u64,
    pub leases_renewed: u64,
    /// Renewals not needed (TTL left covers the horizon), entries purged, PodNames backfilled.
    pub skipped: u64,
    pub purged: u64,
    pub backfilled: u64,
    pub errors: u64,
    pub vault_calls: u64,
    pub setup_errors: usize,
    pub leftovers: Leftovers,
    pub proc_before_cycle: ProcStats,
    /// VmHWM was reset (clear_refs 5) just before the cycle: this is the cycle's own peak.
    pub proc_after_cycle: ProcStats,
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<RenewalResult, String> {
    let kube = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let db = p.var("VDBI_DB_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-ren").await;
    ns.service_account("default").await;
    let leases_ns = TestNamespace::create(&kube, "lt-ren-l").await;
    let label = unique_name("vdbi-lt");
    let started = Instant::now();

    // Tokens (and leases) first, then the pods that carry their uuids, then the KV entries.
    let mut issued: Vec<(String, String, String)> = Vec::with_capacity(a.entries); // uuid, token, lease
    let mut setup_errors = 0;
    let mut i = 0;
    while i < a.entries {
        let n = a.concurrency.min(a.entries - i);
        let batch = (i..i + n).map(|k| {
            let (root, db, role) = (&root, &db, &a.role);
            let with_lease = k < a.leases;
            async move {
                let auth = root
                    .request(
                        reqwest::Method::POST,
                        "auth/token/create-orphan",
                        Some(&json!({"policies": [role], "period": "1h",
                            "display_name": "injector-orphan-token"})),
                    )
                    .await;
                let token = auth.body["auth"]["client_token"]
                    .as_str()
                    .ok_or_else(|| {
                        format!("create-orphan: {} {}", auth.status, auth.body["errors"])
                    })?
                    .to_string();
                let lease = if with_lease {
                    let c = root
                        .with_token(&token)
                        .request(reqwest::Method::GET, &format!("{db}/creds/{role}"), None)
                        .await;
                    match c.body["lease_id"].as_str() {
                        Some(l) => l.to_string(),
                        None => {
                            // Do not leave the token behind.
                            vdbi_testkit::load::req(
                                root,
                                reqwest::Method::POST,
                                "auth/token/revoke".into(),
                                Some(json!({ "token": token })),
                            )
                            .await;
                            return Err(format!("read creds: {} {}", c.status, c.body["errors"]));
                        }
                    }
                } else {
                    String::new()
                };
                Ok((uuid::Uuid::new_v4().to_string(), token, lease))
            }
        });
        for r in futures::future::join_all(batch).await {
            match r {
                Ok(x) => issued.push(x),
                Err(e) => {
                    if setup_errors < 5 {
                        eprintln!("[renewal] setup error: {e}");
                    }
                    setup_errors += 1;
                }
            }
        }
        i += n;
        if i % 500 < n || i == a.entries {
            eprintln!("[renewal] issued {i}/{} tokens", a.entries);
        }
    }
    let pods: Api<Pod> = ns.api();
    for (k, chunk) in issued.chunks(a.uuids_per_pod.max(1)).enumerate() {
        let ids: Vec<&str> = chunk.iter().map(|(u, _, _)| u.as_str()).collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("holder-{k}"), "labels": {label.clone(): "true"},
                "annotations": {format!("{PREFIX}uuid"): ids.join(",")}},
            "spec": {"serviceAccountName": "default",
                "containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap();
        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
            eprintln!("[renewal] pod create failed: {e}");
            setup_errors += 1;
        }
    }
    eprintln!(
        "[renewal] {} holder pods created",
        issued.len().div_ceil(a.uuids_per_pod.max(1))
    );

    let rate_limit = a.rate_limit;
    let renewer_concurrency = a.renewer_concurrency;
    let per_uuid_metrics = a.per_uuid_metrics;
    let vdbi = start_vdbi(p, Mode::Renewer, "vdbi-renewer", |c| {
        c.injector_label = label.clone();
        c.pod_name = "renewer-0".into();
        c.pod_namespace = leases_ns.name.clone();
        c.sync_ttl_second = 3600;
        c.vault_rate_limit = rate_limit;
        c.renewer_concurrency = renewer_concurrency;
        c.per_uuid_metrics = per_uuid_metrics;
    })
    .await;
    // Leadership and a synced pod index that sees every uuid.
    let t = Instant::now();
    let mut leading_since = None;
    loop {
        let leading = vdbi
            .running
            .metrics
            .count("vdbi_is_leader", &[("lease_name", RENEWER_LEASE)])
            == 1.0;
        if leading && leading_since.is_none() {
            leading_since = Some(Instant::now());
        }
        let synced = match &vdbi.running.pod_index {
            Some(pi) if leading => match pi.send(Snapshot).await.ok().flatten() {
                Some(s) => issued.iter().all(|(u, _, _)| s.is_live(u)),
                None => false,
            },
            _ => false,
        };
        if synced {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err("renewer never led with a synced pod index".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewer = vdbi.running.renewer.clone().ok_or("no renewer")?;
    // The renewer runs its first scheduled cycle FIRST_CYCLE_AFTER after it takes the Lease: let
    // it run now, on zero entries, so that it cannot renew part of the entries while they are
    // being written (the measured cycle would then skip those).
    let since_leading = leading_since.map_or(Duration::ZERO, |at| at.elapsed());
    if let Some(left) = FIRST_CYCLE_AFTER.checked_sub(since_leading) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    while let Ok(Err(ActorError::Busy(_))) = renewer.send(RunCycle).await {
        tokio::time::sleep(Duration::from_millis(50)).await
    }
    // The KV entries, now that the pods are known.
    for (k, chunk) in issued.chunks(64).enumerate() {
        let per_pod = a.uuids_per_pod.max(1);
        futures::future::join_all(chunk.iter().enumerate().map(|(j, (u, t, l))| {
            // With --backfill the entries lack PodName: the cycle writes each one back.
            let pod = if a.backfill {
                String::new()
            } else {
                format!("holder-{}", (k * 64 + j) / per_pod)
            };
            vdbi_testkit::load::req(
                &root,
                reqwest::Method::POST,
                format!("{kv}/data/{}/{u}", vdbi.prefix),
                Some(
                    json!({"data": {"LeaseId": l, "TokenId": t, "Namespace": ns.name,
                    "ServiceAccountName": "default", "PodName": pod, "NodeName": ""}}),
                ),
            )
        }))
        .await;
        if (k + 1) % 16 == 0 {
            eprintln!("[renewal] KV entries {}/{}", (k + 1) * 64, issued.len());
        }
    }
    let setup = started.elapsed();
    eprintln!("[renewal] setup done in {setup:.1?}; running one cycle");
    let proc_before_cycle = proc_stats();
    reset_peak_rss();
    let t = Instant::now();
    let report = loop {
        match renewer.send(RunCycle).await.map_err(|e| e.to_string())? {
            Err(ActorError::Busy(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    let cycle = t.elapsed();
    let proc_after_cycle = proc_stats();
    eprintln!("[renewal] cycle done in {cycle:.1?}; cleaning up");
    vdbi.running.shutdown().await;
    let tokens: Vec<String> = issued.iter().map(|(_, t, _)| t.clone()).collect();
    let lease_ids: Vec<String> = issued
        .iter()
        .filter(|(_, _, l)| !l.is_empty())
        .map(|(_, _, l)| l.clone())
        .collect();
    let leftovers = cleanup_prefix(&root, &kv, &vdbi.prefix, &tokens, &lease_ids).await;
    ns.cleanup().await;
    leases_ns.cleanup().await;

    let res = RenewalResult {
        scenario: "renewal",
        entries: issued.len(),
        backfill: a.backfill,
        with_lease: lease_ids.len(),
        rate_limit_per_s: a.rate_limit,
        renewer_concurrency: a.renewer_concurrency,
        per_uuid_metrics: a.per_uuid_metrics,
        setup_s: setup.as_secs_f64(),
        cycle_s: cycle.as_secs_f64(),
        live: report.live,
        tokens_renewed: report.tokens_renewed,
        leases_renewed: report.leases_renewed,
        skipped: report.skipped,
        purged: report.purged,
        backfilled: report.backfilled,
        errors: report.errors,
        vault_calls: report.vault_calls,
        setup_errors,
        leftovers,
        proc_before_cycle,
        proc_after_cycle,
    };
    let mut rows = vec![
        (
            "entries (with lease)".into(),
            format!("{} ({})", res.entries, res.with_lease),
        ),
        (
            "rate limit".into(),
            if res.rate_limit_per_s == 0 {
                "unlimited".into()
            } else {
                format!("{}/s", res.rate_limit_per_s)
            },
        ),
        (
            "renewer concurrency / per-uuid metrics".into(),
            format!("{} / {}", res.renewer_concurrency, res.per_uuid_metrics),
        ),
        ("setup".into(), format!("{:.1}s", res.setup_s)),
        ("cycle duration".into(), format!("{:.2}s", res.cycle_s)),
        (
            "live / tokens / leases renewed".into(),
            format!(
                "{} / {} / {}",
                res.live, res.tokens_renewed, res.leases_renewed
            ),
        ),
        (
            "skipped / purged / backfilled".into(),
            format!("{} / {} / {}", res.skipped, res.purged, res.backfilled),
        ),
        ("vault calls".into(), res.vault_calls.to_string()),
        (
            "errors (cycle / setup)".into(),
            format!("{} / {}", res.errors, res.setup_errors),
        ),
        res.leftovers.row(),
    ];
    rows.extend(report::resource_rows(
        "cycle",
        &res.proc_before_cycle,
        &res.proc_after_cycle,
    ));
    report::print_table("renewal", &rows);
    report::write_json(
        out,
        &format!(
            "renewal-{}{}{}",
            res.entries,
            if res.backfill { "-backfill" } else { "" },
            if res.per_uuid_metrics {
                ""
            } else {
                "-no-uuid-metrics"
            }
        ),
        &res,
    )
    .map_err(|e| e.to_string())?;
    Ok(res)
}
