//! Starting and stopping the components of a `mode` in one process: the sockets bound once
//! (`listeners`), one metrics server and one probe server whatever the mode (no port clashes in
//! `all`), the shared Vault session, then the mode's starters (`starters`: injector, revoker,
//! renewer, NRI plugin; `all` runs each). Shutdown is ordered: stop intake, let in-flight work
//! finish within a deadline, release leases, revoke vdbi's own Vault token, exit 0.

use super::listeners::Listeners;
use super::starters::{
    needs_kube, start_injector, start_nri, start_renewer, start_revoker, start_servers,
    start_vault_session, Base, Duties, Started,
};
use crate::actors::admission::Admission;
use crate::actors::credential_cache::{CredentialCache, Flush};
use crate::actors::leadership::{Leadership, Release};
use crate::actors::nri_plugin::{NriPlugin, Stop};
use crate::actors::pod_index::{self, PodIndex};
use crate::actors::renewer::Renewer;
use crate::actors::revoker::Revoker;
use crate::actors::vault_session::{RevokeOwnToken, VaultSession};
use crate::actors::{ActorHandle, TaskHandle};
use crate::config::{Config, Mode};
use crate::health::HealthState;
use crate::http::{tls, webhook};
use crate::telemetry::Metrics;
use actix_web::dev::ServerHandle;
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::Duration;

/// Failure to start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("webhook TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("{0}")]
    Kube(#[from] crate::k8s::KubeError),
    #[error("Vault client: {0}")]
    Vault(#[from] crate::vault::VaultError),
}

/// A running vdbi: handles for tests, the load-test harness and shutdown.
pub struct Running {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub health: HealthState,
    pub vault: ActorHandle<VaultSession>,
    pub admission: Option<ActorHandle<Admission>>,
    pub renewer: Option<ActorHandle<Renewer>>,
    pub revoker: Option<ActorHandle<Revoker>>,
    pub pod_index: Option<ActorHandle<PodIndex>>,
    /// The NRI plugin's node pod index (with `NODE_NAME`).
    pub nri_pod_index: Option<ActorHandle<PodIndex>>,
    pub nri_plugin: Option<ActorHandle<NriPlugin>>,
    pub credential_cache: Option<ActorHandle<CredentialCache>>,
    leaders: Vec<ActorHandle<Leadership>>,
    /// Actual addresses bound (useful with port 0).
    pub webhook_addr: Option<std::net::SocketAddr>,
    pub metrics_addr: std::net::SocketAddr,
    pub health_addr: std::net::SocketAddr,
    servers: Vec<(&'static str, ServerHandle)>,
    webhook: Option<ServerHandle>,
    tasks: Vec<TaskHandle>,
    log: Logger,
}

/// Starts every component of `config.mode` on the current actix System.
pub async fn start(config: Config, log: Logger) -> Result<Running, AppError> {
    let metrics = Metrics::new(config.per_uuid_metrics);
    start_with_metrics(config, log, metrics).await
}

/// [`start`] with a registry made beforehand (the binary's, which Sentry already counts into).
pub async fn start_with_metrics(
    config: Config,
    log: Logger,
    metrics: Metrics,
) -> Result<Running, AppError> {
    start_with(config, log, metrics, None).await
}

/// [`start_with_metrics`] with the Kubernetes client given (test support passes one holding a
/// ServiceAccount token of the chart's RBAC); `None` = in-cluster config, else `KUBECONFIG`.
pub async fn start_with(
    config: Config,
    log: Logger,
    metrics: Metrics,
    kube_client: Option<kube::Client>,
) -> Result<Running, AppError> {
    let config = Arc::new(config);
    let health = HealthState::new();
    let mode = config.mode;
    let log = log.new(slog::o!("mode" => mode.as_str()));

    let listeners = Listeners::bind(&config)?;
    let (metrics_addr, health_addr) = (listeners.metrics.addr, listeners.health.addr);
    let servers = start_servers(&metrics, &health, listeners.metrics, listeners.health)?;
    let (vault, readiness) = start_vault_session(&config, &metrics, &health, &log)?;
    let kube = match (needs_kube(&config), kube_client) {
        (false, _) => None,
        (true, Some(k)) => Some(k),
        (true, None) => Some(crate::k8s::client().await?),
    };
    let base = Base {
        config: config.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        log: log.clone(),
        vault: vault.clone(),
        kube,
    };
    let mut out = Started {
        tasks: vec![readiness],
        ..Started::default()
    };
    // Bound by `Listeners::bind` in every mode that runs the injector.
    let webhook_socket = || {
        listeners
            .webhook
            .ok_or_else(|| AppError::Listen(std::io::Error::other("no webhook socket bound")))
    };
    match mode {
        Mode::Injector => start_injector(&base, webhook_socket()?, &mut out)?,
        Mode::Revoker => {
            let duties = Duties::start(&base);
            start_revoker(&base, &duties, &mut out);
            out.pod_index = Some(duties.index());
        }
        Mode::Renewer => {
            let duties = Duties::start(&base);
            start_renewer(&base, &duties, &mut out);
            out.pod_index = Some(duties.index());
        }
        Mode::Nri => start_nri(&base, &mut out),
        Mode::All => {
            start_injector(&base, webhook_socket()?, &mut out)?;
            let duties = Duties::start(&base);
            start_revoker(&base, &duties, &mut out);
            start_renewer(&base, &duties, &mut out);
            out.pod_index = Some(duties.index());
            start_nri(&base, &mut out);
        }
    }
    let (webhook, webhook_addr) = out.webhook.unzip();
    Ok(Running {
        config,
        metrics,
        health,
        vault,
        admission: out.admission,
        renewer: out.renewer,
        revoker: out.revoker,
        pod_index: out.pod_index,
        nri_pod_index: out.nri_pod_index,
        nri_plugin: out.nri_plugin,
        credential_cache: out.credential_cache,
        leaders: out.leaders,
        webhook_addr,
        metrics_addr,
        health_addr,
        servers,
        webhook,
        tasks: out.tasks,
        log,
    })
}

/// Longest time from SIGTERM to exit, in every mode: the chart's `terminationGracePeriodSeconds`
/// (30 s) leaves 10 s of margin. Each step below has its own budget, cut to what is left.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(20);

/// The budget of each shutdown step (each cut to what is left of [`SHUTDOWN_BOUND`]).
mod step {
    use std::time::Duration;
    /// Past the webhook's drain, for the server to answer the last reviews.
    pub const WEBHOOK_DRAIN_MARGIN: Duration = Duration::from_secs(1);
    /// Closing the webhook's connections when the drain overran.
    pub const WEBHOOK_FORCED_STOP: Duration = Duration::from_secs(1);
    /// The NRI plugin leaving the runtime.
    pub const NRI_STOP: Duration = Duration::from_secs(2);
    /// The NRI credential cache reaching the disk.
    pub const CACHE_FLUSH: Duration = Duration::from_secs(3);
    /// Releasing the leader-election Leases (all at once).
    pub const LEASE_RELEASE: Duration = Duration::from_secs(5);
    /// Revoking vdbi's own Vault token.
    pub const OWN_TOKEN_REVOKE: Duration = Duration::from_secs(5);
    /// Each metrics/probe server finishing its requests.
    pub const SERVER_STOP: Duration = Duration::from_secs(2);
}

impl Running {
    /// Ordered shutdown, bounded by [`SHUTDOWN_BOUND`]: stop intake and let in-flight admissions
    /// finish (at most [`webhook::WEBHOOK_DRAIN`]; an admission that times out undoes what it
    /// issued), stop the NRI plugin and flush its cache, release the Leases (a peer takes over at
    /// once), revoke vdbi's own Vault token, stop the servers.
    pub async fn shutdown(self) {
        let started = tokio::time::Instant::now();
        let deadline = started + SHUTDOWN_BOUND;
        // A step gets its budget, or what is left of the bound if less.
        let budget = |want: Duration| {
            want.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        };
        info!(self.log, "shutting down"; "bound_s" => SHUTDOWN_BOUND.as_secs());
        if let Some(w) = &self.webhook {
            let drain = budget(webhook::WEBHOOK_DRAIN + step::WEBHOOK_DRAIN_MARGIN);
            if tokio::time::timeout(drain, w.stop(true)).await.is_err() {
                warn!(
                    self.log,
                    "in-flight admissions did not finish in time; connections closed"
                );
                let _ =
                    tokio::time::timeout(budget(step::WEBHOOK_FORCED_STOP), w.stop(false)).await;
            }
        }
        if let Some(p) = &self.nri_plugin {
            // The runtime sees the plugin go; the cache reaches the disk before exit.
            p.shutdown();
            let _ = tokio::time::timeout(budget(step::NRI_STOP), p.send(Stop)).await;
        }
        if let Some(i) = &self.nri_pod_index {
            // The node watch ends with the plugin it feeds.
            i.shutdown();
            i.do_send(pod_index::Stop);
        }
        if let Some(c) = &self.credential_cache {
            match tokio::time::timeout(budget(step::CACHE_FLUSH), c.send(Flush)).await {
                Ok(Ok(Ok(()))) => {}
                other => {
                    warn!(self.log, "NRI credential cache not flushed at shutdown"; "result" => ?other.map(|r| r.map(|_| ())))
                }
            }
            c.shutdown();
        }
        // Both Leases at once: a peer takes each over at its next attempt.
        let releases = futures::future::join_all(self.leaders.iter().map(|l| l.send(Release)));
        let _ = tokio::time::timeout(budget(step::LEASE_RELEASE), releases).await;
        for l in &self.leaders {
            l.shutdown();
        }
        let _ = tokio::time::timeout(
            budget(step::OWN_TOKEN_REVOKE),
            self.vault.send(RevokeOwnToken),
        )
        .await;
        self.vault.shutdown();
        for t in &self.tasks {
            t.stop();
        }
        for (_, s) in &self.servers {
            if tokio::time::timeout(budget(step::SERVER_STOP), s.stop(true))
                .await
                .is_err()
            {
                s.stop(false).await;
            }
        }
        info!(self.log, "stopped"; "took_ms" => started.elapsed().as_millis() as u64);
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down in order.
pub async fn run(config: Config, log: Logger, metrics: Metrics) -> Result<(), AppError> {
    let running = start_with_metrics(config, log.clone(), metrics).await?;
    wait_for_signal().await;
    running.shutdown().await;
    actix::System::current().stop();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
