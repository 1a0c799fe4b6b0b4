//! The revoker's sweep of reservations (`<vaultSecretPrefix>-reservations/<uuid>`, see
//! [`crate::actors::issuance::reservations`]): records without token nor lease, written by the
//! webhook in NRI mode and by projected-mode issuances (with the pod token's accessor) until
//! their entry is written, that vault-db-injector never lists.
//!
//! A reservation is deleted when
//! * the entry at the listed prefix holds a token (completed, but the delete of the reservation
//!   was cut short): the entry is the record now, nothing is revoked here; or
//! * its uuid has belonged to no pod of the index for `revokerUnseenGrace` (the pod was never
//!   created, or is gone before its first container started). No live pod read is needed: no
//!   admitted pod holds credentials of a reservation without entry (an admission is answered
//!   only once its entry is written), at worst a pod whose containers have not started yet
//!   loses a record. If it recorded a pod token's accessor (projected mode: the issuance died
//!   between its login and its entry), that token is revoked first — with the leases it
//!   created — by `revoke-accessor`, once `lookup-accessor` shows it was issued for the
//!   reservation's role, namespace and service account. Nothing else is ever revoked: no
//!   search by service account, whose other tokens may be live pods'.
//!
//! The time a reservation was first seen without its pod is kept in the sweep's `unseen` map
//! under [`MARK`]`<uuid>` (uuids never contain `/`, so the keys cannot collide).

use super::sweep::SweepEnv;
use super::SweepReport;
use crate::actors::error::ActorError;
use crate::actors::pod_index::LiveSnapshot;
use crate::actors::vault_session::{
    KvDeleteReservation, KvGet, KvGetReservation, LookupAccessor, RevokeAccessor,
};
use crate::bookkeeping::{Reservation, ReservationKind};
use crate::vault::TokenInfo;
use futures::StreamExt;
use slog::{debug, error, info, warn};
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
    report: &mut SweepReport,
) {
    let kind = ReservationKind::Uuid;
    let Some(listed) = env.list_reservations(kind).await else {
        return;
    };
    // A reservation first listed now existed at the latest now (see `attempts`).
    let now = Instant::now();
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
        if !completed {
            if let Err(e) = revoke_recorded_token(env, &uuid).await {
                warn!(env.log, "cannot revoke the token of a stale reservation; next sweep retries";
                    "uuid" => &uuid, "error" => %e);
                continue;
            }
        }
        let id = uuid.clone();
        match env
            .call(|deadline| KvDeleteReservation {
                kind,
                key: id,
                deadline,
            })
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

/// What the sweep does with the accessor a stale reservation recorded.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Vault no longer knows the token (expired, revoked): nothing to do.
    Gone,
    /// The token was issued by a login as the reservation's role, for its namespace and service
    /// account: vdbi's own pod token, revoke it.
    Revoke,
    /// Not vdbi's record for this uuid (why): never revoked.
    Refuse(&'static str),
}

/// Is `accessor` shaped as Vault's (letters, digits, `.`, `_`, `-`; at most 128)?
fn accessor_well_formed(accessor: &str) -> bool {
    !accessor.is_empty()
        && accessor.len() <= 128
        && accessor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Judges the token `info` that `lookup-accessor` found for the reservation `r`: a kubernetes
/// login's token carries the role and the service account in its metadata.
fn verdict(r: &Reservation, info: Option<&TokenInfo>) -> Verdict {
    let Some(info) = info else {
        return Verdict::Gone;
    };
    let meta = |k: &str| info.meta.get(k).map(String::as_str).unwrap_or_default();
    if r.vault_role.is_empty() || meta("role") != r.vault_role {
        return Verdict::Refuse("the token was not issued for the reservation's Vault role");
    }
    if meta("service_account_namespace") != r.entry.namespace
        || meta("service_account_name") != r.entry.service_account_name
    {
        return Verdict::Refuse("the token was not issued for the reservation's service account");
    }
    Verdict::Revoke
}

/// Revokes the pod token a stale reservation `uuid` recorded, if any (see the module's doc).
/// `Ok` when there is nothing (more) to revoke, so the reservation may go.
async fn revoke_recorded_token(env: &SweepEnv, uuid: &str) -> Result<(), ActorError> {
    let key = uuid.to_string();
    let kind = ReservationKind::Uuid;
    let Some(r) = env
        .call(|deadline| KvGetReservation {
            kind,
            key,
            deadline,
        })
        .await?
    else {
        return Ok(());
    };
    revoke_accessor_of(env, uuid, &r).await
}

/// Revokes the pod token whose accessor the record `r` (a stale reservation or fetch attempt,
/// `key`) holds, once `lookup-accessor` shows it was issued for the record's role, namespace and
/// service account. `Ok` when there is nothing (more) to revoke, so the record may go.
pub(super) async fn revoke_accessor_of(
    env: &SweepEnv,
    key: &str,
    r: &Reservation,
) -> Result<(), ActorError> {
    if r.token_accessor.is_empty() {
        return Ok(());
    }
    if !accessor_well_formed(&r.token_accessor) {
        env.metrics.revocation.reservation_accessor_refused();
        error!(env.log, "stale record holds a malformed accessor; not revoked"; "key" => key);
        return Ok(());
    }
    let accessor = r.token_accessor.clone();
    let info = env
        .call(|deadline| LookupAccessor { accessor, deadline })
        .await?;
    match verdict(r, info.as_ref()) {
        Verdict::Gone => {
            debug!(env.log, "token of a stale record already gone"; "key" => key);
            Ok(())
        }
        Verdict::Refuse(why) => {
            env.metrics.revocation.reservation_accessor_refused();
            error!(env.log, "stale record names a token vdbi did not record for it; not revoked";
                "key" => key, "reason" => why, "accessor" => &r.token_accessor);
            Ok(())
        }
        Verdict::Revoke => {
            let accessor = r.token_accessor.clone();
            env.call(|deadline| RevokeAccessor { accessor, deadline })
                .await?;
            env.metrics.revocation.reservation_token_revoked();
            info!(env.log, "pod token of an issuance that never wrote its entry revoked (with its leases)";
                "key" => key, "accessor" => &r.token_accessor, "namespace" => &r.entry.namespace);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookkeeping::BookkeepingEntry;

    fn reservation() -> Reservation {
        Reservation {
            entry: BookkeepingEntry::reservation("ns", "app", "p", ""),
            token_accessor: "AbC123.x_y-z".into(),
            vault_role: "app-rw".into(),
        }
    }

    fn token(role: &str, ns: &str, sa: &str) -> TokenInfo {
        serde_json::from_value(serde_json::json!({
            "accessor": "AbC123.x_y-z",
            "meta": {"role": role, "service_account_namespace": ns, "service_account_name": sa},
        }))
        .unwrap()
    }

    #[test]
    fn only_the_recorded_login_is_revoked() {
        let r = reservation();
        assert_eq!(verdict(&r, None), Verdict::Gone);
        assert_eq!(
            verdict(&r, Some(&token("app-rw", "ns", "app"))),
            Verdict::Revoke
        );
        for other in [
            token("app-ro", "ns", "app"),
            token("app-rw", "other", "app"),
            token("app-rw", "ns", "other"),
            serde_json::from_value(serde_json::json!({"accessor": "a", "meta": null})).unwrap(),
        ] {
            assert!(
                matches!(verdict(&r, Some(&other)), Verdict::Refuse(_)),
                "{other:?}"
            );
        }
        let no_role = Reservation {
            vault_role: String::new(),
            ..reservation()
        };
        assert!(matches!(
            verdict(&no_role, Some(&token("", "ns", "app"))),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn accessors_are_checked_before_use() {
        assert!(accessor_well_formed("hmac.AbC123_x-y"));
        for bad in ["", "a/b", "a b", "a\"", &"x".repeat(129)] {
            assert!(!accessor_well_formed(bad), "{bad:?}");
        }
    }
}
