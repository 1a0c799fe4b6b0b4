//! Why an issuance was refused: a reason (the metric label) and a message without secrets.

use super::steps::{step_message, IssueError};
use super::undo::Exposure;
use crate::actors::error::ActorError;
use crate::annotations::DbConfig;

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

    /// A failed issuing step of dbConfig `db`, worded for the user.
    pub fn from_issue(db: &DbConfig, e: IssueError) -> Refusal {
        let (step, e) = match e {
            IssueError::RoleNotFound(m) => return Refusal::new(RefusalReason::RoleNotFound, m),
            IssueError::ServiceAccountDenied(m) => {
                return Refusal::new(RefusalReason::ServiceAccountDenied, m)
            }
            IssueError::TokenRequestTimeout(m) => return Refusal::new(RefusalReason::Deadline, m),
            IssueError::TokenRequest(m) => return Refusal::new(RefusalReason::TokenRequest, m),
            IssueError::Session { step, error } => (step, error),
        };
        Refusal::from_call(db, &step, &e)
    }

    /// A failed Vault or Kubernetes call of dbConfig `db` while doing `step`.
    pub fn from_call(db: &DbConfig, step: &str, e: &ActorError) -> Refusal {
        let (reason, what) = match e {
            ActorError::Deadline(_) => (RefusalReason::Deadline, "timed out".to_string()),
            ActorError::NoSession(m) => (
                RefusalReason::VaultUnavailable,
                format!("vdbi has no Vault session ({m})"),
            ),
            ActorError::Mailbox(m) => (RefusalReason::Internal, format!("internal error ({m})")),
            ActorError::Kube(k) => (RefusalReason::Kubernetes, k.to_string()),
            ActorError::Vault(v) => (
                match v.class() {
                    "sealed" => RefusalReason::VaultSealed,
                    "transport" | "timeout" => RefusalReason::VaultUnavailable,
                    "permission_denied" => RefusalReason::VaultPermissionDenied,
                    _ => RefusalReason::VaultError,
                },
                v.to_string(),
            ),
        };
        Refusal::new(reason, step_message(db, step, &what))
    }

    /// The message completed with what became of what the issuance created.
    pub fn with_exposure(mut self, exposure: Exposure) -> Refusal {
        self.message = format!("{}; {}", self.message, exposure.phrase());
        self
    }
}
