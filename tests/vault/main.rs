//! The Vault client layer against the local platform's real OpenBao (and PostgreSQL and
//! kube-apiserver). Every test creates what it needs under unique names, so tests run in
//! parallel. Start the platform with `platform/vdbi-platform up`.

use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;
use vdbi::bookkeeping::{self, BookkeepingEntry, KvData};
use vdbi::vault::{
    can_get_role, DbCredentials, DenyCause, VaultClient, VaultError, VaultSettings, VaultToken,
};
use vdbi_testkit::vault::{
    client as vault_client, kube_client, service_account_jwt, unique, VaultFixture,
};

mod auth;
mod transport;

/// A policy allowing the platform's first DB role's creds (plus the token self-endpoints).
async fn creds_policy(fx: &VaultFixture) -> String {
    let name = unique("vdbi-t-creds");
    let hcl = format!(
        r#"path "{}/creds/{}" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}"#,
        fx.db_mount(),
        fx.db_role()
    );
    fx.put_policy(&name, &hcl).await;
    name
}

async fn orphan(fx: &VaultFixture, policy: &str) -> VaultToken {
    fx.client
        .create_orphan_token(
            &fx.root,
            &[policy.to_string()],
            Duration::from_secs(3600),
            "injector-orphan-token",
        )
        .await
        .expect("create-orphan")
        .token
}

/// Logs in to PostgreSQL with `creds`.
async fn pg_login(fx: &VaultFixture, creds: &DbCredentials) -> Result<(), tokio_postgres::Error> {
    let p = &fx.platform;
    let (client, conn) = tokio_postgres::Config::new()
        .host(p.var("VDBI_PG_HOST"))
        .port(p.var("VDBI_PG_PORT").parse().unwrap())
        .dbname(p.var("VDBI_PG_DATABASE"))
        .user(&creds.username)
        .password(creds.password.expose())
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    let task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// Polls `f` until it returns true (up to 15 s).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_of_the_platform() {
    let fx = VaultFixture::get();
    let h = fx.client.health().await.expect("sys/health");
    assert!(h.initialized && !h.sealed && !h.standby, "{h:?}");
    assert!(h.is_active());
    assert!(!h.version.is_empty());
}

#[tokio::test]
async fn kv_put_get_list_delete() {
    let fx = VaultFixture::get();
    let (c, root, mount) = (&fx.client, &fx.root, fx.kv_mount());
    let prefix = unique("vdbi-t-kv");
    let a = format!("{prefix}/a");
    let b = format!("{prefix}/b");

    // absent: None, empty list, deletes are no-ops
    assert_eq!(c.kv_get::<KvData>(root, &mount, &a).await.unwrap(), None);
    assert!(c.kv_list(root, &mount, &prefix).await.unwrap().is_empty());
    c.kv_delete(root, &mount, &a)
        .await
        .expect("delete of a missing entry");

    c.kv_put(root, &mount, &a, &json!({"k": "v1"}))
        .await
        .unwrap();
    c.kv_put(root, &mount, &a, &json!({"k": "v2"}))
        .await
        .unwrap();
    c.kv_put(root, &mount, &b, &json!({"k": "b"}))
        .await
        .unwrap();
    let got: Value = c.kv_get(root, &mount, &a).await.unwrap().unwrap();
    assert_eq!(got, json!({"k": "v2"}));
    let (_, version) = c
        .kv_get_versioned::<Value>(root, &mount, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version, 2);
    let mut keys = c.kv_list(root, &mount, &prefix).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);

    // check-and-set
    let e = c
        .kv_put_cas(root, &mount, &a, &json!({"k": "x"}), 1)
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Api { status: 400, .. }), "{e}");
    assert_eq!(
        c.kv_put_cas(root, &mount, &a, &json!({"k": "v3"}), 2)
            .await
            .unwrap(),
        3
    );
    let new = format!("{prefix}/c");
    assert_eq!(
        c.kv_put_cas(root, &mount, &new, &json!({}), 0)
            .await
            .unwrap(),
        1
    );
    c.kv_delete(root, &mount, &new).await.unwrap();

    // delete = data + metadata: gone from reads and lists, all versions
    c.kv_delete(root, &mount, &a).await.unwrap();
    c.kv_delete(root, &mount, &a)
        .await
        .expect("second delete is a no-op");
    assert_eq!(c.kv_get::<Value>(root, &mount, &a).await.unwrap(), None);
    assert_eq!(c.kv_list(root, &mount, &prefix).await.unwrap(), ["b"]);
    let meta = c
        .logical_read(root, &format!("{mount}/metadata/{a}"))
        .await
        .unwrap_err();
    assert!(meta.is_not_found(), "{meta}");

    // a soft-deleted latest version (data delete only) reads as absent
    c.logical_delete(root, &format!("{mount}/data/{b}"))
        .await
        .unwrap();
    assert_eq!(c.kv_get::<Value>(root, &mount, &b).await.unwrap(), None);
    c.kv_delete(root, &mount, &b).await.unwrap();
    assert!(c.kv_list(root, &mount, &prefix).await.unwrap().is_empty());

    // dot segments never leave the prefix
    let e = c
        .kv_get::<Value>(root, &mount, &format!("{prefix}/../x"))
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::InvalidRequest(_)), "{e}");
}

#[tokio::test]
async fn bookkeeping_entry_layout_in_kv() {
    let fx = VaultFixture::get();
    let (c, root, mount) = (&fx.client, &fx.root, fx.kv_mount());
    let prefix = unique("vdbi-t-bk");
    let uuid = uuid::Uuid::new_v4().to_string();
    let path = bookkeeping::entry_path(&prefix, &uuid);
    let entry = BookkeepingEntry {
        lease_id: "databases/creds/app-rw/abc".into(),
        token_id: "s.not-a-real-token".into(),
        namespace: "ns".into(),
        service_account_name: "sa".into(),
        pod_name: String::new(),
        node_name: String::new(),
    };
    c.kv_put(root, &mount, &path, &entry.to_map())
        .await
        .unwrap();

    // what Vault stores: exactly the six string keys
    let raw = c
        .logical_read(root, &format!("{mount}/data/{path}"))
        .await
        .unwrap()
        .unwrap();
    let data = raw["data"]["data"].as_object().unwrap();
    let mut keys: Vec<_> = data.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "LeaseId",
            "Namespace",
            "NodeName",
            "PodName",
            "ServiceAccountName",
            "TokenId"
        ]
    );
    assert!(data.values().all(Value::is_string));

    let back = c
        .kv_get::<KvData>(root, &mount, &path)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(BookkeepingEntry::from_map(&back), entry);
    let typed: BookkeepingEntry = c.kv_get(root, &mount, &path).await.unwrap().unwrap();
    assert_eq!(typed, entry);
    assert_eq!(
        bookkeeping::entry_keys(c.kv_list(root, &mount, &prefix).await.unwrap()),
        [uuid.as_str()]
    );
    c.kv_delete(root, &mount, &path).await.unwrap();
}

#[tokio::test]
async fn orphan_token_credentials_and_their_lease() {
    let fx = VaultFixture::get();
    let (c, root) = (&fx.client, &fx.root);
    let policy = creds_policy(&fx).await;

    // compat §3.1 step 3
    let auth = c
        .create_orphan_token(
            root,
            std::slice::from_ref(&policy),
            Duration::from_secs(3600),
            "injector-orphan-token",
        )
        .await
        .unwrap();
    assert!(auth.orphan && auth.renewable, "{auth:?}");
    assert!(auth.policies.contains(&policy));
    assert!(!format!("{auth:?}").contains(auth.token.expose()));
    let info = c.token_lookup_self(&auth.token).await.unwrap();
    assert_eq!(info.period, Duration::from_secs(3600));
    assert!(info.orphan);
    assert_eq!(info.accessor, auth.accessor);
    assert!(
        info.display_name.contains("injector-orphan-token"),
        "{}",
        info.display_name
    );
    assert!(info.policies.contains(&policy));

    // creds keep their lease
    let creds = c
        .read_db_credentials(&auth.token, &fx.db_mount(), &fx.db_role())
        .await
        .unwrap();
    let lease_prefix = format!("{}/creds/{}/", fx.db_mount(), fx.db_role());
    assert!(
        creds.lease_id.starts_with(&lease_prefix),
        "{}",
        creds.lease_id
    );
    assert!(
        creds.renewable && creds.lease_duration > Duration::ZERO,
        "{creds:?}"
    );
    assert!(!format!("{creds:?}").contains(creds.password.expose()));
    pg_login(&fx, &creds).await.expect("the credentials work");

    // lookup, renew (the renewer's 5-day increment, capped by the role), list
    let li = c.lease_lookup(root, &creds.lease_id).await.unwrap();
    assert_eq!(li.id, creds.lease_id);
    let renewed = c
        .lease_renew(root, &creds.lease_id, Duration::from_secs(432_000))
        .await
        .unwrap();
    assert_eq!(renewed.lease_id, creds.lease_id);
    assert!(renewed.ttl > Duration::ZERO && renewed.ttl <= Duration::from_secs(24 * 3600));
    let suffix = creds.lease_id.strip_prefix(&lease_prefix).unwrap();
    let listed = c.list_leases(root, &lease_prefix).await.unwrap();
    assert!(listed.iter().any(|k| k == suffix), "{listed:?}");
    assert!(c
        .list_leases(root, &unique("nothing/here"))
        .await
        .unwrap()
        .is_empty());

    // revoke the lease: the DB user is gone, the lease is unknown
    c.lease_revoke(root, &creds.lease_id).await.unwrap();
    c.lease_revoke(root, &creds.lease_id)
        .await
        .expect("revoking twice is fine");
    assert!(
        pg_login(&fx, &creds).await.is_err(),
        "revoked credentials still work"
    );
    let e = c.lease_lookup(root, &creds.lease_id).await.unwrap_err();
    assert!(e.is_unrecoverable_lease(), "{e}");
    let e = c
        .lease_renew(root, &creds.lease_id, Duration::from_secs(60))
        .await
        .unwrap_err();
    // "lease not found": the renewer counts it as done (compat §3.5)
    assert!(e.is_lease_not_found() && !e.is_unrecoverable_lease(), "{e}");

    c.token_revoke_orphan(root, &auth.token).await.unwrap();
    fx.delete_policy(&policy).await;
}

#[tokio::test]
async fn revoking_the_orphan_token_revokes_its_lease() {
    let fx = VaultFixture::get();
    let (c, root) = (&fx.client, &fx.root);
    let policy = creds_policy(&fx).await;
    let token = orphan(&fx, &policy).await;
    let creds = c
        .read_db_credentials(&token, &fx.db_mount(), &fx.db_role())
        .await
        .unwrap();
    pg_login(&fx, &creds).await.unwrap();

    c.token_revoke_orphan(root, &token).await.unwrap();
    eventually("the lease dies with its token", || async {
        c.lease_lookup(root, &creds.lease_id).await.is_err()
    })
    .await;
    assert!(
        pg_login(&fx, &creds).await.is_err(),
        "credentials outlived their token"
    );

    // the token is gone: revoke again is fine, renew says "token not found"
    c.token_revoke_orphan(root, &token)
        .await
        .expect("revoke-orphan of a gone token");
    let e = c
        .token_renew(root, &token, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.is_token_not_found(), "{e}");
    let e = c.token_lookup_self(&token).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    fx.delete_policy(&policy).await;
}

#[tokio::test]
async fn token_renew_lookup_and_revoke_self() {
    let fx = VaultFixture::get();
    let (c, root) = (&fx.client, &fx.root);
    let auth = c
        .create_orphan_token(
            root,
            &["default".to_string()],
            Duration::from_secs(1800),
            "vdbi-test",
        )
        .await
        .unwrap();
    let t = &auth.token;

    let renewed = c
        .token_renew(root, t, Duration::from_secs(60))
        .await
        .unwrap();
    // periodic token: the TTL is reset to the period whatever the increment
    assert_eq!(renewed.ttl, Duration::from_secs(1800));
    assert_eq!(renewed.accessor, auth.accessor);
    let own = c
        .token_renew_self(t, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(own.renewable && own.ttl > Duration::ZERO);

    let other = c.token_lookup(root, t).await.unwrap();
    assert_eq!(other.accessor, auth.accessor);
    assert_eq!(other.period, Duration::from_secs(1800));

    c.token_revoke_self(t).await.unwrap();
    let e = c.token_lookup_self(t).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert_eq!(e.login_failure_reason(), "permission_denied");
    // Looked up by another token, a revoked token is unknown ("bad token"), not a refusal.
    let e = c.token_lookup(root, t).await.unwrap_err();
    assert!(e.is_bad_token(), "{e}");
    let e = c.token_revoke_self(t).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
}
