//! The actors: each owns its state and lifecycle and talks only through typed messages.
//! One file per actor, with its messages.

pub mod admission;
pub mod credential_cache;
pub mod error;
pub mod issuance;
pub mod leadership;
pub mod missed_events;
pub mod nri_plugin;
pub mod pod_check;
pub mod pod_index;
pub mod renewer;
pub mod revocation;
pub mod revoker;
pub mod supervision;
pub mod vault_session;

pub use supervision::{
    supervise, supervise_task, ActorHandle, Backoff, RestartGuard, Subscriber, TaskHandle,
};
