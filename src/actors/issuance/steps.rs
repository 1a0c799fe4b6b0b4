//! The steps of one dbConfig's issuance: legacy (role check against the Vault k8s-auth role,
//! provisional orphan token, confirmation) and projected (TokenRequest, login as the dbConfig's
//! role, period check), the credentials read and the bookkeeping write, each with its metrics.
//!
//! Each step is one call, so the caller records what a step created in its [`super::UndoLog`]
//! before the next one runs. Every call to Vault (through the VaultSession actor) or to
//! Kubernetes is awaited through the caller's [`ExternalClock`], so the caller can tell its own
//! time from the time spent waiting.

use crate::actors::error::ActorError;
use crate::actors::vault_session::{
    CreateProvisionalToken, KvPut, KvPutReservation, LoginKubernetes, LookupSelf, ReadAuthRole,
    ReadDbCredentials, RenewSelf, VaultSession,
};
use crate::actors::ActorHandle;
use crate::annotations::DbConfig;
use crate::bookkeeping::{BookkeepingEntry, Reservation, ReservationKind};
use crate::config::Config;
use crate::k8s::{self, PodBinding};
use crate::telemetry::metrics::{Denial, Entry};
use crate::telemetry::{ExternalClock, Metrics};
use crate::vault::{
    can_get_role, DbCredentials, KubeAuthRole, LoginResult, OrphanTokenSpec, VaultError, VaultToken,
};
use actix::prelude::*;
use slog::{debug, warn, Logger};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;

/// Vault k8s-auth roles read for the legacy role check, kept for a short while.
#[derive(Default)]
pub struct RoleCache {
    entries: Mutex<HashMap<String, (Instant, KubeAuthRole)>>,
}

const ROLE_CACHE_TTL: Duration = Duration::from_secs(30);

/// Display name of the orphan tokens (Vault shows `token-injector-orphan-token`, as the Go
/// version's).
pub const ORPHAN_DISPLAY_NAME: &str = "injector-orphan-token";
/// Token metadata keys of a provisional orphan token (who it was issued for).
pub const TOKEN_META_UUID: &str = "vdbi-uuid";
pub const TOKEN_META_NAMESPACE: &str = "vdbi-namespace";
pub const TOKEN_META_SERVICE_ACCOUNT: &str = "vdbi-service-account";

/// What a provisional token lives beyond its issuance's deadline: room for the confirmation
/// call that was sent just before the deadline.
pub const PROVISIONAL_MARGIN: Duration = Duration::from_secs(10);

/// The first TTL of a provisional token: the issuance's remaining time plus
/// [`PROVISIONAL_MARGIN`], in whole seconds.
pub fn provisional_ttl(deadline: Deadline) -> Duration {
    let left = deadline.saturating_duration_since(Deadline::now());
    Duration::from_secs((left + PROVISIONAL_MARGIN).as_secs_f64().ceil() as u64)
}

impl RoleCache {
    pub fn get(&self, role: &str) -> Option<KubeAuthRole> {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.get(role)
            .filter(|(t, _)| t.elapsed() < ROLE_CACHE_TTL)
            .map(|(_, r)| r.clone())
    }
    pub fn put(&self, role: &str, value: KubeAuthRole) {
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(role.to_string(), (Instant::now(), value));
    }
}

/// Why a step failed; the message names the dbConfig and never holds a secret.
#[derive(Debug)]
pub enum IssueError {
    /// The dbConfig's Vault role does not exist (legacy role check).
    RoleNotFound(String),
    /// The service account may not use the Vault role (legacy role check).
    ServiceAccountDenied(String),
    /// The TokenRequest did not answer before the deadline (projected).
    TokenRequestTimeout(String),
    /// The TokenRequest failed (projected).
    TokenRequest(String),
    /// A Vault call failed while doing `step`; the caller words `error`.
    Session { step: String, error: ActorError },
}

impl IssueError {
    pub(super) fn session(step: impl Into<String>) -> impl FnOnce(ActorError) -> IssueError {
        move |error| IssueError::Session {
            step: step.into(),
            error,
        }
    }
}

/// `dbConfig "<name>" (role "<role>"): <step>: <what>`, the wording of a failed Vault step.
pub fn step_message(db: &DbConfig, step: &str, what: &str) -> String {
    format!(
        "dbConfig {:?} (role {:?}): {step}: {what}",
        db.name, db.role
    )
}

/// Whose credentials: the pod's namespace and service account (API-attested).
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
}

impl<'a> Subject<'a> {
    pub fn new(namespace: &'a str, service_account: &'a str) -> Subject<'a> {
        Subject {
            namespace,
            service_account,
        }
    }
}

/// The steps, for one admission or one NRI fetch: everything shares the deadline and the clock.
pub struct Issuer<'a> {
    pub config: &'a Config,
    pub vault: &'a ActorHandle<VaultSession>,
    pub metrics: &'a Metrics,
    pub clock: &'a ExternalClock,
    pub deadline: Deadline,
}

impl<'a> Issuer<'a> {
    pub fn new(
        config: &'a Config,
        vault: &'a ActorHandle<VaultSession>,
        metrics: &'a Metrics,
        clock: &'a ExternalClock,
        deadline: Deadline,
    ) -> Issuer<'a> {
        Issuer {
            config,
            vault,
            metrics,
            clock,
            deadline,
        }
    }

    /// A VaultSession request, timed as external.
    pub async fn call<M, T>(&self, msg: M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        VaultSession: Handler<M>,
    {
        self.clock.external(self.vault.call(msg)).await
    }

    /// Legacy authorisation (compat §3.7): the Vault role (read through `roles`) must admit the
    /// pod's service account and namespace. Counts `sa_authorized` / `sa_denied`.
    pub async fn authorise(
        &self,
        roles: &RoleCache,
        db: &DbConfig,
        who: &Subject<'_>,
    ) -> Result<(), IssueError> {
        let role = match roles.get(&db.role) {
            Some(r) => r,
            None => {
                let r = self
                    .call(ReadAuthRole {
                        role: db.role.clone(),
                        deadline: self.deadline,
                    })
                    .await
                    .map_err(|e| {
                        if e.is_not_found() {
                            IssueError::RoleNotFound(format!(
                                "dbConfig {:?}: Vault role {:?} does not exist at auth/{}/role/{}",
                                db.name, db.role, self.config.vault_auth_path, db.role
                            ))
                        } else {
                            IssueError::session("reading the Vault role")(e)
                        }
                    })?;
                roles.put(&db.role, r.clone());
                r
            }
        };
        if let Err(cause) = can_get_role(&role, &db.role, who.service_account, who.namespace) {
            self.metrics.issuance.denied(Denial {
                service_account: who.service_account,
                namespace: who.namespace,
                db_role: &db.role,
                cause: cause.as_str(),
            });
            return Err(IssueError::ServiceAccountDenied(format!(
                "dbConfig {:?}: service account {}/{} may not use Vault role {:?} ({})",
                db.name,
                who.namespace,
                who.service_account,
                db.role,
                cause.as_str()
            )));
        }
        self.metrics.issuance.authorized();
        Ok(())
    }

    /// Legacy: a **provisional** orphan token with the role's policy: not periodic, renewable,
    /// first TTL [`provisional_ttl`] (the issuance's remaining time plus a margin), metadata
    /// naming the issuance. Until [`confirm_token`](Self::confirm_token) renews it, it dies by
    /// itself soon after the issuance's deadline — with the DB leases it created — so a process
    /// killed before recording it leaks nothing for long.
    pub async fn orphan_token(
        &self,
        db: &DbConfig,
        uuid: &str,
        who: &Subject<'_>,
    ) -> Result<VaultToken, IssueError> {
        let meta = BTreeMap::from([
            (TOKEN_META_UUID.to_string(), uuid.to_string()),
            (TOKEN_META_NAMESPACE.to_string(), who.namespace.to_string()),
            (
                TOKEN_META_SERVICE_ACCOUNT.to_string(),
                who.service_account.to_string(),
            ),
        ]);
        let orphan = self
            .call(CreateProvisionalToken {
                spec: OrphanTokenSpec {
                    policies: vec![db.role.clone()],
                    ttl: provisional_ttl(self.deadline),
                    display_name: ORPHAN_DISPLAY_NAME.into(),
                    meta,
                },
                deadline: self.deadline,
            })
            .await;
        match orphan {
            Ok(t) => {
                self.metrics.issuance.orphan_token(true);
                Ok(t.token)
            }
            Err(e) => {
                self.metrics.issuance.orphan_token(false);
                Err(IssueError::session("creating the orphan token")(e))
            }
        }
    }

    /// Legacy, once the bookkeeping entry records the token: renews it (`renew-self`) to
    /// `tokenTTL`, from then on the renewer's to keep alive. Capped by the token store's max TTL
    /// (32 days by default, as the DB lease).
    pub async fn confirm_token(&self, token: &VaultToken) -> Result<(), IssueError> {
        self.call(RenewSelf {
            token: token.clone(),
            increment: self.config.token_ttl,
            deadline: self.deadline,
        })
        .await
        .map(|_| ())
        .map_err(IssueError::session(
            "renewing the orphan token to its full TTL",
        ))
    }

    /// Projected: a TokenRequest for the service account (bound to the pod when `bind_to` names
    /// it), then the login as the dbConfig's role. The pod token (and its accessor, for the
    /// reservation) is the caller's to record.
    pub async fn pod_login(
        &self,
        kube: &kube::Client,
        db: &DbConfig,
        who: &Subject<'_>,
        bind_to: Option<&PodBinding>,
    ) -> Result<LoginResult, IssueError> {
        let (cfg, m) = (self.config, self.metrics);
        let jwt = self
            .clock
            .external(tokio::time::timeout_at(
                self.deadline,
                k8s::token_request(
                    kube,
                    who.namespace,
                    who.service_account,
                    &cfg.token_request_audiences,
                    cfg.token_request_expiration_seconds,
                    bind_to,
                ),
            ))
            .await
            .map_err(|_| {
                IssueError::TokenRequestTimeout(format!(
                    "dbConfig {:?}: TokenRequest timed out",
                    db.name
                ))
            })?
            .map_err(|e| {
                m.issuance.token_request_failed(e.token_request_reason());
                IssueError::TokenRequest(format!(
                    "dbConfig {:?}: TokenRequest for service account {}/{} failed: {e}",
                    db.name, who.namespace, who.service_account
                ))
            })?;
        let login = self
            .call(LoginKubernetes {
                role: db.role.clone(),
                jwt,
                deadline: self.deadline,
            })
            .await
            .map_err(|e| {
                if let Some(v) = e.vault() {
                    m.issuance
                        .login_failed(v.login_failure_reason(), "projected");
                }
                IssueError::session(format!("Vault login as role {:?}", db.role))(e)
            })?;
        Ok(login)
    }

    /// Projected: warns (and counts) when the pod token has no period, so it cannot be renewed
    /// past its TTL. Never fails the issuance.
    pub async fn check_period(&self, db: &DbConfig, token: &VaultToken, log: &Logger) {
        match self
            .call(LookupSelf {
                token: token.clone(),
                deadline: self.deadline,
            })
            .await
        {
            Ok(info) if info.period.is_zero() => {
                self.metrics.issuance.projected_role_misconfigured(&db.role);
                warn!(log, "Vault role has no token_period: the pod token cannot be renewed past its TTL"; "role" => &db.role);
            }
            Ok(_) => {}
            Err(e) => debug!(log, "lookup-self failed"; "error" => %e),
        }
    }

    /// `<mount>/creds/<role>` with `token` (orphan or pod token), up to `attempts` times when
    /// Vault answers HTTP 500: the database refused the role's creation statements for a
    /// transient reason, typically PostgreSQL's "tuple concurrently updated" when several roles
    /// are granted on one database at once. A 500 means nothing was created, so a retry cannot
    /// leak a credential.
    pub async fn read_credentials(
        &self,
        mount: &str,
        db: &DbConfig,
        token: &VaultToken,
        attempts: u32,
    ) -> Result<DbCredentials, IssueError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let res = self
                .call(ReadDbCredentials {
                    token: Some(token.clone()),
                    mount: mount.to_string(),
                    role: db.role.clone(),
                    deadline: self.deadline,
                })
                .await;
            let transient = matches!(
                &res,
                Err(ActorError::Vault(VaultError::Api { status: 500, .. }))
            );
            let pause = Duration::from_millis(20 * u64::from(attempt) + rand::random::<u64>() % 30);
            if !transient || attempt >= attempts || Deadline::now() + pause >= self.deadline {
                return res.map_err(IssueError::session(format!(
                    "reading {mount}/creds/{}",
                    db.role
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Writes the reservation `key` of `kind` (outside the Go-listed prefix): NRI mode's record
    /// of the uuid, and projected mode's record of the pod token's accessor until the entry is
    /// written (the webhook's under the uuid, each NRI fetch attempt's under its own key).
    /// Counts as an entry write.
    pub async fn write_reservation(
        &self,
        kind: ReservationKind,
        key: &str,
        reservation: Reservation,
        namespace: &str,
    ) -> Result<(), IssueError> {
        let put = KvPutReservation {
            kind,
            key: key.to_string(),
            reservation,
            deadline: self.deadline,
        };
        self.counted_write(
            self.call(put).await,
            key,
            namespace,
            "writing the reservation",
        )
    }

    /// Writes the bookkeeping entry `uuid`; counts `store_data_success` / `store_data_error`.
    pub async fn write_entry(
        &self,
        uuid: &str,
        entry: BookkeepingEntry,
        namespace: &str,
    ) -> Result<(), IssueError> {
        let put = KvPut {
            uuid: uuid.to_string(),
            entry,
            deadline: self.deadline,
        };
        self.counted_write(
            self.call(put).await,
            uuid,
            namespace,
            "writing the bookkeeping entry",
        )
    }

    /// Counts a KV write's outcome (`store_data_success` / `store_data_error`) and names the step
    /// that failed.
    fn counted_write(
        &self,
        stored: Result<(), ActorError>,
        uuid: &str,
        namespace: &str,
        step: &'static str,
    ) -> Result<(), IssueError> {
        match stored {
            Ok(()) => {
                self.metrics.bookkeeping.stored();
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .bookkeeping
                    .store_failed(Entry::new(uuid, namespace));
                Err(IssueError::session(step)(e))
            }
        }
    }
}
