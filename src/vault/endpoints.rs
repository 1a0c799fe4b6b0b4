//! The Vault endpoints vaultrs 0.8 does not declare, declared here the way vaultrs declares
//! its own (rustify `Endpoint`s) and run through the same client and middleware:
//! `sys/leases/{renew,revoke,lookup}`, `LIST sys/leases/lookup/<prefix>`, `sys/health` (whose
//! status codes carry the state), and generic logical read/write/delete (set-up code).

use rustify_derive::Endpoint;
use serde::Serialize;

/// `PUT sys/leases/renew {lease_id, increment}`.
#[derive(Debug, Endpoint, Serialize)]
#[endpoint(path = "sys/leases/renew", method = "PUT")]
pub(crate) struct RenewLeaseRequest {
    pub lease_id: String,
    pub increment: u64,
}

/// `PUT sys/leases/revoke {lease_id}`.
#[derive(Debug, Endpoint, Serialize)]
#[endpoint(path = "sys/leases/revoke", method = "PUT")]
pub(crate) struct RevokeLeaseRequest {
    pub lease_id: String,
}

/// `PUT sys/leases/lookup {lease_id}`.
#[derive(Debug, Endpoint, Serialize)]
#[endpoint(path = "sys/leases/lookup", method = "PUT")]
pub(crate) struct LookupLeaseRequest {
    pub lease_id: String,
}

/// `LIST sys/leases/lookup/<prefix>` (needs `sudo`).
#[derive(Debug, Endpoint)]
#[endpoint(path = "sys/leases/lookup/{self.prefix}", method = "LIST")]
pub(crate) struct ListLeasesRequest {
    #[endpoint(skip)]
    pub prefix: String,
}

/// Unauthenticated `GET sys/health`.
#[derive(Debug, Default, Endpoint)]
#[endpoint(path = "sys/health", method = "GET")]
pub(crate) struct HealthRequest {}

/// `GET <path>`.
#[derive(Debug, Endpoint)]
#[endpoint(path = "{self.path}", method = "GET")]
pub(crate) struct LogicalReadRequest {
    #[endpoint(skip)]
    pub path: String,
}

/// `POST <path>` with a raw JSON body.
#[derive(Debug, Endpoint)]
#[endpoint(path = "{self.path}", method = "POST")]
pub(crate) struct LogicalWriteRequest {
    #[endpoint(skip)]
    pub path: String,
    #[endpoint(raw)]
    pub body: Vec<u8>,
}

/// `DELETE <path>`.
#[derive(Debug, Endpoint)]
#[endpoint(path = "{self.path}", method = "DELETE")]
pub(crate) struct LogicalDeleteRequest {
    #[endpoint(skip)]
    pub path: String,
}
