//! One starter per component a mode runs: the injector (legacy or projected), the revoker, the
//! renewer and the NRI plugin, over what every component shares ([`Base`]: configuration,
//! metrics, health, the Vault session, the Kubernetes client). `all` runs every starter in one
//! process; the revoker and the renewer share one pod index and one replica identity
//! ([`Duties`]). Everything a starter spawns runs under the supervisor: actors with
//! `supervise`, background loops with `supervise_task` (a panic is restarted and counted in
//! `vdbi_actor_restarts_total`).

use super::listeners::Bound;
use super::runtime::AppError;
use crate::actors::admission::{Admission, AdmissionDeps};
use crate::actors::credential_cache::CredentialCache;
use crate::actors::leadership::{
    Leadership, LeadershipChanged, LeadershipConfig, RENEWER_LEASE, REVOKER_LEASE,
};
use crate::actors::nri_plugin::{NriDeps, NriPlugin};
use crate::actors::pod_index::{PodEvent, PodIndex, PodIndexConfig, Subscribe, Subscribers};
use crate::actors::renewer::{Renewer, RenewerConfig};
use crate::actors::revoker::{Revoker, RevokerConfig};
use crate::actors::vault_session::{SessionConfig, VaultSession};
use crate::actors::{
    supervise, supervise_task, ActorHandle, Backoff, RestartGuard, Subscriber, TaskHandle,
};
use crate::config::{Config, Mode};
use crate::health::HealthState;
use crate::http::{client_auth, probes, tls, vault_readiness, webhook};
use crate::telemetry::Metrics;
use crate::vault::VaultSettings;
use actix::{Actor, Context, Handler};
use actix_web::dev::ServerHandle;
use slog::{info, warn, Logger};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The increment vdbi asks for when it renews its own Vault token.
pub const OWN_TOKEN_INCREMENT: Duration = Duration::from_secs(86400);
/// Longest wait between two renewals of vdbi's own Vault token.
pub const OWN_TOKEN_MAX_RENEW_INTERVAL: Duration = Duration::from_secs(600);
/// Deadline of one Vault call of the renewer or the revoker (background work, no caller waiting).
pub const BACKGROUND_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Revocations the revoker runs at once.
pub const REVOKER_MAX_CONCURRENT: usize = 32;
/// actix workers of the webhook server (admissions wait on Vault, not on CPU).
pub const WEBHOOK_WORKERS: usize = 2;
/// Namespace of the leader-election Leases when the pod's own namespace is unknown.
pub const DEFAULT_LEASE_NAMESPACE: &str = "default";

/// Where a duty actor finds its election (set once the election has started).
type LeaderSlot = Arc<OnceLock<ActorHandle<Leadership>>>;

/// What every component of a process shares.
pub(super) struct Base {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    pub health: HealthState,
    pub log: Logger,
    pub vault: ActorHandle<VaultSession>,
    pub kube: Option<kube::Client>,
}

/// What the starters started, for [`super::runtime::Running`].
#[derive(Default)]
pub(super) struct Started {
    pub admission: Option<ActorHandle<Admission>>,
    pub webhook: Option<(ServerHandle, SocketAddr)>,
    pub renewer: Option<ActorHandle<Renewer>>,
    pub revoker: Option<ActorHandle<Revoker>>,
    pub pod_index: Option<ActorHandle<PodIndex>>,
    pub nri_pod_index: Option<ActorHandle<PodIndex>>,
    pub nri_plugin: Option<ActorHandle<NriPlugin>>,
    pub credential_cache: Option<ActorHandle<CredentialCache>>,
    pub leaders: Vec<ActorHandle<Leadership>>,
    pub tasks: Vec<TaskHandle>,
}

fn component_log(log: &Logger, name: &'static str) -> Logger {
    log.new(slog::o!("component" => name))
}

/// Serves `server` on the current arbiter; returns its handle.
pub(super) fn serve(server: actix_web::dev::Server) -> ServerHandle {
    let handle = server.handle();
    actix::spawn(async move {
        let _ = server.await;
    });
    handle
}

/// The metrics and probe servers on their bound sockets.
pub(super) fn start_servers(
    metrics: &Metrics,
    health: &HealthState,
    metrics_listener: Bound,
    health_listener: Bound,
) -> Result<Vec<(&'static str, ServerHandle)>, AppError> {
    let m = probes::metrics_server(metrics_listener.into_listener(), metrics.clone())?;
    let h = probes::health_server(health_listener.into_listener(), health.clone())?;
    Ok(vec![("metrics", serve(m)), ("health", serve(h))])
}

/// vdbi's own Vault session and the readiness probe that follows its calls.
pub(super) fn start_vault_session(
    config: &Config,
    metrics: &Metrics,
    health: &HealthState,
    log: &Logger,
) -> Result<(ActorHandle<VaultSession>, TaskHandle), AppError> {
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
    let role = if config.mode == Mode::Nri && config.use_projected_sa {
        config.nri_kube_role().to_string()
    } else {
        config.kube_role.clone()
    };
    let session_cfg = SessionConfig {
        auth_mount: config.vault_auth_path.clone(),
        role,
        jwt_path: config.kube_token_path.clone(),
        kv_mount: config.vault_secret_name.clone(),
        kv_prefix: config.vault_secret_prefix.clone(),
        renew_increment: OWN_TOKEN_INCREMENT,
        max_renew_interval: OWN_TOKEN_MAX_RENEW_INTERVAL,
    };
    // Declared before the actor starts, so /readyz never reports ready before the first login.
    health.set(
        crate::actors::vault_session::HEALTH_CHECK,
        false,
        "starting",
    );
    let (m, h, l) = (
        metrics.clone(),
        health.clone(),
        component_log(log, "vault-session"),
    );
    let vault = supervise(
        "vault-session",
        log,
        metrics,
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
    );
    // Readiness follows the ability to make Vault calls, not only the session's login state.
    vault_readiness::declare(health);
    let (v, h, l) = (
        vault.clone(),
        health.clone(),
        component_log(log, "vault-readiness"),
    );
    let timing = vault_readiness::ProbeTiming::for_grace(config.readiness_vault_grace);
    let probe = supervise_task(
        "vault-readiness",
        log,
        metrics,
        Backoff::default(),
        move || vault_readiness::probe_loop(v.clone(), h.clone(), timing, l.clone()),
    );
    Ok((vault, probe))
}

/// Whether the components of `config` need the Kubernetes API.
pub(super) fn needs_kube(config: &Config) -> bool {
    let mode = config.mode;
    (mode.runs_injector() && config.use_projected_sa)
        || mode.runs_renewer()
        || mode.runs_revoker()
        || (mode.runs_nri() && config.nri.enabled)
}

/// The admission webhook: certificate (reloaded), optional client authentication (CA
/// reloaded), the Admission actor and the HTTPS server on its bound socket. Legacy injection
/// (credentials in the pod spec) and projected injection (a login as the pod's ServiceAccount,
/// which needs the Kubernetes client) differ inside the Admission actor only.
pub(super) fn start_injector(
    base: &Base,
    listener: Bound,
    out: &mut Started,
) -> Result<(), AppError> {
    let (config, metrics, log) = (&base.config, &base.metrics, &base.log);
    let key = tls::load_certified_key(&config.cert_file, &config.key_file)?;
    let resolver = tls::ReloadingResolver::new(key);
    base.health.set("webhook-certificate", true, "loaded");
    let tls_log = component_log(log, "webhook-tls");
    {
        let (r, m, l) = (resolver.clone(), metrics.clone(), tls_log.clone());
        let (cert, key, every) = (
            config.cert_file.clone(),
            config.key_file.clone(),
            config.cert_reload_interval,
        );
        out.tasks.push(supervise_task(
            "webhook-certificate-reloader",
            log,
            metrics,
            Backoff::default(),
            move || {
                tls::reload_loop(
                    r.clone(),
                    cert.clone(),
                    key.clone(),
                    every,
                    m.clone(),
                    l.clone(),
                )
            },
        ));
    }
    let client_auth = match &config.webhook_client_ca_file {
        Some(ca) => {
            let auth = client_auth::ClientAuth::new(
                ca,
                &config.webhook_client_allowed_names,
                metrics.clone(),
                tls_log.clone(),
            )?;
            let (a, m, l, every) = (
                auth.clone(),
                metrics.clone(),
                tls_log,
                config.cert_reload_interval,
            );
            out.tasks.push(supervise_task(
                "webhook-client-ca-reloader",
                log,
                metrics,
                Backoff::default(),
                move || client_auth::ca_reload_loop(a.clone(), every, m.clone(), l.clone()),
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
        vault: base.vault.clone(),
        kube: base.kube.clone(),
        metrics: metrics.clone(),
        log: component_log(log, "injector"),
    });
    let admission = supervise("admission", log, metrics, Backoff::default(), move |g| {
        Admission::new(g, deps.clone())
    });
    let addr = listener.addr;
    let server = webhook::webhook_server(
        listener.into_listener(),
        tls::server_config(resolver, client_auth)?,
        admission.clone(),
        metrics.clone(),
        component_log(log, "webhook"),
        config.webhook_max_body_bytes,
        WEBHOOK_WORKERS,
    )?;
    out.webhook = Some((serve(server), addr));
    out.admission = Some(admission);
    if config.is_legacy() {
        warn!(log, "LEGACY mode: database credentials are written in clear into pod specs; consider nri.enabled and useProjectedSA");
    }
    info!(log, "injector listening"; "addr" => %addr);
    Ok(())
}

/// What the revoker and the renewer of one process share: the pod index, the replica's
/// identity and the Leases' namespace.
pub(super) struct Duties {
    kube: kube::Client,
    index: ActorHandle<PodIndex>,
    identity: String,
    lease_namespace: String,
}

impl Duties {
    /// The pod index over the pods this release injects.
    pub fn start(base: &Base) -> Duties {
        let config = &base.config;
        let kube = base.kube.clone().expect("kube client for renewer/revoker");
        let identity = if config.pod_name.is_empty() {
            format!("vdbi-{}", uuid::Uuid::new_v4())
        } else {
            config.pod_name.clone()
        };
        let lease_namespace = if config.pod_namespace.is_empty() {
            DEFAULT_LEASE_NAMESPACE.to_string()
        } else {
            config.pod_namespace.clone()
        };
        let (k, l) = (kube.clone(), component_log(&base.log, "pod-index"));
        let cfg = PodIndexConfig::duties(&config.injector_label, config.pod_watch_broken_after);
        let index = start_pod_index("pod-index", base, k, cfg, Subscribers::default(), l);
        Duties {
            kube,
            index,
            identity,
            lease_namespace,
        }
    }

    /// Starts the duty actor `name` that `make` builds (given its restart guard and the slot
    /// where it finds its election), subscribed to the pod index, and the election of `lease`
    /// whose changes go to it.
    fn start_duty<A>(
        &self,
        base: &Base,
        name: &'static str,
        lease: &'static str,
        out: &mut Started,
        make: impl Fn(RestartGuard, LeaderSlot) -> A + 'static,
    ) -> ActorHandle<A>
    where
        A: Actor<Context = Context<A>> + Handler<PodEvent> + Handler<LeadershipChanged>,
    {
        let leader_slot: LeaderSlot = Arc::new(OnceLock::new());
        let slot = leader_slot.clone();
        let duty = supervise(
            name,
            &base.log,
            &base.metrics,
            Backoff::default(),
            move |g| make(g, slot.clone()),
        );
        self.index.do_send(Subscribe(duty.subscriber()));
        let leader = self.leadership(base, lease, duty.subscriber());
        let _ = leader_slot.set(leader.clone());
        out.leaders.push(leader);
        duty
    }

    /// The election of `lease`, whose changes go to `subscriber`.
    fn leadership(
        &self,
        base: &Base,
        lease: &'static str,
        subscriber: Subscriber<LeadershipChanged>,
    ) -> ActorHandle<Leadership> {
        let cfg = LeadershipConfig::standard(lease, &self.lease_namespace, &self.identity);
        let (k, m, h, l) = (
            self.kube.clone(),
            base.metrics.clone(),
            base.health.clone(),
            component_log(&base.log, "leadership"),
        );
        let name: &'static str = if lease == RENEWER_LEASE {
            "leadership-renewer"
        } else {
            "leadership-revoker"
        };
        supervise(
            name,
            &base.log,
            &base.metrics,
            Backoff::default(),
            move |g| {
                Leadership::new(
                    g,
                    k.clone(),
                    cfg.clone(),
                    vec![subscriber.clone()],
                    m.clone(),
                    h.clone(),
                    l.clone(),
                )
            },
        )
    }

    pub fn index(&self) -> ActorHandle<PodIndex> {
        self.index.clone()
    }
}

/// A supervised pod index named `name` (its restarts are counted under that name), whose events
/// go to `subscribers`.
fn start_pod_index(
    name: &'static str,
    base: &Base,
    kube: kube::Client,
    cfg: PodIndexConfig,
    subscribers: Subscribers,
    log: Logger,
) -> ActorHandle<PodIndex> {
    let (h, m) = (base.health.clone(), base.metrics.clone());
    supervise(
        name,
        &base.log,
        &base.metrics,
        Backoff::default(),
        move |g| {
            PodIndex::new(
                g,
                kube.clone(),
                cfg.clone(),
                subscribers.clone(),
                h.clone(),
                m.clone(),
                log.clone(),
            )
        },
    )
}

/// The revoker, subscribed to the pod index, working while it holds [`REVOKER_LEASE`].
pub(super) fn start_revoker(base: &Base, duties: &Duties, out: &mut Started) {
    let config = &base.config;
    let cfg = RevokerConfig {
        revoke_finished_pods: config.revoke_terminated_pods,
        unseen_grace: config.revoker_unseen_grace,
        sweep_interval: config.revoker_sweep_interval,
        call_timeout: BACKGROUND_CALL_TIMEOUT,
        max_concurrent: REVOKER_MAX_CONCURRENT,
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
        base.vault.clone(),
        duties.index(),
        duties.kube.clone(),
        base.metrics.clone(),
        component_log(&base.log, "revoker"),
    );
    let revoker = duties.start_duty(base, "revoker", REVOKER_LEASE, out, move |g, slot| {
        Revoker::new(
            g,
            cfg.clone(),
            v.clone(),
            p.clone(),
            slot,
            k.clone(),
            m.clone(),
            l.clone(),
        )
    });
    out.revoker = Some(revoker);
}

/// The renewer, subscribed to the pod index, working while it holds [`RENEWER_LEASE`].
pub(super) fn start_renewer(base: &Base, duties: &Duties, out: &mut Started) {
    let config = &base.config;
    let interval = Duration::from_secs(config.sync_ttl_second);
    base.metrics.renewal.interval(interval);
    let cfg = RenewerConfig {
        interval,
        token_increment: config.token_ttl,
        horizon_cycles: config.renew_horizon_cycles,
        concurrency: config.renewer_concurrency,
        call_timeout: BACKGROUND_CALL_TIMEOUT,
        first_cycle_after: crate::actors::renewer::FIRST_CYCLE_AFTER.min(interval),
    };
    let (v, p, m, l) = (
        base.vault.clone(),
        duties.index(),
        base.metrics.clone(),
        component_log(&base.log, "renewer"),
    );
    let renewer = duties.start_duty(base, "renewer", RENEWER_LEASE, out, move |g, slot| {
        Renewer::new(
            g,
            cfg.clone(),
            v.clone(),
            p.clone(),
            slot,
            m.clone(),
            l.clone(),
        )
    });
    out.renewer = Some(renewer);
}

/// The NRI plugin, its credential cache and, with `NODE_NAME`, its node pod index
/// (`nri.enabled`); idle otherwise.
pub(super) fn start_nri(base: &Base, out: &mut Started) {
    let config = &base.config;
    if !config.nri.enabled {
        if config.mode == Mode::Nri {
            warn!(
                base.log,
                "mode nri with nri.enabled=false: the NRI plugin is idle until shutdown"
            );
        }
        return;
    }
    let kube = base.kube.clone().expect("kube client for the NRI plugin");
    let (path, m, l) = (
        config.nri.cache_path.clone(),
        base.metrics.clone(),
        component_log(&base.log, "nri-cache"),
    );
    let cache = supervise(
        "credential-cache",
        &base.log,
        &base.metrics,
        Backoff::default(),
        move |g| CredentialCache::new(g, Some(path.clone()), l.clone(), m.clone()),
    );
    // The node index starts before the plugin subscribes to it, but cannot list before this
    // function returns (the arbiter runs it afterwards): no event is missed.
    let node_subscribers = Subscribers::default();
    let node_index = (!config.node_name.is_empty()).then(|| {
        let cfg = PodIndexConfig::node(
            &config.node_name,
            &config.nri.pod_label,
            config.pod_watch_broken_after,
        );
        let log = component_log(&base.log, "nri-pod-index");
        start_pod_index(
            "nri-pod-index",
            base,
            kube.clone(),
            cfg,
            node_subscribers.clone(),
            log,
        )
    });
    let deps = Arc::new(NriDeps {
        config: config.clone(),
        vault: base.vault.clone(),
        cache: cache.clone(),
        kube,
        node_pods: node_index.clone(),
        metrics: base.metrics.clone(),
        health: base.health.clone(),
        log: component_log(&base.log, "nri"),
        reconnect_schedule: NriDeps::default_schedule(),
    });
    let plugin = supervise(
        "nri-plugin",
        &base.log,
        &base.metrics,
        Backoff::default(),
        move |g| NriPlugin::new(g, deps.clone()),
    );
    node_subscribers
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(plugin.subscriber());
    out.nri_pod_index = node_index;
    out.nri_plugin = Some(plugin);
    out.credential_cache = Some(cache);
}
