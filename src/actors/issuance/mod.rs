//! Issuance: one pod's database credentials, for the Admission actor (webhook) and the NRI
//! plugin alike.
//!
//! * [`steps`]: the Vault and Kubernetes steps of one dbConfig (legacy: role check,
//!   provisional orphan token, confirmation; projected: TokenRequest, login, period check;
//!   credentials; bookkeeping entry);
//! * [`undo`]: the undo log every step records into, and the undo of a failed issuance (its own
//!   patience, the paced lane, truthful [`Exposure`]);
//! * [`refusal`]: refusal reasons as an enum and the wording of a failed step;
//! * [`coalesce`]: concurrent requests for the same pod share one issuance;
//! * [`fair_queue`]: issuance slots shared fairly (round-robin, bounded per pod) between the
//!   admissions in progress.
//! * [`reservations`]: records without token nor lease yet, kept outside the Go-listed prefix
//!   (NRI mode's uuid; projected mode's pod-token accessor until the entry is written).
//!
//! Crash consistency (docs/reliability.md, "Issuance"): a legacy orphan token is created
//! provisional — not periodic, its first TTL the issuance's remaining time plus a margin,
//! metadata naming the issuance — and renewed to `tokenTTL` only once the bookkeeping entry
//! records it. A process killed at any instant before that leaves a token that expires by
//! itself, and Vault revokes its DB leases with it; one killed after leaves an entry, which the
//! revoker's sweep revokes once its pod is known not to exist. A projected pod token (the pod's
//! own login: vdbi cannot shorten or tag it) has its accessor written to a reservation as soon as
//! the login answers, before credentials are read with it; the sweep revokes that accessor if no
//! entry followed. Only a login whose answer never reached the reservation stays unrecorded: it
//! holds no lease and ends at its period (docs/reliability.md).

pub mod coalesce;
pub mod fair_queue;
pub mod refusal;
pub mod reservations;
pub mod steps;
pub mod undo;

pub use coalesce::Coalescer;
pub use fair_queue::FairQueue;
pub use refusal::{Refusal, RefusalReason};
pub use steps::{
    provisional_ttl, step_message, IssueError, Issuer, RoleCache, Subject, ORPHAN_DISPLAY_NAME,
    PROVISIONAL_MARGIN, TOKEN_META_UUID,
};
pub use undo::{undo, Created, Exposure, NewToken, Restore, UndoLog, UNDO_PATIENCE};

/// The per-pod bounds (`maxDbConfigsPerPod`, `maxAnnotationBytes`) that the webhook and the NRI
/// plugin both check on a pod's annotations before any Vault call.
pub fn pod_limits(config: &crate::config::Config) -> crate::annotations::Limits {
    crate::annotations::Limits {
        max_db_configs: config.max_db_configs_per_pod,
        max_bytes: config.max_annotation_bytes,
    }
}
