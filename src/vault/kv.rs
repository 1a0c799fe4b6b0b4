//! KV v2 operations of [`VaultClient`] (vdbi's state store: compat §3.6): write (optionally
//! check-and-set), versioned read, list and delete. vaultrs serves write/list/delete directly;
//! the read uses vaultrs's request type, decoded by vdbi to keep the version.

use super::client::{raw_path, VaultClient};
use super::error::VaultError;
use super::exec::parse_json;
use super::ops::{found, mapped};
use super::secret::VaultToken;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};

impl VaultClient {
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
        let (mount, path) = (raw_path(&[mount])?, raw_path(&[path])?);
        let cas = cas
            .map(|c| {
                u32::try_from(c)
                    .map(|cas| SetSecretRequestOptions { cas })
                    .map_err(|_| VaultError::InvalidRequest(format!("cas {c} is out of range")))
            })
            .transpose()?;
        self.run(Some(token), |c| async move {
            let written = match cas {
                None => vaultrs::kv2::set(&c, &mount, &path, &data).await,
                Some(o) => vaultrs::kv2::set_with_options(&c, &mount, &path, &data, o).await,
            };
            written
                .map(|m| m.version)
                .map_err(mapped("kv write", Some(token)))
        })
        .await
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
        let (mount, path) = (raw_path(&[mount])?, raw_path(&[path])?);
        self.run(Some(token), |c| async move {
            let req = ReadSecretRequest::builder()
                .mount(mount)
                .path(path)
                .build()
                .map_err(|e| VaultError::InvalidRequest(e.to_string()))?;
            let Some(r) = found(
                vaultrs::api::exec_with_result(&c, req)
                    .await
                    .map_err(mapped("kv read", Some(token))),
            )?
            else {
                return Ok(None);
            };
            match r.data {
                Value::Null => Ok(None),
                d => {
                    let bytes = serde_json::to_vec(&d).unwrap_or_default();
                    Ok(Some((parse_json("kv entry", &bytes)?, r.metadata.version)))
                }
            }
        })
        .await
    }

    /// `LIST <mount>/metadata/<prefix>`: the keys under `prefix` (sub-folders end with `/`).
    /// A missing prefix (404) is an empty list.
    pub async fn kv_list(
        &self,
        token: &VaultToken,
        mount: &str,
        prefix: &str,
    ) -> Result<Vec<String>, VaultError> {
        let (mount, prefix) = (raw_path(&[mount])?, raw_path(&[prefix])?);
        self.run(Some(token), |c| async move {
            let keys = vaultrs::kv2::list(&c, &mount, &prefix)
                .await
                .map_err(mapped("kv list", Some(token)));
            Ok(found(keys)?.unwrap_or_default())
        })
        .await
    }

    /// `DELETE <mount>/data/<path>` then `DELETE <mount>/metadata/<path>` (compat §3.6): the
    /// entry and all its versions are gone. Both steps count a 404 as done.
    pub async fn kv_delete(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<(), VaultError> {
        let (mount, path) = (raw_path(&[mount])?, raw_path(&[path])?);
        self.run(Some(token), |c| async move {
            found(
                vaultrs::kv2::delete_latest(&c, &mount, &path)
                    .await
                    .map_err(mapped("kv delete", Some(token))),
            )?;
            delete_metadata(&c, &mount, &path, token).await
        })
        .await
    }

    /// `DELETE <mount>/metadata/<path>`: the entry's metadata and every version at once (what is
    /// left of an entry whose data was deleted but whose metadata was not). 404 counts as done.
    pub async fn kv_delete_metadata(
        &self,
        token: &VaultToken,
        mount: &str,
        path: &str,
    ) -> Result<(), VaultError> {
        let (mount, path) = (raw_path(&[mount])?, raw_path(&[path])?);
        self.run(Some(token), |c| async move {
            delete_metadata(&c, &mount, &path, token).await
        })
        .await
    }
}

/// `DELETE <mount>/metadata/<path>` on an already scoped client; a 404 counts as done.
async fn delete_metadata(
    c: &impl vaultrs::client::Client,
    mount: &str,
    path: &str,
    token: &VaultToken,
) -> Result<(), VaultError> {
    found(
        vaultrs::kv2::delete_metadata(c, mount, path)
            .await
            .map_err(mapped("kv metadata delete", Some(token))),
    )?;
    Ok(())
}
