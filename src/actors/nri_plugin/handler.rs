//! The NRI requests: CreateContainer (label and marker checks, resolution, substitution, fail
//! closed), RemovePodSandbox, Configure; and the [`NriHandler`] the stub calls.

use super::resolve::PodRef;
use super::{lock, Failure, FailureReason, NriCore};
use crate::actors::credential_cache::{CacheSource, Evict};
use crate::substitution::{self as nri_mapping, SubstitutionError};
use async_trait::async_trait;
use nri::{
    ContainerInfo, EnvAdjustment, NriError, NriHandler, PodSandboxInfo, RuntimeInfo,
    DEFAULT_REQUEST_TIMEOUT,
};
use slog::{debug, info, o, warn, Logger};
use std::sync::Arc;
use std::time::Instant;

impl NriCore {
    pub(super) async fn create_container(
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

    pub(super) async fn create_container_inner(
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
                    reason: FailureReason::from(&e),
                    message,
                };
                return ("error", Err(self.refuse(&log, f)));
            }
        };
        if sub.args.is_some() {
            let version = lock(&self.runtime).nri_version.clone();
            if !nri_mapping::runtime_adjusts_args(&version) {
                let f = Failure {
                    reason: FailureReason::ResidualPlaceholder,
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

    pub(super) fn refuse(&self, log: &Logger, f: Failure) -> NriError {
        self.deps.metrics.nri.refused(f.reason.as_str());
        warn!(log, "container refused: no credentials"; "reason" => f.reason.as_str(), "error" => &f.message);
        NriError::handler(format!("vault-db-injector: {}", f.message))
    }

    pub(super) async fn remove_pod_sandbox(&self, pod: PodSandboxInfo) {
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
}

// ---------------------------------------------------------------------------------------------
// The NRI handler

/// The [`NriHandler`] the stub calls: works on the shared [`NriCore`] directly, concurrently.
pub struct PluginHandler {
    pub(super) core: Arc<NriCore>,
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
