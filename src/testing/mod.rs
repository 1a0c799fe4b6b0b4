//! Test support shared by unit tests, integration tests and the load-test harness.
//!
//! Nothing here is used by the daemon itself.

pub mod chart_rbac;
pub mod credentials;
pub mod exposition;
pub mod launch;
pub mod log_lines;
pub mod platform;
pub mod process;
pub mod roles;
pub mod vault;
pub mod webhook;
