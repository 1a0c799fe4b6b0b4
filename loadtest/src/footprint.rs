//! `footprint`: the real `vdbi` binary as a process of its own (injector mode, the daemon's
//! production entry point and config file), so that its memory and CPU are measured alone,
//! without the harness: idle RSS after readiness, then RSS, peak RSS (VmHWM) and CPU time under
//! an open-loop admission load, read from `/proc/<pid>`. Also reads vdbi's own `/metrics`:
//! admission latency and, when the daemon exports it, its own time per admission (the time no
//! Vault or Kubernetes call was outstanding).

use crate::admission::admit;
use crate::report::{self, read_proc, summarize, summary_row, OwnTime, ProcStats, Summary};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vdbi_testkit::load::{cleanup_prefix, Leftovers};
use vdbi_testkit::platform::{service_account_token, unique_name, Platform, TestNamespace};

pub struct Args {
    /// The daemon binary (default: `vdbi` next to the `loadtest` binary).
    pub vdbi_bin: Option<PathBuf>,
    /// How long to sample the idle process after readiness.
    pub idle: Duration,
    pub rate: f64,
    pub duration: Duration,
    pub role: String,
}

#[derive(Debug, Serialize)]
pub struct FootprintResult {
    pub scenario: &'static str,
    pub binary: String,
    /// `debug` or `release`, as the binary reports it in its `--version` output when it does;
    /// otherwise guessed from its path.
    pub build: String,
    pub ready_after_ms: f64,
    pub idle: ProcStats,
    pub load: String,
    pub ok: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub latency: Summary,
    pub after_load: ProcStats,
    pub cpu_ms_per_admission: f64,
    /// From vdbi's `/metrics` (None when the daemon does not export it).
    pub own: Option<OwnTime>,
    pub leftovers: Leftovers,
}

/// Stops the daemon (SIGTERM, then waits) however the scenario ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

pub async fn run(p: &Platform, a: Args, out: &Path) -> Result<FootprintResult, String> {
    let bin = match a.vdbi_bin {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("vdbi"),
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --bin vdbi, with --release for release figures)",
            bin.display()
        ));
    }
    let build = if bin.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else {
        "debug"
    }
    .to_string();
    let kube = p.kube_client().await;
    let root = p.vault_root();
    let kv = p.var("VDBI_KV_MOUNT");
    let ns = TestNamespace::create(&kube, "lt-fp").await;
    ns.service_account("app").await;

    // The daemon's files: config, webhook certificate, its ServiceAccount JWT.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).map_err(|e| e.to_string())?;
    let (crt, key, jwt) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("token"),
    );
    std::fs::write(&crt, ck.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, ck.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    let sa_ns = p.var("VDBI_SYSTEM_NAMESPACE");
    std::fs::write(
        &jwt,
        service_account_token(&kube, &sa_ns, "vdbi-injector", &["vault"]).await,
    )
    .map_err(|e| e.to_string())?;
    let prefix = unique_name("lt-fp");
    let [webhook, metrics, health] = vdbi_testkit::process::free_ports::<3>();
    let config = format!(
        "mode: injector\ncertFile: {crt}\nkeyFile: {key}\nvaultAddress: {va}\nvaultAuthPath: {auth}\n\
kubeRole: {role}\nvaultSecretName: {kv}\nvaultSecretPrefix: {prefix}\nkubeTokenPath: {jwt}\n\
vaultRateLimit: 0\nwebhookListen: 127.0.0.1:{webhook}\nmetricsListen: 127.0.0.1:{metrics}\n\
healthListen: 127.0.0.1:{health}\nlogLevel: warn\n\
webhookClientCAFile: {client_ca}\nwebhookClientAllowedNames: [{client_name}]\n",
        crt = crt.display(),
        key = key.display(),
        jwt = jwt.display(),
        va = p.vault_addr(),
        auth = p.var("VDBI_K8S_AUTH_MOUNT"),
        role = p.var("VDBI_LEGACY_KUBE_ROLE"),
        client_ca = p.var("VDBI_WEBHOOK_CLIENT_CA_FILE"),
        client_name = p.var("VDBI_WEBHOOK_CLIENT_NAME"),
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("vdbi.log")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        // The legacy injector never calls the Kubernetes API: no credentials at all.
        .env_remove("KUBECONFIG")
        .env("POD_NAME", "vdbi-footprint")
        .env("POD_NAMESPACE", &sa_ns)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    let http = vdbi_testkit::load::load_client(p)?;
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{health}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let tail = std::fs::read_to_string(dir.path().join("vdbi.log")).unwrap_or_default();
            return Err(format!(
                "vdbi not ready after 60 s; its log ends with:\n{}",
                tail.lines().rev().take(10).collect::<Vec<_>>().join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = started.elapsed();
    eprintln!(
        "[footprint] {} ({build}) ready in {ready_after:.1?}; idle for {:?}",
        bin.display(),
        a.idle
    );
    tokio::time::sleep(a.idle).await;
    let idle = read_proc(&pid.to_string());
    eprintln!(
        "[footprint] idle RSS {} KiB; load {}/s for {:?}",
        idle.vm_rss_kib, a.rate, a.duration
    );

    let url = format!("https://127.0.0.1:{webhook}/mutate");
    let _ = admit(&http, &url, &ns.name, &a.role, usize::MAX).await; // role cache, connections
    let total = (a.rate * a.duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((t0 + period.mul_f64(i as f64)).into()).await;
        let (http, url, ns, role) = (http.clone(), url.clone(), ns.name.clone(), a.role.clone());
        handles.push(tokio::spawn(async move {
            admit(&http, &url, &ns, &role, i).await
        }));
    }
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.await.map_err(|e| e.to_string())? {
            Ok(d) => ok.push(d),
            Err(e) => errors.push(e),
        }
    }
    let after_load = read_proc(&pid.to_string());
    let page = http
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let own = OwnTime::from_metrics(&page);
    drop(daemon);
    let leftovers = cleanup_prefix(&root, &kv, &prefix, &[], &[]).await;
    ns.cleanup().await;

    let n_err = errors.len();
    errors.truncate(10);
    let res = FootprintResult {
        scenario: "footprint",
        binary: bin.display().to_string(),
        build,
        ready_after_ms: ready_after.as_secs_f64() * 1e3,
        load: format!("open loop, {}/s, {:?}", a.rate, a.duration),
        ok: ok.len(),
        errors: n_err,
        error_samples: errors,
        latency: summarize(&ok),
        cpu_ms_per_admission: if ok.is_empty() {
            0.0
        } else {
            (after_load.cpu_s() - idle.cpu_s()) * 1e3 / ok.len() as f64
        },
        idle,
        after_load,
        own,
        leftovers,
    };
    report::print_table(
        "footprint (the vdbi binary alone)",
        &[
            ("binary".into(), format!("{} ({})", res.binary, res.build)),
            ("ready after".into(), format!("{:.0}ms", res.ready_after_ms)),
            (
                "idle RSS / peak / threads".into(),
                format!(
                    "{} KiB / {} KiB / {}",
                    res.idle.vm_rss_kib, res.idle.vm_hwm_kib, res.idle.threads
                ),
            ),
            ("load".into(), res.load.clone()),
            ("ok / errors".into(), format!("{} / {}", res.ok, res.errors)),
            summary_row("admission latency", &res.latency),
            OwnTime::row(&res.own),
            (
                "after load RSS / peak / threads".into(),
                format!(
                    "{} KiB / {} KiB / {}",
                    res.after_load.vm_rss_kib, res.after_load.vm_hwm_kib, res.after_load.threads
                ),
            ),
            (
                "CPU in load / per admission".into(),
                format!(
                    "{:.2}s / {:.2}ms",
                    res.after_load.cpu_s() - res.idle.cpu_s(),
                    res.cpu_ms_per_admission
                ),
            ),
            res.leftovers.row(),
        ],
    );
    for e in &res.error_samples {
        eprintln!("[footprint] error: {e}");
    }
    report::write_json(out, &format!("footprint-{}", res.build), &res)
        .map_err(|e| e.to_string())?;
    Ok(res)
}
