//! `admission`: AdmissionReview requests straight to an in-process vdbi webhook, plus the bare
//! Vault calls one admission needs, timed in the same run with `VaultClient`.

use crate::report::{self, proc_stats, summarize, summary_row, OwnTime, ProcStats, Summary};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdbi::config::Mode;
use vdbi::vault::{VaultClient, VaultToken};
use vdbi_testkit::load::{cleanup_prefix, start_vdbi, Leftovers};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};
use vdbi_testkit::vault::{settings, VaultFixture};

pub const LABEL: &str = "vault-db-injector";
pub const PREFIX: &str = "db-creds-injector.numberly.io/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    Legacy,
    Projected,
    Nri,
}

pub struct Args {
    pub mode: AdmissionMode,
    /// Open loop at this many admissions/s (ignored when `concurrency` is set).
    pub rate: f64,
    pub duration: Duration,
    pub concurrency: Option<usize>,
    pub bare_samples: usize,
    /// vdbi's `vaultRateLimit` (0 = unlimited): it paces only the renewer and the revoker, so
    /// admissions must not slow down with it.
    pub vault_rate_limit: u32,
    pub role: String,
}

#[derive(Debug, Serialize)]
pub struct AdmissionResult {
    pub scenario: &'static str,
    pub mode: AdmissionMode,
    pub load: String,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub wall_s: f64,
    pub throughput_per_s: f64,
    pub latency: Summary,
    /// The bare Vault calls one admission needs, in sequence, timed from the harness.
    pub bare: Summary,
    /// Per-call breakdown of the bare sequence.
    pub bare_per_call: Vec<(String, Summary)>,
    /// total − bare at equal percentiles (an estimate: the two distributions are independent).
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// vdbi's own measure: the time of each admission during which no Vault or Kubernetes
    /// call was outstanding (None when the daemon does not export it).
    pub own: Option<OwnTime>,
    pub leftovers: Leftovers,
    pub proc_idle: ProcStats,
    pub proc_after: ProcStats,
}

fn review(uid: &str, ns: &str, name: &str, role: &str) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {LABEL: "true"},
            "annotations": {
                format!("{PREFIX}main.role"): role,
                format!("{PREFIX}main.env-key-dbuser"): "DB_USER",
                format!("{PREFIX}main.env-key-dbpassword"): "DB_PASSWORD",
            }
        },
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": "busybox",
                "env": [{"name": "DB_USER", "value": "placeholder-to-replace"}]}]
        }
    });
    vdbi_testkit::review::admission_review(uid, ns, &json!(name), "CREATE", &pod, false)
}

/// One admission: Ok(latency) when allowed with a patch, Err(reason) otherwise.
pub(crate) async fn admit(
    http: &reqwest::Client,
    url: &str,
    ns: &str,
    role: &str,
    i: usize,
) -> Result<Duration, String> {
    let uid = uuid::Uuid::new_v4().to_string();
    let body = review(&uid, ns, &format!("lt-{i}"), role);
    let t = Instant::now();
    let r = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| format!("body: {e}"))?;
    let d = t.elapsed();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let resp = &v["response"];
    if resp["allowed"] != true {
        return Err(format!(
            "denied: {}",
            resp["status"]["message"].as_str().unwrap_or("?")
        ));
    }
    // Serialised as base64 or as a byte array depending on the serializer: never print it
    // (it carries the credentials).
    let has_patch = match &resp["patch"] {
        Value::String(p) => !p.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    };
    if !has_patch {
        return Err("allowed without a patch".into());
    }
    Ok(d)
}

/// The bare Vault sequence of one admission, per call.
struct Bare {
    client: VaultClient,
    root: VaultToken,
    kube_mount: String,
    kv: String,
    db_mount: String,
    prefix: String,
    tokens: Vec<String>,
    leases: Vec<String>,
}

impl Bare {
    async fn once(
        &mut self,
        mode: AdmissionMode,
        role: &str,
        kube: &kube::Client,
        ns: &str,
    ) -> Result<Vec<(&'static str, Duration)>, String> {
        let mut out = Vec::new();
        let e = |e: vdbi::vault::VaultError| e.to_string();
        let uuid = uuid::Uuid::new_v4().to_string();
        let (token, lease) = match mode {
            AdmissionMode::Legacy | AdmissionMode::Nri => {
                let t = Instant::now();
                self.client
                    .read_kubernetes_auth_role(&self.root, &self.kube_mount, role)
                    .await
                    .map_err(e)?;
                out.push(("read k8s-auth role", t.elapsed()));
                if mode == AdmissionMode::Nri {
                    (String::new(), String::new())
                } else {
                    let t = Instant::now();
                    let orphan = self
                        .client
                        .create_orphan_token(
                            &self.root,
                            &[role.to_string()],
                            Duration::from_secs(3600),
                            "injector-orphan-token",
                        )
                        .await
                        .map_err(e)?;
                    out.push(("create-orphan", t.elapsed()));
                    self.tokens.push(orphan.token.expose().to_string());
                    let t = Instant::now();
                    let creds = self
                        .client
                        .read_db_credentials(&orphan.token, &self.db_mount, role)
                        .await
                        .map_err(e)?;
                    out.push(("read creds", t.elapsed()));
                    self.leases.push(creds.lease_id.clone());
                    (orphan.token.expose().to_string(), creds.lease_id)
                }
            }
            AdmissionMode::Projected => {
                let t = Instant::now();
                let jwt =
                    vdbi_testkit::platform::service_account_token(kube, ns, "app", &["vault"])
                        .await;
                out.push(("TokenRequest", t.elapsed()));
                let t = Instant::now();
                let login = self
                    .client
                    .login_kubernetes(&self.kube_mount, role, &jwt)
                    .await
                    .map_err(e)?;
                out.push(("k8s login", t.elapsed()));
                self.tokens.push(login.token.expose().to_string());
                let t = Instant::now();
                let creds = self
                    .client
                    .read_db_credentials(&login.token, &self.db_mount, role)
                    .await
                    .map_err(e)?;
                out.push(("read creds", t.elapsed()));
                self.leases.push(creds.lease_id.clone());
                (login.token.expose().to_string(), creds.lease_id)
            }
        };
        let t = Instant::now();
        let entry = json!({"LeaseId": lease, "TokenId": token, "Namespace": ns,
            "ServiceAccountName": "app", "PodName": "bare", "NodeName": ""});
        self.client
            .kv_put(
                &self.root,
                &self.kv,
                &format!("{}/{uuid}", self.prefix),
                &entry,
            )
            .await
            .map_err(e)?;
        out.push(("KV put", t.elapsed()));
        Ok(out)
    }
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<AdmissionResult, String> {
    let kube = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-adm").await;
    ns.service_account("app").await;
    let mode = a.mode;
    let vdbi = start_vdbi(p, Mode::Injector, "vdbi-injector", |c| {
        c.use_projected_sa = mode == AdmissionMode::Projected;
        c.nri.enabled = mode == AdmissionMode::Nri;
        c.admission_timeout = Duration::from_secs(8);
        c.vault_rate_limit = a.vault_rate_limit;
    })
    .await;
    if !vdbi.running.health.is_ready() {
        return Err(format!(
            "vdbi not ready: {:?}",
            vdbi.running.health.checks()
        ));
    }
    let proc_idle = proc_stats();
    eprintln!(
        "[admission] vdbi up (mode {:?}), idle RSS {} KiB",
        mode, proc_idle.vm_rss_kib
    );
    let url = format!(
        "https://{}/mutate",
        vdbi.running.webhook_addr.expect("webhook bound")
    );

    // Bare Vault calls, sequential, before the load.
    let fx = VaultFixture::get();
    let mut bare = Bare {
        client: vdbi_testkit::vault::client(settings(p)).map_err(|e| e.to_string())?,
        root: fx.root.clone(),
        kube_mount: fx.kube_auth_mount(),
        kv: kv.clone(),
        db_mount: fx.db_mount(),
        prefix: unique_name("lt-bare"),
        tokens: Vec::new(),
        leases: Vec::new(),
    };
    let mut bare_totals = Vec::new();
    let mut per_call: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut errors = Vec::new();
    for i in 0..a.bare_samples {
        match bare.once(mode, &a.role, &kube, &ns.name).await {
            Ok(calls) => {
                bare_totals.push(calls.iter().map(|(_, d)| *d).sum());
                for (k, (name, d)) in calls.into_iter().enumerate() {
                    if per_call.len() <= k {
                        per_call.push((name.to_string(), Vec::new()));
                    }
                    per_call[k].1.push(d);
                }
            }
            Err(e) => errors.push(format!("bare: {e}")),
        }
        if (i + 1) % 50 == 0 {
            eprintln!("[admission] bare sequences {}/{}", i + 1, a.bare_samples);
        }
    }

    // The load.
    let http = vdbi_testkit::load::load_client(p)?;
    // Warm the connection pool and the role cache.
    let _ = admit(&http, &url, &ns.name, &a.role, usize::MAX).await;
    let results = Arc::new(tokio::sync::Mutex::new(
        Vec::<Result<Duration, String>>::new(),
    ));
    let started = Instant::now();
    let load;
    let mut handles = Vec::new();
    if let Some(c) = a.concurrency {
        load = format!("closed loop, concurrency {c}, {:?}", a.duration);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..c {
            let (http, url, ns, role, results, next) = (
                http.clone(),
                url.clone(),
                ns.name.clone(),
                a.role.clone(),
                results.clone(),
                next.clone(),
            );
            let d = a.duration;
            handles.push(tokio::spawn(async move {
                while started.elapsed() < d {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = admit(&http, &url, &ns, &role, i).await;
                    results.lock().await.push(r);
                }
            }));
        }
    } else {
        load = format!("open loop, {} /s, {:?}", a.rate, a.duration);
        let total = (a.rate * a.duration.as_secs_f64()).round() as usize;
        let period = Duration::from_secs_f64(1.0 / a.rate);
        let progress = results.clone();
        for i in 0..total {
            let at = started + period.mul_f64(i as f64);
            tokio::time::sleep_until(at.into()).await;
            let (http, url, ns, role, results) = (
                http.clone(),
                url.clone(),
                ns.name.clone(),
                a.role.clone(),
                results.clone(),
            );
            handles.push(tokio::spawn(async move {
                let r = admit(&http, &url, &ns, &role, i).await;
                results.lock().await.push(r);
            }));
            if (i + 1) % (a.rate.max(1.0) as usize) == 0 {
                let done = progress.lock().await.len();
                eprintln!("[admission] sent {}/{total}, done {done}", i + 1);
            }
        }
    }
    if a.concurrency.is_some() {
        let mut last = 0;
        while !handles.iter().all(|h| h.is_finished()) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = results.lock().await.len();
            eprintln!("[admission] {n} done (+{}/s)", n - last);
            last = n;
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let wall = started.elapsed();
    let proc_after = proc_stats();
    let results = std::mem::take(&mut *results.lock().await);
    let ok: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        if errors.len() < 10 {
            errors.push(e.clone());
        }
    }
    let n_err = results.len() - ok.len();
    let own = OwnTime::from_metrics(&vdbi.running.metrics.render());
    eprintln!("[admission] load done, cleaning up");
    vdbi.running.shutdown().await;
    let mut left = cleanup_prefix(&root, &kv, &vdbi.prefix, &[], &[]).await;
    let bl = cleanup_prefix(&root, &kv, &bare.prefix, &bare.tokens, &bare.leases).await;
    left.kv_entries += bl.kv_entries;
    left.tokens += bl.tokens;
    left.leases += bl.leases;
    ns.cleanup().await;

    let latency = summarize(&ok);
    let bare_sum = summarize(&bare_totals);
    let res = AdmissionResult {
        scenario: "admission",
        mode,
        load,
        sent: results.len(),
        ok: ok.len(),
        errors: n_err + errors.iter().filter(|e| e.starts_with("bare")).count(),
        error_samples: errors,
        wall_s: wall.as_secs_f64(),
        throughput_per_s: ok.len() as f64 / wall.as_secs_f64(),
        overhead_p50_ms: latency.p50_ms - bare_sum.p50_ms,
        overhead_p99_ms: latency.p99_ms - bare_sum.p99_ms,
        own,
        latency,
        bare: bare_sum,
        bare_per_call: per_call
            .iter()
            .map(|(n, s)| (n.clone(), summarize(s)))
            .collect(),
        leftovers: left,
        proc_idle,
        proc_after,
    };
    let mut rows = vec![
        ("mode".into(), format!("{:?}", res.mode)),
        ("load".into(), res.load.clone()),
        (
            "sent / ok / errors".into(),
            format!("{} / {} / {}", res.sent, res.ok, res.errors),
        ),
        (
            "throughput".into(),
            format!("{:.1} admissions/s", res.throughput_per_s),
        ),
        summary_row("admission latency", &res.latency),
        summary_row("bare Vault sequence", &res.bare),
    ];
    for (n, s) in &res.bare_per_call {
        rows.push(summary_row(&format!("  bare: {n}"), s));
    }
    rows.push((
        "overhead (total-bare)".into(),
        format!(
            "p50={:.2}ms p99={:.2}ms",
            res.overhead_p50_ms, res.overhead_p99_ms
        ),
    ));
    rows.push(OwnTime::row(&res.own));
    rows.push(res.leftovers.row());
    rows.push((
        "RSS idle / peak".into(),
        format!(
            "{} KiB / {} KiB",
            res.proc_idle.vm_rss_kib, res.proc_after.vm_hwm_kib
        ),
    ));
    rows.push((
        "CPU user+sys (whole run)".into(),
        format!(
            "{:.2}s + {:.2}s",
            res.proc_after.cpu_user_s, res.proc_after.cpu_system_s
        ),
    ));
    report::print_table("admission", &rows);
    let name = format!(
        "admission-{}{}",
        format!("{mode:?}").to_lowercase(),
        match a.concurrency {
            Some(c) => format!("-closed{c}"),
            None => String::new(),
        }
    );
    report::write_json(out, &name, &res).map_err(|e| e.to_string())?;
    report::write_svg(
        out,
        &name,
        &format!("admission latency ({mode:?}) vs bare Vault sequence"),
        &[("admission", &ok), ("bare Vault calls", &bare_totals)],
    )
    .map_err(|e| e.to_string())?;
    Ok(res)
}
