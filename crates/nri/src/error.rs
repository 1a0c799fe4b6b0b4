//! The error type of the NRI protocol layer.

use std::path::PathBuf;
use std::time::Duration;

use ttrpc::Code;

/// Everything that can go wrong in the NRI protocol layer, on the plugin side and on the
/// runtime-side test peer alike.
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    /// The NRI socket could not be reached (missing, refused, permissions).
    #[error("connect to NRI socket {path}: {source}")]
    Connect {
        /// Socket path that was dialled.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Socket-level I/O failure other than connecting.
    #[error("NRI socket I/O: {0}")]
    Io(#[from] std::io::Error),

    /// The plugin name or index would be rejected by the runtime.
    #[error("invalid plugin identity: {0}")]
    InvalidIdentity(String),

    /// The peer broke the wire protocol (bad frame, oversized message, unexpected reply).
    #[error("NRI protocol violation: {0}")]
    Protocol(String),

    /// The peer answered a request with a non-OK ttrpc status.
    #[error("NRI request {method} failed: {code:?}: {message}")]
    Status {
        /// Method that was called, e.g. `RegisterPlugin`.
        method: &'static str,
        /// Status code returned by the peer.
        code: Code,
        /// Status message returned by the peer.
        message: String,
    },

    /// A ttrpc request failed without a status from the peer (closed connection, encoding).
    #[error("NRI request {method} failed: {message}")]
    Transport {
        /// Method that was called.
        method: &'static str,
        /// What ttrpc reported.
        message: String,
    },

    /// A request or a handler ran out of time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The deadline that elapsed.
        after: Duration,
    },

    /// The connection ended; the caller should reconnect.
    #[error("NRI connection closed: {0}")]
    Closed(String),

    /// The plugin handler refused the request. The message is sent to the runtime, which fails
    /// the container creation with it; it must not contain secrets.
    #[error("{0}")]
    Handler(String),

    /// The reconnect schedule is used up.
    #[error("NRI reconnect attempts exhausted after {attempts} tries")]
    ReconnectExhausted {
        /// Number of connection attempts made since the last successful registration.
        attempts: u32,
    },
}

impl NriError {
    /// A handler refusal with the given message (sent to the runtime; no secrets).
    pub fn handler(message: impl Into<String>) -> Self {
        Self::Handler(message.into())
    }

    /// Converts a ttrpc client error into this layer's error for `method`.
    pub(crate) fn from_ttrpc(method: &'static str, err: ttrpc::Error) -> Self {
        match err {
            ttrpc::Error::RpcStatus(status) => Self::Status {
                method,
                code: status.code(),
                message: status.message().to_owned(),
            },
            other => Self::Transport {
                method,
                message: other.to_string(),
            },
        }
    }

    /// The ttrpc status sent back to the runtime when a plugin method fails.
    ///
    /// Any error status makes containerd refuse the container (fail closed); UNAVAILABLE says
    /// "try again later", which matches what the kubelet does with it (retry with backoff).
    pub(crate) fn to_status(&self) -> ttrpc::Error {
        let code = match self {
            Self::Status { code, .. } => *code,
            Self::InvalidIdentity(_) | Self::Protocol(_) => Code::INVALID_ARGUMENT,
            _ => Code::UNAVAILABLE,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, self.to_string()))
    }
}
