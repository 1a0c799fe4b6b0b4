//! Vault/OpenBao client layer: the typed calls of compat §3, through vaultrs, over one pooled
//! HTTP client.
//!
//! * [`VaultClient`] is cheap to clone and holds **no token**: every operation takes the token
//!   to use. One `reqwest::Client` (one rustls/ring connection pool) is shared by the per-token
//!   vaultrs clients (rustify's `Client::new(base, reqwest::Client)` plus a per-token
//!   `EndpointMiddleware`), so vdbi's own session, the orphan tokens and the pod tokens use
//!   the same connections. Only the actor layer builds one (`actors::vault_session::connect`):
//!   the VaultSession actor is the only caller of Vault in the daemon.
//! * Pacing ([`limiter`]): the paced lane (renewer, revoker) goes through the `vaultRateLimit`
//!   token bucket and yields to the foreground lane (admissions, NRI, the session), which is
//!   never rate-limited client-side. A caller that gives up while waiting takes no slot.
//! * Secrets are [`VaultToken`] / [`Secret`]: their `Debug`/`Display` print `***`.
//! * Every failure is a [`VaultError`], classified (not found, permission denied, sealed,
//!   rate limited, transport, timeout, other API status, invalid response) with the predicates
//!   the renewer, revoker and metrics need (compat §3.5, §3.8, §3.9). The mapping from
//!   vaultrs's and rustify's errors ([`exec`]) drops every success body (rustify keeps it in
//!   its parse errors): errors never hold a token, a password or a success body.
//! * Every request is bounded by [`VaultSettings::request_timeout`]; callers bound whole
//!   operations with their own deadline (`tokio::time::timeout`): dropping the future aborts
//!   the request.
//!
//! What vaultrs 0.8 serves, and where vdbi steps around it:
//! * directly through vaultrs's typed calls: kubernetes login, `auth/token/create-orphan`,
//!   `auth/token/renew`, `renew-self`, `revoke-orphan`, `revoke-self`, KV v2 write, list and
//!   delete;
//! * vaultrs's request types, executed with the client's middleware and decoded by vdbi:
//!   database credentials (`GenerateCredentialsRequest` unwrapped into
//!   `vaultrs::api::EndpointResult`, because `database::role::creds` drops the lease, vaultrs
//!   issue #144), KV v2 read (`ReadSecretRequest`, to keep the version), token lookups
//!   (`LookupTokenResponse` has no `period` nor `type`) and the kubernetes auth role
//!   (`ReadKubernetesRoleResponse` has no `audience` nor namespace selector and refuses the
//!   scalar-for-list values compat §3.7 accepts);
//! * vdbi's own rustify endpoints ([`endpoints`]): `sys/leases/{renew,revoke,lookup}` and
//!   `LIST sys/leases/lookup/<prefix>` (vaultrs has no leases module), `sys/health` (vaultrs's
//!   `sys::health` treats the standby/sealed status codes as errors), and generic logical
//!   read/write/delete for set-up code.
//!
//! vaultrs and rustify log through `tracing` (`#[instrument(err)]`, request traces); vdbi's
//! bridge drops their records (see `telemetry::logging`): vdbi logs every Vault failure itself,
//! with the classified error.
//!
//! No logging happens here: callers log, with the error's `Display` and a token's accessor.

mod authz;
mod client;
mod endpoints;
mod error;
mod exec;
mod kv;
pub mod limiter;
mod ops;
mod secret;
mod types;

pub use authz::{bound_list_allows, can_get_role, glob_match, DenyCause};
pub use client::{VaultClient, VaultSettings};
pub use error::VaultError;
pub use limiter::{Lane, Pacer, RateLimiter};
pub use ops::OrphanTokenSpec;
pub use secret::{Secret, VaultToken};
pub use types::{
    DbCredentials, Health, KubeAuthRole, LeaseInfo, LeaseTtl, LoginResult, TokenAuth, TokenInfo,
    TokenTtl,
};

pub use crate::tls::install_crypto_provider;
