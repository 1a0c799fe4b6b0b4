//! The admission webhook against the real platform: the apiserver calls vdbi for labelled pods;
//! credentials really log in to PostgreSQL; refusals leave nothing behind in Vault.

use vdbi_testkit::admitting;

use admitting::{app_login, Admitting};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::time::Duration;
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace};
use vdbi_testkit::*;

async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<Pod, String> {
    pods.create(&PostParams::default(), pod)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => s.message,
            other => other.to_string(),
        })
}

#[actix_rt::test]
async fn legacy_two_dbconfigs_classic_and_uri_into_every_container() {
    let adm = Admitting::start("adm-legacy", |_| {}).await;
    let (p, root, ns, vdbi, pods) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi, &adm.pods);
    let m = &vdbi.running.metrics;
    let labels = [("mode", "legacy"), ("result", "allowed")];
    let own = || m.observations("vdbi_admission_own_duration_seconds", &labels);
    let total = || m.observations("vdbi_admission_duration_seconds", &labels);
    let ((own_count, own_sum), (_, total_sum)) = (own(), total());

    let template = format!(
        "postgres://@{}:{}/{}?sslmode=disable",
        p.var("VDBI_PG_HOST"),
        p.var("VDBI_PG_PORT"),
        p.var("VDBI_PG_DATABASE")
    );
    let stored = create(
        pods,
        &pod(
            "two-dbs",
            "app",
            &[
                ("main.role", "app-rw"),
                ("main.env-key-dbuser", "DB_USER"),
                ("main.env-key-dbpassword", "DB_PASSWORD,PGPASSWORD"),
                ("reporting.role", "app-ro"),
                ("reporting.mode", "uri"),
                ("reporting.env-key-uri", "REPORTING_URL"),
                ("reporting.template", &template),
                ("reporting.containers", "app"),
            ],
        ),
    )
    .await
    .expect("pod admitted");

    // The env: replaced in place, into init and main containers; uri only where targeted.
    let app = env_map(&stored, "app");
    let init = env_map(&stored, "init");
    let sidecar = env_map(&stored, "sidecar");
    assert_ne!(app["DB_USER"], "placeholder-to-replace");
    assert_eq!(app["DB_PASSWORD"], app["PGPASSWORD"]);
    assert_eq!(init["DB_USER"], app["DB_USER"]);
    assert_eq!(sidecar["DB_PASSWORD"], app["DB_PASSWORD"]);
    assert!(app.contains_key("REPORTING_URL"));
    assert!(!sidecar.contains_key("REPORTING_URL"));
    assert!(!init.contains_key("REPORTING_URL"));
    let app_env = &stored.spec.as_ref().unwrap().containers[0]
        .env
        .as_ref()
        .unwrap();
    assert_eq!(app_env.iter().filter(|e| e.name == "DB_USER").count(), 1);

    // The credentials are real.
    let db = pg_connect(p, &app["DB_USER"], &app["DB_PASSWORD"])
        .await
        .expect("classic creds log in");
    let row = db
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), app["DB_USER"]);
    let url = url::Url::parse(&app["REPORTING_URL"]).unwrap();
    let user = percent_encoding::percent_decode_str(url.username())
        .decode_utf8()
        .unwrap()
        .to_string();
    let pass = percent_encoding::percent_decode_str(url.password().unwrap())
        .decode_utf8()
        .unwrap()
        .to_string();
    pg_connect(p, &user, &pass).await.expect("uri creds log in");

    // uuid annotation: one per dbConfig, sorted by db name; KV entries match.
    let ids = uuids(&stored);
    assert_eq!(ids.len(), 2);
    let mut owners = Vec::new();
    for id in &ids {
        let e = kv_entry(root, p, &vdbi.prefix, id)
            .await
            .expect("bookkeeping entry written");
        assert_eq!(e["Namespace"], ns.name.as_str());
        assert_eq!(e["ServiceAccountName"], "app");
        assert_eq!(e["PodName"], "two-dbs");
        for k in ["LeaseId", "TokenId", "NodeName"] {
            assert!(e.get(k).is_some(), "{k} missing");
        }
        owners.push(e["LeaseId"].as_str().unwrap().to_string());
    }
    assert!(
        owners[0].starts_with("databases/creds/app-rw/"),
        "{owners:?}"
    );
    assert!(
        owners[1].starts_with("databases/creds/app-ro/"),
        "{owners:?}"
    );

    assert_eq!(m.count("vdbi_mutated_pods_success_count", &[]), 1.0);
    assert_eq!(
        m.count("vdbi_orphan_ticket_created_count_success", &[]),
        2.0
    );
    assert!(m.count("vdbi_store_data_count_success", &[]) >= 2.0);
    // vdbi's own time (the admission minus its waits on Vault/Kubernetes) was observed once,
    // and is a part of the admission's latency.
    assert_eq!(own().0, own_count + 1);
    let own_s = own().1 - own_sum;
    let total_s = total().1 - total_sum;
    eprintln!("legacy admission: vdbi's own time {own_s} s of {total_s} s");
    assert!(
        own_s > 0.0 && own_s < total_s,
        "own {own_s} s of {total_s} s"
    );
    adm.stop().await;
}

#[actix_rt::test]
async fn refusals_say_why_and_leave_nothing_behind() {
    let adm = Admitting::start("adm-refuse", |_| {}).await;
    let (p, root, ns, vdbi, pods) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi, &adm.pods);
    ns.service_account("intruder").await;
    // A k8s-auth role and policy without a DB role: the orphan token is created, then the
    // creds read fails — the admission must revoke that token.
    let ghost = unique_name("ghost");
    fresh_role(root, p, &ghost, &ns.name).await;
    root.request(
        reqwest::Method::DELETE,
        &format!("{}/roles/{ghost}", p.var("VDBI_DB_MOUNT")),
        None,
    )
    .await;

    // A DB role of this test's own (bound to SA `app` of the namespace): any lease a refusal
    // wrongly issued would show under it, whatever the other tests issue meanwhile.
    let own = unique_name("refuse");
    own_role(root, p, &own, &ns.name, false).await;

    // (pod name, service account, db.role, the other annotations, expected message part)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    const USER: (&str, &str) = ("db.env-key-dbuser", "U");
    #[rustfmt::skip]
    let cases: [Case; 6] = [
        ("unknown-role", "app", "no-such-role", &[USER], "does not exist"),
        ("sa-not-bound", "intruder", &own, &[USER], "may not use Vault role"),
        ("bad-mode", "app", &own, &[("db.mode", "weird"), USER], "db.mode"),
        ("no-env-key", "app", &own, &[], "env-key-dbuser"),
        ("bad-container", "app", &own, &[USER, ("db.containers", "nope")], "nope"),
        ("no-db-role", "app", &ghost, &[USER], "creds"),
    ];
    let leases_before = leases(root, &p.var("VDBI_DB_MOUNT"), &own).await.len();
    for (name, sa, role, others, expect) in cases {
        let mut ann = vec![("db.role", role)];
        ann.extend_from_slice(others);
        let err = create(pods, &pod(name, sa, &ann)).await.expect_err(name);
        assert!(err.contains("vault-db-injector"), "{name}: {err}");
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
    }
    // Nothing left: no KV entry under this instance's prefix, no new lease of the test's role,
    // no token carrying the ghost policy.
    let mut keys = kv_keys(root, p, &vdbi.prefix).await;
    for _ in 0..50 {
        if keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        keys = kv_keys(root, p, &vdbi.prefix).await;
    }
    assert!(keys.is_empty(), "left-over bookkeeping entries: {keys:?}");
    assert_eq!(
        leases(root, &p.var("VDBI_DB_MOUNT"), &own).await.len(),
        leases_before
    );
    let mut ghost_tokens = 1;
    for _ in 0..50 {
        ghost_tokens = tokens_with_policy(root, &ghost).await;
        if ghost_tokens == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ghost_tokens, 0,
        "the orphan token of the failed admission was not revoked"
    );
    let m = &vdbi.running.metrics;
    assert!(m.count("vdbi_mutated_pods_error_count", &[]) >= 6.0);
    assert_eq!(
        m.count(
            "vdbi_service_account_denied_count",
            &[
                ("service_account_name", "intruder"),
                ("namespace", ns.name.as_str()),
                ("db_role", own.as_str()),
                ("cause", "ServiceAccountNameNotInRole")
            ]
        ),
        1.0
    );
    drop_role(root, p, &own).await;
    adm.stop().await;
}

#[actix_rt::test]
async fn nri_mode_stores_only_placeholders() {
    let adm = Admitting::start("adm-nri", |o| o.nri = true).await;
    let (p, root, ns, vdbi, pods) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi, &adm.pods);
    // A DB role of the test's own: its lease count is not moved by the tests running beside it.
    let own = unique_name("nri-adm");
    own_role(root, p, &own, &ns.name, false).await;
    let leases_before = leases(root, &p.var("VDBI_DB_MOUNT"), &own).await.len();
    let stored = create(
        pods,
        &pod(
            "nri",
            "app",
            &[
                ("db.role", own.as_str()),
                ("db.env-key-dbuser", "DB_USER"),
                ("db.env-key-dbpassword", "DB_PASSWORD"),
            ],
        ),
    )
    .await
    .expect("admitted");
    let env = env_map(&stored, "app");
    assert!(
        vdbi::placeholder::is_placeholder(&env["DB_USER"]),
        "{}",
        env["DB_USER"]
    );
    assert!(vdbi::placeholder::is_placeholder(&env["DB_PASSWORD"]));
    assert_ne!(env["DB_USER"], env["DB_PASSWORD"]);
    // No credentials were issued at admission.
    assert_eq!(
        leases(root, &p.var("VDBI_DB_MOUNT"), &own).await.len(),
        leases_before
    );
    // The uuid is reserved in KV for the NRI plugin and the revoker, at the sibling prefix
    // vault-db-injector does not list: nothing without a token appears under the listed one.
    let id = &uuids(&stored)[0];
    assert!(kv_entry(root, p, &vdbi.prefix, id).await.is_none());
    let reservations = vdbi::bookkeeping::reservation_prefix(&vdbi.prefix);
    let e = kv_entry(root, p, &reservations, id)
        .await
        .expect("reservation");
    assert_eq!(e["LeaseId"], "");
    assert_eq!(e["TokenId"], "");
    assert_eq!(e["Namespace"], ns.name.as_str());
    // Every injected value is a placeholder, in every container.
    for c in ["init", "app", "sidecar"] {
        let env = env_map(&stored, c);
        for k in ["DB_USER", "DB_PASSWORD"] {
            assert!(vdbi::placeholder::is_placeholder(&env[k]), "{c}/{k}");
        }
    }
    drop_role(root, p, &own).await;
    adm.stop().await;
}

#[actix_rt::test]
async fn projected_mode_uses_the_pods_own_identity() {
    let adm = Admitting::start("adm-proj", |o| o.projected = true).await;
    let (p, root, ns, vdbi, pods) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi, &adm.pods);
    let stored = create(
        pods,
        &pod(
            "proj",
            "app",
            &[
                ("db.role", "app-rw"),
                ("db.env-key-dbuser", "U"),
                ("db.env-key-dbpassword", "P"),
            ],
        ),
    )
    .await
    .expect("admitted");
    let env = env_map(&stored, "app");
    pg_connect(p, &env["U"], &env["P"])
        .await
        .expect("creds log in");
    let id = &uuids(&stored)[0];
    let e = kv_entry(root, p, &vdbi.prefix, id).await.expect("entry");
    // The stored token is the pod's own login: its metadata names the pod's ServiceAccount.
    let look = app_login(root, &e, &ns.name).await;
    assert!(look["data"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "app-rw"));
    adm.stop().await;
}

#[actix_rt::test]
async fn dry_run_touches_nothing_in_vault() {
    let adm = Admitting::start("adm-dry", |_| {}).await;
    let (p, root, ns, vdbi, pods) = (&adm.p, &adm.root, &adm.ns, &adm.vdbi, &adm.pods);
    let role = unique_name("dry");
    fresh_role(root, p, &role, &ns.name).await;
    let out = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod(
                "dry",
                "app",
                &[("db.role", &role), ("db.env-key-dbuser", "U")],
            ),
        )
        .await
        .expect("dry run admitted");
    assert!(vdbi::placeholder::is_placeholder(
        &env_map(&out, "app")["U"]
    ));
    assert!(leases(root, "databases", &role).await.is_empty());
    assert!(kv_keys(root, p, &vdbi.prefix).await.is_empty());
    assert!(pods.get_opt("dry").await.unwrap().is_none());
    adm.stop().await;
}

#[actix_rt::test]
async fn rotated_certificate_is_served_without_restart() {
    let p = Platform::get();
    let vdbi = start_vdbi(&p, Options::default()).await;
    let addr = vdbi.running.webhook_addr.unwrap();
    let first = served_cert(addr).await;
    assert_eq!(first, pem_der(&vdbi.cert.pem));
    let (pem, key) = new_cert_pem();
    // Write key first, then cert (a reload in between sees a mismatch and keeps the old pair).
    std::fs::write(&vdbi.cert.key, key).unwrap();
    std::fs::write(&vdbi.cert.cert, &pem).unwrap();
    let mut now = first.clone();
    for _ in 0..50 {
        now = served_cert(addr).await;
        if now != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, pem_der(&pem), "the new certificate is served");
    assert!(
        vdbi.running.metrics.count(
            "vdbi_webhook_certificate_reloads_total",
            &[("result", "ok")]
        ) >= 1.0
    );
    vdbi.running.shutdown().await;
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The leaf certificate a TLS server presents (verification disabled: we only look).
async fn served_cert(addr: std::net::SocketAddr) -> Vec<u8> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct Look;
    impl ServerCertVerifier for Look {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Look))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    conn.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[actix_rt::test]
async fn vault_unreachable_refuses_the_pod_within_the_webhook_timeout() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "adm-novault").await;
    ns.service_account("app").await;
    // A port nothing listens on: vdbi's own session can never log in.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let vdbi = start_vdbi(
        &p,
        Options {
            vault_address: Some(dead_addr),
            admission_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    assert!(!vdbi.running.health.is_ready(), "not ready without Vault");
    let wh = register_webhook(&client, &vdbi, &ns.name).await;
    let pods: Api<Pod> = ns.api();
    let started = std::time::Instant::now();
    let err = create(
        &pods,
        &pod(
            "novault",
            "app",
            &[("db.role", "app-rw"), ("db.env-key-dbuser", "U")],
        ),
    )
    .await
    .expect_err("refused while Vault is unreachable");
    let took = started.elapsed();
    assert!(err.contains("vault-db-injector"), "{err}");
    assert!(err.contains("Vault session"), "{err}");
    assert!(
        took < Duration::from_secs(5),
        "answered before the webhook timeout: {took:?}"
    );
    assert!(pods.get_opt("novault").await.unwrap().is_none());
    assert!(
        vdbi.running.metrics.count(
            "vdbi_admission_denied_total",
            &[("reason", "vault_unavailable")]
        ) >= 1.0
    );
    wh.delete().await;
    ns.cleanup().await;
    vdbi.running.shutdown().await;
}
