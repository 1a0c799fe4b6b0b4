//! The `nri.pkg.api.v1alpha1.Plugin` ttrpc service the stub serves on conn 1: translates
//! generated messages to domain types, calls the [`NriHandler`] under a deadline, and answers the
//! protocol-only parts (event mask, split synchronize) itself.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use ttrpc::r#async::TtrpcContext;

use log::{debug, info, warn};

use super::error::NriError;
use super::handler::NriHandler;
use super::proto::{api, api_ttrpc};
use super::types::{ContainerInfo, EventMask, PodSandboxInfo, RuntimeInfo};

/// NRI's default `plugin_request_timeout`, assumed when the runtime sends none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the plugin service asks its session to end.
#[derive(Debug)]
pub(crate) enum ServiceSignal {
    /// The runtime called `Shutdown`.
    Shutdown,
}

/// Mutable per-connection state.
#[derive(Default)]
struct State {
    /// Request timeout announced in `Configure`.
    request_timeout: Option<Duration>,
    /// Pods of split sync messages received so far.
    sync_pods: Vec<PodSandboxInfo>,
    /// Containers of split sync messages received so far.
    sync_containers: Vec<ContainerInfo>,
}

/// One connection's Plugin service.
pub(crate) struct PluginService {
    handler: Arc<dyn NriHandler>,
    events: EventMask,
    deadline_fraction: f64,
    state: Mutex<State>,
    signals: mpsc::UnboundedSender<ServiceSignal>,
    /// `IDX-NAME`, the `plugin` field of every log record.
    plugin: String,
}

impl PluginService {
    pub(crate) fn new(
        handler: Arc<dyn NriHandler>,
        events: EventMask,
        deadline_fraction: f64,
        signals: mpsc::UnboundedSender<ServiceSignal>,
        plugin: String,
    ) -> Self {
        Self {
            handler,
            events,
            deadline_fraction,
            state: Mutex::new(State::default()),
            signals,
            plugin,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the plain data inside is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handler's time budget for one request: a fraction of what the runtime allows, so the
    /// runtime gets an error status before its own timeout (which would fail open).
    fn budget(&self, ctx: &TtrpcContext) -> Duration {
        let runtime_limit = u64::try_from(ctx.timeout_nano)
            .ok()
            .filter(|&n| n > 0)
            .map(Duration::from_nanos)
            .or(self.state().request_timeout)
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        runtime_limit.mul_f64(self.deadline_fraction)
    }

    /// Runs a handler call under the request's budget and turns failures into ttrpc statuses.
    async fn call<T>(
        &self,
        ctx: &TtrpcContext,
        what: &'static str,
        fut: impl Future<Output = Result<T, NriError>>,
    ) -> ttrpc::Result<T> {
        let budget = self.budget(ctx);
        let started = Instant::now();
        let result = match tokio::time::timeout(budget, fut).await {
            Ok(result) => result,
            Err(_) => Err(NriError::Timeout {
                what,
                after: budget,
            }),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(value) => {
                debug!(plugin = self.plugin.as_str(), request = what, duration_ms = elapsed_ms;
                    "NRI request handled");
                Ok(value)
            }
            Err(e) => {
                warn!(plugin = self.plugin.as_str(), request = what, duration_ms = elapsed_ms,
                    error:% = e; "NRI request {what} failed after {elapsed_ms:.1} ms: {e}");
                Err(e.to_status())
            }
        }
    }
}

#[async_trait]
impl api_ttrpc::Plugin for PluginService {
    async fn configure(
        &self,
        ctx: &TtrpcContext,
        req: api::ConfigureRequest,
    ) -> ttrpc::Result<api::ConfigureResponse> {
        let info = RuntimeInfo::from(req);
        info!(
            plugin = self.plugin.as_str(),
            runtime = info.runtime_name.as_str(),
            runtime_version = info.runtime_version.as_str(),
            nri_version = info.nri_version.as_str(),
            request_timeout_ms:? = info.request_timeout.map(|d| d.as_millis()),
            events:% = format_args!("{:#x}", self.events.0);
            "configured by runtime {} {}", info.runtime_name, info.runtime_version
        );
        self.state().request_timeout = info.request_timeout;
        self.call(ctx, "Configure", self.handler.configure(info))
            .await?;
        Ok(api::ConfigureResponse {
            events: self.events.0,
            ..Default::default()
        })
    }

    async fn synchronize(
        &self,
        ctx: &TtrpcContext,
        req: api::SynchronizeRequest,
    ) -> ttrpc::Result<api::SynchronizeResponse> {
        let more = req.more;
        let (pods, containers) = {
            let mut state = self.state();
            state.sync_pods.extend(req.pods.into_iter().map(Into::into));
            state
                .sync_containers
                .extend(req.containers.into_iter().map(Into::into));
            if more {
                // Intermediate chunk: echo `more`, no updates, as the runtime requires.
                return Ok(api::SynchronizeResponse {
                    more: true,
                    ..Default::default()
                });
            }
            (
                std::mem::take(&mut state.sync_pods),
                std::mem::take(&mut state.sync_containers),
            )
        };
        info!(plugin = self.plugin.as_str(), pods = pods.len(), containers = containers.len();
            "synchronizing with runtime: {} pods, {} containers", pods.len(), containers.len());
        self.call(
            ctx,
            "Synchronize",
            self.handler.synchronize(pods, containers),
        )
        .await?;
        Ok(api::SynchronizeResponse::default())
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::Empty) -> ttrpc::Result<api::Empty> {
        info!(plugin = self.plugin.as_str(); "runtime asked the plugin to shut down");
        // The session may already be gone; nothing else to do then.
        let _ = self.signals.send(ServiceSignal::Shutdown);
        Ok(api::Empty::default())
    }

    async fn create_container(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateContainerRequest,
    ) -> ttrpc::Result<api::CreateContainerResponse> {
        let pod = PodSandboxInfo::from(req.pod.into_option().unwrap_or_default());
        let container = ContainerInfo::from(req.container.into_option().unwrap_or_default());
        debug!(plugin = self.plugin.as_str(), namespace = pod.namespace.as_str(),
            pod = pod.name.as_str(), pod_uid = pod.uid.as_str(),
            container = container.name.as_str(), env_vars = container.env.len();
            "CreateContainer");
        // Pod and container move into the handler: copy the names for the record below only
        // when it will be written.
        let names = log::log_enabled!(log::Level::Debug).then(|| {
            (
                pod.namespace.clone(),
                pod.name.clone(),
                pod.uid.clone(),
                container.name.clone(),
            )
        });
        let adjustment = self
            .call(ctx, "CreateContainer", async {
                let adj = self.handler.create_container(pod, container).await?;
                adj.validate().map_err(NriError::Handler)?;
                Ok(adj)
            })
            .await?;
        if adjustment.is_empty() {
            return Ok(api::CreateContainerResponse::default());
        }
        if let Some((namespace, pod_name, pod_uid, container_name)) = names {
            debug!(plugin = self.plugin.as_str(), namespace = namespace.as_str(),
                pod = pod_name.as_str(), pod_uid = pod_uid.as_str(),
                container = container_name.as_str(),
                keys:% = adjustment.keys().collect::<Vec<_>>().join(","),
                args_replaced = adjustment.args.is_some();
                "adjusting container environment");
        }
        Ok(api::CreateContainerResponse {
            adjust: Some(api::ContainerAdjustment::from(&adjustment)).into(),
            ..Default::default()
        })
    }

    async fn remove_pod_sandbox(
        &self,
        ctx: &TtrpcContext,
        req: api::RemovePodSandboxRequest,
    ) -> ttrpc::Result<api::RemovePodSandboxResponse> {
        let pod = PodSandboxInfo::from(req.pod.into_option().unwrap_or_default());
        self.call(
            ctx,
            "RemovePodSandbox",
            self.handler.remove_pod_sandbox(pod),
        )
        .await?;
        Ok(api::RemovePodSandboxResponse::default())
    }

    async fn stop_pod_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: api::StopPodSandboxRequest,
    ) -> ttrpc::Result<api::StopPodSandboxResponse> {
        // Not subscribed; answered so that a runtime never sees NOT_FOUND from us.
        Ok(api::StopPodSandboxResponse::default())
    }

    async fn update_container(
        &self,
        _ctx: &TtrpcContext,
        _req: api::UpdateContainerRequest,
    ) -> ttrpc::Result<api::UpdateContainerResponse> {
        Ok(api::UpdateContainerResponse::default())
    }

    async fn stop_container(
        &self,
        _ctx: &TtrpcContext,
        _req: api::StopContainerRequest,
    ) -> ttrpc::Result<api::StopContainerResponse> {
        Ok(api::StopContainerResponse::default())
    }

    async fn state_change(
        &self,
        ctx: &TtrpcContext,
        req: api::StateChangeEvent,
    ) -> ttrpc::Result<api::Empty> {
        // Pre-v0.12 runtimes deliver pod events only here; v0.12+ ones fall back to it after an
        // UNIMPLEMENTED answer to a dedicated RPC.
        if req.event.value() == api::Event::REMOVE_POD_SANDBOX as i32 {
            let pod = PodSandboxInfo::from(req.pod.into_option().unwrap_or_default());
            self.call(
                ctx,
                "StateChange(RemovePodSandbox)",
                self.handler.remove_pod_sandbox(pod),
            )
            .await?;
        }
        Ok(api::Empty::default())
    }
}
