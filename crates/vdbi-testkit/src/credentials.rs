//! Credentials issued and recorded the way vdbi's legacy webhook does (an orphan token with the
//! DB role's policy, `<mount>/creds/<role>` read with it, the bookkeeping entry in KV), and the
//! checks that they are gone. Root is used for set-up and counting only.

use serde_json::{json, Value};

use crate::platform::{Platform, VaultRoot};

#[derive(Clone, Debug)]
pub struct Issued {
    pub uuid: String,
    pub token: String,
    pub lease_id: String,
}

/// An orphan token with policy `role` (period `period`), and a DB lease read with it.
pub async fn issue(root: &VaultRoot, p: &Platform, role: &str, period: &str) -> Issued {
    let auth = root
        .write(
            "auth/token/create-orphan",
            &json!({"policies": [role], "period": period, "display_name": "injector-orphan-token"}),
        )
        .await;
    let token = auth["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_string();
    let creds = root
        .with_token(&token)
        .read(&format!("{}/creds/{role}", p.var("VDBI_DB_MOUNT")))
        .await;
    Issued {
        uuid: uuid::Uuid::new_v4().to_string(),
        token,
        lease_id: creds["lease_id"].as_str().expect("lease").to_string(),
    }
}

/// Writes the bookkeeping entry of `i` (vault-db-injector's layout).
pub async fn record(root: &VaultRoot, p: &Platform, prefix: &str, i: &Issued, ns: &str, pod: &str) {
    root.write(
        &format!("{}/data/{prefix}/{}", p.var("VDBI_KV_MOUNT"), i.uuid),
        &json!({"data": {
            "LeaseId": i.lease_id, "TokenId": i.token, "Namespace": ns,
            "ServiceAccountName": "", "PodName": pod, "NodeName": ""
        }}),
    )
    .await;
}

/// The KV entry `<prefix>/<uuid>` still has data.
pub async fn entry_exists(root: &VaultRoot, p: &Platform, prefix: &str, uuid: &str) -> bool {
    root.request(
        reqwest::Method::GET,
        &format!("{}/data/{prefix}/{uuid}", p.var("VDBI_KV_MOUNT")),
        None,
    )
    .await
    .status
    .is_success()
}

/// Vault still holds the lease.
pub async fn lease_exists(root: &VaultRoot, lease_id: &str) -> bool {
    root.request(
        reqwest::Method::PUT,
        "sys/leases/lookup",
        Some(&json!({ "lease_id": lease_id })),
    )
    .await
    .status
    .is_success()
}

/// The token can still authenticate (a token whose revocation is pending cannot).
pub async fn token_usable(root: &VaultRoot, token: &str) -> bool {
    root.with_token(token)
        .request(reqwest::Method::GET, "auth/token/lookup-self", None)
        .await
        .status
        .is_success()
}

/// Entry, lease and token are all gone.
pub async fn all_gone(root: &VaultRoot, p: &Platform, prefix: &str, i: &Issued) -> bool {
    !entry_exists(root, p, prefix, &i.uuid).await
        && !lease_exists(root, &i.lease_id).await
        && !token_usable(root, &i.token).await
}

/// Best-effort removal of what a test issued.
pub async fn purge(root: &VaultRoot, p: &Platform, prefix: &str, issued: &[Issued]) {
    for i in issued {
        root.request(
            reqwest::Method::POST,
            "auth/token/revoke-orphan",
            Some(&json!({"token": i.token})),
        )
        .await;
        root.request(
            reqwest::Method::PUT,
            "sys/leases/revoke",
            Some(&json!({"lease_id": i.lease_id})),
        )
        .await;
        root.request(
            reqwest::Method::DELETE,
            &format!("{}/metadata/{prefix}/{}", p.var("VDBI_KV_MOUNT"), i.uuid),
            None,
        )
        .await;
    }
}

/// `LIST`-style keys of a JSON answer (`data.keys`).
pub fn keys(v: &Value) -> Vec<String> {
    v["data"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}
