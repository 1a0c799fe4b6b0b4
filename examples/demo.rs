//! End-to-end demo on the local platform (run by `platform/vdbi-platform demo`):
//! starts the real `vdbi` daemon (injector + renewer + revoker in one process), registers its
//! webhook with the local kube-apiserver, creates an annotated pod, shows that the pod received
//! working PostgreSQL credentials of its own, deletes the pod and shows the credentials revoked.
//! Passwords are never printed.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vdbi_testkit::chart_rbac::{assert_least_privilege, ChartRelease, Component};
use vdbi_testkit::platform::{Platform, TestNamespace};

fn step(msg: &str) {
    println!("\n==> {msg}");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

async fn pg_login(p: &Platform, user: &str, password: &str) -> Result<String, String> {
    let conn = format!(
        "host={} port={} dbname={} user={} password={} connect_timeout=5",
        p.var("VDBI_PG_HOST"),
        p.var("VDBI_PG_PORT"),
        p.var("VDBI_PG_DATABASE"),
        user,
        password
    );
    let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = c.await;
    });
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() {
    vdbi_testkit::platform::install_crypto_provider();
    let p = Platform::get();
    let client = p.kube_client().await;
    let dir = std::path::PathBuf::from(p.var("VDBI_PLATFORM_DIR")).join("demo");
    std::fs::create_dir_all(&dir).unwrap();

    step("preparing vdbi's identity (the chart's RBAC, the published Vault policies) and webhook certificate");
    let release = ChartRelease::install(&p, &client, "demo-vdbi").await;
    let sa_ns = release.namespace.name.clone();
    let jwt_path = release.jwt_file(Component::All, &dir).await;
    let kubeconfig = release.kubeconfig(Component::All, &dir).await;
    let role = release.vault_role(Component::All);
    assert_least_privilege(
        &p,
        Some(&release.kube_client(Component::All).await),
        "kubernetes",
        &[&role],
    )
    .await;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("tls.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
    let config = format!(
        "mode: all\ncertFile: {d}/tls.crt\nkeyFile: {d}/tls.key\nvaultAddress: {va}\nvaultAuthPath: kubernetes\n\
kubeRole: {role}\nvaultSecretName: {kv}\nvaultSecretPrefix: demo\nkubeTokenPath: {jwt}\n\
webhookListen: 127.0.0.1:28443\nmetricsListen: 127.0.0.1:28080\nhealthListen: 127.0.0.1:28888\nsyncTTLSecond: 60\n\
webhookClientCAFile: {client_ca}\nwebhookClientAllowedNames: [{client_name}]\n",
        d = dir.display(),
        va = p.vault_addr(),
        kv = p.var("VDBI_KV_MOUNT"),
        jwt = jwt_path.display(),
        client_ca = p.var("VDBI_WEBHOOK_CLIENT_CA_FILE"),
        client_name = p.var("VDBI_WEBHOOK_CLIENT_NAME"),
    );
    let cfg_path = dir.join("config.yaml");
    std::fs::write(&cfg_path, config).unwrap();

    step("starting the vdbi daemon (mode: all)");
    let bin = std::env::var("VDBI_BIN")
        .unwrap_or_else(|_| format!("{}/target/debug/vdbi", env!("CARGO_MANIFEST_DIR")));
    let log = std::fs::File::create(dir.join("vdbi.log")).unwrap();
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&cfg_path)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "vdbi-demo")
        .env("POD_NAMESPACE", &sa_ns)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let daemon = Daemon(child);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get("http://127.0.0.1:28888/readyz").send().await {
            if r.status().is_success() {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("vdbi not ready after 60s; see {}/vdbi.log", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "    ready in {:?} (log: {}/vdbi.log)",
        started.elapsed(),
        dir.display()
    );

    step("registering the webhook with kube-apiserver");
    let ns = TestNamespace::create(&client, "demo").await;
    ns.service_account("app").await;
    let webhook = vdbi_testkit::webhook::register(
        &client,
        "https://127.0.0.1:28443/mutate",
        &ck.cert.pem(),
        &ns.name,
    )
    .await
    .expect("webhook registered");

    step("creating an annotated pod (role app-rw, classic env vars)");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "billing", "labels": {"vault-db-injector": "true"},
            "annotations": {
                "db-creds-injector.numberly.io/main.role": "app-rw",
                "db-creds-injector.numberly.io/main.env-key-dbuser": "DB_USER",
                "db-creds-injector.numberly.io/main.env-key-dbpassword": "DB_PASSWORD"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = ns.api();
    let mut stored = None;
    for _ in 0..50 {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                stored = Some(p);
                break;
            }
            Err(e) => {
                // The apiserver may need a moment to see the new webhook configuration.
                eprintln!("    (retrying: {e})");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let stored = stored.expect("pod created");
    let env: BTreeMap<String, String> = stored.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let user = env.get("DB_USER").cloned().unwrap_or_default();
    let pass = env.get("DB_PASSWORD").cloned().unwrap_or_default();
    if user.is_empty() || pass.is_empty() || !user.starts_with("v-") {
        eprintln!(
            "    the pod was stored WITHOUT injected credentials (is the webhook registered?)"
        );
        std::process::exit(1);
    }
    let uuid =
        stored.metadata.annotations.as_ref().unwrap()["db-creds-injector.numberly.io/uuid"].clone();
    println!("    pod {}/billing stored with DB_USER={user} DB_PASSWORD=<{} chars, not shown> uuid={uuid}", ns.name, pass.len());
    match pg_login(&p, &user, &pass).await {
        Ok(who) => println!("    PostgreSQL accepts them: current_user = {who}"),
        Err(e) => panic!("PostgreSQL refused the injected credentials: {e}"),
    }
    let root = p.vault_root();
    let entry = root
        .read(&format!("{}/data/demo/{uuid}", p.var("VDBI_KV_MOUNT")))
        .await;
    println!(
        "    bookkeeping entry {}/data/demo/{uuid}: LeaseId={} Namespace={} ServiceAccountName={}",
        p.var("VDBI_KV_MOUNT"),
        entry["data"]["data"]["LeaseId"].as_str().unwrap_or(""),
        entry["data"]["data"]["Namespace"].as_str().unwrap_or(""),
        entry["data"]["data"]["ServiceAccountName"]
            .as_str()
            .unwrap_or("")
    );

    step("deleting the pod: the revoker revokes its credentials");
    let deleted_at = Instant::now();
    pods.delete(
        "billing",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut revoked = false;
    for _ in 0..150 {
        if pg_login(&p, &user, &pass).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if revoked {
        println!(
            "    PostgreSQL now refuses {user}: revoked {:?} after the DELETE",
            deleted_at.elapsed()
        );
    } else {
        eprintln!("    credentials still valid 15s after the DELETE");
        std::process::exit(1);
    }

    step("cleaning up");
    webhook.delete().await;
    ns.cleanup().await;
    release.cleanup().await;
    drop(daemon);
    println!("    done: vdbi stopped (SIGTERM), demo namespace removed");
}
