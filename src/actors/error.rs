//! The actor layer's error: what a message to an actor can fail with.

use crate::k8s::KubeError;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Kube(#[from] KubeError),
    #[error("deadline exceeded during {0}")]
    Deadline(&'static str),
    #[error("vdbi's Vault session is not established: {0}")]
    NoSession(String),
    #[error("actor unavailable: {0}")]
    Mailbox(#[from] actix::MailboxError),
}

impl ActorError {
    /// The Vault error inside, if any.
    pub fn vault(&self) -> Option<&VaultError> {
        match self {
            ActorError::Vault(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        match self {
            ActorError::Vault(e) => e.is_not_found(),
            ActorError::Kube(e) => e.is_not_found(),
            _ => false,
        }
    }
}
