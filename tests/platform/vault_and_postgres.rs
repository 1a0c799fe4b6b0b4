//! OpenBao and PostgreSQL as the platform configures them: a Kubernetes login that yields
//! working PostgreSQL credentials, vdbi's roles holding only the published policies, the
//! system ServiceAccounts' roles.

use super::*;

/// (a) ServiceAccount → TokenRequest(aud=vault) → OpenBao kubernetes login → database creds →
/// PostgreSQL connection; wrong audience and unbound ServiceAccount are refused; revoking the token
/// drops the PostgreSQL role.
#[tokio::test]
async fn kubernetes_login_yields_working_postgres_credentials() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let vault = p.vault_root();
    let ns = TestNamespace::create(&client, "vdbi-t-login").await;
    ns.service_account("app").await;
    ns.service_account("stranger").await;
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");

    // Refusals first: wrong audience, then an SA that the role does not bind.
    let default_aud = ns.token("app", &[]).await;
    let refused = vault.k8s_login(&mount, "app-rw", &default_aud).await;
    assert!(
        refused.status.is_client_error(),
        "login with the default audience must be refused, got {}",
        refused.status
    );
    assert!(
        refused.body.to_string().to_lowercase().contains("aud"),
        "refusal should name the audience: {}",
        refused.body
    );
    let stranger = ns.token("stranger", &["vault"]).await;
    let refused = vault.k8s_login(&mount, "app-rw", &stranger).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused
            .body
            .to_string()
            .contains("service account name not authorized"),
        "{}",
        refused.body
    );

    let jwt = ns.token("app", &["vault"]).await;
    let admin = pg_admin(&p).await;

    // app-rw: read and write.
    let (rw_vault, creds) = login_and_read_creds(&p, &vault, "app-rw", &jwt).await;
    let user = str_at(&creds, "/data/username").to_string();
    let db = pg_connect(&p, &user, str_at(&creds, "/data/password"))
        .await
        .expect("connect with app-rw credentials");
    let row = db
        .query_one(
            "SELECT current_user::text, (SELECT note FROM platform_check WHERE id = 1)",
            &[],
        )
        .await
        .expect("query as app-rw");
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), "vdbi platform");
    let id = i64::from(rand::random::<u32>()) + 1_000;
    let n = db
        .execute(
            "INSERT INTO platform_check (id, note) VALUES ($1, 'rw')",
            &[&id],
        )
        .await
        .expect("app-rw may insert");
    assert_eq!(n, 1);
    db.execute("DELETE FROM platform_check WHERE id = $1", &[&id])
        .await
        .expect("app-rw may delete");
    let valid_until_in_future: bool = admin
        .query_one(
            "SELECT rolvaliduntil > now() AND rolvaliduntil < now() + interval '2 hours' FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .expect("pg_roles")
        .get(0);
    assert!(
        valid_until_in_future,
        "role {user} must be VALID UNTIL the lease expiry"
    );
    drop(db);

    // app-ro: read only.
    let (ro_vault, ro_creds) = login_and_read_creds(&p, &vault, "app-ro", &jwt).await;
    let ro_user = str_at(&ro_creds, "/data/username").to_string();
    let ro = pg_connect(&p, &ro_user, str_at(&ro_creds, "/data/password"))
        .await
        .expect("connect with app-ro credentials");
    ro.query_one("SELECT note FROM platform_check WHERE id = 1", &[])
        .await
        .expect("app-ro may select");
    let err = ro
        .execute(
            "INSERT INTO platform_check (id, note) VALUES (2, 'ro')",
            &[],
        )
        .await
        .expect_err("app-ro must not insert");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    drop(ro);

    // Revoking the pod token revokes its lease: the revocation statements drop the role.
    for (v, role) in [(&rw_vault, &user), (&ro_vault, &ro_user)] {
        v.request(Method::POST, "auth/token/revoke-self", None)
            .await
            .ok("revoke-self");
        let deadline = Instant::now() + WAIT;
        while pg_role_exists(&admin, role).await {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL role {role} still exists {WAIT:?} after its token was revoked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ns.cleanup().await;
}

/// The platform applies the published policy files (deploy/vault/*.hcl, through
/// deploy/vault/setup.sh) unchanged, and the roles vdbi logs in with hold only those policies,
/// without Vault's default policy (docs/vault-setup.md).
#[tokio::test]
async fn vdbi_roles_hold_only_the_published_policies() {
    let p = Platform::get();
    let vault = p.vault_root();
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vault");
    let mut published = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hcl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        if stem == "app" {
            // The example application policy, applied per database role.
            for role in p.var("VDBI_DB_ROLES").split(',') {
                let applied = vault.read(&format!("sys/policies/acl/{role}")).await;
                let want = text.replace(
                    "databases/creds/app-rw\"",
                    &format!("databases/creds/{role}\""),
                );
                assert_eq!(applied["data"]["policy"], json!(want), "policy {role}");
            }
            continue;
        }
        let name = format!("vdbi-{stem}");
        let applied = vault.read(&format!("sys/policies/acl/{name}")).await;
        assert_eq!(applied["data"]["policy"], json!(text), "policy {name}");
        published.push(name);
    }
    published.sort();
    assert_eq!(
        published,
        [
            "vdbi-injector-legacy",
            "vdbi-injector-projected",
            "vdbi-nri-legacy",
            "vdbi-nri-projected",
            "vdbi-renewer",
            "vdbi-revoker"
        ]
    );
    for role in [
        "vdbi",
        "vdbi-injector",
        "vdbi-renewer",
        "vdbi-revoker",
        "vdbi-nri",
    ] {
        let r = vault.read(&format!("auth/{mount}/role/{role}")).await;
        let policies = r["data"]["token_policies"].as_array().unwrap();
        assert!(!policies.is_empty(), "{role}");
        for policy in policies {
            assert!(
                published.iter().any(|n| json!(n) == *policy),
                "role {role} holds {policy}, not a published policy"
            );
        }
        assert_eq!(r["data"]["token_no_default_policy"], json!(true), "{role}");
    }
}

/// The vdbi system ServiceAccounts log in with the legacy role and the projected split roles,
/// and the policies allow what compat §3.10 says (spot checks).
#[tokio::test]
async fn system_service_accounts_have_legacy_and_split_roles() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let vault = p.vault_root();
    let mount = p.var("VDBI_K8S_AUTH_MOUNT");
    let system_ns = p.var("VDBI_SYSTEM_NAMESPACE");
    let kv = p.var("VDBI_KV_MOUNT");
    let jwt =
        vdbi_testkit::platform::service_account_token(&client, &system_ns, "vdbi-injector", &[])
            .await;

    // Legacy kubeRole "vdbi": orphan token for the DB role, KV bookkeeping, role read.
    let login = vault
        .k8s_login(&mount, "vdbi", &jwt)
        .await
        .ok("legacy login");
    assert_eq!(
        login["auth"]["token_policies"],
        json!([
            "vdbi-injector-legacy",
            "vdbi-nri-legacy",
            "vdbi-renewer",
            "vdbi-revoker"
        ])
    );
    let legacy = vault.with_token(str_at(&login, "/auth/client_token"));
    let role = legacy.read(&format!("auth/{mount}/role/app-ro")).await;
    assert_eq!(role["data"]["token_policies"], json!(["app-ro"]));
    assert_eq!(
        role["data"]["bound_service_account_namespaces"],
        json!(["*"])
    );
    let orphan = legacy
        .write(
            "auth/token/create-orphan",
            &json!({"policies": ["app-ro"], "period": "1h", "display_name": "injector-orphan-token"}),
        )
        .await;
    let orphan_vault = vault.with_token(str_at(&orphan, "/auth/client_token"));
    let creds = orphan_vault
        .read(&format!("{}/creds/app-ro", p.var("VDBI_DB_MOUNT")))
        .await;
    assert!(creds["data"]["username"].is_string());
    let key = unique_name("platform-test");
    legacy
        .write(
            &format!("{kv}/data/platform-test/{key}"),
            &json!({"data": {"LeaseId": creds["lease_id"], "TokenId": "x", "Namespace": "n",
                "ServiceAccountName": "app", "PodName": "", "NodeName": ""}}),
        )
        .await;
    let stored = legacy.read(&format!("{kv}/data/platform-test/{key}")).await;
    assert_eq!(stored["data"]["data"]["ServiceAccountName"], "app");
    let list = legacy
        .request(
            Method::from_bytes(b"LIST").unwrap(),
            &format!("{kv}/metadata/platform-test"),
            None,
        )
        .await
        .ok("KV list");
    assert!(list["data"]["keys"]
        .as_array()
        .unwrap()
        .contains(&json!(key)));
    legacy
        .write(
            "auth/token/revoke-orphan",
            &json!({"token": str_at(&orphan, "/auth/client_token")}),
        )
        .await;
    for path in [
        format!("{kv}/data/platform-test/{key}"),
        format!("{kv}/metadata/platform-test/{key}"),
    ] {
        legacy
            .request(Method::DELETE, &path, None)
            .await
            .ok("KV delete");
    }

    // Projected split roles: each logs in with its own policy; the injector cannot list KV.
    for (role, policy) in [
        ("vdbi-injector", "vdbi-injector-projected"),
        ("vdbi-renewer", "vdbi-renewer"),
        ("vdbi-revoker", "vdbi-revoker"),
        ("vdbi-nri", "vdbi-nri-projected"),
    ] {
        let login = vault.k8s_login(&mount, role, &jwt).await.ok(role);
        assert_eq!(login["auth"]["token_policies"], json!([policy]), "{role}");
        let t = vault.with_token(str_at(&login, "/auth/client_token"));
        let listed = t
            .request(
                Method::from_bytes(b"LIST").unwrap(),
                &format!("{kv}/metadata/platform-test"),
                None,
            )
            .await;
        let may_list = matches!(role, "vdbi-renewer" | "vdbi-revoker");
        if may_list {
            assert!(
                listed.status.is_success() || listed.status == StatusCode::NOT_FOUND,
                "{role}: {}",
                listed.status
            );
        } else {
            assert_eq!(
                listed.status,
                StatusCode::FORBIDDEN,
                "{role} must not list KV"
            );
        }
        t.request(Method::POST, "auth/token/revoke-self", None)
            .await
            .ok("revoke-self");
    }
    // An application SA namespace is not bound to the system roles.
    let ns = TestNamespace::create(&client, "vdbi-t-sys").await;
    ns.service_account("vdbi-injector").await;
    let outsider = ns.token("vdbi-injector", &[]).await;
    let refused = vault.k8s_login(&mount, "vdbi", &outsider).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    legacy
        .request(Method::POST, "auth/token/revoke-self", None)
        .await
        .ok("revoke-self");
    ns.cleanup().await;
}
