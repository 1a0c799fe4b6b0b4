//! vdbi in `mode: nri`, in-process, for the NRI plugin tests.

use crate::platform::Platform;
use crate::{base_config, own_jwt};
use std::path::{Path, PathBuf};
use vdbi::actors::credential_cache::Uids;
use vdbi::app::runtime::Running;
use vdbi::config::Mode;

pub struct NriOptions {
    pub prefix: String,
    pub node: String,
    pub projected: bool,
    pub vault_address: Option<String>,
    pub prewarm: bool,
    pub socket_path: PathBuf,
    pub cache_path: PathBuf,
    pub pod_label: String,
    pub plugin_name: String,
    /// vdbi's `issuanceSlots` and `issuanceSlotsPerPod` (None: the defaults).
    pub issuance_slots: Option<(usize, usize)>,
}

impl NriOptions {
    /// Socket `<dir>/nri/nri.sock` (where a runtime-side peer listens), cache in `<dir>/cache`.
    pub fn new(prefix: &str, node: &str, dir: &Path) -> NriOptions {
        NriOptions {
            prefix: prefix.to_string(),
            node: node.to_string(),
            projected: false,
            vault_address: None,
            prewarm: true,
            socket_path: dir.join("nri/nri.sock"),
            cache_path: dir.join("cache/cache.json"),
            pod_label: crate::LABEL.to_string(),
            plugin_name: "vault-db-injector".to_string(),
            issuance_slots: None,
        }
    }
}

/// A running plugin.
pub struct NriVdbi {
    pub running: Running,
    pub cache_path: PathBuf,
    _jwt: tempfile::NamedTempFile,
    /// The chart's RBAC the plugin runs with (the NRI DaemonSet's ServiceAccount).
    pub chart: Option<crate::chart_rbac::ChartRelease>,
}

/// Starts vdbi with `mode: nri` (legacy: vdbi's own login as `vdbi` with the `vdbi-nri`
/// ServiceAccount; projected: bookkeeping login as `vdbi-nri`).
pub async fn start_nri(p: &Platform, o: NriOptions) -> NriVdbi {
    crate::platform::install_crypto_provider();
    let jwt = own_jwt(p, "vdbi-nri").await;
    let mut c = base_config(p, &o.prefix);
    c.mode = Mode::Nri;
    c.nri.enabled = true;
    c.nri.socket_path = o.socket_path;
    c.nri.cache_path = o.cache_path;
    c.nri.pod_label = o.pod_label;
    c.nri.plugin_name = o.plugin_name;
    c.nri.prewarmer.enabled = o.prewarm;
    c.node_name = o.node;
    c.kube_token_path = jwt.path().to_path_buf();
    c.use_projected_sa = o.projected;
    c.token_request_audiences = vec!["vault".into()];
    if o.projected {
        c.kube_role_nri = "vdbi-nri".into();
    }
    if let Some((all, per_pod)) = o.issuance_slots {
        c.issuance_slots = all;
        c.issuance_slots_per_pod = per_pod;
    }
    if let Some(a) = o.vault_address {
        c.vault_address = a;
    }
    let cache_path = c.nri.cache_path.clone();
    let (running, chart) =
        crate::launch::start_vdbi(p, c, "vdbi-nri-rbac", crate::log_lines::checked_logger()).await;
    NriVdbi {
        running,
        cache_path,
        _jwt: jwt,
        chart,
    }
}

impl NriVdbi {
    pub async fn uids(&self) -> Vec<String> {
        self.running
            .credential_cache
            .as_ref()
            .unwrap()
            .send(Uids)
            .await
            .unwrap()
    }

    pub fn metric(&self, f: impl Fn(&vdbi::telemetry::Metrics) -> f64) -> f64 {
        f(&self.running.metrics)
    }

    pub fn failures(&self, reason: &str) -> f64 {
        self.running
            .metrics
            .count("vdbi_nri_unwrap_failures_total", &[("reason", reason)])
    }

    pub fn hits(&self, source: &str) -> f64 {
        self.running
            .metrics
            .count("vdbi_nri_cache_hit_total", &[("source", source)])
    }

    /// Waits until the plugin is registered with the runtime (readiness check `nri`).
    pub async fn wait_registered(&self) {
        for _ in 0..200 {
            if self.running.health.check("nri").is_some_and(|c| c.ready) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the NRI plugin did not register: {:?}",
            self.running.health.check("nri")
        );
    }
}
