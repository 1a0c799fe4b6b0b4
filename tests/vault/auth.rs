//! Kubernetes auth: role reads, logins and their failure reasons, error classes.

use super::*;

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
