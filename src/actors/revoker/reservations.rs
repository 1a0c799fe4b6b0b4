//! The revoker's sweep of reservations (`<vaultSecretPrefix>-reservations/<uuid>`, see
//! [`crate::actors::issuance::reservations`]): entries without token nor lease, written by the
//! webhook in NRI mode, that vault-db-injector never lists.
//!
//! A reservation is deleted when
//! * the entry at the listed prefix holds a token (the NRI plugin completed it, but its delete
//!   of the reservation was cut short), or
//! * its uuid has belonged to no pod of the index for `revokerUnseenGrace` (the pod was never
//!   created, or is gone before its first container started): it holds no credential, so no
//!   live pod read is needed before deleting it — at worst a pod whose containers have not
//!   started yet loses a record that names no Vault object.
//!
//! The time a reservation was first seen without its pod is kept in the sweep's `unseen` map
//! under [`MARK`]`<uuid>` (uuids never contain `/`, so the keys cannot collide).

use super::sweep::SweepEnv;
use super::SweepReport;
use crate::actors::pod_index::LiveSnapshot;
use crate::actors::vault_session::{KvDeleteReservation, KvGet, KvListReservations};
use crate::bookkeeping::entry_keys;
use futures::StreamExt;
use slog::{debug, info, warn};
use std::collections::HashMap;
use std::time::Instant;

/// Prefix of the `unseen` map's keys for reservations.
pub(super) const MARK: &str = "reservation/";

/// One pass over the reservations; updates `still_unseen` and the report's counts (a deleted
/// reservation counts as a candidate, never as a revocation).
pub(super) async fn sweep(
    env: &SweepEnv,
    snapshot: &LiveSnapshot,
    unseen: &HashMap<String, Instant>,
    still_unseen: &mut HashMap<String, Instant>,
    now: Instant,
    report: &mut SweepReport,
) {
    let listed = match env.call(|deadline| KvListReservations { deadline }).await {
        Ok(l) => entry_keys(l),
        Err(e) => {
            warn!(env.log, "cannot list reservations; skipped this sweep"; "error" => %e);
            return;
        }
    };
    let checks = futures::stream::iter(listed)
        .map(|uuid| async move {
            let id = uuid.clone();
            let entry = env.call(|deadline| KvGet { uuid: id, deadline }).await;
            (uuid, entry)
        })
        .buffer_unordered(env.cfg.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    for (uuid, entry) in checks {
        let completed = match entry {
            Ok(e) => e.is_some_and(|e| !e.token_id.is_empty()),
            Err(e) => {
                warn!(env.log, "sweep cannot read the entry of a reservation"; "uuid" => &uuid, "error" => %e);
                continue;
            }
        };
        let key = format!("{MARK}{uuid}");
        let due = if completed {
            true
        } else if snapshot.is_live(&uuid) {
            false
        } else {
            let first = unseen.get(&key).copied().unwrap_or(now);
            still_unseen.insert(key.clone(), first);
            env.cfg.unseen_grace_over(first, now) && !env.in_flight.contains(&uuid)
        };
        if !due {
            continue;
        }
        report.candidates += 1;
        let id = uuid.clone();
        match env
            .call(|deadline| KvDeleteReservation { uuid: id, deadline })
            .await
        {
            Ok(()) => {
                still_unseen.remove(&key);
                if completed {
                    debug!(env.log, "completed reservation deleted"; "uuid" => &uuid);
                } else {
                    info!(env.log, "reservation of a pod gone (or never created) deleted"; "uuid" => &uuid);
                }
            }
            Err(e) => {
                warn!(env.log, "cannot delete a reservation; next sweep retries"; "uuid" => &uuid, "error" => %e)
            }
        }
    }
}
