//! The NRI (Node Resource Interface) protocol, spoken directly over ttrpc.
//!
//! containerd and CRI-O call NRI plugins over one unix socket that carries two multiplexed ttrpc
//! connections ([`mux`]). This module holds the plugin side ([`Stub`], [`Session`], the
//! [`NriHandler`] trait the plugin logic implements, [`ReconnectBackoff`]) and a runtime-side
//! peer ([`runtime_peer`]) that drives a plugin over the same wire protocol in tests.
//!
//! Nothing here knows about Vault, Kubernetes or actors: the handler sees plain domain types
//! ([`PodSandboxInfo`], [`ContainerInfo`]) and answers with an [`EnvAdjustment`].

mod backoff;
mod error;
mod go_read_rule;
mod handler;
pub mod mux;
mod plugin_service;
mod proto;
pub mod runtime_peer;
mod stub;
mod types;

pub use backoff::{ReconnectBackoff, DEFAULT_RECONNECT_SCHEDULE};
pub use error::NriError;
pub use handler::NriHandler;
pub use plugin_service::DEFAULT_REQUEST_TIMEOUT;
pub use stub::{Session, SessionEnd, Stub, StubConfig, DEFAULT_SOCKET_PATH};
pub use types::{ContainerInfo, EnvAdjustment, EventMask, PodSandboxInfo, RuntimeInfo};
