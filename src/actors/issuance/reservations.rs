//! Reservations: what vdbi records for a uuid before its bookkeeping entry holds a real token and
//! lease — the webhook's record in NRI mode, and in projected mode the accessor of the pod token
//! just logged in with ([`crate::bookkeeping::Reservation`]). They live at `<vaultSecretPrefix>-reservations/<uuid>`
//! ([`crate::bookkeeping::reservation_prefix`]), a sibling of the prefix vault-db-injector's
//! renewer and revoker list, so every entry those list holds a real `TokenId` and `LeaseId`.
//!
//! Life of a reservation: written by the webhook at admission (projected: right after the login;
//! deleted again if the admission fails); *completed* (deleted, here) by the webhook once the
//! entry is written (projected, not NRI) or by the NRI plugin once the entries at the listed
//! prefix are written; otherwise deleted by the revoker's sweep once its pod is gone for the
//! grace — after revoking the recorded accessor — or once a completed entry exists (a
//! completion cut short).
//!
//! In projected NRI mode each fetch attempt of the plugin also records the accessor of its own
//! login, under its own key (`<vaultSecretPrefix>-attempts/<uuid>.<attempt>`,
//! [`crate::bookkeeping::ReservationKind::Attempt`]): written right after the login, completed
//! (deleted) once the entry is written, deleted with the token when the fetch fails. A plugin
//! killed in between leaves the record, and the revoker's sweep revokes that accessor, unless
//! the uuid's entry holds that very token, once no fetch can still be running
//! ([`crate::schedule::FETCH_ATTEMPT_MAX_AGE`] after its first listing), or after the grace when
//! its pod is confirmed gone (see `actors/revoker/attempts.rs`).

use crate::actors::vault_session::{KvDeleteReservation, VaultSession};
use crate::actors::ActorHandle;
use crate::bookkeeping::ReservationKind;
use slog::{debug, Logger};
use std::time::Duration;
use tokio::time::Instant as Deadline;

/// Deadline of each completion call.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the reservations `keys` (of `kind`) whose entries are written: deletes them, in
/// the background (best effort: a reservation left behind is deleted by the revoker's sweep,
/// which sees the completed entry).
pub fn complete(
    vault: &ActorHandle<VaultSession>,
    kind: ReservationKind,
    keys: Vec<String>,
    log: &Logger,
) {
    if keys.is_empty() {
        return;
    }
    let (vault, log) = (vault.clone(), log.clone());
    tokio::spawn(async move {
        for key in keys {
            let deadline = Deadline::now() + COMPLETE_TIMEOUT;
            let done = vault
                .call(KvDeleteReservation {
                    kind,
                    key: key.clone(),
                    deadline,
                })
                .await;
            if let Err(e) = done {
                debug!(log, "reservation not deleted; the revoker's sweep will"; "key" => &key, "error" => %e);
            }
        }
    });
}
