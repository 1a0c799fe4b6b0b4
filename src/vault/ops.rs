//! The typed Vault operations vdbi performs (compat §3), as methods of [`VaultClient`].

use super::client::{api_path, parse_json, Reply, Request, VaultClient};
use super::error::VaultError;
use super::secret::{Secret, VaultToken};
use super::types::{
    null_default, secs, DbCredentials, Health, KubeAuthRole, LeaseInfo, LeaseTtl, LoginResult,
    TokenAuth, TokenInfo, TokenTtl,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Vault's response envelope.
#[derive(Deserialize)]
struct Envelope<D> {
    #[serde(default = "Option::default")]
    data: Option<D>,
    #[serde(default)]
    auth: Option<AuthBlock>,
    #[serde(default, deserialize_with = "null_default")]
    lease_id: String,
    #[serde(default, deserialize_with = "secs")]
    lease_duration: Duration,
    #[serde(default, deserialize_with = "null_default")]
    renewable: bool,
}

#[derive(Deserialize)]
struct AuthBlock {
    #[serde(default, deserialize_with = "null_default")]
    client_token: VaultToken,
    #[serde(default, deserialize_with = "null_default")]
    accessor: String,
    #[serde(default, deserialize_with = "null_default")]
    policies: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    token_policies: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    metadata: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "secs")]
    lease_duration: Duration,
    #[serde(default, deserialize_with = "null_default")]
    renewable: bool,
    #[serde(default, deserialize_with = "null_default")]
    entity_id: String,
    #[serde(default, deserialize_with = "null_default")]
    token_type: String,
    #[serde(default, deserialize_with = "null_default")]
    orphan: bool,
}

impl AuthBlock {
    fn into_token_auth(self, what: &str) -> Result<TokenAuth, VaultError> {
        if self.client_token.is_empty() {
            return Err(VaultError::InvalidResponse(format!(
                "{what}: auth.client_token is empty"
            )));
        }
        Ok(TokenAuth {
            token: self.client_token,
            accessor: self.accessor,
            ttl: self.lease_duration,
            renewable: self.renewable,
            policies: self.policies,
            token_policies: self.token_policies,
            metadata: self.metadata,
            entity_id: self.entity_id,
            token_type: self.token_type,
            orphan: self.orphan,
        })
    }
}

/// `{"keys": [...]}` of a LIST.
#[derive(Deserialize)]
struct Keys {
    #[serde(default, deserialize_with = "null_default")]
    keys: Vec<String>,
}

fn envelope<D: DeserializeOwned>(r: &Reply, what: &str) -> Result<Envelope<D>, VaultError> {
    r.json(what)
}

fn data<D: DeserializeOwned>(r: &Reply, what: &str) -> Result<D, VaultError> {
    envelope::<D>(r, what)?
        .data
        .ok_or_else(|| VaultError::InvalidResponse(format!("{what}: no data")))
}

fn auth(r: &Reply, what: &str) -> Result<TokenAuth, VaultError> {
    envelope::<Value>(r, what)?
        .auth
        .ok_or_else(|| VaultError::InvalidResponse(format!("{what}: no auth block")))?
        .into_token_auth(what)
}

fn token_ttl(r: &Reply, what: &str) -> Result<TokenTtl, VaultError> {
    let a = auth(r, what)?;
    Ok(TokenTtl {
        accessor: a.accessor,
        ttl: a.ttl,
        renewable: a.renewable,
    })
}

/// Treats a 404 as `None`.
fn found<T>(r: Result<T, VaultError>) -> Result<Option<T>, VaultError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
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
        let body = json!({ "role": role, "jwt": jwt });
        let r = self
            .call(
                Method::POST,
                &api_path(&["auth", mount, "login"])?,
                None,
                false,
                Some(&body),
            )
            .await?;
        auth(&r, "kubernetes login")
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
        let body = json!({
            "policies": policies,
            "period": seconds(period),
            "display_name": display_name,
        });
        let r = self
            .call(
                Method::POST,
                "auth/token/create-orphan",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        auth(&r, "create-orphan")
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
        let body = json!({
            "policies": spec.policies,
            "ttl": seconds(spec.ttl),
            "renewable": true,
            "display_name": spec.display_name,
            "meta": spec.meta,
        });
        let r = self
            .call(
                Method::POST,
                "auth/token/create-orphan",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        auth(&r, "create-orphan")
    }

    /// `GET auth/<mount>/role/<role>` of the kubernetes auth method (compat §3.7).
    pub async fn read_kubernetes_auth_role(
        &self,
        token: &VaultToken,
        mount: &str,
        role: &str,
    ) -> Result<KubeAuthRole, VaultError> {
        let r = self
            .call(
                Method::GET,
                &api_path(&["auth", mount, "role", role])?,
                Some(token),
                false,
                None,
            )
            .await?;
        let d: serde_json::Map<String, Value> = data(&r, "kubernetes auth role")?;
        Ok(KubeAuthRole::from_data(&d))
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
        let body = json!({ "token": target.expose(), "increment": seconds(increment) });
        let r = self
            .call(
                Method::POST,
                "auth/token/renew",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        token_ttl(&r, "token renew")
    }

    /// `POST auth/token/renew-self {increment}`.
    pub async fn token_renew_self(
        &self,
        token: &VaultToken,
        increment: Duration,
    ) -> Result<TokenTtl, VaultError> {
        let body = json!({ "increment": seconds(increment) });
        let r = self
            .call(
                Method::POST,
                "auth/token/renew-self",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        token_ttl(&r, "token renew-self")
    }

    /// `POST auth/token/revoke-orphan {token}`: revokes `target` (and its leases) but not its
    /// children. A token that is already gone counts as revoked (compat §3.8).
    pub async fn token_revoke_orphan(
        &self,
        token: &VaultToken,
        target: &VaultToken,
    ) -> Result<(), VaultError> {
        let body = json!({ "token": target.expose() });
        match self
            .call(
                Method::POST,
                "auth/token/revoke-orphan",
                Some(token),
                false,
                Some(&body),
            )
            .await
        {
            Err(e) if e.is_token_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// `POST auth/token/revoke-self`. An already invalid token answers 403.
    pub async fn token_revoke_self(&self, token: &VaultToken) -> Result<(), VaultError> {
        self.call(
            Method::POST,
            "auth/token/revoke-self",
            Some(token),
            false,
            None,
        )
        .await?;
        Ok(())
    }

    /// `GET auth/token/lookup-self`.
    pub async fn token_lookup_self(&self, token: &VaultToken) -> Result<TokenInfo, VaultError> {
        let r = self
            .call(
                Method::GET,
                "auth/token/lookup-self",
                Some(token),
                false,
                None,
            )
            .await?;
        data(&r, "token lookup-self")
    }

    /// `POST auth/token/lookup {token}`: another token's properties.
    pub async fn token_lookup(
        &self,
        token: &VaultToken,
        target: &VaultToken,
    ) -> Result<TokenInfo, VaultError> {
        let body = json!({ "token": target.expose() });
        let r = self
            .call(
                Method::POST,
                "auth/token/lookup",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        data(&r, "token lookup")
    }

    // -----------------------------------------------------------------------------------------
    // Database secrets engine

    /// `GET <mount>/creds/<role>`, keeping the lease (`lease_id`, `lease_duration`,
    /// `renewable`) that vaultrs drops. `data.username` and `data.password` must be strings.
    pub async fn read_db_credentials(
        &self,
        token: &VaultToken,
        mount: &str,
        role: &str,
    ) -> Result<DbCredentials, VaultError> {
        #[derive(Deserialize)]
        struct Creds {
            username: String,
            password: Secret<String>,
        }
        let r = self
            .call(
                Method::GET,
                &api_path(&[mount, "creds", role])?,
                Some(token),
                false,
                None,
            )
            .await?;
        let env: Envelope<Creds> = envelope(&r, "database creds")?;
        let creds = env
            .data
            .ok_or_else(|| VaultError::InvalidResponse("database creds: no data".into()))?;
        Ok(DbCredentials {
            username: creds.username,
            password: creds.password,
            lease_id: env.lease_id,
            lease_duration: env.lease_duration,
            renewable: env.renewable,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Leases

    /// `PUT sys/leases/renew {lease_id, increment}` (compat §3.5). See
    /// [`VaultError::is_lease_not_found`] and [`VaultError::is_unrecoverable_lease`].
    pub async fn lease_renew(
        &self,
        token: &VaultToken,
        lease_id: &str,
        increment: Duration,
    ) -> Result<LeaseTtl, VaultError> {
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let r = self
            .call(
                Method::PUT,
                "sys/leases/renew",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        let env: Envelope<Value> = envelope(&r, "lease renew")?;
        Ok(LeaseTtl {
            lease_id: if env.lease_id.is_empty() {
                lease_id.to_string()
            } else {
                env.lease_id
            },
            ttl: env.lease_duration,
            renewable: env.renewable,
        })
    }

    /// `PUT sys/leases/revoke {lease_id}`. Vault answers 204 for an unknown lease too.
    pub async fn lease_revoke(&self, token: &VaultToken, lease_id: &str) -> Result<(), VaultError> {
        let body = json!({ "lease_id": lease_id });
        self.call(
            Method::PUT,
            "sys/leases/revoke",
            Some(token),
            false,
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// `PUT sys/leases/lookup {lease_id}`. An unknown lease is a 400 `invalid lease`.
    pub async fn lease_lookup(
        &self,
        token: &VaultToken,
        lease_id: &str,
    ) -> Result<LeaseInfo, VaultError> {
        let body = json!({ "lease_id": lease_id });
        let r = self
            .call(
                Method::PUT,
                "sys/leases/lookup",
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        data(&r, "lease lookup")
    }

    /// `LIST sys/leases/lookup/<prefix>` (needs `sudo`): the lease ids' last segments, and
    /// sub-prefixes ending in `/`. Nothing under the prefix (404) is an empty list.
    pub async fn list_leases(
        &self,
        token: &VaultToken,
        prefix: &str,
    ) -> Result<Vec<String>, VaultError> {
        let path = api_path(&["sys/leases/lookup", prefix])?;
        let r = found(self.call(Method::GET, &path, Some(token), true, None).await)?;
        match r {
            None => Ok(Vec::new()),
            Some(r) => Ok(envelope::<Keys>(&r, "lease list")?
                .data
                .map(|k| k.keys)
                .unwrap_or_default()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // KV v2

    /// `POST <mount>/data/<path> {"data": data}`: writes a new version.
    pub async fn kv_put<T: Serialize + ?Sized>(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
        data: &T,
    ) -> Result<(), VaultError> {
        self.kv_write(token, mount, path, data, None)
            .await
            .map(|_| ())
    }

    /// Like [`kv_put`](Self::kv_put) with check-and-set: writes only if the current version is
    /// `cas` (0 = only if absent). Returns the new version. A mismatch is a 400.
    pub async fn kv_put_cas<T: Serialize + ?Sized>(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
        data: &T,
        cas: u64,
    ) -> Result<u64, VaultError> {
        self.kv_write(token, mount, path, data, Some(cas)).await
    }

    async fn kv_write<T: Serialize + ?Sized>(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
        data: &T,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let data = serde_json::to_value(data)
            .map_err(|e| VaultError::Config(format!("encoding the KV entry: {e}")))?;
        let body = match cas {
            None => json!({ "data": data }),
            Some(cas) => json!({ "data": data, "options": { "cas": cas } }),
        };
        let r = self
            .call(
                Method::POST,
                &api_path(&[mount, "data", path])?,
                Some(token),
                false,
                Some(&body),
            )
            .await?;
        #[derive(Deserialize)]
        struct Written {
            #[serde(default, deserialize_with = "null_default")]
            version: u64,
        }
        if r.body.is_empty() {
            return Ok(0);
        }
        Ok(envelope::<Written>(&r, "kv write")?
            .data
            .map_or(0, |w| w.version))
    }

    /// `GET <mount>/data/<path>`: the latest version's data, `None` when absent or deleted.
    pub async fn kv_get<T: DeserializeOwned>(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<Option<T>, VaultError> {
        Ok(self
            .kv_get_versioned(token, mount, path)
            .await?
            .map(|(d, _)| d))
    }

    /// Like [`kv_get`](Self::kv_get), with the version (for [`kv_put_cas`](Self::kv_put_cas)).
    pub async fn kv_get_versioned<T: DeserializeOwned>(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<Option<(T, u64)>, VaultError> {
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default, deserialize_with = "null_default")]
            version: u64,
        }
        #[derive(Deserialize)]
        struct Versioned {
            #[serde(default)]
            data: Option<Value>,
            #[serde(default)]
            metadata: Option<Meta>,
        }
        let path = api_path(&[mount, "data", path])?;
        let Some(r) = found(
            self.call(Method::GET, &path, Some(token), false, None)
                .await,
        )?
        else {
            return Ok(None);
        };
        let Some(v) = envelope::<Versioned>(&r, "kv read")?.data else {
            return Ok(None);
        };
        let version = v.metadata.map_or(0, |m| m.version);
        match v.data {
            None | Some(Value::Null) => Ok(None),
            Some(d) => {
                let bytes = serde_json::to_vec(&d).unwrap_or_default();
                Ok(Some((parse_json("kv entry", &bytes)?, version)))
            }
        }
    }

    /// `LIST <mount>/metadata/<prefix>`: the keys under `prefix` (sub-folders end with `/`).
    /// A missing prefix (404) is an empty list.
    pub async fn kv_list(
        &self,
        token: &VaultToken,
        mount: &str,
        prefix: &str,
    ) -> Result<Vec<String>, VaultError> {
        let path = api_path(&[mount, "metadata", prefix])?;
        match found(self.call(Method::GET, &path, Some(token), true, None).await)? {
            None => Ok(Vec::new()),
            Some(r) => Ok(envelope::<Keys>(&r, "kv list")?
                .data
                .map(|k| k.keys)
                .unwrap_or_default()),
        }
    }

    /// `DELETE <mount>/data/<path>` then `DELETE <mount>/metadata/<path>` (compat §3.6): the
    /// entry and all its versions are gone. Both steps count a 404 as done.
    pub async fn kv_delete(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<(), VaultError> {
        for kind in ["data", "metadata"] {
            let p = api_path(&[mount, kind, path])?;
            found(
                self.call(Method::DELETE, &p, Some(token), false, None)
                    .await,
            )?;
        }
        Ok(())
    }

    /// `DELETE <mount>/metadata/<path>`: the entry's metadata and every version at once (what is
    /// left of an entry whose data was deleted but whose metadata was not). 404 counts as done.
    pub async fn kv_delete_metadata(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<(), VaultError> {
        let p = api_path(&[mount, "metadata", path])?;
        found(
            self.call(Method::DELETE, &p, Some(token), false, None)
                .await,
        )?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // sys

    /// Unauthenticated `GET sys/health`. Vault encodes the state in the status (200 active, 429
    /// standby, 472/473 DR/performance standby, 501 not initialised, 503 sealed): all of these
    /// are a [`Health`], not an error.
    pub async fn health(&self) -> Result<Health, VaultError> {
        let r = self
            .send(Request {
                method: Method::GET,
                path: "sys/health",
                token: None,
                list: false,
                body: None,
            })
            .await?;
        match r.status {
            200 | 429 | 472 | 473 | 474 | 501 | 503 => match r.json::<Health>("sys/health") {
                Ok(h) => Ok(h),
                // a 503 that is not a health body (a proxy) is an error, not "sealed"
                Err(_) if r.status != 200 => Err(VaultError::from_status(r.status, Vec::new())),
                Err(e) => Err(e),
            },
            s => Err(VaultError::from_status(s, Vec::new())),
        }
    }
}
