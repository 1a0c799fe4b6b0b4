//! vdbi: per-pod, short-lived database credentials from Vault/OpenBao for Kubernetes.
//!
//! Layers (see `docs/architecture.md`):
//! 1. pure domain: [`config`], [`annotations`], [`placeholder`], [`mutation`], [`substitution`],
//!    [`bookkeeping`], [`cache_file`], [`health`] (readiness state the actors write and the probes
//!    read), [`schedule`] (back-off, renewal and grace decisions)
//! 2. clients and protocols: [`vault`], [`k8s`], and the NRI protocol in the workspace crate `nri`
//! 3. actors: [`actors`]
//! 4. edges: [`http`], [`app`] and the `vdbi` binary.

pub mod actors;
pub mod annotations;
pub mod app;
pub mod bookkeeping;
pub mod cache_file;
pub mod config;
pub mod health;
pub mod http;
pub mod k8s;
pub mod mutation;
pub mod placeholder;
pub mod schedule;
pub mod substitution;
pub mod telemetry;
pub mod tls;
pub mod vault;
