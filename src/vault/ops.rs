//! The typed Vault operations vdbi performs (compat §3), as methods of [`VaultClient`].
//!
//! vaultrs serves directly: kubernetes login, `auth/token/create-orphan`, `auth/token/renew`,
//! `renew-self`, `revoke-orphan`, `revoke-self`; KV v2 lives in [`super::kv`]. vaultrs's *request* types,
//! decoded by vdbi: database credentials (`GenerateCredentialsRequest`, unwrapped into
//! `EndpointResult` to keep the lease), KV v2 read (`ReadSecretRequest`, for the version),
//! token lookups and the kubernetes auth role (vaultrs's response types lack fields vdbi
//! needs; see `mod.rs`). vdbi's own rustify endpoints: `sys/leases/*`, `sys/health`
//! ([`super::endpoints`]).

use super::client::{raw_path, VaultClient};
use super::endpoints::{
    HealthRequest, ListLeasesRequest, LogicalDeleteRequest, LogicalReadRequest,
    LogicalWriteRequest, LookupLeaseRequest, RenewLeaseRequest, RevokeLeaseRequest,
};
use super::error::VaultError;
use super::exec::{exec_envelope, exec_raw, from_client_error, from_rest_error, parse_json};
use super::secret::{Secret, VaultToken};
use super::types::{
    null_default, secs, DbCredentials, Health, KubeAuthRole, LeaseInfo, LeaseTtl, LoginResult,
    TokenAuth, TokenInfo, TokenTtl,
};
use rustify::endpoint::Endpoint as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use vaultrs::api::auth::kubernetes::requests::ReadKubernetesRoleRequest;
use vaultrs::api::database::requests::GenerateCredentialsRequest;
use vaultrs::api::token::requests::{
    CreateOrphanTokenRequest, CreateOrphanTokenRequestBuilder, LookupTokenAccessorRequest,
    LookupTokenRequest, LookupTokenSelfRequest, RevokeTokenAccessorRequest,
};
use vaultrs::api::AuthInfo;
use vaultrs::client::Client as _;

/// Vault's response envelope, decoded leniently (null → default).
#[derive(Deserialize)]
struct Envelope<D> {
    #[serde(default = "Option::default")]
    data: Option<D>,
    #[serde(default, deserialize_with = "null_default")]
    lease_id: String,
    #[serde(default, deserialize_with = "secs")]
    lease_duration: Duration,
    #[serde(default, deserialize_with = "null_default")]
    renewable: bool,
}

/// `{"keys": [...]}` of a LIST.
#[derive(Deserialize)]
struct Keys {
    #[serde(default, deserialize_with = "null_default")]
    keys: Vec<String>,
}

fn data<D: DeserializeOwned>(body: &[u8], what: &str) -> Result<D, VaultError> {
    parse_json::<Envelope<D>>(what, body)?
        .data
        .ok_or_else(|| VaultError::InvalidResponse(format!("{what}: no data")))
}

fn token_auth(a: AuthInfo, what: &str) -> Result<TokenAuth, VaultError> {
    if a.client_token.is_empty() {
        return Err(VaultError::InvalidResponse(format!(
            "{what}: auth.client_token is empty"
        )));
    }
    Ok(TokenAuth {
        token: VaultToken::new(a.client_token),
        accessor: a.accessor,
        ttl: Duration::from_secs(a.lease_duration),
        renewable: a.renewable,
        policies: a.policies,
        token_policies: a.token_policies,
        metadata: a.metadata.unwrap_or_default().into_iter().collect(),
        entity_id: a.entity_id,
        token_type: a.token_type,
        orphan: a.orphan,
    })
}

fn token_ttl(a: AuthInfo) -> TokenTtl {
    TokenTtl {
        accessor: a.accessor,
        ttl: Duration::from_secs(a.lease_duration),
        renewable: a.renewable,
    }
}

/// Treats a 404 as `None`.
pub(super) fn found<T>(r: Result<T, VaultError>) -> Result<Option<T>, VaultError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Maps a vaultrs error of a call made with `token`.
pub(super) fn mapped<'a>(
    what: &'static str,
    token: Option<&'a VaultToken>,
) -> impl Fn(vaultrs::error::ClientError) -> VaultError + 'a {
    move |e| from_client_error(e, what, token)
}

/// What [`VaultClient::create_orphan_token_with`] creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrphanTokenSpec {
    pub policies: Vec<String>,
    /// First TTL (whole seconds; at least 1 s).
    pub ttl: Duration,
    pub display_name: String,
    /// Token metadata (no secret: names and ids only).
    pub meta: BTreeMap<String, String>,
}

impl VaultClient {
    // -----------------------------------------------------------------------------------------
    // Auth

    /// `POST auth/<mount>/login {role, jwt}` (kubernetes auth). Unauthenticated.
    pub async fn login_kubernetes(
        &self,
        mount: &str,
        role: &str,
        jwt: &str,
    ) -> Result<LoginResult, VaultError> {
        let mount = raw_path(&[mount])?;
        self.run(None, |c| async move {
            let a = vaultrs::auth::kubernetes::login(&c, &mount, role, jwt)
                .await
                .map_err(mapped("kubernetes login", None))?;
            token_auth(a, "kubernetes login")
        })
        .await
    }

    /// `POST auth/token/create-orphan {policies, period, display_name}` (compat §3.1 step 3:
    /// no ttl, num_uses or meta; renewable by default). Vault shows the display name as
    /// `token-<display_name>`.
    pub async fn create_orphan_token(
        &self,
        token: &VaultToken,
        policies: &[String],
        period: Duration,
        display_name: &str,
    ) -> Result<TokenAuth, VaultError> {
        let mut req = CreateOrphanTokenRequest::builder();
        req.policies(policies.to_vec())
            .period(seconds(period))
            .display_name(display_name);
        self.new_orphan(token, req).await
    }

    /// `POST auth/token/create-orphan {policies, ttl, renewable, display_name, meta}`: a
    /// **non-periodic** orphan token whose first TTL is short ([`OrphanTokenSpec::ttl`]), renewable
    /// up to the token store's max TTL. vdbi issues provisional tokens this way and renews them to
    /// their full TTL once recorded, so a token created by an issuance that dies before recording
    /// it expires by itself (and its DB leases with it). `meta` is visible to `lookup-accessor`.
    pub async fn create_orphan_token_with(
        &self,
        token: &VaultToken,
        spec: &OrphanTokenSpec,
    ) -> Result<TokenAuth, VaultError> {
        let mut req = CreateOrphanTokenRequest::builder();
        req.policies(spec.policies.clone())
            .ttl(seconds(spec.ttl))
            .renewable(true)
            .display_name(spec.display_name.as_str())
            .meta(
                spec.meta
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        self.new_orphan(token, req).await
    }

    /// Sends a built `auth/token/create-orphan` request and decodes its `auth` block.
    async fn new_orphan(
        &self,
        token: &VaultToken,
        mut req: CreateOrphanTokenRequestBuilder,
    ) -> Result<TokenAuth, VaultError> {
        self.run(Some(token), |c| async move {
            let a = vaultrs::token::new_orphan(&c, Some(&mut req))
                .await
                .map_err(mapped("create-orphan", Some(token)))?;
            token_auth(a, "create-orphan")
        })
        .await
    }

    /// `GET auth/<mount>/role/<role>` of the kubernetes auth method (compat §3.7). vaultrs's
    /// request, decoded leniently (its response type has no `audience` nor namespace selector
    /// and refuses a scalar where a list is expected).
    pub async fn read_kubernetes_auth_role(
        &self,
        token: &VaultToken,
        mount: &str,
        role: &str,
    ) -> Result<KubeAuthRole, VaultError> {
        let (mount, name) = (raw_path(&[mount])?, raw_path(&[role])?);
        self.run(Some(token), |c| async move {
            let req = ReadKubernetesRoleRequest::builder()
                .mount(mount)
                .name(name)
                .build()
                .map_err(|e| VaultError::InvalidRequest(e.to_string()))?;
            let body = exec_raw(&c, req, "kubernetes auth role").await?;
            let d: serde_json::Map<String, Value> = data(&body, "kubernetes auth role")?;
            Ok(KubeAuthRole::from_data(&d))
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Tokens

    /// `POST auth/token/renew {token, increment}`. A token Vault no longer knows fails with an
    /// error for which [`VaultError::is_token_not_found`] holds (compat §3.5 counts it as done).
    pub async fn token_renew(
        &self,
        token: &VaultToken,
        target: &VaultToken,
        increment: Duration,
    ) -> Result<TokenTtl, VaultError> {
        self.run(Some(token), |c| async move {
            vaultrs::token::renew(&c, target.expose(), Some(&seconds(increment)))
                .await
                .map(token_ttl)
                .map_err(|e| from_client_error(e, "token renew", Some(target)))
                .map_err(|e| mask_error(e, token))
        })
        .await
    }

    /// `POST auth/token/renew-self {increment}`.
    pub async fn token_renew_self(
        &self,
        token: &VaultToken,
        increment: Duration,
    ) -> Result<TokenTtl, VaultError> {
        self.run(Some(token), |c| async move {
            vaultrs::token::renew_self(&c, Some(&seconds(increment)))
                .await
                .map(token_ttl)
                .map_err(mapped("token renew-self", Some(token)))
        })
        .await
    }

    /// `POST auth/token/revoke-orphan {token}`: revokes `target` (and its leases) but not its
    /// children. A token that is already gone counts as revoked (compat §3.8).
    pub async fn token_revoke_orphan(
        &self,
        token: &VaultToken,
        target: &VaultToken,
    ) -> Result<(), VaultError> {
        let r = self
            .run(Some(token), |c| async move {
                vaultrs::token::revoke_orphan(&c, target.expose())
                    .await
                    .map_err(|e| from_client_error(e, "token revoke-orphan", Some(target)))
                    .map_err(|e| mask_error(e, token))
            })
            .await;
        match r {
            Err(e) if e.is_token_not_found() => Ok(()),
            other => other,
        }
    }

    /// `POST auth/token/revoke-self`. An already invalid token answers 403.
    pub async fn token_revoke_self(&self, token: &VaultToken) -> Result<(), VaultError> {
        self.run(Some(token), |c| async move {
            vaultrs::token::revoke_self(&c)
                .await
                .map_err(mapped("token revoke-self", Some(token)))
        })
        .await
    }

    /// `GET auth/token/lookup-self` (vaultrs's request; its response type has no `period`).
    pub async fn token_lookup_self(&self, token: &VaultToken) -> Result<TokenInfo, VaultError> {
        self.run(Some(token), |c| async move {
            let body = exec_raw(&c, LookupTokenSelfRequest {}, "token lookup-self").await?;
            data(&body, "token lookup-self")
        })
        .await
    }

    /// `POST auth/token/lookup {token}`: another token's properties.
    pub async fn token_lookup(
        &self,
        token: &VaultToken,
        target: &VaultToken,
    ) -> Result<TokenInfo, VaultError> {
        self.run(Some(token), |c| async move {
            let req = LookupTokenRequest {
                token: target.expose().to_string(),
            };
            let body = exec_raw(&c, req, "token lookup")
                .await
                .map_err(|e| mask_error(e, target))?;
            data(&body, "token lookup")
        })
        .await
    }

    /// `POST auth/token/lookup-accessor {accessor}`: the properties of the token behind
    /// `accessor` (Vault does not return the token id); `None` for an accessor Vault does not
    /// know (expired or revoked token).
    pub async fn token_lookup_accessor(
        &self,
        token: &VaultToken,
        accessor: &str,
    ) -> Result<Option<TokenInfo>, VaultError> {
        let r = self
            .run(Some(token), |c| async move {
                let req = LookupTokenAccessorRequest {
                    accessor: accessor.to_string(),
                };
                let body = exec_raw(&c, req, "token lookup-accessor").await?;
                data(&body, "token lookup-accessor")
            })
            .await;
        match r {
            Err(e) if e.is_invalid_accessor() => Ok(None),
            other => other.map(Some),
        }
    }

    /// `POST auth/token/revoke-accessor {accessor}`: revokes the token behind `accessor` and its
    /// leases. An accessor Vault does not know counts as revoked.
    pub async fn token_revoke_accessor(
        &self,
        token: &VaultToken,
        accessor: &str,
    ) -> Result<(), VaultError> {
        let r = self
            .run(Some(token), |c| async move {
                let req = RevokeTokenAccessorRequest {
                    accessor: accessor.to_string(),
                };
                exec_raw(&c, req, "token revoke-accessor").await.map(|_| ())
            })
            .await;
        match r {
            Err(e) if e.is_invalid_accessor() => Ok(()),
            other => other,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Database secrets engine

    /// `GET <mount>/creds/<role>` through vaultrs's `GenerateCredentialsRequest`, unwrapped into
    /// `EndpointResult` so that the lease (`lease_id`, `lease_duration`, `renewable`) is kept.
    pub async fn read_db_credentials(
        &self,
        token: &VaultToken,
        mount: &str,
        role: &str,
    ) -> Result<DbCredentials, VaultError> {
        let (mount, name) = (raw_path(&[mount])?, raw_path(&[role])?);
        self.run(Some(token), |c| async move {
            let req = GenerateCredentialsRequest::builder()
                .mount(mount)
                .name(name)
                .build()
                .map_err(|e| VaultError::InvalidRequest(e.to_string()))?;
            let r = exec_envelope(&c, req, "database creds").await?;
            let creds = r
                .data
                .ok_or_else(|| VaultError::InvalidResponse("database creds: no data".into()))?;
            Ok(DbCredentials {
                username: creds.username,
                password: Secret::new(creds.password),
                lease_id: r.lease_id,
                lease_duration: Duration::from_secs(r.lease_duration.into()),
                renewable: r.renewable,
            })
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Leases (vdbi's endpoints: vaultrs has no `sys/leases`)

    /// `PUT sys/leases/renew {lease_id, increment}` (compat §3.5). See
    /// [`VaultError::is_lease_not_found`] and [`VaultError::is_unrecoverable_lease`].
    pub async fn lease_renew(
        &self,
        token: &VaultToken,
        lease_id: &str,
        increment: Duration,
    ) -> Result<LeaseTtl, VaultError> {
        self.run(Some(token), |c| async move {
            let req = RenewLeaseRequest {
                lease_id: lease_id.to_string(),
                increment: increment.as_secs(),
            };
            let body = exec_raw(&c, req, "lease renew").await?;
            let env: Envelope<Value> = parse_json("lease renew", &body)?;
            Ok(LeaseTtl {
                lease_id: if env.lease_id.is_empty() {
                    lease_id.to_string()
                } else {
                    env.lease_id
                },
                ttl: env.lease_duration,
                renewable: env.renewable,
            })
        })
        .await
    }

    /// `PUT sys/leases/revoke {lease_id}`. Vault answers 204 for an unknown lease too.
    pub async fn lease_revoke(&self, token: &VaultToken, lease_id: &str) -> Result<(), VaultError> {
        self.run(Some(token), |c| async move {
            let req = RevokeLeaseRequest {
                lease_id: lease_id.to_string(),
            };
            exec_raw(&c, req, "lease revoke").await.map(|_| ())
        })
        .await
    }

    /// `PUT sys/leases/lookup {lease_id}`. An unknown lease is a 400 `invalid lease`.
    pub async fn lease_lookup(
        &self,
        token: &VaultToken,
        lease_id: &str,
    ) -> Result<LeaseInfo, VaultError> {
        self.run(Some(token), |c| async move {
            let req = LookupLeaseRequest {
                lease_id: lease_id.to_string(),
            };
            let body = exec_raw(&c, req, "lease lookup").await?;
            data(&body, "lease lookup")
        })
        .await
    }

    /// `LIST sys/leases/lookup/<prefix>` (needs `sudo`): the lease ids' last segments, and
    /// sub-prefixes ending in `/`. Nothing under the prefix (404) is an empty list.
    pub async fn list_leases(
        &self,
        token: &VaultToken,
        prefix: &str,
    ) -> Result<Vec<String>, VaultError> {
        let prefix = raw_path(&[prefix])?;
        self.run(Some(token), |c| async move {
            let req = ListLeasesRequest { prefix };
            match found(exec_raw(&c, req, "lease list").await)? {
                None => Ok(Vec::new()),
                Some(body) => Ok(parse_json::<Envelope<Keys>>("lease list", &body)?
                    .data
                    .map(|k| k.keys)
                    .unwrap_or_default()),
            }
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // sys

    /// Unauthenticated `GET sys/health`. Vault encodes the state in the status (200 active, 429
    /// standby, 472/473 DR/performance standby, 501 not initialised, 503 sealed): all of these
    /// are a [`Health`], not an error.
    pub async fn health(&self) -> Result<Health, VaultError> {
        self.run(None, |c| async move {
            let res = HealthRequest {}
                .with_middleware(c.middle())
                .exec(c.http())
                .await;
            match res {
                Ok(r) => parse_json("sys/health", r.response.body()),
                Err(rustify::errors::ClientError::ServerResponseError { code, content })
                    if matches!(code, 429 | 472 | 473 | 474 | 501 | 503) =>
                {
                    // a non-200 that is not a health body (a proxy) is an error, not "sealed"
                    content
                        .and_then(|c| serde_json::from_str::<Health>(&c).ok())
                        .ok_or_else(|| VaultError::from_status(code, Vec::new()))
                }
                Err(e) => Err(from_rest_error(e, "sys/health", None)),
            }
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Generic calls (set-up code and tests; the daemon does not use them)

    /// Generic read of `path` (e.g. `sys/mounts`), returning the whole response JSON, or `None`
    /// for a 204. The value may hold secrets: never log it.
    pub async fn logical_read(
        &self,
        token: &VaultToken,
        path: &str,
    ) -> Result<Option<Value>, VaultError> {
        let path = raw_path(&[path])?;
        self.run(Some(token), |c| async move {
            let body = exec_raw(&c, LogicalReadRequest { path }, "logical read").await?;
            opt_json(&body, "logical read")
        })
        .await
    }

    /// Generic write (`POST`) of `body` to `path`; see [`logical_read`](Self::logical_read).
    pub async fn logical_write(
        &self,
        token: &VaultToken,
        path: &str,
        body: &Value,
    ) -> Result<Option<Value>, VaultError> {
        let path = raw_path(&[path])?;
        let body = serde_json::to_vec(body)
            .map_err(|e| VaultError::Config(format!("encoding the request: {e}")))?;
        self.run(Some(token), |c| async move {
            let body = exec_raw(&c, LogicalWriteRequest { path, body }, "logical write").await?;
            opt_json(&body, "logical write")
        })
        .await
    }

    /// Generic `DELETE` of `path`; see [`logical_read`](Self::logical_read).
    pub async fn logical_delete(&self, token: &VaultToken, path: &str) -> Result<(), VaultError> {
        let path = raw_path(&[path])?;
        self.run(Some(token), |c| async move {
            exec_raw(&c, LogicalDeleteRequest { path }, "logical delete")
                .await
                .map(|_| ())
        })
        .await
    }
}

fn opt_json(body: &[u8], what: &str) -> Result<Option<Value>, VaultError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        parse_json(what, body).map(Some)
    }
}

/// Masks a second token (the session's, when the error was mapped with the target's).
fn mask_error(e: VaultError, token: &VaultToken) -> VaultError {
    let t = token.expose();
    if t.len() < 4 || !e.errors().iter().any(|s| s.contains(t)) {
        return e;
    }
    let errors = e.errors().iter().map(|s| s.replace(t, "***")).collect();
    match e.status() {
        Some(status) => VaultError::from_status(status, errors),
        None => e,
    }
}
