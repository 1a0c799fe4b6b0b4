//! vdbi as a real process (the `vdbi` binary), for tests and load scenarios that kill, signal or
//! restart it: spawn with a YAML configuration, read its metrics and readiness, signal it, wait
//! for its exit. The binary path is the caller's (`env!("CARGO_BIN_EXE_vdbi")` in integration
//! tests, the release build in the load-test harness).
//!
//! Identities come from [`crate::chart_rbac::ChartRelease`]: `KUBECONFIG` is the component's
//! ServiceAccount kubeconfig, `kubeTokenPath` its Vault JWT ([`ProcessSpec::kubeconfig`] is
//! checked: the platform's admin kubeconfig is refused).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::platform::Platform;

/// A free TCP port on 127.0.0.1 (for metrics/health/webhook listeners of a process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `N` distinct free TCP ports on 127.0.0.1: the listeners are held until all are picked, so the
/// system cannot hand out the same port twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .map(|a| a.port())
            .expect("a free port")
    })
}

/// What to start.
pub struct ProcessSpec<'a> {
    pub bin: &'a Path,
    /// Where the config and the log go.
    pub dir: &'a Path,
    pub name: &'a str,
    /// Configuration lines (YAML) except `metricsListen`/`healthListen`, which are added.
    pub config: String,
    pub kubeconfig: &'a Path,
    /// `POD_NAMESPACE` (the Lease namespace: the chart's release namespace).
    pub pod_namespace: &'a str,
}

/// A running vdbi process; killed on drop.
pub struct VdbiProcess {
    pub name: String,
    child: Child,
    metrics: String,
    health: String,
    pub log: PathBuf,
}

impl VdbiProcess {
    pub fn spawn(p: &Platform, spec: ProcessSpec<'_>) -> VdbiProcess {
        assert_ne!(
            spec.kubeconfig,
            Path::new(&p.var("KUBECONFIG")),
            "vdbi must not run with the platform's admin kubeconfig"
        );
        let [mport, hport] = free_ports::<2>();
        let cfg = format!(
            "{}\nmetricsListen: 127.0.0.1:{mport}\nhealthListen: 127.0.0.1:{hport}\n",
            spec.config.trim_end()
        );
        let cfg_path = spec.dir.join(format!("{}.yaml", spec.name));
        std::fs::write(&cfg_path, cfg).expect("writing the config");
        let log = spec.dir.join(format!("{}.log", spec.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(spec.bin)
            .arg("--config")
            .arg(&cfg_path)
            .env("KUBECONFIG", spec.kubeconfig)
            .env("POD_NAME", spec.name)
            .env("POD_NAMESPACE", spec.pod_namespace)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn vdbi");
        VdbiProcess {
            name: spec.name.to_string(),
            child,
            metrics: format!("http://127.0.0.1:{mport}/metrics"),
            health: format!("http://127.0.0.1:{hport}/readyz"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A sample of a metric (`name{labels}` as exposed), `None` if unreachable or absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let body = crate::platform::http_client()
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

    pub async fn leads(&self, lease: &str) -> bool {
        self.metric(&format!("vdbi_is_leader{{lease_name=\"{lease}\"}}"))
            .await
            == Some(1.0)
    }

    /// `/readyz`: (status, body).
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        let r = crate::platform::http_client()
            .get(&self.health)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// The readiness check `name` is healthy.
    pub async fn check_healthy(&self, name: &str) -> bool {
        self.readyz()
            .await
            .is_some_and(|(_, b)| b["checks"][name]["status"] == "healthy")
    }

    /// The pod index has listed (its readiness check passes).
    pub async fn index_synced(&self) -> bool {
        self.check_healthy("pod-index").await
    }

    /// The readiness check of the leader election for `lease`, as JSON text (empty when
    /// unreachable).
    pub async fn leader_check(&self, lease: &str) -> String {
        self.readyz()
            .await
            .map(|(_, b)| b["checks"][format!("leader-election:{lease}")].to_string())
            .unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit: (time it took, exit code), `None` if still running after
    /// `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<(Duration, Option<i32>)> {
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((t.elapsed(), status.code()));
            }
            if t.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for VdbiProcess {
    fn drop(&mut self) {
        self.kill();
        // Every JSON line the binary logged must parse strictly (no duplicate key).
        let captured = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad = crate::log_lines::bad_json_lines(&captured);
        if !bad.is_empty() && !std::thread::panicking() {
            panic!(
                "{}: log lines a strict JSON parser refuses:\n{}",
                self.name,
                bad.join("\n")
            );
        }
    }
}

/// Injects a platform fault: `platform/vdbi-platform fault <action> <component>` (`kill`
/// kube-apiserver|openbao, `stop` postgresql, `start` any of them). Panics when it fails.
pub fn platform_fault(action: &str, component: &str) -> Duration {
    let script = crate::repo_root().join("platform/vdbi-platform");
    let t = Instant::now();
    let out = Command::new(script)
        .args(["fault", action, component])
        .output()
        .expect("running platform/vdbi-platform fault");
    assert!(
        out.status.success(),
        "fault {action} {component}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}
