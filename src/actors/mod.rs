//! The actors: each owns its state and lifecycle and talks only through typed messages.
//! One file per actor, with its messages.

pub mod credential_cache;
pub mod supervision;

pub use supervision::{supervise, ActorHandle, Backoff, RestartGuard};
