//! The HTTP edges: the admission webhook (HTTPS), the health probes and the metrics endpoint.

pub mod client_auth;
pub mod probes;
pub mod tls;
pub mod vault_readiness;
pub mod webhook;
