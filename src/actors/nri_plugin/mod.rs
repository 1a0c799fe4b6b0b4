//! NriPlugin actor: vault-db-injector's node-local NRI plugin (compat §3.4, §4).
//!
//! The actor owns the plugin's lifecycle: the connection to the runtime (register, serve, wait
//! for the end, reconnect with the 1-2-5-10-30 s schedule whose counter is reset after every
//! successful registration; readiness check `nri` true while registered) and the node sweep
//! timer; it subscribes to the node's [`PodIndex`] (`spec.nodeName=<NODE_NAME>`, started beside
//! it), whose new pods it prewarms and whose deleted pods it evicts.
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
//! pod token — then the KV bookkeeping entry under the pod's uuid. Each dbConfig is issued in an
//! issuance slot of the process's [`FairQueue`], as the webhook's are: a pod with many dbConfigs
//! cannot hold up another pod's fetch. On success the mapping goes to
//! the cache; on failure everything the attempt created is revoked/restored. The fetch runs as
//! its own task: a caller that gives up at `nri.fetchTimeout` does not cancel it, so the
//! kubelet's retry finds the credentials cached instead of issuing new ones. Then every `K=V` line
//! (and the args, on runtimes that apply args adjustments) is substituted and only the changed
//! keys are returned; anything left with a placeholder fails the creation (fail closed).
//!
//! Never logged: credential values, env values, tokens. Env keys are.
//!
//! Layout: `handler` (the NRI requests), `resolve` (cache and single-flight), `issue` (the fetch
//! and the issuing steps of [`super::issuance`]), `error` (refusals and sweep errors), `upkeep` (synchronize, sweep, prewarm),
//! `connection` (register and reconnect) and `actor` (the actor, its messages and the node
//! index's events).

mod actor;
mod connection;
mod error;
mod handler;
mod issue;
mod resolve;
mod upkeep;

pub use actor::{NriPlugin, NriStatus, Status, Stop, Sweep};
pub use error::{Failure, FailureReason, SweepError};
pub use handler::PluginHandler;

use super::credential_cache::CredentialCache;
use super::issuance::{FairQueue, RoleCache};
use super::pod_index::PodIndex;
use super::vault_session::VaultSession;
use super::ActorHandle;
use crate::config::{Config, NRI_RECONNECT_SCHEDULE as DEFAULT_RECONNECT_SCHEDULE};
use crate::health::HealthState;
use crate::telemetry::Metrics;
use nri::{RuntimeInfo, StubConfig, DEFAULT_REQUEST_TIMEOUT};
use resolve::SharedFetch;
use slog::Logger;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Readiness check: true while registered with the runtime.
pub const HEALTH_CHECK: &str = "nri";

/// How long a fetch may run in the background after its caller gave up (the kubelet's retry then
/// finds the credentials cached); also the prewarmer's timeout (as vault-db-injector's 30 s).
pub const BACKGROUND_FETCH_LIMIT: Duration = Duration::from_secs(30);
// The revoker settles a live pod's fetch attempt record only once no fetch can be running.
const _: () = assert!(
    BACKGROUND_FETCH_LIMIT.as_secs() * 2 <= crate::schedule::FETCH_ATTEMPT_MAX_AGE.as_secs()
);

/// What the plugin needs, shared by the actor, the handler and the fetch tasks.
pub struct NriDeps {
    pub config: Arc<Config>,
    pub vault: ActorHandle<VaultSession>,
    pub cache: ActorHandle<CredentialCache>,
    pub kube: kube::Client,
    /// Issuance slots (`issuanceSlots`, `issuanceSlotsPerPod`): a pod's dbConfigs are issued
    /// at most that many at once, pods served round-robin; shared with the admissions of the
    /// same process.
    pub slots: FairQueue,
    /// The pods scheduled on this node (`None` without `NODE_NAME`: no sweep, no prewarmer). The
    /// plugin subscribes to its events.
    pub node_pods: Option<ActorHandle<PodIndex>>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
}
