//! Test support of vdbi, shared by the integration tests (`tests/`) and the load-test harness
//! (`loadtest/`): the local platform (OpenBao, PostgreSQL, kube-apiserver, containerd node), vdbi
//! started in-process or as a process with the chart's RBAC and the published Vault policies,
//! webhook registration, forged admission requests, KV reads and leftover counts.
//!
//! A dev-only crate: vdbi lists it under `[dev-dependencies]` only, so nothing here is compiled
//! into the daemon library or binary (`tests/testkit_boundary.rs` proves it).

pub mod admitting;
pub mod chart_install;
pub mod chart_rbac;
pub mod credentials;
mod daemon;
mod env_file;
pub mod exposition;
pub mod forged;
pub mod kubelet;
pub mod launch;
pub mod load;
pub mod log_lines;
pub mod node;
pub mod nri_mode;
pub mod nri_runtime;
pub mod platform;
pub mod process;
pub mod review;
pub mod roles;
pub mod vault;
pub mod webhook;

pub use daemon::*;

/// The vdbi repository (the chart, `deploy/`, `platform/` and the platform's state files).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
