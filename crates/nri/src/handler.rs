//! The interface between the NRI protocol layer and the plugin logic.

use async_trait::async_trait;

use super::error::NriError;
use super::types::{ContainerInfo, EnvAdjustment, PodSandboxInfo, RuntimeInfo};

/// Plugin logic called by the stub for each runtime request, in plain Rust types.
///
/// Every call runs under a deadline shorter than the runtime's request timeout (see
/// [`super::StubConfig::deadline_fraction`]); when it passes, or when a method returns an error,
/// the runtime receives an error status instead of a late answer. For `create_container` that
/// makes containerd refuse the container rather than start it with placeholders (a runtime-side
/// timeout would do the opposite: drop the plugin and create the container unchanged).
///
/// All NRI calls on a node are serialized by the runtime, so these methods should answer from
/// memory whenever possible.
///
/// Only `create_container` must be written; the other methods default to accepting the call and
/// doing nothing.
#[async_trait]
pub trait NriHandler: Send + Sync + 'static {
    /// The runtime configured the plugin (once per connection, before `synchronize`).
    async fn configure(&self, info: RuntimeInfo) -> Result<(), NriError> {
        let _ = info;
        Ok(())
    }

    /// Every pod and container the runtime knows, once per connection. Split sync messages are
    /// reassembled before this is called.
    async fn synchronize(
        &self,
        pods: Vec<PodSandboxInfo>,
        containers: Vec<ContainerInfo>,
    ) -> Result<(), NriError> {
        let _ = (pods, containers);
        Ok(())
    }

    /// A container is being created. Return the environment changes to apply (empty: none). An
    /// error fails the creation with the error's message, which must not contain secrets.
    async fn create_container(
        &self,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError>;

    /// A pod sandbox was removed.
    async fn remove_pod_sandbox(&self, pod: PodSandboxInfo) -> Result<(), NriError> {
        let _ = pod;
        Ok(())
    }
}
