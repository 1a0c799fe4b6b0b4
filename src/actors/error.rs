//! The actor layer's error: what a message to an actor can fail with.

use crate::cache_file::CacheFileError;
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
    /// A run of this duty is already in progress (a renewal cycle, an orphan-discovery pass).
    #[error("{0} is already running")]
    Busy(&'static str),
    /// What the duty needs is not there yet (the pod index before its first listing).
    #[error("{0} is not ready")]
    NotReady(&'static str),
    /// The pod view says no labelled pod lives while bookkeeping entries exist: acting on it
    /// could revoke every credential, so the duty refuses.
    #[error("zero live labelled pods but {entries} bookkeeping entries: refusing to act on a broken view")]
    BrokenView { entries: usize },
    /// The NRI credential cache could not be written to its file.
    #[error("cannot persist the credential cache: {0}")]
    CacheSave(#[from] CacheSaveError),
}

/// Why the NRI credential cache could not be saved; cloned to every waiter of the save.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CacheSaveError {
    #[error("{0}")]
    File(std::sync::Arc<CacheFileError>),
    #[error("the save task panicked")]
    Panicked,
    #[error("the cache actor stopped")]
    Stopped,
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
