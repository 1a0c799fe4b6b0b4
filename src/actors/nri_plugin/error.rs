//! The NRI plugin's errors: why a container was refused ([`Failure`], whose [`FailureReason`]
//! is the refusal metric's label) and why a node sweep failed ([`SweepError`]).

use crate::substitution::SubstitutionError;

/// Why a container was refused; [`FailureReason::as_str`] is the `reason` label of the NRI
/// refusal metric and of the refusal log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The credentials could not be fetched (apiserver, annotations, Vault, bookkeeping).
    FetchError,
    /// No env var named by the dbConfig annotations holds a placeholder in the pod spec.
    EmptyMapping,
    /// The pod's annotations exceed `maxDbConfigsPerPod` or `maxAnnotationBytes`.
    TooLarge,
    /// The container's placeholders are not among the pod's credentials.
    NoChange,
    /// A placeholder would be left in the container (env, or args the runtime cannot adjust).
    ResidualPlaceholder,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::FetchError => "fetch_error",
            FailureReason::EmptyMapping => "empty_mapping",
            FailureReason::TooLarge => "too_large",
            FailureReason::NoChange => "no_change",
            FailureReason::ResidualPlaceholder => "residual_placeholder",
        }
    }
}

impl From<&SubstitutionError> for FailureReason {
    fn from(e: &SubstitutionError) -> Self {
        match e {
            SubstitutionError::NoChange => FailureReason::NoChange,
            SubstitutionError::Residual { .. } => FailureReason::ResidualPlaceholder,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the metric reason and a message without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
}

impl Failure {
    pub(super) fn fetch(message: impl Into<String>) -> Failure {
        Failure {
            reason: FailureReason::FetchError,
            message: message.into(),
        }
    }
}

/// Why the node sweep (or the cache read Synchronize starts with) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("NODE_NAME is not set")]
    NoNodeName,
    #[error("credential cache unavailable: {0}")]
    CacheUnavailable(String),
    #[error("listing this node's pods timed out")]
    ListTimeout,
    #[error("listing this node's pods: {0}")]
    List(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_the_metric_labels() {
        let all = [
            (FailureReason::FetchError, "fetch_error"),
            (FailureReason::EmptyMapping, "empty_mapping"),
            (FailureReason::TooLarge, "too_large"),
            (FailureReason::NoChange, "no_change"),
            (FailureReason::ResidualPlaceholder, "residual_placeholder"),
        ];
        for (reason, label) in all {
            assert_eq!(reason.as_str(), label);
        }
        // The substitution's own reasons map onto the same labels.
        for e in [
            SubstitutionError::NoChange,
            SubstitutionError::Residual {
                keys: vec!["K".into()],
                in_args: false,
            },
        ] {
            assert_eq!(FailureReason::from(&e).as_str(), e.reason());
        }
    }
}
