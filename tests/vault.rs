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
    let e = c.token_revoke_self(t).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
}

#[tokio::test]
async fn kubernetes_auth_role_read_and_checked() {
    let fx = VaultFixture::get();
    let c = &fx.client;
    let name = unique("vdbi-t-role");
    // scalars on purpose: Vault stores lists, the reader normalises either way
    fx.put_kube_role(
        &name,
        json!({
            "bound_service_account_names": ["app", "svc-*"],
            "bound_service_account_namespaces": "team-*",
            "token_policies": [name.clone()],
            "token_period": "1h",
            "audience": "vault",
        }),
    )
    .await;
    let role = c
        .read_kubernetes_auth_role(&fx.root, &fx.kube_auth_mount(), &name)
        .await
        .unwrap();
    assert_eq!(role.bound_service_account_names, ["app", "svc-*"]);
    assert_eq!(role.bound_service_account_namespaces, ["team-*"]);
    assert_eq!(role.token_policies, [name.as_str()]);
    assert_eq!(role.token_period, Duration::from_secs(3600));
    assert_eq!(role.audience.as_deref(), Some("vault"));

    assert_eq!(can_get_role(&role, &name, "app", "team-a"), Ok(()));
    assert_eq!(can_get_role(&role, &name, "svc-orders", "team-b"), Ok(()));
    assert_eq!(
        can_get_role(&role, "other", "app", "team-a"),
        Err(DenyCause::RoleNotInAssumeRole)
    );
    assert_eq!(
        can_get_role(&role, &name, "intruder", "team-a"),
        Err(DenyCause::ServiceAccountNameNotInRole)
    );
    assert_eq!(
        can_get_role(&role, &name, "app", "prod"),
        Err(DenyCause::NamespaceNotInRole)
    );

    fx.delete_kube_role(&name).await;
    let e = c
        .read_kubernetes_auth_role(&fx.root, &fx.kube_auth_mount(), &name)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn error_classes_without_kubernetes() {
    let fx = VaultFixture::get();
    let (c, root) = (&fx.client, &fx.root);

    // login to a role that does not exist
    let e = c
        .login_kubernetes(&fx.kube_auth_mount(), &unique("no-such-role"), "not.a.jwt")
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Api { status: 400, .. }), "{e}");
    assert_eq!(e.login_failure_reason(), "role_not_found");
    assert!(!e.is_retryable());

    // a bad JWT for an existing role
    let legacy_role = fx.platform.var("VDBI_LEGACY_KUBE_ROLE");
    let e = c
        .login_kubernetes(&fx.kube_auth_mount(), &legacy_role, "not.a.jwt")
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert_eq!(e.login_failure_reason(), "permission_denied");

    // a token without the capability
    let weak = c
        .create_orphan_token(
            root,
            &["default".to_string()],
            Duration::from_secs(600),
            "vdbi-test",
        )
        .await
        .unwrap()
        .token;
    let e = c
        .kv_get::<Value>(&weak, &fx.kv_mount(), "x/y")
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    let e = c
        .read_db_credentials(&weak, &fx.db_mount(), &fx.db_role())
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    c.token_revoke_orphan(root, &weak).await.unwrap();

    // an unknown token
    let e = c
        .token_lookup_self(&VaultToken::new("s.bogus"))
        .await
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    // an unknown DB role
    let e = c
        .read_db_credentials(root, &fx.db_mount(), "no-such-role")
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Api { status: 400, .. }), "{e}");
    // a missing mount
    let e = c
        .read_db_credentials(root, &unique("no-mount"), "r")
        .await
        .unwrap_err();
    assert!(matches!(e.status(), Some(403 | 404)), "{e}");
    // revoke-orphan of a token that never existed is done, not an error
    c.token_revoke_orphan(root, &VaultToken::new("s.never-existed"))
        .await
        .unwrap();
    // errors never carry the token
    assert!(!format!("{e:?}").contains(root.expose()));
}

#[tokio::test]
async fn kubernetes_login_and_its_failure_reasons() {
    let fx = VaultFixture::get();
    let c = &fx.client;
    let kube = kube_client(&fx.platform).await;
    let mount = fx.kube_auth_mount();
    let ns = fx.platform.var("VDBI_SYSTEM_NAMESPACE");
    let sa = fx
        .platform
        .var("VDBI_SERVICE_ACCOUNTS")
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let audience = fx.platform.var("VDBI_K8S_AUDIENCE");
    let jwt = service_account_jwt(&kube, &ns, &sa, &[&audience]).await;

    // the legacy login (kubeRole)
    let login = c
        .login_kubernetes(&mount, &fx.platform.var("VDBI_LEGACY_KUBE_ROLE"), &jwt)
        .await
        .expect("kubernetes login");
    assert!(login.ttl > Duration::ZERO && login.renewable, "{login:?}");
    assert!(!login.accessor.is_empty() && !login.policies.is_empty());
    let info = c.token_lookup_self(&login.token).await.unwrap();
    assert_eq!(info.accessor, login.accessor);
    c.token_revoke_self(&login.token).await.unwrap();

    // a periodic role (projected mode): lookup-self shows the period
    let role = unique("vdbi-t-login");
    let bound = |names: &str, namespaces: &str| {
        json!({
            "bound_service_account_names": names,
            "bound_service_account_namespaces": namespaces,
            "token_policies": ["default"],
            "token_period": 3600,
            "audience": audience,
        })
    };
    fx.put_kube_role(&role, bound(&sa, &ns)).await;
    let login = c.login_kubernetes(&mount, &role, &jwt).await.unwrap();
    let info = c.token_lookup_self(&login.token).await.unwrap();
    assert_eq!(info.period, Duration::from_secs(3600));
    c.token_revoke_self(&login.token).await.unwrap();

    // wrong audience
    let other_aud = service_account_jwt(&kube, &ns, &sa, &["not-vault"]).await;
    let e = c
        .login_kubernetes(&mount, &role, &other_aud)
        .await
        .unwrap_err();
    assert_eq!(e.login_failure_reason(), "audience_mismatch", "{e}");

    // SA not bound
    fx.put_kube_role(&role, bound("someone-else", &ns)).await;
    let e = c.login_kubernetes(&mount, &role, &jwt).await.unwrap_err();
    assert_eq!(e.login_failure_reason(), "sa_not_bound", "{e}");

    // namespace not bound: "other", as in vault-db-injector
    fx.put_kube_role(&role, bound(&sa, "elsewhere")).await;
    let e = c.login_kubernetes(&mount, &role, &jwt).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert_eq!(e.login_failure_reason(), "other", "{e}");

    // globs are honoured by Vault as by can_get_role
    let prefix = format!("{}*", &sa[..sa.len() / 2]);
    fx.put_kube_role(&role, bound(&prefix, &ns)).await;
    let login = c
        .login_kubernetes(&mount, &role, &jwt)
        .await
        .expect("glob-bound login");
    c.token_revoke_self(&login.token).await.unwrap();
    let r = c
        .read_kubernetes_auth_role(&fx.root, &mount, &role)
        .await
        .unwrap();
    assert_eq!(can_get_role(&r, "default", &sa, &ns), Ok(()));

    fx.delete_kube_role(&role).await;
    let e = c.login_kubernetes(&mount, &role, &jwt).await.unwrap_err();
    assert_eq!(e.login_failure_reason(), "role_not_found", "{e}");
}

#[tokio::test]
async fn rate_limiter_spaces_real_calls() {
    // 11 calls at 20/s with a burst of 1: at least (11 - 1) / 20 = 500 ms.
    let fx = VaultFixture::with(|s| {
        s.rate_limit_per_sec = 20;
        s.rate_burst = 1;
    });
    let t0 = Instant::now();
    let calls = (0..11).map(|_| {
        let c = fx.client.clone();
        tokio::spawn(async move { c.health().await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().expect("health");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // a burst of 10 goes at once (generous bound)
    let fx = VaultFixture::with(|s| {
        s.rate_limit_per_sec = 1;
        s.rate_burst = 10;
    });
    let t0 = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = fx.client.clone();
            tokio::spawn(async move { c.health().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("health");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A TCP listener that accepts connections and never answers.
async fn stalled_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn client_for(address: String, timeout: Duration) -> VaultClient {
    vault_client(VaultSettings {
        address,
        request_timeout: timeout,
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn deadlines_and_transport_errors() {
    let (addr, task) = stalled_listener().await;
    let token = VaultToken::new("s.x");

    // the caller's deadline bounds a call to a server that never answers
    let c = client_for(format!("http://{addr}"), Duration::from_secs(120));
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(300), c.token_lookup_self(&token)).await;
    assert!(r.is_err(), "expected the deadline to fire");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // the client's own request timeout gives a Timeout error
    let c = client_for(format!("http://{addr}"), Duration::from_millis(300));
    let e = c.token_lookup_self(&token).await.unwrap_err();
    assert_eq!(e, VaultError::Timeout);
    assert!(e.is_retryable());
    let e = c.health().await.unwrap_err();
    assert_eq!(e, VaultError::Timeout);
    task.abort();

    // connection refused: Transport
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = client_for(format!("http://{free}"), Duration::from_secs(5));
    let e = c.health().await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    assert!(e.is_retryable());

    // a proxy error page echoing the request: Api 502, retryable, the token masked
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).replace("\r\n", " ");
            let resp = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{req}",
                req.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let secret = VaultToken::new("s.very-secret-token");
    let c = client_for(format!("http://{addr}"), Duration::from_secs(5));
    let e = c.token_lookup_self(&secret).await.unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("very-secret"), "{e}");
    assert!(e.to_string().contains("x-vault-token: ***"), "{e}");
    echo.abort();

    // TLS to a server that does not speak TLS: Transport
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let garbage = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls")
                .await;
        }
    });
    let c = client_for(format!("https://{addr}"), Duration::from_secs(5));
    let e = c.token_lookup_self(&token).await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    assert!(!e.to_string().contains("s.x"));
    garbage.abort();
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    // A TLS server whose certificate is signed by a throwaway CA: trusted with ca_cert_file,
    // refused without it, accepted with skip_verify.
    use std::sync::Arc;
    vdbi::tls::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"GET /v1/auth/token/lookup-self") {
                    // a redirect to plain http must not be followed (the token would travel)
                    let _ = tls
                        .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/v1/auth/token/lookup-self\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                    return;
                }
                let body =
                    r#"{"initialized":true,"sealed":false,"standby":false,"version":"tls-test"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });

    let base = VaultSettings {
        address: format!("https://{addr}"),
        request_timeout: Duration::from_secs(5),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    };
    let trusted = vault_client(VaultSettings {
        ca_cert_file: Some(ca_file),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(trusted.health().await.unwrap().version, "tls-test");
    let e = trusted
        .token_lookup_self(&VaultToken::new("s.x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VaultError::Transport(m) if m.contains("https to http")),
        "{e:?}"
    );
    let untrusted = vault_client(base.clone()).unwrap();
    let e = untrusted.health().await.unwrap_err();
    assert!(matches!(e, VaultError::Transport(_)), "{e:?}");
    let skip = vault_client(VaultSettings {
        skip_verify: true,
        ..base
    })
    .unwrap();
    assert!(skip.health().await.unwrap().is_active());
    server.abort();
}

/// A throwaway in-memory OpenBao dev server (the platform's `bao` binary), sealed on purpose:
/// cheap (about a second) and the only way to see real sealed answers.
#[tokio::test]
async fn sealed_vault_is_classified() {
    let fx = VaultFixture::get();
    let bao = fx
        .platform
        .try_var("VDBI_BAO_BIN")
        .unwrap_or_else(|| "bao".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = VaultToken::new(unique("root"));
    let mut child = tokio::process::Command::new(&bao)
        .args([
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={}", root.expose()),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{bao} server -dev` (set VDBI_BAO_BIN?): {e}"));
    let c = client_for(format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    eventually("the dev server answers", || async {
        c.health().await.is_ok_and(|h| h.is_active())
    })
    .await;
    c.logical_write(&root, "sys/seal", &json!({}))
        .await
        .expect("seal");

    let h = c
        .health()
        .await
        .expect("health of a sealed server is not an error");
    assert!(h.sealed && !h.is_active(), "{h:?}");
    let e = c.token_lookup_self(&root).await.unwrap_err();
    assert_eq!(e, VaultError::Sealed);
    assert!(e.is_sealed() && e.is_retryable());
    let e = c
        .login_kubernetes("kubernetes", "r", "jwt")
        .await
        .unwrap_err();
    assert_eq!(e.login_failure_reason(), "vault_sealed", "{e}");

    let _ = child.kill().await;
}

/// A bare HTTP/1.1 keep-alive responder that counts connections and records request heads:
/// it observes the wire (pooling, headers), it does not stand in for Vault.
async fn recording_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (c2, h2) = (conns.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let heads = h2.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut head = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&lower);
                    }
                    let mut body = vec![0u8; len];
                    let _ = r.read_exact(&mut body).await;
                    heads.lock().unwrap().push(head);
                    let json = r#"{"data":{"accessor":"acc","ttl":5}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, heads)
}

#[tokio::test]
async fn one_connection_pool_for_all_tokens() {
    let (addr, conns, heads) = recording_server().await;
    let client = vault_client(VaultSettings {
        address: format!("http://{addr}"),
        namespace: Some("team-a".into()),
        request_timeout: Duration::from_secs(5),
        rate_limit_per_sec: 0,
        ..VaultSettings::default()
    })
    .unwrap();
    for i in 0..5 {
        let c = client.clone();
        let info = c
            .token_lookup_self(&VaultToken::new(format!("s.token-{i}")))
            .await
            .unwrap();
        assert_eq!(info.accessor, "acc");
    }
    // five tokens, five clones, one connection
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 5);
    for (i, h) in heads.iter().enumerate() {
        assert!(
            h.starts_with("get /v1/auth/token/lookup-self http/1.1"),
            "{h}"
        );
        assert!(
            h.contains(&format!("x-vault-token: s.token-{i}\r\n")),
            "{h}"
        );
        assert!(h.contains("x-vault-namespace: team-a\r\n"), "{h}");
        assert!(h.contains("x-vault-request: true\r\n"), "{h}");
    }
}
