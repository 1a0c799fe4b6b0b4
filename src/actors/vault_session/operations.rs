//! The Vault operations: one message per operation, handled by [`VaultSession`] with vdbi's
//! own token or none, in the foreground lane or, wrapped in [`Paced`], in the paced lane.

use super::{CurrentToken, TokenRejected, VaultSession};
use crate::actors::error::ActorError;
use crate::bookkeeping::{self, BookkeepingEntry, Reservation, ReservationKind};
use crate::k8s::ServiceAccountJwt;
use crate::telemetry::metrics::CallOutcome;
use crate::telemetry::Metrics;
use crate::vault::{
    DbCredentials, KubeAuthRole, LeaseInfo, LeaseTtl, LoginResult, TokenAuth, TokenInfo, TokenTtl,
    VaultClient, VaultError, VaultToken,
};
use actix::prelude::*;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

/// Runs the operation `M` in the paced lane: `vaultRateLimit`, behind the foreground (the
/// renewer's and the revoker's calls, as vault-db-injector's limiter paced them).
pub struct Paced<M>(pub M);

impl<M: Message> Message for Paced<M> {
    type Result = M::Result;
}

/// Runs `op` with vdbi's own token under `deadline`; if Vault refuses the token as invalid, logs
/// in again and retries once.
async fn with_own_token<T, F, Fut>(
    me: Addr<VaultSession>,
    client: VaultClient,
    metrics: Metrics,
    name: &'static str,
    deadline: Deadline,
    op: F,
) -> Result<T, ActorError>
where
    F: Fn(VaultClient, VaultToken) -> Fut,
    Fut: Future<Output = Result<T, VaultError>>,
{
    for attempt in 0..2 {
        let token = me.send(CurrentToken { deadline }).await??;
        match timed(&metrics, name, deadline, op(client.clone(), token.clone())).await {
            Err(ActorError::Vault(e)) if attempt == 0 && e.is_permission_denied() => {
                // Is our token still valid? A real policy denial keeps it valid.
                let valid = tokio::time::timeout_at(deadline, client.token_lookup_self(&token))
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(true);
                if valid {
                    return Err(ActorError::Vault(e));
                }
                me.do_send(TokenRejected { token });
            }
            other => return other,
        }
    }
    Err(ActorError::NoSession("token rejected twice".into()))
}

/// Bounds `fut` by `deadline` and records its latency.
async fn timed<T>(
    metrics: &Metrics,
    name: &'static str,
    deadline: Deadline,
    fut: impl Future<Output = Result<T, VaultError>>,
) -> Result<T, ActorError> {
    let started = Instant::now();
    let res = tokio::time::timeout_at(deadline, fut).await;
    let outcome = match &res {
        Ok(Ok(_)) => CallOutcome::Ok,
        Ok(Err(_)) => CallOutcome::Error,
        Err(_) => CallOutcome::Timeout,
    };
    metrics.vault.call(name, outcome, started.elapsed());
    match res {
        Ok(r) => r.map_err(ActorError::Vault),
        Err(_) => Err(ActorError::Deadline(name)),
    }
}

/// An operation's message: its fields and the deadline; it answers `Result<$out, ActorError>`.
/// `Paced<$name>` runs it in the paced lane.
macro_rules! op_message {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* } -> $out:ty) => {
        $(#[$doc])*
        pub struct $name { $(pub $field: $ty,)* pub deadline: Deadline }

        impl Message for $name {
            type Result = Result<$out, ActorError>;
        }

        impl Handler<Paced<$name>> for VaultSession {
            type Result = ResponseFuture<Result<$out, ActorError>>;
            fn handle(&mut self, msg: Paced<$name>, ctx: &mut Context<Self>) -> Self::Result {
                // Handlers take their client when called: lend them the paced one.
                let foreground = std::mem::replace(&mut self.client, self.paced.clone());
                let fut = <Self as Handler<$name>>::handle(self, msg.0, ctx);
                self.client = foreground;
                fut
            }
        }
    };
}

/// Declares operation messages and their handlers (`Name { fields } -> Output, |client, token,
/// msg, cfg| body;` each). These operations use vdbi's own token.
macro_rules! own_token_ops {
    ($($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $out:ty,
     |$client:ident, $token:ident, $msg:ident, $cfg:ident| $body:expr;)*) => {$(
        op_message!($(#[$doc])* $name { $($field: $ty),* } -> $out);

        impl Handler<$name> for VaultSession {
            type Result = ResponseFuture<Result<$out, ActorError>>;
            fn handle(&mut self, $msg: $name, ctx: &mut Context<Self>) -> Self::Result {
                let $cfg = self.cfg.clone();
                let deadline = $msg.deadline;
                let $msg = std::sync::Arc::new($msg);
                Box::pin(with_own_token(
                    ctx.address(),
                    self.client.clone(),
                    self.metrics.clone(),
                    stringify!($name),
                    deadline,
                    move |$client, $token| {
                        let $msg = $msg.clone();
                        #[allow(unused_variables)]
                        let $cfg = $cfg.clone();
                        async move { $body }
                    },
                ))
            }
        }
    )*};
}

/// Declares operations (as [`own_token_ops`]) that do not use vdbi's token.
macro_rules! plain_ops {
    ($($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $out:ty,
     |$client:ident, $msg:ident, $cfg:ident| $body:expr;)*) => {$(
        op_message!($(#[$doc])* $name { $($field: $ty),* } -> $out);

        impl Handler<$name> for VaultSession {
            type Result = ResponseFuture<Result<$out, ActorError>>;
            fn handle(&mut self, $msg: $name, _: &mut Context<Self>) -> Self::Result {
                let $client = self.client.clone();
                let $cfg = self.cfg.clone();
                let metrics = self.metrics.clone();
                let deadline = $msg.deadline;
                Box::pin(async move {
                    let _ = &$cfg;
                    timed(&metrics, stringify!($name), deadline, async move { $body }).await
                })
            }
        }
    )*};
}

plain_ops! {
    /// Login with a pod's JWT (projected mode) at vdbi's kubernetes auth mount.
    LoginKubernetes { role: String, jwt: ServiceAccountJwt } -> LoginResult,
    |client, msg, cfg| client.login_kubernetes(&cfg.auth_mount, &msg.role, msg.jwt.expose()).await;

    /// `auth/token/lookup-self` with the given token.
    LookupSelf { token: VaultToken } -> TokenInfo,
    |client, msg, cfg| client.token_lookup_self(&msg.token).await;

    /// `auth/token/renew-self` with the given token: a provisional orphan token renewed to its
    /// full TTL once recorded (every token may renew itself through the default policy).
    RenewSelf { token: VaultToken, increment: Duration } -> TokenTtl,
    |client, msg, cfg| client.token_renew_self(&msg.token, msg.increment).await;

    /// `auth/token/revoke-self` with the given token (a pod token). Not-found counts as done, and
    /// so does a refusal of a token that is gone (Vault answers 403 for a revoked token); a
    /// refusal of a token that still answers `lookup-self` (its policy lacks `revoke-self`) is
    /// an error, so that whatever records the token is kept.
    RevokeSelf { token: VaultToken } -> (),
    |client, msg, cfg| match client.token_revoke_self(&msg.token).await {
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) if e.is_permission_denied() => match client.token_lookup_self(&msg.token).await {
            Ok(_) => Err(e),
            Err(_) => Ok(()),
        },
        other => other,
    };

    /// Unauthenticated `sys/health`.
    ReadHealth {} -> crate::vault::Health,
    |client, msg, cfg| { let _ = msg; client.health().await };
}

own_token_ops! {
    /// `auth/token/create-orphan` (legacy mode) with vdbi's session.
    CreateOrphanToken { policies: Vec<String>, period: Duration, display_name: String } -> TokenAuth,
    |client, token, msg, cfg| client.create_orphan_token(&token, &msg.policies, msg.period, &msg.display_name).await;

    /// `auth/token/create-orphan` of a provisional (short, non-periodic, renewable) token.
    CreateProvisionalToken { spec: crate::vault::OrphanTokenSpec } -> TokenAuth,
    |client, token, msg, cfg| client.create_orphan_token_with(&token, &msg.spec).await;

    /// `<mount>/creds/<role>`, with `token` (a pod or orphan token) or vdbi's own.
    ReadDbCredentials { token: Option<VaultToken>, mount: String, role: String } -> DbCredentials,
    |client, own, msg, cfg| client.read_db_credentials(msg.token.as_ref().unwrap_or(&own), &msg.mount, &msg.role).await;

    /// Writes the bookkeeping entry `<vaultSecretName>/data/<vaultSecretPrefix>/<uuid>`.
    KvPut { uuid: String, entry: BookkeepingEntry } -> (),
    |client, token, msg, cfg| client.kv_put(&token, &cfg.kv_mount, &bookkeeping::entry_path(&cfg.kv_prefix, &msg.uuid), &msg.entry.to_map()).await;

    /// Reads a bookkeeping entry; `None` when absent.
    KvGet { uuid: String } -> Option<BookkeepingEntry>,
    |client, token, msg, cfg| client
        .kv_get(&token, &cfg.kv_mount, &bookkeeping::entry_path(&cfg.kv_prefix, &msg.uuid))
        .await
        .map(|o| o.map(|m| BookkeepingEntry::from_map(&m)));

    /// Lists the bookkeeping uuids under `vaultSecretPrefix`.
    KvList {} -> Vec<String>,
    |client, token, msg, cfg| { let _ = msg; client.kv_list(&token, &cfg.kv_mount, &cfg.kv_prefix).await };

    /// Deletes a bookkeeping entry (data, then metadata; absent counts as done).
    KvDelete { uuid: String } -> (),
    |client, token, msg, cfg| client.kv_delete(&token, &cfg.kv_mount, &bookkeeping::entry_path(&cfg.kv_prefix, &msg.uuid)).await;

    /// Deletes what is left of a bookkeeping entry whose data is gone (its metadata).
    KvDeleteMetadata { uuid: String } -> (),
    |client, token, msg, cfg| client.kv_delete_metadata(&token, &cfg.kv_mount, &bookkeeping::entry_path(&cfg.kv_prefix, &msg.uuid)).await;

    /// Writes a reservation: the webhook's `<vaultSecretName>/data/<vaultSecretPrefix>-reservations/<uuid>`
    /// or an NRI fetch attempt's `…-attempts/<uuid>.<attempt>` (records without token nor
    /// lease, outside vault-db-injector's listing).
    KvPutReservation { kind: ReservationKind, key: String, reservation: Reservation } -> (),
    |client, token, msg, cfg| client.kv_put(&token, &cfg.kv_mount, &msg.kind.path(&cfg.kv_prefix, &msg.key), &msg.reservation.to_map()).await;

    /// Lists the keys of one kind of reservation.
    KvListReservations { kind: ReservationKind } -> Vec<String>,
    |client, token, msg, cfg| client.kv_list(&token, &cfg.kv_mount, &msg.kind.folder(&cfg.kv_prefix)).await;

    /// Reads a reservation; `None` when absent (or its data deleted).
    KvGetReservation { kind: ReservationKind, key: String } -> Option<Reservation>,
    |client, token, msg, cfg| client
        .kv_get(&token, &cfg.kv_mount, &msg.kind.path(&cfg.kv_prefix, &msg.key))
        .await
        .map(|o| o.map(|m| Reservation::from_map(&m)));

    /// Deletes a reservation (data, then metadata; absent counts as done).
    KvDeleteReservation { kind: ReservationKind, key: String } -> (),
    |client, token, msg, cfg| client.kv_delete(&token, &cfg.kv_mount, &msg.kind.path(&cfg.kv_prefix, &msg.key)).await;

    /// `auth/token/lookup` of another token (the revoker: which accessor a recorded token has);
    /// `None` when Vault no longer knows it (`bad token`).
    LookupToken { target: VaultToken } -> Option<TokenInfo>,
    |client, token, msg, cfg| match client.token_lookup(&token, &msg.target).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.is_bad_token() => Ok(None),
        Err(e) => Err(e),
    };

    /// `auth/token/renew` of another token.
    RenewToken { target: VaultToken, increment: Duration } -> TokenTtl,
    |client, token, msg, cfg| client.token_renew(&token, &msg.target, msg.increment).await;

    /// `auth/token/revoke-orphan` of another token; not-found counts as done.
    RevokeOrphan { target: VaultToken } -> (),
    |client, token, msg, cfg| client.token_revoke_orphan(&token, &msg.target).await;

    /// `auth/token/lookup-accessor`: the properties of the token behind `accessor` (the token id
    /// itself is not returned); `None` when Vault no longer knows the accessor.
    LookupAccessor { accessor: String } -> Option<TokenInfo>,
    |client, token, msg, cfg| client.token_lookup_accessor(&token, &msg.accessor).await;

    /// `auth/token/revoke-accessor`: revokes the token behind `accessor` (and its leases); an
    /// accessor Vault no longer knows counts as done.
    RevokeAccessor { accessor: String } -> (),
    |client, token, msg, cfg| client.token_revoke_accessor(&token, &msg.accessor).await;

    /// `sys/leases/renew`.
    RenewLease { lease_id: String, increment: Duration } -> LeaseTtl,
    |client, token, msg, cfg| client.lease_renew(&token, &msg.lease_id, msg.increment).await;

    /// `sys/leases/revoke`; not-found counts as done.
    RevokeLease { lease_id: String } -> (),
    |client, token, msg, cfg| client.lease_revoke(&token, &msg.lease_id).await;

    /// `sys/leases/lookup`: the lease's times; `None` when Vault no longer holds it.
    LookupLease { lease_id: String } -> Option<LeaseInfo>,
    |client, token, msg, cfg| match client.lease_lookup(&token, &msg.lease_id).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.is_invalid_lease() => Ok(None),
        Err(e) => Err(e),
    };

    /// `LIST sys/leases/lookup/<prefix>` (orphan-lease discovery).
    ListLeases { prefix: String } -> Vec<String>,
    |client, token, msg, cfg| client.list_leases(&token, &msg.prefix).await;

    /// `auth/<vaultAuthPath>/role/<role>` (legacy role check).
    ReadAuthRole { role: String } -> KubeAuthRole,
    |client, token, msg, cfg| client.read_kubernetes_auth_role(&token, &cfg.auth_mount, &msg.role).await;
}
