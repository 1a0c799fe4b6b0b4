//! Starting and stopping the components of a `mode` in one process: one metrics server and one
//! probe server whatever the mode (no port clashes in `all`), the shared Vault session, then the
//! injector / renewer / revoker / NRI actors. Shutdown is ordered: stop intake, let in-flight work
//! finish within a deadline, release leases, revoke vdbi's own Vault token, exit 0.

use crate::actors::admission::{Admission, AdmissionDeps};
use crate::actors::credential_cache::{CredentialCache, Flush};
use crate::actors::leadership::{
    Leadership, LeadershipConfig, Release, RENEWER_LEASE, REVOKER_LEASE,
};
use crate::actors::nri_plugin::{NriDeps, NriPlugin, Stop};
use crate::actors::pod_index::{PodIndex, PodIndexConfig};
use crate::actors::renewer::{Renewer, RenewerConfig};
use crate::actors::revoker::{Revoker, RevokerConfig};
use crate::actors::vault_session::{RevokeOwnToken, SessionConfig, VaultSession};
use crate::actors::{supervise, ActorHandle, Backoff};
use crate::config::{Config, Mode};
use crate::health::HealthState;
use crate::http::{client_auth, probes, tls, vault_readiness, webhook};
use crate::telemetry::Metrics;
use crate::vault::VaultSettings;
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
    pub nri_plugin: Option<ActorHandle<NriPlugin>>,
    pub credential_cache: Option<ActorHandle<CredentialCache>>,
    leaders: Vec<ActorHandle<Leadership>>,
    /// Actual addresses bound (useful with port 0).
    pub webhook_addr: Option<std::net::SocketAddr>,
    pub metrics_addr: std::net::SocketAddr,
    pub health_addr: std::net::SocketAddr,
    servers: Vec<(&'static str, ServerHandle)>,
    webhook: Option<ServerHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    log: Logger,
}

fn bound(server: &actix_web::dev::Server) -> ServerHandle {
    server.handle()
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

    // One probe server and one metrics server for the whole process.
    let metrics_std = std::net::TcpListener::bind(config.metrics_listen)?;
    let metrics_addr = metrics_std.local_addr()?;
    drop(metrics_std);
    let health_std = std::net::TcpListener::bind(config.health_listen)?;
    let health_addr = health_std.local_addr()?;
    drop(health_std);
    let msrv = probes::metrics_server(metrics_addr, metrics.clone())?;
    let hsrv = probes::health_server(health_addr, health.clone())?;
    let mut servers = vec![("metrics", bound(&msrv)), ("health", bound(&hsrv))];
    actix::spawn(async move {
        let _ = msrv.await;
    });
    actix::spawn(async move {
        let _ = hsrv.await;
    });

    let client = crate::actors::vault_session::connect(VaultSettings {
        address: config.vault_address.clone(),
        ca_cert_file: config.vault_ca_cert.clone(),
        skip_verify: config.vault_skip_verify,
        namespace: (!config.vault_namespace.is_empty()).then(|| config.vault_namespace.clone()),
        request_timeout: config.vault_request_timeout,
        rate_limit_per_sec: config.vault_rate_limit,
        rate_burst: config.vault_rate_burst,
    })?;
    // The NRI plugin's own login in projected mode is only for bookkeeping (`kubeRoleNri`).
    let session_role = if mode == Mode::Nri && config.use_projected_sa {
        config.nri_kube_role().to_string()
    } else {
        config.kube_role.clone()
    };
    let session_cfg = SessionConfig {
        auth_mount: config.vault_auth_path.clone(),
        role: session_role,
        jwt_path: config.kube_token_path.clone(),
        kv_mount: config.vault_secret_name.clone(),
        kv_prefix: config.vault_secret_prefix.clone(),
        renew_increment: Duration::from_secs(86400),
        max_renew_interval: Duration::from_secs(600),
    };
    // Declared before the actor starts, so /readyz never reports ready before the first login.
    health.set(
        crate::actors::vault_session::HEALTH_CHECK,
        false,
        "starting",
    );
    let vault = {
        let (m, h, l) = (
            metrics.clone(),
            health.clone(),
            log.new(slog::o!("component" => "vault-session")),
        );
        supervise(
            "vault-session",
            &log,
            &metrics,
            Backoff::default(),
            move |g| {
                VaultSession::new(
                    g,
                    client.clone(),
                    session_cfg.clone(),
                    m.clone(),
                    h.clone(),
                    l.clone(),
                )
            },
        )
    };

    // Readiness follows the ability to make Vault calls, not only the session's login state.
    let mut tasks = vec![vault_readiness::spawn(
        vault.clone(),
        health.clone(),
        vault_readiness::ProbeTiming::for_grace(config.readiness_vault_grace),
        log.new(slog::o!("component" => "vault-readiness")),
    )];
    let needs_kube = (mode.runs_injector() && config.use_projected_sa)
        || mode.runs_renewer()
        || mode.runs_revoker()
        || (mode.runs_nri() && config.nri.enabled);
    let kube = match (needs_kube, kube_client) {
        (false, _) => None,
        (true, Some(k)) => Some(k),
        (true, None) => Some(crate::k8s::client().await?),
    };

    let mut admission = None;
    let mut webhook_handle = None;
    let mut webhook_addr = None;
    if mode.runs_injector() {
        let key = tls::load_certified_key(&config.cert_file, &config.key_file)?;
        let resolver = tls::ReloadingResolver::new(key);
        health.set("webhook-certificate", true, "loaded");
        tasks.push(tls::spawn_reloader(
            resolver.clone(),
            config.cert_file.clone(),
            config.key_file.clone(),
            config.cert_reload_interval,
            metrics.clone(),
            log.new(slog::o!("component" => "webhook-tls")),
        ));
        let client_auth = match &config.webhook_client_ca_file {
            Some(ca) => {
                let tls_log = log.new(slog::o!("component" => "webhook-tls"));
                let auth = client_auth::ClientAuth::new(
                    ca,
                    &config.webhook_client_allowed_names,
                    metrics.clone(),
                    tls_log.clone(),
                )?;
                tasks.push(client_auth::spawn_ca_reloader(
                    auth.clone(),
                    config.cert_reload_interval,
                    metrics.clone(),
                    tls_log,
                ));
                Some(auth)
            }
            None => {
                if !config.nri.enabled {
                    warn!(log, "webhook client authentication is OFF: any peer reaching the webhook port can obtain credentials; set webhookClientCAFile (docs/security.md)");
                }
                None
            }
        };
        let deps = Arc::new(AdmissionDeps {
            config: config.clone(),
            vault: vault.clone(),
            kube: kube.clone(),
            metrics: metrics.clone(),
            log: log.new(slog::o!("component" => "injector")),
        });
        let handle = supervise("admission", &log, &metrics, Backoff::default(), move |g| {
            Admission::new(g, deps.clone())
        });
        let listener = std::net::TcpListener::bind(config.webhook_listen)?;
        let addr = listener.local_addr()?;
        drop(listener);
        let srv = webhook::webhook_server(
            addr,
            tls::server_config(resolver, client_auth)?,
            handle.clone(),
            metrics.clone(),
            log.new(slog::o!("component" => "webhook")),
            config.webhook_max_body_bytes,
            2,
        )?;
        webhook_handle = Some(srv.handle());
        actix::spawn(async move {
            let _ = srv.await;
        });
        webhook_addr = Some(addr);
        admission = Some(handle);
        if config.is_legacy() {
            warn!(log, "LEGACY mode: database credentials are written in clear into pod specs; consider nri.enabled and useProjectedSA");
        }
        info!(log, "injector listening"; "addr" => %addr);
    }
    // ---- renewer / revoker: one pod index, one lease per duty ----
    let mut renewer = None;
    let mut revoker = None;
    let mut pod_index = None;
    let mut leaders = Vec::new();
    if mode.runs_renewer() || mode.runs_revoker() {
        let kube = kube.clone().expect("kube client for renewer/revoker");
        let identity = if config.pod_name.is_empty() {
            format!("vdbi-{}", uuid::Uuid::new_v4())
        } else {
            config.pod_name.clone()
        };
        let lease_ns = if config.pod_namespace.is_empty() {
            "default".to_string()
        } else {
            config.pod_namespace.clone()
        };
        let index = {
            let (k, h, m, l) = (
                kube.clone(),
                health.clone(),
                metrics.clone(),
                log.new(slog::o!("component" => "pod-index")),
            );
            let cfg = PodIndexConfig {
                label_selector: format!("{}=true", config.injector_label),
                field_selector: None,
                health_check: "pod-index".into(),
                broken_after: config.pod_watch_broken_after,
            };
            let subs: crate::actors::pod_index::Subscribers = Default::default();
            supervise("pod-index", &log, &metrics, Backoff::default(), move |g| {
                PodIndex::new(
                    g,
                    k.clone(),
                    cfg.clone(),
                    subs.clone(),
                    h.clone(),
                    m.clone(),
                    l.clone(),
                )
            })
        };
        let call_timeout = Duration::from_secs(10);
        if mode.runs_revoker() {
            let cfg = RevokerConfig {
                revoke_finished_pods: config.revoke_terminated_pods,
                unseen_grace: config.revoker_unseen_grace,
                sweep_interval: config.revoker_sweep_interval,
                call_timeout,
                max_concurrent: 32,
                orphan_mode: config.orphan_lease_discovery,
                orphan_grace: config.orphan_lease_grace,
                orphan_roles: config
                    .orphan_lease_roles
                    .iter()
                    .filter_map(|r| {
                        r.rsplit_once('/')
                            .map(|(m, role)| (m.to_string(), role.to_string()))
                    })
                    .collect(),
            };
            let (v, p, k, m, l) = (
                vault.clone(),
                index.clone(),
                kube.clone(),
                metrics.clone(),
                log.new(slog::o!("component" => "revoker")),
            );
            let leader_slot = Arc::new(std::sync::OnceLock::new());
            let slot = leader_slot.clone();
            let handle = supervise("revoker", &log, &metrics, Backoff::default(), move |g| {
                Revoker::new(
                    g,
                    cfg.clone(),
                    v.clone(),
                    p.clone(),
                    slot.clone(),
                    k.clone(),
                    m.clone(),
                    l.clone(),
                )
            });
            index.do_send(crate::actors::pod_index::Subscribe(handle.subscriber()));
            let lcfg = LeadershipConfig::standard(REVOKER_LEASE, &lease_ns, &identity);
            let leader =
                start_leadership(&log, &metrics, &health, &kube, lcfg, handle.subscriber());
            let _ = leader_slot.set(leader.clone());
            leaders.push(leader);
            revoker = Some(handle);
        }
        if mode.runs_renewer() {
            metrics
                .renewal
                .interval(Duration::from_secs(config.sync_ttl_second));
            let cfg = RenewerConfig {
                interval: Duration::from_secs(config.sync_ttl_second),
                token_increment: config.token_ttl,
                horizon_cycles: config.renew_horizon_cycles,
                concurrency: config.renewer_concurrency,
                call_timeout,
                first_cycle_after: crate::actors::renewer::FIRST_CYCLE_AFTER
                    .min(Duration::from_secs(config.sync_ttl_second)),
            };
            let (v, p, m, l) = (
                vault.clone(),
                index.clone(),
                metrics.clone(),
                log.new(slog::o!("component" => "renewer")),
            );
            let leader_slot = Arc::new(std::sync::OnceLock::new());
            let slot = leader_slot.clone();
            let handle = supervise("renewer", &log, &metrics, Backoff::default(), move |g| {
                Renewer::new(
                    g,
                    cfg.clone(),
                    v.clone(),
                    p.clone(),
                    slot.clone(),
                    m.clone(),
                    l.clone(),
                )
            });
            index.do_send(crate::actors::pod_index::Subscribe(handle.subscriber()));
            let lcfg = LeadershipConfig::standard(RENEWER_LEASE, &lease_ns, &identity);
            let leader =
                start_leadership(&log, &metrics, &health, &kube, lcfg, handle.subscriber());
            let _ = leader_slot.set(leader.clone());
            leaders.push(leader);
            renewer = Some(handle);
        }
        pod_index = Some(index);
    }
    // ---- NRI plugin: the credential cache and the plugin actor ----
    let mut nri_plugin = None;
    let mut credential_cache = None;
    if mode.runs_nri() && config.nri.enabled {
        let kube = kube.clone().expect("kube client for the NRI plugin");
        let cache = {
            let (path, m, l) = (
                config.nri.cache_path.clone(),
                metrics.clone(),
                log.new(slog::o!("component" => "nri-cache")),
            );
            supervise(
                "credential-cache",
                &log,
                &metrics,
                Backoff::default(),
                move |g| CredentialCache::new(g, Some(path.clone()), l.clone(), m.clone()),
            )
        };
        let deps = Arc::new(NriDeps {
            config: config.clone(),
            vault: vault.clone(),
            cache: cache.clone(),
            kube,
            metrics: metrics.clone(),
            health: health.clone(),
            log: log.new(slog::o!("component" => "nri")),
            reconnect_schedule: NriDeps::default_schedule(),
        });
        let handle = supervise("nri-plugin", &log, &metrics, Backoff::default(), move |g| {
            NriPlugin::new(g, deps.clone())
        });
        nri_plugin = Some(handle);
        credential_cache = Some(cache);
    } else if mode == Mode::Nri {
        warn!(
            log,
            "mode nri with nri.enabled=false: the NRI plugin is idle until shutdown"
        );
    }
    servers.shrink_to_fit();
    Ok(Running {
        config,
        metrics,
        health,
        vault,
        admission,
        renewer,
        revoker,
        pod_index,
        nri_plugin,
        credential_cache,
        leaders,
        webhook_addr,
        metrics_addr,
        health_addr,
        servers,
        webhook: webhook_handle,
        tasks,
        log,
    })
}

/// Longest time from SIGTERM to exit, in every mode: the chart's `terminationGracePeriodSeconds`
/// (30 s) leaves 10 s of margin. Each step below has its own budget, cut to what is left.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(20);

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
            let drain = budget(webhook::WEBHOOK_DRAIN + Duration::from_secs(1));
            if tokio::time::timeout(drain, w.stop(true)).await.is_err() {
                warn!(
                    self.log,
                    "in-flight admissions did not finish in time; connections closed"
                );
                let _ = tokio::time::timeout(budget(Duration::from_secs(1)), w.stop(false)).await;
            }
        }
        if let Some(p) = &self.nri_plugin {
            // The runtime sees the plugin go; the cache reaches the disk before exit.
            p.shutdown();
            let _ = tokio::time::timeout(budget(Duration::from_secs(2)), p.send(Stop)).await;
        }
        if let Some(c) = &self.credential_cache {
            match tokio::time::timeout(budget(Duration::from_secs(3)), c.send(Flush)).await {
                Ok(Ok(Ok(()))) => {}
                other => {
                    warn!(self.log, "NRI credential cache not flushed at shutdown"; "result" => ?other.map(|r| r.map(|_| ())))
                }
            }
            c.shutdown();
        }
        // Both Leases at once: a peer takes each over at its next attempt.
        let releases = futures::future::join_all(self.leaders.iter().map(|l| l.send(Release)));
        let _ = tokio::time::timeout(budget(Duration::from_secs(5)), releases).await;
        for l in &self.leaders {
            l.shutdown();
        }
        let _ = tokio::time::timeout(
            budget(Duration::from_secs(5)),
            self.vault.send(RevokeOwnToken),
        )
        .await;
        self.vault.shutdown();
        for t in &self.tasks {
            t.abort();
        }
        for (_, s) in &self.servers {
            if tokio::time::timeout(budget(Duration::from_secs(2)), s.stop(true))
                .await
                .is_err()
            {
                s.stop(false).await;
            }
        }
        info!(self.log, "stopped"; "took_ms" => started.elapsed().as_millis() as u64);
    }
}

fn start_leadership(
    log: &Logger,
    metrics: &Metrics,
    health: &HealthState,
    kube: &kube::Client,
    cfg: LeadershipConfig,
    subscriber: crate::actors::Subscriber<crate::actors::leadership::LeadershipChanged>,
) -> ActorHandle<Leadership> {
    let (k, m, h, l) = (
        kube.clone(),
        metrics.clone(),
        health.clone(),
        log.new(slog::o!("component" => "leadership")),
    );
    let name: &'static str = if cfg.lease_name == RENEWER_LEASE {
        "leadership-renewer"
    } else {
        "leadership-revoker"
    };
    supervise(name, log, metrics, Backoff::default(), move |g| {
        Leadership::new(
            g,
            k.clone(),
            cfg.clone(),
            vec![subscriber.clone()],
            m.clone(),
            h.clone(),
            l.clone(),
        )
    })
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
