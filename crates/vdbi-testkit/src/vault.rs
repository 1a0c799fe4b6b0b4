//! Vault test support on the local platform for the typed client ([`vdbi::vault`]): a
//! [`VaultClient`] with the root token, throwaway policies and kubernetes auth roles. Raw HTTP
//! access, namespaces and TokenRequests live in [`crate::platform`].

use crate::platform::Platform;
use serde_json::json;
use std::time::Duration;
use vdbi::vault::{VaultClient, VaultSettings, VaultToken};

/// A client for the platform's OpenBao plus its root token.
pub struct VaultFixture {
    pub platform: Platform,
    pub client: VaultClient,
    pub root: VaultToken,
}

impl VaultFixture {
    /// Unlimited client (tests run in parallel; the rate limiter has its own tests).
    pub fn get() -> VaultFixture {
        Self::with(|_| {})
    }

    /// Like [`get`](Self::get), with the settings adjusted by `f`.
    pub fn with(f: impl FnOnce(&mut VaultSettings)) -> VaultFixture {
        let platform = Platform::get();
        let mut settings = settings(&platform);
        f(&mut settings);
        let client = client(settings).expect("Vault client");
        let root = VaultToken::new(platform.var("VDBI_VAULT_ROOT_TOKEN"));
        VaultFixture {
            platform,
            client,
            root,
        }
    }

    /// Writes the ACL policy `name`.
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.client
            .logical_write(
                &self.root,
                &format!("sys/policies/acl/{name}"),
                &json!({ "policy": hcl }),
            )
            .await
            .unwrap_or_else(|e| panic!("writing policy {name}: {e}"));
    }

    pub async fn delete_policy(&self, name: &str) {
        let _ = self
            .client
            .logical_delete(&self.root, &format!("sys/policies/acl/{name}"))
            .await;
    }

    /// Writes the kubernetes auth role `name` on the platform's auth mount.
    pub async fn put_kube_role(&self, name: &str, body: serde_json::Value) {
        let path = format!("auth/{}/role/{name}", self.kube_auth_mount());
        self.client
            .logical_write(&self.root, &path, &body)
            .await
            .unwrap_or_else(|e| panic!("writing kubernetes auth role {name}: {e}"));
    }

    pub async fn delete_kube_role(&self, name: &str) {
        let path = format!("auth/{}/role/{name}", self.kube_auth_mount());
        let _ = self.client.logical_delete(&self.root, &path).await;
    }

    pub fn kube_auth_mount(&self) -> String {
        self.platform.var("VDBI_K8S_AUTH_MOUNT")
    }

    pub fn kv_mount(&self) -> String {
        self.platform.var("VDBI_KV_MOUNT")
    }

    pub fn db_mount(&self) -> String {
        self.platform.var("VDBI_DB_MOUNT")
    }

    /// The first database role the platform configured (e.g. `app-rw`).
    pub fn db_role(&self) -> String {
        let roles = self.platform.var("VDBI_DB_ROLES");
        roles
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// A Vault client for tests that exercise the typed operations directly (the daemon builds
/// its one client in the actor layer).
pub fn client(settings: VaultSettings) -> Result<VaultClient, vdbi::vault::VaultError> {
    vdbi::actors::vault_session::connect(settings)
}

/// Client settings for the platform's OpenBao (no rate limit).
pub fn settings(platform: &Platform) -> VaultSettings {
    VaultSettings {
        address: platform.vault_addr(),
        request_timeout: Duration::from_secs(30),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    }
}

/// `prefix-` + 8 random hex characters: names that do not clash between parallel tests.
pub fn unique(prefix: &str) -> String {
    crate::platform::unique_name(prefix)
}

/// An admin kube client for the platform's apiserver (its `KUBECONFIG`).
pub async fn kube_client(platform: &Platform) -> kube::Client {
    platform.kube_client().await
}

/// A ServiceAccount JWT from a TokenRequest (`audiences` empty = the apiserver's default).
pub async fn service_account_jwt(
    kube: &kube::Client,
    namespace: &str,
    service_account: &str,
    audiences: &[&str],
) -> String {
    crate::platform::service_account_token(kube, namespace, service_account, audiences).await
}
