//! Why an issuance was refused: a reason (the metric label) and a message without secrets.

use super::steps::{step_message, IssueError};
use super::undo::Exposure;
use crate::actors::error::ActorError;
use crate::annotations::DbConfig;
use slog::{warn, Logger};

/// The reasons a pod's credentials are refused (label of `vdbi_admission_denied_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    MalformedReview,
    BadAnnotations,
    Internal,
    VaultUnavailable,
    VaultSealed,
    VaultPermissionDenied,
    VaultError,
    Deadline,
    RoleNotFound,
    ServiceAccountDenied,
    TokenRequest,
    Kubernetes,
    VaultNotFound,
    VaultRateLimited,
    DatabaseError,
    TooLarge,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MalformedReview => "malformed_review",
            RefusalReason::BadAnnotations => "bad_annotations",
            RefusalReason::Internal => "internal",
            RefusalReason::VaultUnavailable => "vault_unavailable",
            RefusalReason::VaultSealed => "vault_sealed",
            RefusalReason::VaultPermissionDenied => "vault_permission_denied",
            RefusalReason::VaultError => "vault_error",
            RefusalReason::Deadline => "deadline",
            RefusalReason::RoleNotFound => "role_not_found",
            RefusalReason::ServiceAccountDenied => "sa_denied",
            RefusalReason::TokenRequest => "token_request",
            RefusalReason::Kubernetes => "kubernetes",
            RefusalReason::VaultNotFound => "vault_not_found",
            RefusalReason::VaultRateLimited => "vault_rate_limited",
            RefusalReason::DatabaseError => "database_error",
            RefusalReason::TooLarge => "too_large",
        }
    }
}

/// A refusal: the reason and the message the user reads (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: RefusalReason, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
        }
    }

    /// A failed issuing step of dbConfig `db`, worded for the user: the dbConfig, its role, the
    /// step and the class of failure — never the raw text of Vault's or the apiserver's error,
    /// which can name the database's admin user, host and port (it goes to vdbi's log only).
    pub fn from_issue(db: &DbConfig, e: IssueError, log: &Logger) -> Refusal {
        let (step, e) = match e {
            IssueError::RoleNotFound(m) => return Refusal::new(RefusalReason::RoleNotFound, m),
            IssueError::ServiceAccountDenied(m) => {
                return Refusal::new(RefusalReason::ServiceAccountDenied, m)
            }
            IssueError::TokenRequestTimeout(m) => return Refusal::new(RefusalReason::Deadline, m),
            IssueError::TokenRequest(m) => {
                warn!(log, "TokenRequest failed"; "dbconfig" => &db.name, "role" => &db.role, "error" => &m);
                return Refusal::new(
                    RefusalReason::TokenRequest,
                    step_message(
                        db,
                        "TokenRequest for the pod's service account",
                        "failed (Kubernetes error; details in vdbi's log)",
                    ),
                );
            }
            IssueError::Session { step, error } => (step, error),
        };
        Refusal::from_call(db, &step, &e, log)
    }

    /// A failed Vault or Kubernetes call of dbConfig `db` while doing `step` (raw error logged).
    pub fn from_call(db: &DbConfig, step: &str, e: &ActorError, log: &Logger) -> Refusal {
        let (reason, what) = failure_class(e);
        warn!(log, "issuing step failed"; "dbconfig" => &db.name, "role" => &db.role,
            "step" => step, "class" => reason.as_str(), "error" => %e);
        Refusal::new(reason, step_message(db, step, what))
    }

    /// The message completed with what became of what the issuance created.
    pub fn with_exposure(mut self, exposure: Exposure) -> Refusal {
        self.message = format!("{}; {}", self.message, exposure.phrase());
        self
    }
}

/// The reason and the user-facing wording of a failed Vault/Kubernetes call.
fn failure_class(e: &ActorError) -> (RefusalReason, &'static str) {
    match e {
        ActorError::Deadline(_) => (RefusalReason::Deadline, "timed out"),
        ActorError::NoSession(_) => (
            RefusalReason::VaultUnavailable,
            "vdbi has no Vault session (Vault unreachable, sealed or refusing vdbi's login)",
        ),
        ActorError::Mailbox(_)
        | ActorError::Busy(_)
        | ActorError::NotReady(_)
        | ActorError::BrokenView { .. }
        | ActorError::CacheSave(_) => (RefusalReason::Internal, "internal error"),
        ActorError::Kube(_) => (RefusalReason::Kubernetes, "Kubernetes error"),
        ActorError::Vault(v) => match v.class() {
            "sealed" => (RefusalReason::VaultSealed, "Vault is sealed"),
            "transport" | "timeout" => (RefusalReason::VaultUnavailable, "Vault unreachable"),
            "permission_denied" => (
                RefusalReason::VaultPermissionDenied,
                "permission denied by Vault (check the role's policy)",
            ),
            "not_found" => (RefusalReason::VaultNotFound, "not found in Vault"),
            "rate_limited" => (
                RefusalReason::VaultRateLimited,
                "Vault is rate limiting requests",
            ),
            _ if v.status() == Some(500) => (
                RefusalReason::DatabaseError,
                "Vault could not create the credentials (database or plugin error)",
            ),
            _ => (RefusalReason::VaultError, "Vault refused the request"),
        },
    }
}
