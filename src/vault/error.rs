//! The Vault layer's error type and its classification helpers (compat §3.5, §3.8, §3.9).
//!
//! An error carries the HTTP status and Vault's `errors` strings, never a request or a success
//! body, so it never contains a token or a password.

use std::fmt;

/// Every failure of a Vault call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// HTTP 404 (a missing KV entry, role, mount…).
    #[error("vault: not found (404){}", Errs(.errors))]
    NotFound { errors: Vec<String> },
    /// HTTP 403: the token lacks a capability, is invalid/expired, or a login was refused.
    #[error("vault: permission denied (403){}", Errs(.errors))]
    PermissionDenied { errors: Vec<String> },
    /// HTTP 503 "Vault is sealed".
    #[error("vault: Vault is sealed (503)")]
    Sealed,
    /// HTTP 429 (a Vault rate-limit quota).
    #[error("vault: rate limited (429){}", Errs(.errors))]
    RateLimited { errors: Vec<String> },
    /// Could not talk to Vault: connection refused/reset, DNS, TLS handshake or certificate.
    #[error("vault: transport error: {0}")]
    Transport(String),
    /// The client's request timeout elapsed (connect or whole request).
    #[error("vault: request timed out")]
    Timeout,
    /// Any other non-success HTTP status, with Vault's `errors`.
    #[error("vault: HTTP {status}{}", Errs(.errors))]
    Api { status: u16, errors: Vec<String> },
    /// A success status with a body that is not what the endpoint returns. The message names the
    /// endpoint and the missing/invalid field, never a value from the body.
    #[error("vault: invalid response: {0}")]
    InvalidResponse(String),
    /// The client could not be built (bad address, unreadable CA bundle…).
    #[error("vault: client configuration: {0}")]
    Config(String),
    /// The request was refused before sending (e.g. a `..` path segment).
    #[error("vault: invalid request: {0}")]
    InvalidRequest(String),
}

/// Formats Vault's `errors` list as `: a; b`.
struct Errs<'a>(&'a Vec<String>);

impl fmt::Display for Errs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(": ")?;
        f.write_str(&self.0.join("; "))
    }
}

impl VaultError {
    /// Builds the error for a non-success HTTP status.
    pub fn from_status(status: u16, errors: Vec<String>) -> VaultError {
        match status {
            404 => VaultError::NotFound { errors },
            403 => VaultError::PermissionDenied { errors },
            429 => VaultError::RateLimited { errors },
            503 if errors.iter().any(|e| e.to_lowercase().contains("sealed")) => VaultError::Sealed,
            _ => VaultError::Api { status, errors },
        }
    }

    /// A short, stable name of the class: `not_found`, `permission_denied`, `sealed`,
    /// `rate_limited`, `transport`, `timeout`, `api`, `invalid_response`, `config`,
    /// `invalid_request`.
    pub fn class(&self) -> &'static str {
        match self {
            VaultError::NotFound { .. } => "not_found",
            VaultError::PermissionDenied { .. } => "permission_denied",
            VaultError::Sealed => "sealed",
            VaultError::RateLimited { .. } => "rate_limited",
            VaultError::Transport(_) => "transport",
            VaultError::Timeout => "timeout",
            VaultError::Api { .. } => "api",
            VaultError::InvalidResponse(_) => "invalid_response",
            VaultError::Config(_) => "config",
            VaultError::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The HTTP status, when Vault answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::NotFound { .. } => Some(404),
            VaultError::PermissionDenied { .. } => Some(403),
            VaultError::Sealed => Some(503),
            VaultError::RateLimited { .. } => Some(429),
            VaultError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Vault's `errors` strings (empty for errors Vault did not send).
    pub fn errors(&self) -> &[String] {
        match self {
            VaultError::NotFound { errors }
            | VaultError::PermissionDenied { errors }
            | VaultError::RateLimited { errors }
            | VaultError::Api { errors, .. } => errors,
            _ => &[],
        }
    }

    /// Lower-cased text the substring rules below match on: Vault's errors, or the message.
    fn text(&self) -> String {
        let errors = self.errors();
        if errors.is_empty() {
            self.to_string().to_lowercase()
        } else {
            errors.join("; ").to_lowercase()
        }
    }

    fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, VaultError::NotFound { .. })
    }

    pub fn is_permission_denied(&self) -> bool {
        matches!(self, VaultError::PermissionDenied { .. })
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, VaultError::Sealed)
    }

    /// Worth retrying later with the same request: transport errors, timeouts, 429, sealed and
    /// 5xx gateway/availability statuses. Never 4xx answers (they would fail again).
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Transport(_)
            | VaultError::Timeout
            | VaultError::RateLimited { .. }
            | VaultError::Sealed => true,
            VaultError::Api { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// `auth/token/renew` or `revoke-orphan` of a token Vault no longer knows: `token not found`
    /// (renew, compat §3.5) or `token to revoke not found` (revoke-orphan, compat §3.8). Both
    /// count as success for the renewer and the revoker.
    pub fn is_token_not_found(&self) -> bool {
        self.contains("token not found") || self.contains("token to revoke not found")
    }

    /// `lookup-accessor` / `revoke-accessor` of an accessor Vault does not know (its token
    /// expired or was revoked): HTTP 400 `invalid accessor`, or a 404.
    pub fn is_invalid_accessor(&self) -> bool {
        self.is_not_found()
            || (matches!(self, VaultError::Api { status: 400, .. })
                && self.contains("invalid accessor"))
    }

    /// `auth/token/lookup` of a token Vault does not know (403 `bad token`; not a permission
    /// refusal, which says `permission denied`).
    pub fn is_bad_token(&self) -> bool {
        self.is_permission_denied() && self.contains("bad token")
    }

    /// `sys/leases/renew` of a lease Vault no longer knows (`lease not found`, compat §3.5);
    /// counts as success for the renewer.
    pub fn is_lease_not_found(&self) -> bool {
        self.contains("lease not found")
    }

    /// `sys/leases/lookup` of a lease Vault no longer holds (400 `invalid lease`, or 404).
    pub fn is_invalid_lease(&self) -> bool {
        self.is_not_found()
            || (matches!(self, VaultError::Api { status: 400, .. })
                && self.contains("invalid lease"))
    }

    /// Compat §3.5: HTTP 400 whose body contains `invalid lease` or `could not find role`. The
    /// renewer then revokes the token, deletes the KV entry and forgets the uuid.
    pub fn is_unrecoverable_lease(&self) -> bool {
        matches!(self, VaultError::Api { status: 400, .. })
            && (self.contains("invalid lease") || self.contains("could not find role"))
    }

    /// The `reason` label of `vdbi_vault_login_errors_total` (compat §3.9): the lower-cased
    /// message is matched in this order:
    /// `audience` → `audience_mismatch`; `service account name not authorized` or
    /// `bound_service_account` → `sa_not_bound`; `role` + `could not be found` → `role_not_found`;
    /// `sealed` → `vault_sealed`; `permission denied` → `permission_denied`; else `other`.
    ///
    /// One addition: the kubernetes auth method (Vault and OpenBao) words a missing role
    /// `invalid role name "<role>"`, which the Go rules never matched; it is `role_not_found` too.
    pub fn login_failure_reason(&self) -> &'static str {
        let m = self.text();
        if m.contains("audience") {
            "audience_mismatch"
        } else if m.contains("service account name not authorized")
            || m.contains("bound_service_account")
        {
            "sa_not_bound"
        } else if (m.contains("role") && m.contains("could not be found"))
            || m.contains("invalid role name")
        {
            "role_not_found"
        } else if m.contains("sealed") || self.is_sealed() {
            "vault_sealed"
        } else if m.contains("permission denied") {
            "permission_denied"
        } else {
            "other"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a real OpenBao 2.x error body the way the client does.
    fn from_body(status: u16, body: &str) -> VaultError {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let errors = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        VaultError::from_status(status, errors)
    }

    // Bodies captured from OpenBao 2.7 (the platform's server and a sealed dev server).
    const INVALID_ROLE: &str = r#"{"errors":["invalid role name \"nope-xyz\""]}"#;
    const BAD_JWT: &str = r#"{"errors":["permission denied"]}"#;
    const SA_NOT_BOUND: &str = r#"{"errors":["service account name not authorized"]}"#;
    const AUDIENCE: &str = r#"{"errors":["invalid audience (aud) claim: audience claim does not match any expected audience"]}"#;
    const NS_NOT_BOUND: &str = r#"{"errors":["namespace not authorized"]}"#;
    const SEALED: &str = r#"{"errors":["Vault is sealed"]}"#;
    const REVOKE_ORPHAN_GONE: &str = r#"{"errors":["token to revoke not found"]}"#;
    const RENEW_GONE: &str = r#"{"errors":["token not found"]}"#;
    const LEASE_RENEW_GONE: &str = r#"{"errors":["lease not found"]}"#;
    const LEASE_LOOKUP_GONE: &str = r#"{"errors":["invalid lease"]}"#;
    const UNKNOWN_DB_ROLE: &str = r#"{"errors":["unknown role: nope"]}"#;
    const EMPTY: &str = r#"{"errors":[]}"#;

    #[test]
    fn classes_from_real_bodies() {
        assert!(from_body(404, EMPTY).is_not_found());
        assert!(from_body(403, BAD_JWT).is_permission_denied());
        assert_eq!(from_body(503, SEALED), VaultError::Sealed);
        assert!(from_body(503, SEALED).is_retryable());
        assert!(matches!(
            from_body(400, INVALID_ROLE),
            VaultError::Api { status: 400, .. }
        ));
        assert!(!from_body(400, INVALID_ROLE).is_retryable());
        assert!(matches!(
            from_body(
                503,
                r#"{"errors":["local node not active but active cluster node not found"]}"#
            ),
            VaultError::Api { status: 503, .. }
        ));
        assert!(matches!(
            from_body(429, EMPTY),
            VaultError::RateLimited { .. }
        ));
        assert_eq!(from_body(400, UNKNOWN_DB_ROLE).class(), "api");
    }

    #[test]
    fn login_failure_reasons() {
        assert_eq!(
            from_body(403, AUDIENCE).login_failure_reason(),
            "audience_mismatch"
        );
        assert_eq!(
            from_body(403, SA_NOT_BOUND).login_failure_reason(),
            "sa_not_bound"
        );
        assert_eq!(
            from_body(400, INVALID_ROLE).login_failure_reason(),
            "role_not_found"
        );
        assert_eq!(
            from_body(400, r#"{"errors":["role \"app\" could not be found"]}"#)
                .login_failure_reason(),
            "role_not_found"
        );
        assert_eq!(
            from_body(503, SEALED).login_failure_reason(),
            "vault_sealed"
        );
        assert_eq!(VaultError::Sealed.login_failure_reason(), "vault_sealed");
        assert_eq!(
            from_body(403, BAD_JWT).login_failure_reason(),
            "permission_denied"
        );
        // Go's rules: a namespace mismatch is "other".
        assert_eq!(from_body(403, NS_NOT_BOUND).login_failure_reason(), "other");
        assert_eq!(VaultError::Timeout.login_failure_reason(), "other");
        assert_eq!(
            VaultError::Transport("connection refused".into()).login_failure_reason(),
            "other"
        );
        // order: audience wins over permission denied
        assert_eq!(
            VaultError::PermissionDenied {
                errors: vec!["permission denied".into(), "bad audience".into()]
            }
            .login_failure_reason(),
            "audience_mismatch"
        );
    }

    #[test]
    fn renewer_and_revoker_predicates() {
        assert!(from_body(400, REVOKE_ORPHAN_GONE).is_token_not_found());
        assert!(from_body(400, RENEW_GONE).is_token_not_found());
        assert!(!from_body(403, BAD_JWT).is_token_not_found());
        assert!(from_body(400, LEASE_RENEW_GONE).is_lease_not_found());
        assert!(!from_body(400, LEASE_RENEW_GONE).is_unrecoverable_lease());
        assert!(from_body(400, LEASE_LOOKUP_GONE).is_unrecoverable_lease());
        assert!(from_body(
            400,
            r#"{"errors":["could not find role with name: app-rw"]}"#
        )
        .is_unrecoverable_lease());
        // only a 400 is unrecoverable
        assert!(!from_body(500, LEASE_LOOKUP_GONE).is_unrecoverable_lease());
        // `auth/token/lookup` of an unknown token, not a refusal
        assert!(from_body(403, r#"{"errors":["bad token"]}"#).is_bad_token());
        assert!(!from_body(403, r#"{"errors":["permission denied"]}"#).is_bad_token());
    }

    #[test]
    fn display() {
        assert_eq!(
            from_body(403, SA_NOT_BOUND).to_string(),
            "vault: permission denied (403): service account name not authorized"
        );
        assert_eq!(from_body(404, EMPTY).to_string(), "vault: not found (404)");
        assert_eq!(
            VaultError::Api {
                status: 400,
                errors: vec!["a".into(), "b".into()]
            }
            .to_string(),
            "vault: HTTP 400: a; b"
        );
        assert_eq!(VaultError::Sealed.status(), Some(503));
        assert_eq!(VaultError::Timeout.status(), None);
    }
}
