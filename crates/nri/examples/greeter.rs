//! A minimal NRI plugin: every container created on the node gets `GREETING` in its environment.
//!
//! Run it as root next to a containerd or CRI-O with NRI enabled:
//! `cargo run -p nri --example greeter [/var/run/nri/nri.sock]`.

use std::sync::Arc;
use std::time::Duration;

use nri::{
    async_trait, ContainerInfo, EnvAdjustment, NriError, NriHandler, PodSandboxInfo,
    ReconnectBackoff, Stub, StubConfig,
};

struct Greeter;

#[async_trait]
impl NriHandler for Greeter {
    async fn create_container(
        &self,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        let mut adjustment = EnvAdjustment::none();
        adjustment.push(
            "GREETING",
            format!("hello {} in {}/{}", container.name, pod.namespace, pod.name),
        );
        Ok(adjustment)
    }
}

#[tokio::main]
async fn main() -> Result<(), NriError> {
    // Name and two-digit index; plugins are called in ascending index order.
    let mut config = StubConfig::new("greeter", "50");
    if let Some(socket) = std::env::args().nth(1) {
        config.socket_path = socket.into();
    }
    let stub = Stub::new(config, Arc::new(Greeter))?;
    // Reconnect after 1, 2 and 5 s when the runtime goes away; give up after that.
    let mut backoff = ReconnectBackoff::new([1, 2, 5].map(Duration::from_secs).to_vec());
    stub.run(&mut backoff, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
