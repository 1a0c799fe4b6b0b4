//! Database roles for tests and the load-test harness: a DB role with its policy and
//! kubernetes-auth role (bound to ServiceAccount `app`), on the platform's shared `pg` connection
//! ([`fresh_role`]) or on a connection of its own ([`own_role`]), and their removal.

use crate::platform::{Platform, VaultRoot};
use serde_json::json;

/// A DB role, its policy and a k8s-auth role, all named `name`, bound to SA `app` in `namespace`.
pub async fn fresh_role(root: &VaultRoot, p: &Platform, name: &str, namespace: &str) {
    let mount = p.var("VDBI_DB_MOUNT");
    root.write(
        &format!("{mount}/roles/{name}"),
        &json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE app TO \"{{name}}\";"],
            "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "1h",
            "max_ttl": "24h"
        }),
    )
    .await;
    root.write(
        &format!("sys/policies/acl/{name}"),
        &json!({"policy": format!("path \"{mount}/creds/{name}\" {{ capabilities = [\"read\"] }}\npath \"auth/token/renew-self\" {{ capabilities = [\"update\"] }}\npath \"auth/token/lookup-self\" {{ capabilities = [\"read\"] }}\n")}),
    )
    .await;
    root.write(
        &format!("auth/{}/role/{name}", p.var("VDBI_K8S_AUTH_MOUNT")),
        &json!({
            "bound_service_account_names": ["app"],
            "bound_service_account_namespaces": [namespace],
            "token_policies": [name],
            "token_period": "24h",
            "audience": "vault",
            "token_type": "service"
        }),
    )
    .await;
}

pub async fn revoke_role_leases(root: &VaultRoot, role: &str) {
    root.request(
        reqwest::Method::PUT,
        &format!("sys/leases/revoke-prefix/databases/creds/{role}"),
        None,
    )
    .await;
}

/// A DB role `name` on its own connection (the platform's `pg` connection only allows its own
/// roles), with the k8s-auth role and policy of `fresh_role`. With `special`, the connection's
/// password policy puts URI-reserved characters (`@ : / % ? # & +`) in every password.
pub async fn own_role(root: &VaultRoot, p: &Platform, name: &str, namespace: &str, special: bool) {
    fresh_role(root, p, name, namespace).await;
    let mut config = json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
            p.var("VDBI_PG_HOST"), p.var("VDBI_PG_PORT"), p.var("VDBI_PG_DATABASE")),
        "username": p.var("VDBI_PG_ADMIN_USER"),
        "password": p.var("VDBI_PG_ADMIN_PASSWORD"),
        "allowed_roles": [name],
        "verify_connection": true
    });
    if special {
        let policy = r#"length = 24
rule "charset" { charset = "abcdefghijklmnopqrstuvwxyz" min-chars = 1 }
rule "charset" { charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" min-chars = 1 }
rule "charset" { charset = "0123456789" min-chars = 1 }
rule "charset" { charset = "@:/%?#&+" min-chars = 4 }
"#;
        root.write(
            &format!("sys/policies/password/{name}"),
            &json!({ "policy": policy }),
        )
        .await;
        config["password_policy"] = json!(name);
    }
    let mount = p.var("VDBI_DB_MOUNT");
    root.write(&format!("{mount}/config/{name}"), &config).await;
    root.write(
        &format!("{mount}/roles/{name}"),
        &json!({
            "db_name": name,
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE app TO \"{{name}}\";"],
            "revocation_statements": ["REVOKE ALL PRIVILEGES ON DATABASE app FROM \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "1h",
            "max_ttl": "24h"
        }),
    )
    .await;
}

pub async fn drop_role(root: &VaultRoot, p: &Platform, name: &str) {
    revoke_role_leases(root, name).await;
    let mount = p.var("VDBI_DB_MOUNT");
    for path in [
        format!("{mount}/roles/{name}"),
        format!("{mount}/config/{name}"),
    ] {
        root.request(reqwest::Method::DELETE, &path, None).await;
    }
}
