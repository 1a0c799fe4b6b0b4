//! The NriPlugin actor: its messages, its lifecycle (connection task, sweep timer) and its
//! handlers, including the node pod index's events.

use super::connection::connection_loop;
use super::{lock, NriCore, NriDeps, SweepError, HEALTH_CHECK};
use crate::actors::credential_cache::Evict;
use crate::actors::pod_index::{PodEvent, Snapshot};
use crate::actors::supervision::RestartGuard;
use actix::prelude::*;
use nri::RuntimeInfo;
use slog::{debug, info, warn};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Message)]
#[rtype(result = "Result<usize, SweepError>")]
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
    /// Pods the node index currently knows (`None` before its first list, or without NODE_NAME).
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
}

impl NriPlugin {
    pub fn new(guard: RestartGuard, deps: Arc<NriDeps>) -> NriPlugin {
        let slots = deps.config.nri.prewarmer.max_concurrent.max(1);
        NriPlugin {
            _guard: guard,
            core: NriCore::new(deps),
            prewarm_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
        }
    }

    fn deps(&self) -> &NriDeps {
        &self.core.deps
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

        if cfg.node_name.is_empty() || deps.node_pods.is_none() {
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
                        warn!(core.deps.log, "node sweep failed"; "error" => %e);
                    }
                }
                .into_actor(act),
            );
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.core.registered.store(false, Ordering::SeqCst);
        self.core
            .deps
            .health
            .set(HEALTH_CHECK, false, "plugin stopped");
    }
}

/// The node index's events: a pod seen for the first time is prewarmed (updates do nothing, as
/// the Go informer's UpdateFunc), a deleted one evicted.
impl Handler<PodEvent> for NriPlugin {
    type Result = ();
    fn handle(&mut self, ev: PodEvent, _: &mut Context<Self>) {
        match ev {
            PodEvent::Added(pod) => {
                if self.deps().config.nri.prewarmer.enabled {
                    self.core.prewarm(&pod, &self.prewarm_slots);
                }
            }
            PodEvent::Deleted(rec) => self.deps().cache.do_send(Evict { uid: rec.uid }),
            PodEvent::Synced => debug!(self.deps().log, "node pod index listed"),
            PodEvent::Finished(_) | PodEvent::WatchBroken(_) | PodEvent::WatchRestored => {}
        }
    }
}

impl Handler<Sweep> for NriPlugin {
    type Result = ResponseFuture<Result<usize, SweepError>>;
    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.sweep().await })
    }
}

impl Handler<Status> for NriPlugin {
    type Result = ResponseFuture<NriStatus>;
    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        let registered = self.core.registered.load(Ordering::SeqCst);
        let runtime = lock(&self.core.runtime).clone();
        let index = self.deps().node_pods.clone();
        Box::pin(async move {
            let node_pods = match index {
                Some(i) => i.send(Snapshot).await.ok().flatten().map(|s| s.pods.len()),
                None => None,
            };
            NriStatus {
                registered,
                runtime,
                node_pods,
            }
        })
    }
}

impl Handler<Stop> for NriPlugin {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
