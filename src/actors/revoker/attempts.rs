//! The revoker's sweep of NRI fetch attempts (`<vaultSecretPrefix>-attempts/<uuid>.<attempt>`,
//! projected mode; see [`crate::actors::issuance::reservations`]): each records the accessor of
//! the pod token one fetch of the NRI plugin logged in with, from its login until its entry is
//! written. A record still there once no fetch can be running is the trace of a plugin killed
//! mid-fetch (or of a completion cut short).
//!
//! An attempt record is *settled* once it has been listed for
//! [`crate::schedule::FETCH_ATTEMPT_MAX_AGE`] (longer than any fetch can run), or already after
//! the unseen grace when its pod is gone — not in the index, and not found by a live read of the
//! pod the record names:
//! * its uuid's entry holds the very token it recorded (same accessor, by `auth/token/lookup`):
//!   the fetch completed, the record alone is deleted;
//! * otherwise that token is revoked (with its leases) by accessor, after the checks every
//!   reservation's accessor passes (its metadata names the record's role, namespace and service
//!   account), and the record is deleted. A live pod keeps the credentials its entry records;
//!   the dead attempt's set does not outlive the settling.
//!
//! Ages count from the first listing *by this revoker* (a new leader starts over), never from
//! before the record was listed.
//!
//! The time a record was first listed is kept in the sweep's `unseen` map under
//! [`MARK`]`<key>`.

use super::reservations::revoke_accessor_of;
use super::sweep::SweepEnv;
use super::SweepReport;
use crate::actors::error::ActorError;
use crate::actors::pod_check::{pod_state, PodState};
use crate::actors::pod_index::LiveSnapshot;
use crate::actors::vault_session::{KvDeleteReservation, KvGet, KvGetReservation, LookupToken};
use crate::bookkeeping::{attempt_uuid, ReservationKind};
use crate::vault::VaultToken;
use futures::StreamExt;
use slog::{debug, error, info, warn};
use std::collections::HashMap;
use std::time::Instant;

/// Prefix of the `unseen` map's keys for attempt records.
pub(super) const MARK: &str = "attempt/";

const KIND: ReservationKind = ReservationKind::Attempt;

/// What became of a settled attempt record.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// The entry holds the attempt's token: the record alone was deleted.
    Completed,
    /// The attempt's token was revoked (or was gone), then the record deleted.
    Revoked,
    /// Only metadata was left, or the key is not an attempt's: deleted, nothing revoked.
    Hollow,
    /// Not yet: the pod, missing from the index, still exists (a live read found it).
    Kept,
}

impl Settled {
    fn as_str(&self) -> &'static str {
        match self {
            Settled::Completed => "completed",
            Settled::Revoked => "revoked",
            Settled::Hollow => "hollow",
            Settled::Kept => "kept",
        }
    }
}

/// One pass over the attempt records; updates `still_unseen` and the report's counts (a
/// settled record counts as a candidate, never as a revocation).
pub(super) async fn sweep(
    env: &SweepEnv,
    snapshot: &LiveSnapshot,
    unseen: &HashMap<String, Instant>,
    still_unseen: &mut HashMap<String, Instant>,
    report: &mut SweepReport,
) {
    let Some(listed) = env.list_reservations(KIND).await else {
        return;
    };
    // A record first listed now existed at the latest now: its age is never overstated, even
    // when the earlier passes of the sweep took long.
    let listed_at = Instant::now();
    let (grace, period) = (env.cfg.unseen_grace, env.cfg.sweep_every());
    let (if_gone, anyway) = (
        crate::schedule::attempt_settle_after(grace, false),
        crate::schedule::attempt_settle_after(grace, true),
    );
    let mut due = Vec::new();
    for key in listed {
        let mark = format!("{MARK}{key}");
        let first = unseen.get(&mark).copied().unwrap_or(listed_at);
        still_unseen.insert(mark, first);
        let seen_for = listed_at.saturating_duration_since(first);
        if crate::schedule::unseen_grace_over(seen_for, anyway, period) {
            due.push((key, false));
        } else if crate::schedule::unseen_grace_over(seen_for, if_gone, period) {
            // Earlier only for a pod that is gone: not in the index, and confirmed by a live
            // read (a pod outside the index's view may still be fetching).
            let indexed = attempt_uuid(&key).is_some_and(|uuid| snapshot.is_live(uuid));
            if !indexed {
                due.push((key, true));
            }
        }
    }
    let settled = futures::stream::iter(due)
        .map(|(key, check_pod)| async move {
            let res = settle(env, &key, check_pod).await;
            (key, res)
        })
        .buffer_unordered(env.cfg.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    for (key, res) in settled {
        match res {
            Ok(Settled::Kept) => {}
            Ok(how) => {
                report.candidates += 1;
                env.metrics.revocation.attempt_settled(how.as_str());
                still_unseen.remove(&format!("{MARK}{key}"));
                debug!(env.log, "NRI fetch attempt settled"; "key" => &key, "outcome" => how.as_str());
            }
            Err(e) => {
                env.metrics.revocation.attempt_settled("failed");
                warn!(env.log, "cannot settle an NRI fetch attempt; next sweep retries"; "key" => &key, "error" => %e)
            }
        }
    }
}

/// Settles one attempt record (see the module's doc); with `check_pod`, only once a live read
/// shows its pod gone (or finished).
async fn settle(env: &SweepEnv, key: &str, check_pod: bool) -> Result<Settled, ActorError> {
    let id = key.to_string();
    let record = env
        .call(|deadline| KvGetReservation {
            kind: KIND,
            key: id,
            deadline,
        })
        .await?;
    let outcome = match (record, attempt_uuid(key)) {
        (None, _) => Settled::Hollow,
        (Some(_), None) => {
            // vdbi never writes such a key: not its record, so nothing is revoked for it.
            env.metrics.revocation.reservation_accessor_refused();
            error!(env.log, "a record under the NRI attempts prefix is not an attempt's; deleted, nothing revoked"; "key" => key);
            Settled::Hollow
        }
        (Some(record), Some(uuid)) => {
            if check_pod {
                let state = pod_state(&env.kube, &record.entry, uuid, &env.metrics, &env.log).await;
                if !matches!(state, PodState::Gone | PodState::Finished) {
                    return Ok(Settled::Kept);
                }
            }
            if entry_holds(env, uuid, &record.token_accessor).await? {
                Settled::Completed
            } else {
                revoke_accessor_of(env, key, &record).await?;
                info!(env.log, "NRI fetch attempt that never recorded its token settled"; "key" => key);
                Settled::Revoked
            }
        }
    };
    let id = key.to_string();
    env.call(|deadline| KvDeleteReservation {
        kind: KIND,
        key: id,
        deadline,
    })
    .await?;
    Ok(outcome)
}

/// Whether the bookkeeping entry `uuid` holds the token behind `accessor`.
async fn entry_holds(env: &SweepEnv, uuid: &str, accessor: &str) -> Result<bool, ActorError> {
    if accessor.is_empty() {
        return Ok(false);
    }
    let id = uuid.to_string();
    let Some(entry) = env.call(|deadline| KvGet { uuid: id, deadline }).await? else {
        return Ok(false);
    };
    if entry.token_id.is_empty() {
        return Ok(false);
    }
    let target = VaultToken::new(entry.token_id);
    let info = env
        .call(|deadline| LookupToken { target, deadline })
        .await?;
    Ok(info.is_some_and(|i| i.accessor == accessor))
}
