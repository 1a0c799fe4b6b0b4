//! VaultSession actor: the one place that holds vdbi's own Vault login.
//!
//! It logs in with kubernetes auth (vdbi's ServiceAccount JWT, re-read from disk at every login
//! because kubelet rotates it), renews itself before expiry, logs in again when renewal fails or
//! when Vault says the token is gone (revoking the old one, so nothing leaks), and revokes itself
//! on shutdown. Every Vault operation vdbi performs is a typed message handled here; operations
//! that use vdbi's own token wait for the login (bounded by the caller's deadline). I/O runs off
//! the actor's mailbox, so operations proceed concurrently; one pooled HTTP client serves them
//! all (see [`crate::vault`]).
//!
//! Budgets: an operation sent as is runs in the foreground lane (admissions, NRI fetches and
//! the cleanup of a failed admission), which is never rate-limited client-side. Wrapped in
//! [`Paced`] (the renewer and the revoker), it runs in the paced lane: `vaultRateLimit`, and
//! it yields to the foreground while Vault is busy ([`crate::vault::limiter`]). A caller's
//! deadline bounds its wait for a slot too: an operation whose deadline passes while it waits
//! leaves the queue without taking one.
//!
//! A failed login is retried with backoff (0.5 s doubling to 30 s); operations arriving meanwhile
//! wait for that retry (up to their deadline) and never start logins of their own. A renewal
//! capped by the role's max TTL (less than 10 s granted) triggers a fresh login.
//!
//! This file holds the session itself (login, renewal, vdbi's own token); `operations.rs` the
//! operation messages and their handlers.

mod operations;

pub use operations::*;

use super::error::ActorError;
use super::supervision::{spawn_detached, RestartGuard};
use crate::health::HealthState;
use crate::k8s;
use crate::telemetry::Metrics;
use crate::vault::{Lane, LoginResult, VaultClient, VaultError, VaultSettings, VaultToken};
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant as Deadline;

pub const HEALTH_CHECK: &str = "vault-session";

/// A self-renewal granting less than this (because the role's max TTL caps it) triggers a new
/// login instead of renewing a token that is about to expire.
const MIN_USEFUL_TTL: Duration = Duration::from_secs(10);

/// How vdbi logs in and where it keeps its bookkeeping.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub auth_mount: String,
    pub role: String,
    pub jwt_path: PathBuf,
    pub kv_mount: String,
    pub kv_prefix: String,
    /// Increment asked for at each self-renewal.
    pub renew_increment: Duration,
    /// Upper bound between self-renewals (vault-db-injector: 600 s).
    pub max_renew_interval: Duration,
}

/// Builds the Vault client the session (and only the session) calls Vault with: one
/// connection pool and one [`crate::vault::Pacer`] for every token.
pub fn connect(settings: VaultSettings) -> Result<VaultClient, VaultError> {
    VaultClient::new(settings)
}

pub struct VaultSession {
    _guard: RestartGuard,
    /// Foreground lane: admissions, NRI fetches, the session's own calls (never rate-limited).
    client: VaultClient,
    /// Paced lane (the same pool): [`Paced`] operations of the renewer and the revoker.
    paced: VaultClient,
    cfg: SessionConfig,
    token: Option<VaultToken>,
    /// Accessor, login time and TTL of the current token (for [`SessionInfo`]).
    info: Option<SessionDetails>,
    logging_in: bool,
    login_failures: u32,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<VaultToken, ActorError>>>,
    last_error: String,
    renew_timer: Option<SpawnHandle>,
    /// The next login attempt after a failure (backoff); callers wait for it rather than
    /// starting logins of their own.
    retry_timer: Option<SpawnHandle>,
    stopped: bool,
    metrics: Metrics,
    health: HealthState,
    log: Logger,
}

impl VaultSession {
    pub fn new(
        guard: RestartGuard,
        client: VaultClient,
        cfg: SessionConfig,
        metrics: Metrics,
        health: HealthState,
        log: Logger,
    ) -> VaultSession {
        VaultSession {
            _guard: guard,
            paced: client.in_lane(Lane::Paced),
            client: client.in_lane(Lane::Foreground),
            cfg,
            token: None,
            info: None,
            logging_in: false,
            login_failures: 0,
            waiters: Vec::new(),
            last_error: "not logged in yet".into(),
            renew_timer: None,
            retry_timer: None,
            stopped: false,
            metrics,
            health,
            log,
        }
    }

    fn login(&mut self, ctx: &mut Context<Self>) {
        if self.logging_in || self.stopped {
            return;
        }
        self.logging_in = true;
        let client = self.client.clone();
        let cfg = self.cfg.clone();
        let fut = async move {
            let jwt = k8s::read_own_jwt(&cfg.jwt_path).map_err(|e| e.to_string())?;
            client
                .login_kubernetes(&cfg.auth_mount, &cfg.role, jwt.expose())
                .await
                .map_err(|e| (e.login_failure_reason(), e.to_string()))
                .map_err(|(reason, e)| format!("{e} ({reason})"))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.logging_in = false;
            if act.stopped {
                // Shut down while the login was in flight: the new token must not outlive us.
                if let Ok(login) = res {
                    act.revoke_in_background(login.token);
                }
                return;
            }
            match res {
                Ok(login) => act.logged_in(login, ctx),
                Err(e) => {
                    act.login_failures += 1;
                    act.metrics.vault.login_failed();
                    act.last_error = e.clone();
                    act.health.set(HEALTH_CHECK, false, format!("login failed: {e}"));
                    let delay = Duration::from_millis(500)
                        .saturating_mul(2u32.saturating_pow(act.login_failures.min(6)))
                        .min(Duration::from_secs(30));
                    warn!(act.log, "Vault login failed; retrying"; "error" => &e, "retry_in_ms" => delay.as_millis() as u64);
                    if let Some(h) = act.retry_timer.take() {
                        ctx.cancel_future(h);
                    }
                    act.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
                        act.retry_timer = None;
                        act.login(ctx)
                    }));
                }
            }
        }));
    }

    fn logged_in(&mut self, login: LoginResult, ctx: &mut Context<Self>) {
        self.login_failures = 0;
        if let Some(h) = self.retry_timer.take() {
            ctx.cancel_future(h);
        }
        self.metrics.vault.logged_in();
        self.health.set(HEALTH_CHECK, true, "logged in");
        info!(self.log, "Vault session established"; "role" => &self.cfg.role,
            "ttl_s" => login.ttl.as_secs(), "accessor" => &login.accessor);
        self.info = Some(SessionDetails {
            accessor: login.accessor.clone(),
            ttl: login.ttl,
            logged_in_at: std::time::SystemTime::now(),
            renewed_at: None,
        });
        if let Some(old) = self.token.replace(login.token.clone()) {
            // Never leak the previous login.
            self.revoke_in_background(old);
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(login.token.clone()));
        }
        self.schedule_renew(login.ttl, ctx);
    }

    fn schedule_renew(&mut self, ttl: Duration, ctx: &mut Context<Self>) {
        if let Some(h) = self.renew_timer.take() {
            ctx.cancel_future(h);
        }
        // A token without TTL (0) never expires: renew at the maximal interval.
        let half = if ttl.is_zero() {
            self.cfg.max_renew_interval
        } else {
            ttl / 2
        };
        let every = half
            .min(self.cfg.max_renew_interval)
            .max(Duration::from_secs(1));
        self.renew_timer = Some(ctx.run_later(every, |act, ctx| act.renew_self(ctx)));
    }

    fn renew_self(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let client = self.client.clone();
        let inc = self.cfg.renew_increment;
        ctx.spawn(
            async move { client.token_renew_self(&token, inc).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(ttl) if ttl.ttl < inc && ttl.ttl < MIN_USEFUL_TTL => {
                        // Capped by the role's max TTL: the token is about to expire for good.
                        // Log in again now rather than let operations meet a dead token.
                        info!(act.log, "Vault session token reaches its max TTL; logging in again";
                            "ttl_s" => ttl.ttl.as_secs());
                        act.relogin(ctx);
                    }
                    Ok(ttl) => {
                        if let Some(i) = act.info.as_mut() {
                            i.ttl = ttl.ttl;
                            i.renewed_at = Some(std::time::SystemTime::now());
                        }
                        act.schedule_renew(ttl.ttl, ctx)
                    }
                    Err(e) => {
                        warn!(act.log, "Vault session renewal failed; logging in again"; "error" => %e);
                        act.relogin(ctx);
                    }
                }),
        );
    }

    /// Revokes a login vdbi no longer uses, best effort: a failure leaves it to its TTL.
    fn revoke_in_background(&self, token: VaultToken) {
        let client = self.client.clone();
        spawn_detached(
            "session_token_revoke",
            &self.log,
            &self.metrics,
            async move {
                let _ = client.token_revoke_self(&token).await;
            },
            || {},
        );
    }

    /// Drops the current token (revoking it best-effort) and logs in again.
    fn relogin(&mut self, ctx: &mut Context<Self>) {
        if let Some(old) = self.token.take() {
            self.revoke_in_background(old);
        }
        self.metrics.vault.session_lost();
        self.health.set(HEALTH_CHECK, false, "logging in again");
        self.login(ctx);
    }
}

/// An instance that dies (panic, stop) before shutdown must not leak its login: the supervisor's
/// fresh instance logs in again, so this one's token is revoked on the way out.
impl Drop for VaultSession {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        rt.spawn(async move {
            let _ = client.token_revoke_self(&token).await;
        });
    }
}

impl Actor for VaultSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Allow many concurrent operations to queue without blocking senders for long.
        ctx.set_mailbox_capacity(1024);
        self.health.set(HEALTH_CHECK, false, "logging in");
        self.login(ctx);
    }
}

// ---------------------------------------------------------------------------------------------
// Session management messages

/// vdbi's own token (waits for the login, up to the deadline).
#[derive(Message)]
#[rtype(result = "Result<VaultToken, ActorError>")]
pub struct CurrentToken {
    pub deadline: Deadline,
}

/// The token `token` was refused by Vault as invalid: log in again (once per token).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TokenRejected {
    pub token: VaultToken,
}

/// Shutdown: revoke vdbi's own token and stop logging in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RevokeOwnToken;

/// What an operator may know about the current session (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDetails {
    /// Accessor of vdbi's current token (`auth/token/lookup-accessor`, `revoke-accessor`).
    pub accessor: String,
    /// TTL granted by the last login or self-renewal.
    pub ttl: Duration,
    pub logged_in_at: std::time::SystemTime,
    /// Time of the last successful self-renewal, if any since the login.
    pub renewed_at: Option<std::time::SystemTime>,
}

/// The current session's details; `None` when not logged in.
#[derive(Message)]
#[rtype(result = "Option<SessionDetails>")]
pub struct SessionInfo;

impl Handler<SessionInfo> for VaultSession {
    type Result = Option<SessionDetails>;
    fn handle(&mut self, _: SessionInfo, _: &mut Context<Self>) -> Option<SessionDetails> {
        self.token.as_ref().and(self.info.clone())
    }
}

/// Is the session established?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsLoggedIn;

impl Handler<CurrentToken> for VaultSession {
    type Result = ResponseFuture<Result<VaultToken, ActorError>>;
    fn handle(&mut self, msg: CurrentToken, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(t) = &self.token {
            let t = t.clone();
            return Box::pin(async move { Ok(t) });
        }
        if self.stopped {
            return Box::pin(async { Err(ActorError::NoSession("shutting down".into())) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(tx);
        if self.retry_timer.is_none() {
            // Otherwise a retry is scheduled: wait for it (never bypass the backoff).
            self.login(ctx);
        }
        let last = self.last_error.clone();
        Box::pin(async move {
            match tokio::time::timeout_at(msg.deadline, rx).await {
                Ok(Ok(Ok(t))) => Ok(t),
                Ok(Ok(Err(e))) => Err(e),
                Ok(Err(_)) => Err(ActorError::NoSession("session restarted".into())),
                Err(_) => Err(ActorError::NoSession(last)),
            }
        })
    }
}

impl Handler<TokenRejected> for VaultSession {
    type Result = ();
    fn handle(&mut self, msg: TokenRejected, ctx: &mut Context<Self>) {
        if self.token.as_ref() == Some(&msg.token) {
            warn!(self.log, "Vault rejected vdbi's token; logging in again");
            self.token = None;
            self.metrics.vault.session_lost();
            self.health
                .set(HEALTH_CHECK, false, "token rejected; logging in again");
            self.login(ctx);
        }
    }
}

impl Handler<RevokeOwnToken> for VaultSession {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: RevokeOwnToken, ctx: &mut Context<Self>) -> Self::Result {
        self.stopped = true;
        for h in [self.retry_timer.take(), self.renew_timer.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(h);
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(ActorError::NoSession("shutting down".into())));
        }
        self.health
            .set(HEALTH_CHECK, false, "shut down: token revoked");
        self.metrics.vault.session_lost();
        let token = self.token.take();
        let client = self.client.clone();
        let log = self.log.clone();
        Box::pin(async move {
            if let Some(t) = token {
                match tokio::time::timeout(Duration::from_secs(10), client.token_revoke_self(&t))
                    .await
                {
                    Ok(Ok(())) => {
                        info!(log, "Vault session token revoked");
                    }
                    Ok(Err(e)) => warn!(log, "could not revoke vdbi's Vault token"; "error" => %e),
                    Err(_) => warn!(log, "revoking vdbi's Vault token timed out"),
                }
            }
        })
    }
}

impl Handler<IsLoggedIn> for VaultSession {
    type Result = bool;
    fn handle(&mut self, _: IsLoggedIn, _: &mut Context<Self>) -> bool {
        self.token.is_some()
    }
}
