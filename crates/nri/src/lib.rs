//! NRI (Node Resource Interface) plugins in Rust.
//!
//! containerd and CRI-O call NRI plugins over one unix socket that carries two multiplexed ttrpc
//! connections ([`mux`]). This crate is the plugin side of that protocol: a [`Stub`] connects,
//! registers, serves the runtime's requests through the [`NriHandler`] trait the plugin logic
//! implements, and reconnects with a [`ReconnectBackoff`] when the runtime goes away. The handler
//! sees plain Rust types ([`PodSandboxInfo`], [`ContainerInfo`]) and answers with an
//! [`EnvAdjustment`]; the generated protobuf types stay inside the crate.
//!
//! With the `test-peer` feature, `runtime_peer` is the runtime side of the same wire protocol,
//! holding a plugin to the rules a real containerd enforces, for tests without a runtime.
//!
//! Logging goes through the [`log`] facade (targets `nri::*`); structured fields are `log`
//! key-values. Environment values can hold secrets: the crate never logs them, and the `Debug`
//! output of its types shows environment keys only.
//!
//! See the crate's `README.md` and `examples/greeter.rs` for a minimal plugin.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod error;
mod go_read_rule;
mod handler;
pub mod mux;
mod plugin_service;
mod proto;
#[cfg(feature = "test-peer")]
pub mod runtime_peer;
mod stub;
mod types;

#[cfg(test)]
mod fuzz;

/// Re-exported so that handler implementations use the same `#[async_trait]` as the trait.
pub use async_trait::async_trait;
pub use backoff::ReconnectBackoff;
pub use error::NriError;
pub use handler::NriHandler;
pub use plugin_service::DEFAULT_REQUEST_TIMEOUT;
pub use stub::{Session, SessionEnd, Stub, StubConfig, DEFAULT_SOCKET_PATH};
/// Status codes of [`NriError::Status`] (gRPC codes, as ttrpc carries them).
pub use ttrpc::Code;
pub use types::{ContainerInfo, EnvAdjustment, EventMask, PodSandboxInfo, RuntimeInfo};
