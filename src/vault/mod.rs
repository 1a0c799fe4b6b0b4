//! Vault/OpenBao client layer: the typed calls of compat §3 over one pooled HTTP client.
//!
//! * [`VaultClient`] is cheap to clone and holds **no token**: every operation takes the token
//!   to use, so one client (one rustls/ring connection pool, one client-side
//!   [`RateLimiter`]) serves vdbi's own session, the orphan tokens and the pod tokens alike.
//! * Secrets are [`VaultToken`] / [`Secret`]: their `Debug`/`Display` print `***`.
//! * Every failure is a [`VaultError`], classified (not found, permission denied, sealed,
//!   rate limited, transport, timeout, other API status, invalid response) with the predicates
//!   the renewer, revoker and metrics need (compat §3.5, §3.8, §3.9). Errors never hold a
//!   token, a password or a success body.
//! * Every request is bounded by [`VaultSettings::request_timeout`]; callers bound whole
//!   operations with their own deadline (`tokio::time::timeout`): dropping the future aborts
//!   the request.
//!
//! The requests are built directly with reqwest rather than through vaultrs: vaultrs 0.8 drops
//! the lease of database credentials (its issue #144), has no `sys/leases`, treats `sys/health`
//! standby/sealed statuses as errors, cannot route its calls through a shared rate limiter, and
//! its parse errors carry the response body (which can hold a password). The paths, verbs and
//! bodies are those of the Vault HTTP API (OpenBao is API-compatible with Vault 1.14).
//!
//! No logging happens here: callers log, with the error's `Display` and a token's accessor.

mod authz;
mod client;
mod error;
mod limiter;
mod ops;
mod secret;
mod types;

pub use authz::{bound_list_allows, can_get_role, glob_match, DenyCause};
pub use client::{VaultClient, VaultSettings};
pub use error::VaultError;
pub use limiter::RateLimiter;
pub use ops::OrphanTokenSpec;
pub use secret::{Secret, VaultToken};
pub use types::{
    DbCredentials, Health, KubeAuthRole, LeaseInfo, LeaseTtl, LoginResult, TokenAuth, TokenInfo,
    TokenTtl,
};

pub use crate::tls::install_crypto_provider;
