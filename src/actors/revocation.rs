//! Revoking what one bookkeeping entry records, then the entry: shared by the Revoker (the pod
//! is gone) and the Renewer (the lease is unrecoverable: the entry is purged).
//!
//! The order: the token first (`revoke-orphan`, which also revokes the DB leases the token
//! created; then checked dead with `lookup-self`), then the DB lease if Vault still holds it,
//! then the KV entry. "Not found" is success at every step, so a double revocation is harmless;
//! on a failure the entry stays in KV, so it is found and retried.

use super::error::ActorError;
use super::vault_session::{
    KvDelete, LookupLease, LookupSelf, Paced, RevokeLease, RevokeOrphan, RevokeSelf, VaultSession,
};
use super::ActorHandle;
use crate::bookkeeping::BookkeepingEntry;
use crate::telemetry::metrics::Entry;
use crate::telemetry::Metrics;
use crate::vault::VaultToken;
use slog::{debug, warn, Logger};
use std::time::Duration;

/// Revokes the token and the lease `entry` records, then deletes the entry `uuid` and forgets
/// its per-uuid metric series. `dl` gives each call's deadline. Counts
/// `vdbi_revoke_token_count_*` and `vdbi_delete_data_count_*`.
pub async fn revoke_recorded(
    vault: &ActorHandle<VaultSession>,
    uuid: &str,
    entry: &BookkeepingEntry,
    dl: impl Fn() -> tokio::time::Instant,
    metrics: &Metrics,
    log: &Logger,
) -> Result<(), ActorError> {
    let ns = entry.namespace.as_str();
    if !entry.token_id.is_empty() {
        // Revoking the token revokes the leases it created (the DB user is dropped).
        let res = vault
            .send(Paced(RevokeOrphan {
                target: VaultToken::new(entry.token_id.clone()),
                deadline: dl(),
            }))
            .await?;
        let res = match res {
            Ok(()) => ensure_token_dead(vault, &entry.token_id, &dl, log).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => metrics.revocation.token_revoked(ns),
            Err(e) => {
                metrics.revocation.token_failed(Entry::new(uuid, ns));
                return Err(e);
            }
        }
    }
    if !entry.lease_id.is_empty() {
        revoke_lease_if_held(vault, &entry.lease_id, &dl, log).await?;
    }
    match vault
        .send(Paced(KvDelete {
            uuid: uuid.to_string(),
            deadline: dl(),
        }))
        .await?
    {
        Ok(()) => metrics.bookkeeping.deleted(ns),
        Err(e) => {
            metrics.bookkeeping.delete_failed(Entry::new(uuid, ns));
            return Err(e);
        }
    }
    metrics.forget_entry(Entry::new(uuid, ns));
    Ok(())
}

/// `revoke-orphan` answered success (or "not found"), but is the token really unusable? A
/// revoke-orphan cut short (its caller killed) can leave the token half revoked, and a second
/// call then short-circuits. The token itself tells (`lookup-self` with it; every token may):
/// if it still works, it revokes itself (`revoke-self`), and is checked again.
async fn ensure_token_dead(
    vault: &ActorHandle<VaultSession>,
    token_id: &str,
    dl: &impl Fn() -> tokio::time::Instant,
    log: &Logger,
) -> Result<(), ActorError> {
    let alive = || async {
        match vault
            .send(Paced(LookupSelf {
                token: VaultToken::new(token_id.to_string()),
                deadline: dl(),
            }))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.vault()
                    .is_some_and(|v| v.is_permission_denied() || v.is_not_found()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    };
    if !alive().await? {
        return Ok(());
    }
    warn!(
        log,
        "token still valid after revoke-orphan; revoking it with itself"
    );
    vault
        .send(Paced(RevokeSelf {
            token: VaultToken::new(token_id.to_string()),
            deadline: dl(),
        }))
        .await??;
    if alive().await? {
        return Err(ActorError::Vault(
            crate::vault::VaultError::InvalidResponse(
                "token still valid after revoke-orphan and revoke-self".into(),
            ),
        ));
    }
    Ok(())
}

/// After the token: is the lease still held? Vault revokes a token's leases asynchronously
/// (they are marked expired and revoked by its expiration manager, usually within milliseconds),
/// so the lease is looked up until it is gone. If it stays (its parent is another token, or its
/// revocation through the token failed), it is revoked explicitly. vault-db-injector's
/// documented policy grants neither `sys/leases/revoke` nor always `sys/leases/lookup`: without
/// them vdbi relies on the token revocation, as vault-db-injector did.
async fn revoke_lease_if_held(
    vault: &ActorHandle<VaultSession>,
    lease_id: &str,
    dl: impl Fn() -> tokio::time::Instant,
    log: &Logger,
) -> Result<(), ActorError> {
    let denied = |e: &ActorError| e.vault().is_some_and(|v| v.is_permission_denied());
    // Ok(true): still held; Ok(false): gone; Err: cannot tell.
    let held = || async {
        vault
            .send(Paced(LookupLease {
                lease_id: lease_id.to_string(),
                deadline: dl(),
            }))
            .await?
            .map(|info| info.is_some())
    };
    let wait_gone = |delays: &'static [u64]| async move {
        for ms in delays {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            if !held().await? {
                return Ok::<bool, ActorError>(true);
            }
        }
        Ok(false)
    };
    match held().await {
        Ok(false) => return Ok(()),
        Ok(true) => {
            if wait_gone(&[10, 20, 40, 80, 160]).await? {
                return Ok(());
            }
        }
        Err(e) if denied(&e) => {
            // Cannot verify: try the explicit revocation, else trust the token revocation.
            return match vault
                .send(Paced(RevokeLease {
                    lease_id: lease_id.to_string(),
                    deadline: dl(),
                }))
                .await?
            {
                Err(e) if denied(&e) => {
                    debug!(log, "cannot look up nor revoke the lease; relying on the token revocation"; "lease" => lease_id);
                    Ok(())
                }
                other => other,
            };
        }
        Err(e) => return Err(e),
    }
    match vault
        .send(Paced(RevokeLease {
            lease_id: lease_id.to_string(),
            deadline: dl(),
        }))
        .await?
    {
        Ok(()) => Ok(()),
        Err(e) if denied(&e) => {
            if wait_gone(&[250, 500, 1000, 2000]).await? {
                Ok(())
            } else {
                // E.g. a revoker killed during revoke-orphan leaves the token half revoked
                // (unusable, "not found" to revoke-orphan) and its lease alive: only an explicit
                // lease revocation ends it before its TTL.
                warn!(log, "lease still held after its token was revoked, and vdbi may not revoke leases: grant `update` on sys/leases/revoke; the entry is kept and retried until Vault drops the lease";
                    "lease" => lease_id);
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}
