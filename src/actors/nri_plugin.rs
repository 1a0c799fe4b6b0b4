//! NriPlugin actor: vault-db-injector's node-local NRI plugin (compat §3.4, §4).
//!
//! The actor owns the plugin's lifecycle: the connection to the runtime (register, serve, wait
//! for the end, reconnect with the 1-2-5-10-30 s schedule whose counter is reset after every
//! successful registration; readiness check `nri` true while registered), the node sweep timer
//! and the node-scoped pod watch that feeds the prewarmer and evicts deleted pods.
//!
//! The NRI requests themselves never go through the actor's mailbox: [`PluginHandler`] does the
//! work with cloned handles ([`NriCore`]), so CreateContainer calls run concurrently and a slow
//! Vault never blocks the actor.
//!
//! CreateContainer, for a labelled pod whose container env (or args) holds the placeholder
//! marker: resolve the pod's placeholder → value mapping from the [`CredentialCache`] (hit) or, on
//! a miss, by one fetch per pod UID shared by concurrent misses: live GET of the pod (its UID must
//! equal the sandbox's), annotations, then per dbConfig that has placeholders — legacy: vdbi's own
//! session reads the Vault role, checks the API-attested service account and namespace, creates
//! an orphan token and reads credentials with it; projected: TokenRequest for the pod's service
//! account **bound to the pod**, login as the dbConfig's role, period check, credentials with the
//! pod token — then the KV bookkeeping entry under the pod's uuid. On success the mapping goes to
//! the cache; on failure everything the attempt created is revoked/restored. The fetch runs as
//! its own task: a caller that gives up at `nri.fetchTimeout` does not cancel it, so the
//! kubelet's retry finds the credentials cached instead of issuing new ones. Then every `K=V` line
//! (and the args, on runtimes that apply args adjustments) is substituted and only the changed
//! keys are returned; anything left with a placeholder fails the creation (fail closed).
//!
//! Never logged: credential values, env values, tokens. Env keys are.

use super::credential_cache::{CacheSource, CredentialCache, Evict, Get, Put, Uids};
use super::error::ActorError;
use super::issuance::{
    undo, CallClass, Created, Exposure, IssueError, Issuer, NewToken, Refusal, Restore, RoleCache,
    Subject, UndoLog,
};
use super::supervision::RestartGuard;
use super::vault_session::{KvGet, VaultSession};
use super::ActorHandle;
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::{self, BookkeepingEntry};
use crate::cache_file::PodValues;
use crate::config::{Config, NRI_RECONNECT_SCHEDULE as DEFAULT_RECONNECT_SCHEDULE};
use crate::health::HealthState;
use crate::k8s::{self, PodBinding};
use crate::substitution::{self as nri_mapping, SubstitutionError};
use crate::telemetry::metrics::{PrewarmFailure, Reconnect};
use crate::telemetry::{ExternalClock, Metrics};
use crate::vault::VaultToken;
use actix::prelude::*;
use async_trait::async_trait;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use nri::{
    ContainerInfo, EnvAdjustment, NriError, NriHandler, PodSandboxInfo, ReconnectBackoff,
    RuntimeInfo, Stub, StubConfig, DEFAULT_REQUEST_TIMEOUT,
};
use slog::{debug, error, info, o, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

/// Readiness check: true while registered with the runtime.
pub const HEALTH_CHECK: &str = "nri";

/// How long a fetch may run in the background after its caller gave up (the kubelet's retry then
/// finds the credentials cached); also the prewarmer's timeout (as vault-db-injector's 30 s).
pub const BACKGROUND_FETCH_LIMIT: Duration = Duration::from_secs(30);

/// What the plugin needs, shared by the actor, the handler and the fetch tasks.
pub struct NriDeps {
    pub config: Arc<Config>,
    pub vault: ActorHandle<VaultSession>,
    pub cache: ActorHandle<CredentialCache>,
    pub kube: kube::Client,
    pub metrics: Metrics,
    pub health: HealthState,
    pub log: Logger,
    /// Waits between reconnect attempts (default 1, 2, 5, 10, 30 s; tests shorten them).
    pub reconnect_schedule: Vec<Duration>,
}

impl NriDeps {
    /// The default reconnect schedule.
    pub fn default_schedule() -> Vec<Duration> {
        DEFAULT_RECONNECT_SCHEDULE.to_vec()
    }
}

/// A refusal: the metric reason and a message without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn fetch(message: impl Into<String>) -> Failure {
        Failure {
            reason: "fetch_error",
            message: message.into(),
        }
    }
}

/// A resolved mapping and whether it came from the cache (and from which source).
#[derive(Clone)]
struct Resolved {
    values: Arc<PodValues>,
    hit: Option<CacheSource>,
}

type SharedFetch = Shared<BoxFuture<'static, Result<Resolved, Failure>>>;

/// The pod a request is about, as the runtime (or the watch) names it.
#[derive(Clone, Debug)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

/// What the API says about the pod (the trust anchor).
struct PodFacts {
    namespace: String,
    name: String,
    uid: String,
    service_account: String,
    node_name: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one dbConfig yields.
struct Issued {
    username: String,
    password: String,
    /// A token of an earlier issuance for the same uuid that this one replaces in KV.
    superseded: Option<VaultToken>,
}

/// The plugin logic shared by the NRI handler, the prewarmer and the sweeper.
pub struct NriCore {
    deps: Arc<NriDeps>,
    /// In-flight fetches by pod UID (singleflight).
    inflight: Mutex<HashMap<String, SharedFetch>>,
    roles: RoleCache,
    /// What the runtime said in `Configure` (request timeout, NRI version).
    runtime: Mutex<RuntimeInfo>,
    /// Share of the runtime's request timeout the stub grants a handler call.
    deadline_fraction: f64,
    /// Pods the node watch knows (scheduled here, sandbox or not); `None` before its first list.
    node_pods: Mutex<Option<HashSet<String>>>,
    registered: AtomicBool,
}

impl NriCore {
    pub fn new(deps: Arc<NriDeps>) -> Arc<NriCore> {
        Arc::new(NriCore {
            deps,
            inflight: Mutex::new(HashMap::new()),
            roles: RoleCache::default(),
            runtime: Mutex::new(RuntimeInfo::default()),
            deadline_fraction: StubConfig::new("x", "00").deadline_fraction,
            node_pods: Mutex::new(None),
            registered: AtomicBool::new(false),
        })
    }

    fn config(&self) -> &Config {
        &self.deps.config
    }

    /// How long a CreateContainer may wait for credentials: `nri.fetchTimeout`, but always inside
    /// the stub's own deadline (so the refusal carries our reason and metric).
    fn wait_budget(&self) -> Duration {
        let runtime = lock(&self.runtime)
            .request_timeout
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let stub = runtime
            .mul_f64(self.deadline_fraction)
            .saturating_sub(Duration::from_millis(50));
        self.config().nri.fetch_timeout.min(stub)
    }

    // ---------------------------------------------------------------------------------------
    // NRI requests

    async fn create_container(
        self: &Arc<Self>,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        let started = Instant::now();
        let (result, out) = self.create_container_inner(&pod, &container).await;
        self.deps
            .metrics
            .nri
            .create_container(result, started.elapsed());
        out
    }

    async fn create_container_inner(
        self: &Arc<Self>,
        pod: &PodSandboxInfo,
        container: &ContainerInfo,
    ) -> (&'static str, Result<EnvAdjustment, NriError>) {
        let label = &self.config().nri.pod_label;
        if !label.is_empty() && pod.labels.get(label).map(String::as_str) != Some("true") {
            return ("skipped", Ok(EnvAdjustment::none()));
        }
        if !nri_mapping::container_has_marker(&container.env, &container.args) {
            return ("skipped", Ok(EnvAdjustment::none()));
        }
        let started = Instant::now();
        let log = self.deps.log.new(o!(
            "namespace" => pod.namespace.clone(), "pod" => pod.name.clone(),
            "pod_uid" => pod.uid.clone(), "container" => container.name.clone()));
        if pod.uid.is_empty() || pod.name.is_empty() || pod.namespace.is_empty() {
            let f = Failure::fetch("the runtime did not say which pod (name, namespace, UID) this container belongs to");
            return ("error", Err(self.refuse(&log, f)));
        }
        let pod_ref = PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        let resolved = match self
            .resolve(&pod_ref, CacheSource::Sync, self.wait_budget())
            .await
        {
            Ok(r) => r,
            Err(f) => return ("error", Err(self.refuse(&log, f))),
        };
        let sub = match nri_mapping::substitute_container(
            &container.env,
            &container.args,
            &resolved.values,
        ) {
            Ok(s) => s,
            Err(e) => {
                let message = match &e {
                    SubstitutionError::NoChange => {
                        "the container's placeholders are not among this pod's credentials"
                            .to_string()
                    }
                    SubstitutionError::Residual { keys, in_args } => format!(
                        "placeholders left after substitution in env [{}]{}",
                        keys.join(","),
                        if *in_args { " and in args" } else { "" }
                    ),
                };
                let f = Failure {
                    reason: e.reason(),
                    message,
                };
                return ("error", Err(self.refuse(&log, f)));
            }
        };
        if sub.args.is_some() {
            let version = lock(&self.runtime).nri_version.clone();
            if !nri_mapping::runtime_adjusts_args(&version) {
                let f = Failure {
                    reason: "residual_placeholder",
                    message: format!(
                        "the container's args hold placeholders and the runtime (NRI {}) cannot adjust args (needs NRI v0.10+)",
                        if version.is_empty() { "before v0.12" } else { &version }
                    ),
                };
                return ("error", Err(self.refuse(&log, f)));
            }
        }
        self.deps
            .metrics
            .nri
            .substituted(resolved.hit.map(CacheSource::as_str));
        let keys: Vec<&str> = sub.env.iter().map(|(k, _)| k.as_str()).collect();
        info!(log, "credentials substituted";
            "keys" => keys.join(","), "args" => sub.args.is_some(),
            "cache" => resolved.hit.map_or("miss", CacheSource::as_str),
            "duration_ms" => started.elapsed().as_secs_f64() * 1e3);
        let result = if resolved.hit.is_some() {
            "hit"
        } else {
            "miss"
        };
        (
            result,
            Ok(EnvAdjustment {
                set: sub.env,
                args: sub.args,
            }),
        )
    }

    fn refuse(&self, log: &Logger, f: Failure) -> NriError {
        self.deps.metrics.nri.refused(f.reason);
        warn!(log, "container refused: no credentials"; "reason" => f.reason, "error" => &f.message);
        NriError::handler(format!("vault-db-injector: {}", f.message))
    }

    async fn remove_pod_sandbox(&self, pod: PodSandboxInfo) {
        match self
            .deps
            .cache
            .send(Evict {
                uid: pod.uid.clone(),
            })
            .await
        {
            Ok(true) => {
                debug!(self.deps.log, "pod removed: cache entry evicted"; "pod_uid" => &pod.uid)
            }
            Ok(false) => {}
            Err(e) => warn!(self.deps.log, "cannot evict a removed pod"; "error" => %e),
        }
    }

    /// Evicts cached pods that are neither among `live` nor protected (known to the node watch,
    /// or being fetched). Only pods cached *before* `live` was taken are considered, so an entry
    /// written meanwhile is never dropped by a stale list.
    async fn evict_dead(&self, before: HashSet<String>, live: &HashSet<String>) -> usize {
        let protected: HashSet<String> = {
            let mut p: HashSet<String> = lock(&self.inflight).keys().cloned().collect();
            if let Some(n) = lock(&self.node_pods).as_ref() {
                p.extend(n.iter().cloned());
            }
            p
        };
        let mut evicted = 0;
        for uid in before {
            if live.contains(&uid) || protected.contains(&uid) {
                continue;
            }
            if let Ok(true) = self.deps.cache.send(Evict { uid }).await {
                evicted += 1;
            }
        }
        evicted
    }

    async fn cached_uids(&self) -> Result<HashSet<String>, String> {
        self.deps
            .cache
            .send(Uids)
            .await
            .map(|v| v.into_iter().collect())
            .map_err(|e| format!("credential cache unavailable: {e}"))
    }

    /// Synchronize: cached pods without a sandbox are evicted — except pods the node watch knows
    /// (scheduled here, sandbox not created yet: prewarmed). Right after a (re)start the watch may
    /// not have listed yet, so the eviction waits for its first list (at most a minute) instead
    /// of dropping what it would have protected.
    async fn synchronize(self: &Arc<Self>, pods: Vec<PodSandboxInfo>) -> Result<(), NriError> {
        let before = self.cached_uids().await.map_err(NriError::handler)?;
        let live: HashSet<String> = pods.into_iter().map(|p| p.uid).collect();
        info!(self.deps.log, "synchronizing with the runtime"; "sandboxes" => live.len(), "cached" => before.len());
        let me = self.clone();
        tokio::spawn(async move {
            if !me.config().node_name.is_empty() {
                let waited = Instant::now();
                while lock(&me.node_pods).is_none() {
                    if waited.elapsed() > Duration::from_secs(60) {
                        warn!(
                            me.deps.log,
                            "node pod watch not listed after 60 s: synchronize evicts without it"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let evicted = me.evict_dead(before, &live).await;
            if evicted > 0 {
                info!(me.deps.log, "synchronize evicted pods without a sandbox"; "evicted" => evicted);
            }
        });
        Ok(())
    }

    /// The node sweep: evicts cached pods no longer on this node (force-deleted pods get no
    /// RemovePodSandbox). Returns how many were evicted.
    pub async fn sweep(&self) -> Result<usize, String> {
        let node = &self.config().node_name;
        if node.is_empty() {
            return Err("NODE_NAME is not set".into());
        }
        let before = self.cached_uids().await?;
        if before.is_empty() {
            return Ok(0);
        }
        let api: Api<Pod> = Api::all(self.deps.kube.clone());
        let mut lp = ListParams::default()
            .fields(&format!("spec.nodeName={node}"))
            .limit(500);
        let mut live = HashSet::new();
        loop {
            let list = tokio::time::timeout(Duration::from_secs(30), api.list(&lp))
                .await
                .map_err(|_| "listing this node's pods timed out".to_string())?
                .map_err(|e| format!("listing this node's pods: {e}"))?;
            live.extend(list.items.into_iter().filter_map(|p| p.metadata.uid));
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        let evicted = self.evict_dead(before, &live).await;
        if evicted > 0 {
            info!(self.deps.log, "node sweep evicted pods gone from this node"; "evicted" => evicted);
        }
        Ok(evicted)
    }

    // ---------------------------------------------------------------------------------------
    // Resolution: cache, singleflight, fetch

    /// The pod's mapping: from the cache, or from the fetch in flight for this pod, or from a new
    /// one; waits at most `wait` (the fetch itself carries on in the background).
    async fn resolve(
        self: &Arc<Self>,
        pod: &PodRef,
        source: CacheSource,
        wait: Duration,
    ) -> Result<Resolved, Failure> {
        match self
            .deps
            .cache
            .send(Get {
                uid: pod.uid.clone(),
            })
            .await
        {
            Ok(Some(hit)) => {
                return Ok(Resolved {
                    values: hit.values,
                    hit: Some(hit.source),
                })
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::fetch(format!("credential cache unavailable: {e}"))),
        }
        let (fetch, joined) = self.join_or_start(pod, source);
        if joined {
            self.deps.metrics.nri.resolve_shared();
        }
        match tokio::time::timeout(wait, fetch).await {
            Ok(r) => r,
            Err(_) => {
                let session = self
                    .deps
                    .health
                    .check(super::vault_session::HEALTH_CHECK)
                    .filter(|c| !c.ready)
                    .map(|c| format!(": vdbi has no Vault session ({})", c.message))
                    .unwrap_or_else(|| {
                        " (Vault or the apiserver is slow); the fetch goes on and a retry will use its result".into()
                    });
                Err(Failure::fetch(format!(
                    "no credentials within {} ms{session}",
                    wait.as_millis()
                )))
            }
        }
    }

    fn join_or_start(self: &Arc<Self>, pod: &PodRef, source: CacheSource) -> (SharedFetch, bool) {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&pod.uid) {
            return (f.clone(), true);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fetch: SharedFetch = async move {
            rx.await
                .unwrap_or_else(|_| Err(Failure::fetch("the credential fetch was interrupted")))
        }
        .boxed()
        .shared();
        inflight.insert(pod.uid.clone(), fetch.clone());
        // Spawned under the lock: the task's removal of its entry comes after this insert.
        let me = self.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let result = me.fetch_and_store(&pod, source).await;
            lock(&me.inflight).remove(&pod.uid);
            let _ = tx.send(result);
        });
        (fetch, false)
    }

    async fn fetch_and_store(
        self: &Arc<Self>,
        pod: &PodRef,
        source: CacheSource,
    ) -> Result<Resolved, Failure> {
        // A fetch that ended just before this one started has filled the cache.
        if let Ok(Some(hit)) = self
            .deps
            .cache
            .send(Get {
                uid: pod.uid.clone(),
            })
            .await
        {
            return Ok(Resolved {
                values: hit.values,
                hit: Some(hit.source),
            });
        }
        let started = Instant::now();
        let limit = self.config().nri.fetch_timeout.max(BACKGROUND_FETCH_LIMIT);
        let deadline = Deadline::now() + limit;
        let log = self.deps.log.new(o!(
            "namespace" => pod.namespace.clone(), "pod" => pod.name.clone(),
            "pod_uid" => pod.uid.clone(), "source" => source.as_str()));
        let undo_log = UndoLog::default();
        // Every call inside is bounded by `deadline`; the fetch is not cut from outside, so
        // whatever it creates is recorded and undone on failure.
        match self.fetch(pod, deadline, &undo_log).await {
            Ok((values, superseded)) => {
                let values = Arc::new(values);
                if let Err(e) = self
                    .deps
                    .cache
                    .send(Put {
                        uid: pod.uid.clone(),
                        values: (*values).clone(),
                        source,
                    })
                    .await
                {
                    warn!(log, "cannot cache the pod's credentials"; "error" => %e);
                }
                info!(log, "credentials issued for the pod";
                    "placeholders" => values.len(),
                    "duration_ms" => started.elapsed().as_secs_f64() * 1e3);
                if !superseded.is_empty() {
                    let me = self.clone();
                    let log = log.clone();
                    tokio::spawn(async move { me.revoke_superseded(superseded, &log).await });
                }
                Ok(Resolved { values, hit: None })
            }
            Err(f) => {
                warn!(log, "credential fetch failed"; "reason" => f.reason, "error" => &f.message,
                    "duration_ms" => started.elapsed().as_secs_f64() * 1e3);
                let (created, exposure) = undo_log.abandon();
                if !created.is_empty() {
                    let vault = self.deps.vault.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        undo(&vault, created, CallClass::Background, &log).await;
                    });
                }
                Err(match exposure {
                    Exposure::Nothing => f,
                    _ => Failure {
                        message: format!("{}; {}", f.message, exposure.phrase()),
                        ..f
                    },
                })
            }
        }
    }

    /// The fetch proper (compat §3.4): live pod, UID check, annotations, mapping plan, then the
    /// dbConfigs that have placeholders, concurrently.
    async fn fetch(
        &self,
        pod: &PodRef,
        deadline: Deadline,
        undo_log: &UndoLog,
    ) -> Result<(PodValues, Vec<VaultToken>), Failure> {
        let cfg = self.config();
        let api_pod = tokio::time::timeout_at(
            deadline,
            k8s::get_pod(&self.deps.kube, &pod.namespace, &pod.name),
        )
        .await
        .map_err(|_| Failure::fetch("reading the pod from the apiserver timed out"))?
        .map_err(|e| {
            Failure::fetch(format!(
                "reading pod {}/{} from the apiserver: {e}",
                pod.namespace, pod.name
            ))
        })?
        .ok_or_else(|| {
            Failure::fetch(format!(
                "pod {}/{} does not exist in the apiserver",
                pod.namespace, pod.name
            ))
        })?;
        let api_uid = api_pod.metadata.uid.clone().unwrap_or_default();
        if api_uid != pod.uid {
            return Err(Failure::fetch(format!(
                "pod {}/{} has UID {api_uid:?} in the apiserver but {:?} in the runtime: refusing (pod name reused?)",
                pod.namespace, pod.name, pod.uid
            )));
        }
        let annotations = api_pod.metadata.annotations.clone().unwrap_or_default();
        let spec = match annotations::parse(&annotations, &cfg.default_engine) {
            Ok(PodContract::Databases(s)) => s,
            Ok(PodContract::NoDatabases { .. }) => return Err(Failure::fetch(
                "the pod has placeholders but no db-creds-injector.numberly.io/<db>.* annotation",
            )),
            Ok(PodContract::LegacyV1) => {
                return Err(Failure::fetch(
                    "the pod carries a v1 revoke-ttl annotation: not handled in NRI mode",
                ))
            }
            Err(e) => return Err(Failure::fetch(format!("pod annotations: {e}"))),
        };
        let plan = nri_mapping::plan(&spec, &api_pod);
        if plan.is_empty() {
            return Err(Failure {
                reason: "empty_mapping",
                message: "no env var named by the dbConfig annotations holds a placeholder in the pod spec".into(),
            });
        }
        let pod_spec = api_pod.spec.as_ref();
        let service_account = pod_spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty());
        let service_account = match (service_account, cfg.use_projected_sa) {
            (Some(sa), _) => sa,
            (None, false) => "default".to_string(),
            (None, true) => {
                return Err(Failure::fetch(
                    "the pod has no serviceAccountName: projected mode needs one",
                ))
            }
        };
        let node_name = pod_spec
            .and_then(|s| s.node_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cfg.node_name.clone());
        let facts = PodFacts {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            service_account,
            node_name,
        };
        let keys = entry_keys(&spec, &pod.uid)?;
        let clock = ExternalClock::new();

        let jobs = spec
            .configs
            .iter()
            .enumerate()
            .filter(|(i, _)| !plan.dbs[*i].is_empty())
            .map(|(i, db)| {
                let key = &keys[i];
                let (spec, facts, clock) = (&spec, &facts, &clock);
                async move {
                    (
                        i,
                        self.issue_one(spec, db, key, facts, deadline, clock, undo_log)
                            .await,
                    )
                }
            });
        let mut creds = vec![None; spec.configs.len()];
        let mut superseded = Vec::new();
        let mut completed = Vec::new();
        for (i, issued) in futures::future::join_all(jobs).await {
            let issued = issued?;
            completed.push(keys[i].clone());
            creds[i] = Some((issued.username, issued.password));
            superseded.extend(issued.superseded);
        }
        // Every entry now holds a token and a lease: the webhook's reservations are done.
        super::issuance::reservations::complete(&self.deps.vault, completed, &self.deps.log);
        Ok((plan.resolve(&creds), superseded))
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_one(
        &self,
        spec: &PodDbSpec,
        db: &DbConfig,
        uuid: &str,
        pod: &PodFacts,
        deadline: Deadline,
        clock: &ExternalClock,
        undo_log: &UndoLog,
    ) -> Result<Issued, Failure> {
        let cfg = self.config();
        let issuer = Issuer::new(cfg, &self.deps.vault, &self.deps.metrics, clock, deadline);
        let who = Subject::new(&pod.namespace, &pod.service_account);
        let failure = |e| issue_failure(db, e, &self.deps.log);
        let mut entry = BookkeepingEntry::reservation(
            &pod.namespace,
            &pod.service_account,
            &pod.name,
            &pod.node_name,
        );
        let token;
        if !cfg.use_projected_sa {
            // ---- legacy: vdbi's session checks the API-attested identity, then an orphan ----
            issuer
                .authorise(&self.roles, db, &who)
                .await
                .map_err(failure)?;
            token = undo_log
                .creating(issuer.orphan_token(db, uuid, &who))
                .await
                .map_err(failure)?;
            self.record(undo_log, Created::Token(NewToken::Orphan(token.clone())))
                .await?;
        } else {
            // ---- projected: the pod's own identity, with a token bound to the pod ----
            let binding = PodBinding {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            };
            token = undo_log
                .creating(issuer.pod_login(&self.deps.kube, db, &who, Some(&binding)))
                .await
                .map_err(failure)?;
            self.record(undo_log, Created::Token(NewToken::Pod(token.clone())))
                .await?;
            issuer.check_period(db, &token, &self.deps.log).await;
        }
        let creds = undo_log
            .creating(issuer.read_credentials(&spec.engine, db, &token, READ_ATTEMPTS))
            .await
            .map_err(failure)?;
        entry.lease_id = creds.lease_id.clone();
        entry.token_id = token.expose().to_string();

        // ---- bookkeeping: what the entry held before is kept to restore it on failure ----
        // (legacy only: the projected-mode NRI policy may not read KV). The webhook's
        // reservation stays at its own prefix until the fetch succeeds.
        let (restore, superseded) = if cfg.use_projected_sa {
            (Restore::Delete, None)
        } else {
            let previous = issuer
                .call(KvGet {
                    uuid: uuid.to_string(),
                    deadline,
                })
                .await
                .map_err(|e| {
                    vault_failure(db, "reading the bookkeeping entry", &e, &self.deps.log)
                })?;
            let superseded = previous
                .as_ref()
                .map(|p| VaultToken::new(p.token_id.clone()))
                .filter(|t| !t.is_empty() && *t != token);
            (
                previous.map_or(Restore::Delete, |p| Restore::Entry(Box::new(p))),
                superseded,
            )
        };
        undo_log
            .creating(issuer.write_entry(uuid, entry, &pod.namespace))
            .await
            .map_err(failure)?;
        self.record(
            undo_log,
            Created::Entry {
                uuid: uuid.to_string(),
                restore,
            },
        )
        .await?;
        // ---- legacy: the token is recorded, it may now live its full TTL ----
        if !cfg.use_projected_sa {
            issuer.confirm_token(&token).await.map_err(failure)?;
        }
        Ok(Issued {
            username: creds.username,
            password: creds.password.expose().to_string(),
            superseded,
        })
    }

    /// Records what the fetch created. A fetch is never abandoned while it runs (it is not cut
    /// from outside), so a refused record is undone at once all the same.
    async fn record(&self, undo_log: &UndoLog, created: Created) -> Result<(), Failure> {
        match undo_log.record(created) {
            Ok(()) => Ok(()),
            Err(late) => {
                undo(
                    &self.deps.vault,
                    vec![late],
                    CallClass::Background,
                    &self.deps.log,
                )
                .await;
                Err(Failure::fetch("the credential fetch was abandoned"))
            }
        }
    }

    /// Revokes tokens of earlier issuances whose KV entry now points at new credentials (the
    /// renewer would no longer renew them: left alone they would be unmanaged). Happens only
    /// when a pod's cache entry was lost while the pod lived.
    async fn revoke_superseded(&self, tokens: Vec<VaultToken>, log: &Logger) {
        warn!(log, "the pod's earlier credentials were superseded (cache entry lost?); revoking them"; "tokens" => tokens.len());
        let tokens = tokens
            .into_iter()
            .map(|t| {
                Created::Token(if self.config().use_projected_sa {
                    NewToken::Pod(t)
                } else {
                    NewToken::Orphan(t)
                })
            })
            .collect();
        undo(&self.deps.vault, tokens, CallClass::Background, log).await;
    }

    // ---------------------------------------------------------------------------------------
    // Prewarming

    /// Prewarms a pod seen on this node (compat §4, without the Go version's defects: only pods
    /// whose spec really carries placeholders, never terminating ones).
    fn prewarm(self: &Arc<Self>, pod: &Pod, slots: &Arc<tokio::sync::Semaphore>) {
        let m = &self.deps.metrics.nri;
        if !nri_mapping::pod_has_placeholders(pod) {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            m.prewarm_failed(PrewarmFailure::TerminatingPod);
            return;
        }
        let (Some(uid), Some(name), Some(namespace)) = (
            pod.metadata.uid.clone(),
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
        ) else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            m.prewarm_failed(PrewarmFailure::SemaphoreFull);
            warn!(self.deps.log, "prewarmer busy: pod left to CreateContainer"; "namespace" => &namespace, "pod" => &name);
            return;
        };
        m.prewarm_started();
        let me = self.clone();
        let pod = PodRef {
            namespace,
            name,
            uid,
        };
        tokio::spawn(async move {
            let m = &me.deps.metrics.nri;
            let fetched = match me
                .resolve(&pod, CacheSource::Prewarm, BACKGROUND_FETCH_LIMIT)
                .await
            {
                Ok(r) => r.hit.is_none(),
                Err(f) => {
                    m.prewarm_failed(PrewarmFailure::VaultFetch);
                    warn!(me.deps.log, "prewarm failed"; "namespace" => &pod.namespace,
                        "pod" => &pod.name, "reason" => f.reason, "error" => &f.message);
                    false
                }
            };
            m.prewarm_finished(fetched);
            drop(permit);
        });
    }
}

/// KV keys of the dbConfigs: the `uuid` annotation's entries in dbConfig order; a pod without
/// one uses its UID for the first dbConfig (as vault-db-injector). Two dbConfigs sharing a key
/// would overwrite each other's bookkeeping (credentials nobody renews or revokes): refused.
fn entry_keys(spec: &PodDbSpec, pod_uid: &str) -> Result<Vec<String>, Failure> {
    let mut keys = Vec::with_capacity(spec.configs.len());
    for (i, db) in spec.configs.iter().enumerate() {
        let key = match spec.uuids.get(i) {
            Some(u) => u.clone(),
            None if i == 0 => pod_uid.to_string(),
            None => {
                return Err(Failure::fetch(format!(
                "the uuid annotation has no entry for dbConfig {:?} ({} entries for {} dbConfigs)",
                db.name,
                spec.uuids.len(),
                spec.configs.len()
            )))
            }
        };
        if !bookkeeping::is_valid_key(&key) || keys.contains(&key) {
            return Err(Failure::fetch(format!(
                "the uuid annotation entry for dbConfig {:?} is invalid or repeated",
                db.name
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// How often a credentials read is tried when Vault answers HTTP 500 (see
/// [`Issuer::read_credentials`]): concurrent fetches and the prewarmer grant several roles on one
/// database at once.
const READ_ATTEMPTS: u32 = 3;

/// Turns a session/actor error into the refusal message.
fn vault_failure(db: &DbConfig, step: &str, e: &ActorError, log: &Logger) -> Failure {
    Failure::fetch(Refusal::from_call(db, step, e, log).message)
}

/// Turns a failed issuing step into the refusal message (the NRI metric reason stays
/// `fetch_error`; the wording is the webhook's).
fn issue_failure(db: &DbConfig, e: IssueError, log: &Logger) -> Failure {
    Failure::fetch(Refusal::from_issue(db, e, log).message)
}

// ---------------------------------------------------------------------------------------------
// The NRI handler

/// The [`NriHandler`] the stub calls: works on the shared [`NriCore`] directly, concurrently.
pub struct PluginHandler {
    core: Arc<NriCore>,
}

#[async_trait]
impl NriHandler for PluginHandler {
    async fn configure(&self, info: RuntimeInfo) -> Result<(), NriError> {
        let cfg = self.core.config();
        let runtime = info.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if cfg.nri.fetch_timeout > runtime.mul_f64(self.core.deadline_fraction) {
            warn!(self.core.deps.log, "nri.fetchTimeout exceeds what the runtime's request timeout leaves: refusals come earlier";
                "fetch_timeout_ms" => cfg.nri.fetch_timeout.as_millis() as u64,
                "runtime_request_timeout_ms" => runtime.as_millis() as u64);
        }
        *lock(&self.core.runtime) = info;
        Ok(())
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandboxInfo>,
        _containers: Vec<ContainerInfo>,
    ) -> Result<(), NriError> {
        self.core.synchronize(pods).await
    }

    async fn create_container(
        &self,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        self.core.create_container(pod, container).await
    }

    async fn remove_pod_sandbox(&self, pod: PodSandboxInfo) -> Result<(), NriError> {
        self.core.remove_pod_sandbox(pod).await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The actor

/// Run a node sweep now; returns how many cache entries were evicted.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Sweep;

/// The plugin's state, for probes and tests.
#[derive(Message)]
#[rtype(result = "NriStatus")]
pub struct Status;

#[derive(Clone, Debug)]
pub struct NriStatus {
    /// Registered with the runtime right now.
    pub registered: bool,
    /// What the runtime said in its last `Configure`.
    pub runtime: RuntimeInfo,
    /// Pods the node watch currently knows (`None` before its first list, or without NODE_NAME).
    pub node_pods: Option<usize>,
}

/// Stop the plugin (shutdown): the connection closes, nothing is restarted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

pub struct NriPlugin {
    _guard: RestartGuard,
    core: Arc<NriCore>,
    prewarm_slots: Arc<tokio::sync::Semaphore>,
    /// Pods seen by the watch (a pod is prewarmed when first seen), and the re-list buffer.
    seen: HashSet<String>,
    relist: Option<HashSet<String>>,
}

impl NriPlugin {
    pub fn new(guard: RestartGuard, deps: Arc<NriDeps>) -> NriPlugin {
        let slots = deps.config.nri.prewarmer.max_concurrent.max(1);
        NriPlugin {
            _guard: guard,
            core: NriCore::new(deps),
            prewarm_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            seen: HashSet::new(),
            relist: None,
        }
    }

    fn deps(&self) -> &NriDeps {
        &self.core.deps
    }

    fn seen_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(buf) = self.relist.as_mut() {
            buf.insert(uid.clone());
        }
        if !self.seen.insert(uid.clone()) {
            return; // updates do nothing (as the Go informer's UpdateFunc)
        }
        if let Some(n) = lock(&self.core.node_pods).as_mut() {
            n.insert(uid);
        }
        if self.deps().config.nri.prewarmer.enabled {
            self.core.prewarm(pod, &self.prewarm_slots);
        }
    }

    fn gone(&mut self, uid: String) {
        self.seen.remove(&uid);
        if let Some(n) = lock(&self.core.node_pods).as_mut() {
            n.remove(&uid);
        }
        self.deps().cache.do_send(Evict { uid });
    }
}

/// Keeps the plugin registered: connect, serve until the connection ends, wait, reconnect.
async fn connection_loop(core: Arc<NriCore>) {
    let deps = core.deps.clone();
    let cfg = &deps.config;
    let log = deps.log.clone();
    let mut stub_cfg = StubConfig::new(cfg.nri.plugin_name.clone(), cfg.nri.plugin_index.clone());
    stub_cfg.socket_path = cfg.nri.socket_path.clone();
    stub_cfg.deadline_fraction = core.deadline_fraction;
    let handler: Arc<dyn NriHandler> = Arc::new(PluginHandler { core: core.clone() });
    let stub = match Stub::new(stub_cfg, handler) {
        Ok(s) => s,
        Err(e) => {
            error!(log, "NRI plugin identity rejected; the plugin cannot start"; "error" => %e);
            deps.health
                .set(HEALTH_CHECK, false, format!("invalid configuration: {e}"));
            return;
        }
    };
    let schedule = deps.reconnect_schedule.clone();
    let longest = schedule
        .iter()
        .copied()
        .max()
        .unwrap_or(Duration::from_secs(30));
    let mut backoff = ReconnectBackoff::new(schedule);
    let reconnect = |step| deps.metrics.nri.reconnect(step);
    let mut reconnecting = false;
    let mut exhausted = false;
    loop {
        if reconnecting {
            reconnect(Reconnect::Attempted);
        }
        match stub.connect().await {
            Ok(mut session) => {
                backoff.reset();
                exhausted = false;
                if reconnecting {
                    reconnect(Reconnect::Succeeded);
                }
                core.registered.store(true, Ordering::SeqCst);
                deps.health
                    .set(HEALTH_CHECK, true, "registered with the runtime");
                let end = session.closed().await;
                core.registered.store(false, Ordering::SeqCst);
                deps.health.set(
                    HEALTH_CHECK,
                    false,
                    format!("connection to the runtime ended: {end:?}"),
                );
                warn!(log, "NRI connection ended; reconnecting"; "reason" => ?end);
            }
            Err(e) => {
                deps.health
                    .set(HEALTH_CHECK, false, format!("cannot register: {e}"));
                warn!(log, "NRI registration failed"; "error" => %e);
            }
        }
        reconnecting = true;
        let delay = match backoff.next_delay() {
            Some(d) => d,
            None => {
                if !exhausted {
                    exhausted = true;
                    reconnect(Reconnect::Exhausted);
                    error!(log, "NRI reconnect attempts exhausted: containers of labelled pods cannot get credentials; still retrying";
                        "every_s" => longest.as_secs());
                }
                longest
            }
        };
        tokio::time::sleep(delay).await;
    }
}

impl Actor for NriPlugin {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let deps = self.core.deps.clone();
        let cfg = &deps.config;
        deps.health
            .set(HEALTH_CHECK, false, "connecting to the runtime");
        info!(deps.log, "NRI plugin starting";
            "socket" => %cfg.nri.socket_path.display(), "plugin" => format!("{}-{}", cfg.nri.plugin_index, cfg.nri.plugin_name),
            "auth_mode" => if cfg.use_projected_sa { "projected" } else { "legacy" },
            "fetch_timeout_ms" => cfg.nri.fetch_timeout.as_millis() as u64);
        ctx.spawn(connection_loop(self.core.clone()).into_actor(self));

        if cfg.node_name.is_empty() {
            warn!(
                deps.log,
                "NODE_NAME is not set: the node sweep and the prewarmer are disabled"
            );
            return;
        }
        ctx.run_interval(cfg.nri.sweep_interval, |act, ctx| {
            let core = act.core.clone();
            ctx.spawn(
                async move {
                    if let Err(e) = core.sweep().await {
                        warn!(core.deps.log, "node sweep failed"; "error" => e);
                    }
                }
                .into_actor(act),
            );
        });
        let api: Api<Pod> = Api::all(deps.kube.clone());
        let mut wc = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", cfg.node_name))
            .page_size(500);
        if !cfg.nri.pod_label.is_empty() {
            wc = wc.labels(&format!("{}=true", cfg.nri.pod_label));
        }
        ctx.add_stream(watcher::watcher(api, wc).default_backoff().boxed());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.core.registered.store(false, Ordering::SeqCst);
        self.core
            .deps
            .health
            .set(HEALTH_CHECK, false, "plugin stopped");
    }
}

impl StreamHandler<Result<Event<Pod>, watcher::Error>> for NriPlugin {
    fn handle(&mut self, item: Result<Event<Pod>, watcher::Error>, _: &mut Context<Self>) {
        match item {
            Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => self.seen_pod(&pod),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid {
                    self.gone(uid);
                }
            }
            Ok(Event::Init) => self.relist = Some(HashSet::new()),
            Ok(Event::InitDone) => {
                let fresh = self.relist.take().unwrap_or_default();
                let vanished: Vec<String> = self.seen.difference(&fresh).cloned().collect();
                for uid in vanished {
                    self.gone(uid);
                }
                *lock(&self.core.node_pods) = Some(fresh);
                debug!(self.deps().log, "node pod watch listed"; "pods" => self.seen.len());
            }
            Err(e) => warn!(self.deps().log, "node pod watch error; retrying"; "error" => %e),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The watch never ends by itself; if it does, restart through the supervisor.
        warn!(self.deps().log, "node pod watch ended");
        ctx.stop();
    }
}

impl Handler<Sweep> for NriPlugin {
    type Result = ResponseFuture<Result<usize, String>>;
    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.sweep().await })
    }
}

impl Handler<Status> for NriPlugin {
    type Result = MessageResult<Status>;
    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(NriStatus {
            registered: self.core.registered.load(Ordering::SeqCst),
            runtime: lock(&self.core.runtime).clone(),
            node_pods: lock(&self.core.node_pods).as_ref().map(HashSet::len),
        })
    }
}

impl Handler<Stop> for NriPlugin {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{parse, PREFIX};
    use std::collections::BTreeMap;

    fn spec(uuid: Option<&str>, dbs: &[&str]) -> PodDbSpec {
        let mut a = BTreeMap::new();
        for db in dbs {
            a.insert(format!("{PREFIX}{db}.role"), "r".to_string());
            a.insert(format!("{PREFIX}{db}.env-key-dbuser"), "U".to_string() + db);
        }
        if let Some(u) = uuid {
            a.insert(format!("{PREFIX}uuid"), u.to_string());
        }
        match parse(&a, "databases").unwrap() {
            PodContract::Databases(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entry_keys_follow_the_uuid_annotation_with_the_uid_fallback() {
        assert_eq!(
            entry_keys(&spec(Some("u1,u2"), &["a", "b"]), "uid").unwrap(),
            vec!["u1", "u2"]
        );
        assert_eq!(entry_keys(&spec(None, &["a"]), "uid").unwrap(), vec!["uid"]);
        // A second dbConfig without its own uuid would overwrite the first one's entry.
        let err = entry_keys(&spec(None, &["a", "b"]), "uid").unwrap_err();
        assert!(err.message.contains("\"b\""), "{}", err.message);
        assert!(entry_keys(&spec(Some("x,x"), &["a", "b"]), "uid").is_err());
        assert!(entry_keys(&spec(Some("../x"), &["a"]), "uid").is_err());
    }
}
