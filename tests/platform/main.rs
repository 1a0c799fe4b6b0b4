//! Integration tests of the local real platform (`platform/vdbi-platform up`): kube-apiserver,
//! OpenBao and PostgreSQL as an operator of vault-db-injector configures them.
//!
//! Each test works in its own namespace / object names (tests run in parallel) and cleans up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};

mod apiserver;
mod vault_and_postgres;

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/vdbi/never-pulled:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

async fn pg_connect(
    p: &Platform,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(p.var("VDBI_PG_HOST"))
        .port(p.var("VDBI_PG_PORT").parse().expect("VDBI_PG_PORT"))
        .dbname(p.var("VDBI_PG_DATABASE"))
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn pg_admin(p: &Platform) -> tokio_postgres::Client {
    pg_connect(
        p,
        &p.var("VDBI_PG_ADMIN_USER"),
        &p.var("VDBI_PG_ADMIN_PASSWORD"),
    )
    .await
    .expect("admin connection to PostgreSQL")
}

async fn pg_role_exists(admin: &tokio_postgres::Client, role: &str) -> bool {
    let row = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .expect("pg_roles query");
    row.get::<_, i64>(0) == 1
}

/// Logs in with a pod JWT, reads DB credentials; returns (token client, creds body).
async fn login_and_read_creds(
    p: &Platform,
    vault: &VaultRoot,
    role: &str,
    jwt: &str,
) -> (VaultRoot, Value) {
    let login = vault
        .k8s_login(&p.var("VDBI_K8S_AUTH_MOUNT"), role, jwt)
        .await
        .ok(&format!("kubernetes login as {role}"));
    let auth = &login["auth"];
    let policies: Vec<&str> = auth["token_policies"]
        .as_array()
        .expect("token_policies")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        policies.contains(&role),
        "policies {policies:?} lack {role}"
    );
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["renewable"], true);
    // token_period=24h: a periodic token
    assert_eq!(auth["lease_duration"], 86400, "login auth: {auth}");
    let pod_vault = vault.with_token(str_at(&login, "/auth/client_token"));
    let lookup = pod_vault.read("auth/token/lookup-self").await;
    assert_eq!(
        lookup["data"]["period"], 86400,
        "lookup-self: {}",
        lookup["data"]
    );
    let creds = pod_vault
        .read(&format!("{}/creds/{role}", p.var("VDBI_DB_MOUNT")))
        .await;
    assert!(
        str_at(&creds, "/lease_id")
            .starts_with(&format!("{}/creds/{role}/", p.var("VDBI_DB_MOUNT"))),
        "lease_id {}",
        creds["lease_id"]
    );
    assert_eq!(creds["lease_duration"], 3600);
    (pod_vault, creds)
}

/// The env file holds secrets: it must be private and complete.
#[test]
fn env_file_is_private_and_complete() {
    use std::os::unix::fs::PermissionsExt;
    let p = Platform::get();
    let mode = std::fs::metadata(&p.env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} must be 0600", p.env_file.display());
    for key in [
        "VAULT_ADDR",
        "VDBI_VAULT_ROOT_TOKEN",
        "KUBECONFIG",
        "VDBI_KUBE_SERVER",
        "VDBI_KUBE_CA_FILE",
        "VDBI_PG_HOST",
        "VDBI_PG_PORT",
        "VDBI_PG_DATABASE",
        "VDBI_PG_ADMIN_USER",
        "VDBI_PG_ADMIN_PASSWORD",
        "VDBI_DB_MOUNT",
        "VDBI_KV_MOUNT",
        "VDBI_K8S_AUTH_MOUNT",
        "VDBI_SYSTEM_NAMESPACE",
        "VDBI_PLATFORM_DIR",
    ] {
        assert!(!p.var(key).is_empty(), "{key} is empty");
    }
    assert_eq!(p.var("VDBI_DB_MOUNT"), "databases");
    assert_eq!(p.var("VDBI_KV_MOUNT"), "vault-db-injector");
    assert_eq!(p.var("VDBI_K8S_AUTH_MOUNT"), "kubernetes");
    assert_eq!(p.var("VDBI_SYSTEM_NAMESPACE"), "vdbi-system");
    let dbg = format!("{p:?}");
    assert!(
        !dbg.contains(&p.var("VDBI_VAULT_ROOT_TOKEN")),
        "Debug must not show secrets"
    );
}
