//! The NriPlugin actor: its messages, its lifecycle (connection task, sweep timer, node pod
//! watch) and its handlers.

use super::connection::connection_loop;
use super::{lock, NriCore, NriDeps, SweepError, HEALTH_CHECK};
use crate::actors::credential_cache::Evict;
use crate::actors::supervision::RestartGuard;
use actix::prelude::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use nri::RuntimeInfo;
use slog::{debug, info, warn};
use std::collections::HashSet;
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
                        warn!(core.deps.log, "node sweep failed"; "error" => %e);
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
    type Result = ResponseFuture<Result<usize, SweepError>>;
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
