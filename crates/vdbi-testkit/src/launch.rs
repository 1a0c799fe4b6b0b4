//! The one way tests, demos and load scenarios start vdbi in-process: with the chart's RBAC and
//! the published Vault policies, through the least-privilege guard.

use crate::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use crate::platform::Platform;
use vdbi::app::runtime::{start_with, Running};
use vdbi::config::Config;

/// Whether `config` makes vdbi talk to the Kubernetes API (the runtime's own rule).
pub fn needs_kube(c: &Config) -> bool {
    (c.mode.runs_injector() && c.use_projected_sa)
        || c.mode.runs_renewer()
        || c.mode.runs_revoker()
        || (c.mode.runs_nri() && c.nri.enabled)
}

/// Starts vdbi in-process. When it needs the Kubernetes API, the chart's RBAC is installed in a
/// fresh release namespace (`<prefix>-<random>`) and vdbi gets a client holding its component's
/// ServiceAccount token (clean the release up with [`ChartRelease::cleanup`]; dropped, it is
/// removed in the background). The Vault roles of `config` (`kubeRole*`) must carry only the
/// published policies. Never the admin kubeconfig, never the root token. A renewer or revoker
/// keeps its Leases in the release namespace (`config.pod_namespace` is set to it), as the chart
/// deploys it.
pub async fn start_vdbi(
    p: &Platform,
    mut config: Config,
    prefix: &str,
    log: slog::Logger,
) -> (Running, Option<ChartRelease>) {
    crate::platform::install_crypto_provider();
    let release = if needs_kube(&config) {
        let admin = p.kube_client().await;
        Some(ChartRelease::install(p, &admin, prefix).await)
    } else {
        None
    };
    // The chart's Roles allow the Leases in the release namespace only (POD_NAMESPACE there).
    if let Some(r) = &release {
        if config.mode.runs_renewer() || config.mode.runs_revoker() {
            config.pod_namespace = r.namespace.name.clone();
        }
    }
    let kube = match &release {
        Some(r) => Some(r.kube_client(Component::of_mode(config.mode)).await),
        None => None,
    };
    let roles: Vec<&str> = [config.kube_role.as_str(), config.kube_role_nri.as_str()]
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect();
    assert_least_privilege(p, kube.as_ref(), &config.vault_auth_path, &roles).await;
    let metrics = vdbi::telemetry::Metrics::new(config.per_uuid_metrics);
    let running = start_with(config, log, metrics, kube)
        .await
        .expect("vdbi starts");
    (running, release)
}
