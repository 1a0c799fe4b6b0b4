//! The webhook as an attacker inside the cluster network sees it: only kube-apiserver (the
//! platform's webhook client certificate) is served; a strict envelope; bounded work per pod;
//! denials without infrastructure details; bounded metric label sets. Every forged review here
//! would have returned working credentials (or created Vault objects) before these rules.

use vdbi_testkit::forged;

use forged::{admin_identity, apiserver_identity, post, review, unknown_ca_identity, Answer};
use serde_json::{json, Value};
use std::time::Duration;
use vdbi_testkit::platform::{unique_name, Platform, TestNamespace, VaultRoot};
use vdbi_testkit::*;

/// vdbi (injector, legacy, client authentication on), a namespace with SA `app` and a DB role of
/// the test's own bound to it.
struct Target {
    p: Platform,
    root: VaultRoot,
    ns: TestNamespace,
    vdbi: Vdbi,
    role: String,
}

impl Target {
    async fn start(prefix: &str, tune: impl FnOnce(&mut Options)) -> Target {
        let p = Platform::get();
        let root = p.vault_root();
        let client = p.kube_client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        ns.service_account("app").await;
        let role = unique_name(prefix);
        own_role(&root, &p, &role, &ns.name, false).await;
        let mut opts = Options::default();
        tune(&mut opts);
        let vdbi = start_vdbi(&p, opts).await;
        vdbi.wait_ready().await;
        Target {
            p,
            root,
            ns,
            vdbi,
            role,
        }
    }

    async fn send(
        &self,
        identity: Option<&forged::Identity>,
        content_type: &str,
        body: &Value,
    ) -> Result<Answer, String> {
        post(
            self.vdbi.running.webhook_addr.unwrap(),
            &self.vdbi.cert.pem,
            identity,
            content_type,
            &serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// As kube-apiserver: the platform's webhook client certificate, `application/json`.
    async fn as_apiserver(&self, body: &Value) -> Answer {
        self.send(Some(&apiserver_identity(&self.p)), "application/json", body)
            .await
            .expect("the apiserver's certificate is accepted")
    }

    fn forged(&self, operation: &str, name: &str) -> Value {
        review(
            &self.ns.name,
            operation,
            &forged::pod_json(name, "app", &self.role),
            false,
        )
    }

    /// Asserts that nothing was issued: no bookkeeping entry, no lease of the test's role.
    async fn assert_nothing_created(&self) {
        let keys = kv_keys(&self.root, &self.p, &self.vdbi.prefix).await;
        assert!(keys.is_empty(), "bookkeeping entries created: {keys:?}");
        let l = leases(&self.root, &self.p.var("VDBI_DB_MOUNT"), &self.role).await;
        assert!(l.is_empty(), "leases issued: {l:?}");
    }

    fn denied(&self, reason: &str) -> f64 {
        self.vdbi
            .running
            .metrics
            .count("vdbi_admission_denied_total", &[("reason", reason)])
    }

    async fn stop(self) {
        drop_role(&self.root, &self.p, &self.role).await;
        self.ns.cleanup().await;
        self.vdbi.running.shutdown().await;
    }
}

#[actix_rt::test]
async fn forged_reviews_without_the_apiserver_certificate_fail_the_handshake() {
    let t = Target::start("sec-mtls", |_| {}).await;
    let forged = t.forged("CREATE", "forged");

    // No client certificate at all.
    let err = t
        .send(None, "application/json", &forged)
        .await
        .expect_err("no certificate: refused");
    assert!(!err.starts_with("connect"), "{err}");
    // A certificate with the right name from a CA vdbi does not trust.
    let before = t.denied("client_certificate");
    let stranger = unknown_ca_identity(&t.p.var("VDBI_WEBHOOK_CLIENT_NAME"));
    let err = t
        .send(Some(&stranger), "application/json", &forged)
        .await
        .expect_err("unknown CA: refused");
    assert!(!err.starts_with("connect"), "{err}");
    // A certificate of the trusted CA whose name is not the apiserver's.
    let err = t
        .send(Some(&admin_identity(&t.p)), "application/json", &forged)
        .await
        .expect_err("wrong subject name: refused");
    assert!(!err.starts_with("connect"), "{err}");
    assert_eq!(t.denied("client_certificate"), before + 2.0);
    t.assert_nothing_created().await;

    // The control: the apiserver's certificate is served (a dry run, which creates nothing).
    let dry = review(
        &t.ns.name,
        "CREATE",
        &forged::pod_json("dry", "app", &t.role),
        true,
    );
    let a = t.as_apiserver(&dry).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["response"]["allowed"], true, "{}", a.body);
    t.assert_nothing_created().await;
    t.stop().await;
}

/// The AdmissionReview `body` with its `apiVersion`/`kind` replaced.
fn with_envelope(mut body: Value, api_version: &str, kind: &str) -> Value {
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    body
}

#[actix_rt::test]
async fn only_v1_json_reviews_of_pod_creates_are_handled() {
    let t = Target::start("sec-envelope", |_| {}).await;
    let apiserver = apiserver_identity(&t.p);
    let before = t.denied("bad_envelope");

    // Not the v1 envelope, or not JSON: HTTP 400 with a clear error.
    for (api_version, kind, ct) in [
        (
            "admission.k8s.io/v1beta1",
            "AdmissionReview",
            "application/json",
        ),
        ("admission.k8s.io/v1", "Foo", "application/json"),
        ("admission.k8s.io/v1", "AdmissionReview", "text/plain"),
        ("admission.k8s.io/v1", "AdmissionReview", "application/yaml"),
    ] {
        let body = with_envelope(t.forged("CREATE", "env"), api_version, kind);
        let a = t.send(Some(&apiserver), ct, &body).await.unwrap();
        assert_eq!(a.status, 400, "{api_version} {kind} {ct}: {}", a.body);
        let err = a.json();
        let text = err["message"].as_str().unwrap_or_default();
        if ct == "application/json" {
            assert_eq!(err["error"], "bad_envelope", "{}", a.body);
            assert!(text.contains(api_version) && text.contains(kind), "{text}");
        } else {
            assert_eq!(err["error"], "bad_content_type", "{}", a.body);
            assert!(text.contains(ct), "{text}");
        }
    }
    assert_eq!(t.denied("bad_envelope"), before + 2.0);

    // Well-formed, but not a pod CREATE: allowed unchanged, nothing issued.
    let mut not_create = Vec::new();
    for op in ["UPDATE", "CONNECT", "DELETE"] {
        let mut body = t.forged(op, &format!("op-{}", op.to_lowercase()));
        if op == "DELETE" {
            body["request"]["oldObject"] = body["request"]["object"].take();
        } else if op == "UPDATE" {
            body["request"]["oldObject"] = body["request"]["object"].clone();
        }
        not_create.push((op.to_string(), body));
    }
    let mut secret = t.forged("CREATE", "secret");
    secret["request"]["kind"]["kind"] = json!("Secret");
    secret["request"]["resource"]["resource"] = json!("secrets");
    not_create.push(("Secret CREATE".into(), secret));
    let mut sub = t.forged("CREATE", "ephemeral");
    sub["request"]["subResource"] = json!("ephemeralcontainers");
    not_create.push(("pods/ephemeralcontainers".into(), sub));
    for (what, body) in not_create {
        let a = t.as_apiserver(&body).await;
        assert_eq!(a.status, 200, "{what}: {}", a.body);
        let r = &a.json()["response"];
        assert_eq!(r["allowed"], true, "{what}: {}", a.body);
        assert!(r["patch"].is_null(), "{what}: a patch was returned");
        assert_eq!(r["uid"], body["request"]["uid"], "{what}");
    }
    t.assert_nothing_created().await;
    t.stop().await;
}

/// Sample count of every Vault call the session made, apart from the readiness probe's.
fn vault_calls(m: &vdbi::telemetry::Metrics) -> u64 {
    m.registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "vdbi_vault_request_duration_seconds")
        .flat_map(|f| f.get_metric().iter())
        .filter(|s| {
            !s.get_label()
                .iter()
                .any(|l| l.name() == "operation" && l.value() == "ReadHealth")
        })
        .map(|s| s.get_histogram().get_sample_count())
        .sum()
}

#[actix_rt::test]
async fn a_pod_over_the_caps_is_refused_before_any_vault_call() {
    let t = Target::start("sec-caps", |_| {}).await;
    let m = &t.vdbi.running.metrics;
    // 17 dbConfigs (default cap 16), each a valid request for the test's own role.
    let mut pod = forged::pod_json("greedy", "app", &t.role);
    let ann = pod["metadata"]["annotations"].as_object_mut().unwrap();
    ann.clear();
    for i in 0..17 {
        ann.insert(format!("{PREFIX}db{i:02}.role"), json!(t.role));
        ann.insert(
            format!("{PREFIX}db{i:02}.env-key-dbuser"),
            json!(format!("U{i}")),
        );
    }
    let calls = vault_calls(m);
    let a = t
        .as_apiserver(&review(&t.ns.name, "CREATE", &pod, false))
        .await;
    let r = &a.json()["response"];
    assert_eq!(r["allowed"], false, "{}", a.body);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("17 dbConfigs") && msg.contains("maxDbConfigsPerPod"),
        "{msg}"
    );

    // Oversized annotations (one dbConfig, a 40 KB template).
    let mut pod = forged::pod_json("bloated", "app", &t.role);
    pod["metadata"]["annotations"][format!("{PREFIX}db.note")] = json!("x".repeat(40_000));
    let a = t
        .as_apiserver(&review(&t.ns.name, "CREATE", &pod, false))
        .await;
    let r = &a.json()["response"];
    assert_eq!(r["allowed"], false, "{}", a.body);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(msg.contains("maxAnnotationBytes"), "{msg}");

    assert_eq!(vault_calls(m), calls, "a refused pod made Vault calls");
    assert_eq!(t.denied("too_large"), 2.0);
    t.assert_nothing_created().await;

    // At the cap: admitted (then cleaned up with the role).
    let mut pod = forged::pod_json("at-cap", "app", &t.role);
    let ann = pod["metadata"]["annotations"].as_object_mut().unwrap();
    ann.clear();
    for i in 0..16 {
        ann.insert(format!("{PREFIX}db{i:02}.role"), json!(t.role));
        ann.insert(
            format!("{PREFIX}db{i:02}.env-key-dbuser"),
            json!(format!("U{i}")),
        );
    }
    let a = t
        .as_apiserver(&review(&t.ns.name, "CREATE", &pod, false))
        .await;
    assert_eq!(a.json()["response"]["allowed"], true, "{}", a.body);
    t.stop().await;
}

#[actix_rt::test]
async fn a_database_failure_is_denied_without_infrastructure_details() {
    let t = Target::start("sec-dbdown", |_| {}).await;
    // The test's own connection, pointed at a port nothing listens on (the shared one untouched).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mount = t.p.var("VDBI_DB_MOUNT");
    let admin = t.p.var("VDBI_PG_ADMIN_USER");
    t.root
        .write(
            &format!("{mount}/config/{}", t.role),
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{dead_port}/app?sslmode=disable&connect_timeout=1"),
                "username": admin,
                "password": "not-the-real-one",
                "allowed_roles": [t.role],
                "verify_connection": false
            }),
        )
        .await;
    let before = t.denied("database_error");
    let a = t.as_apiserver(&t.forged("CREATE", "dbdown")).await;
    let r = &a.json()["response"];
    assert_eq!(r["allowed"], false, "{}", a.body);
    let msg = r["status"]["message"].as_str().unwrap();
    // Names the dbConfig, the role and the class of failure...
    assert!(msg.contains("\"db\""), "{msg}");
    assert!(msg.contains(&t.role), "{msg}");
    assert!(msg.contains("database"), "{msg}");
    // ...and nothing of the infrastructure behind Vault.
    for secret in [
        admin.as_str(),
        &dead_port.to_string(),
        "127.0.0.1",
        "postgres",
        "dial",
        "connect",
    ] {
        assert!(!msg.contains(secret), "{secret:?} leaked in {msg}");
    }
    assert_eq!(t.denied("database_error"), before + 1.0);
    t.assert_nothing_created().await;
    t.stop().await;
}

#[actix_rt::test]
async fn request_derived_metric_labels_are_bounded() {
    use futures::StreamExt;
    let t = Target::start("sec-labels", |_| {}).await;
    let apiserver = apiserver_identity(&t.p);
    // 600 forged reviews, each naming a ServiceAccount the role does not allow.
    let bodies: Vec<Value> = (0..600)
        .map(|i| {
            review(
                &t.ns.name,
                "CREATE",
                &forged::pod_json(&format!("sa-{i}"), &format!("forged-sa-{i}"), &t.role),
                false,
            )
        })
        .collect();
    let answers: Vec<Answer> = futures::stream::iter(bodies.iter())
        .map(|b| t.send(Some(&apiserver), "application/json", b))
        .buffer_unordered(16)
        .map(|r| r.expect("served"))
        .collect()
        .await;
    assert!(answers
        .iter()
        .all(|a| a.json()["response"]["allowed"] == false));
    let m = &t.vdbi.running.metrics;
    let family = m
        .registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "vdbi_service_account_denied_count")
        .unwrap();
    let series = family.get_metric().len();
    assert!(series <= 501, "{series} series");
    let total: f64 = family
        .get_metric()
        .iter()
        .map(|s| s.get_counter().value())
        .sum();
    assert_eq!(total, 600.0, "every denial is still counted");
    let overflow = m.count(
        "vdbi_service_account_denied_count",
        &[
            ("service_account_name", "_other_"),
            ("namespace", "_other_"),
            ("db_role", "_other_"),
            ("cause", "ServiceAccountNameNotInRole"),
        ],
    );
    assert!(overflow >= 100.0, "overflow {overflow}");
    t.assert_nothing_created().await;
    t.stop().await;
}

/// A TCP relay to `upstream` that can be frozen: while frozen, nothing it receives is passed
/// on (connections stay open, calls hang), as with a wedged network path or client.
struct FreezableRelay {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableRelay {
    async fn start(upstream: String) -> FreezableRelay {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, f.clone()));
                tokio::spawn(pipe(ro, wi, f.clone()));
            }
        });
        FreezableRelay { addr, frozen, task }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `r` to `w`, holding every chunk while `frozen`.
async fn pipe(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `GET http://<addr><path>`: the status code.
async fn probe_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn readiness_follows_vault_calls_and_liveness_does_not() {
    let p = Platform::get();
    let upstream = p
        .vault_addr()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    let relay = FreezableRelay::start(upstream).await;
    // vdbi through the relay, unready after 3 s of failing Vault calls.
    vdbi_testkit::platform::install_crypto_provider();
    let cert = make_cert();
    let jwt = own_jwt(&p, "vdbi-injector").await;
    let mut c = base_config(&p, &unique_name("t"));
    c.mode = vdbi::config::Mode::Injector;
    c.cert_file = cert.cert.clone();
    c.key_file = cert.key.clone();
    c.kube_token_path = jwt.path().to_path_buf();
    c.vault_address = format!("http://{}", relay.addr);
    // 3 s: probes every 1 s with a 1 s bound, so a loaded machine does not fail probes by itself.
    c.readiness_vault_grace = Duration::from_secs(3);
    let (running, _chart) = vdbi_testkit::launch::start_vdbi(
        &p,
        c,
        "sec-ready",
        vdbi_testkit::log_lines::checked_logger(),
    )
    .await;
    let health = running.health_addr;
    let wait_for = |want: u16| async move {
        for _ in 0..200 {
            if probe_status(health, "/readyz").await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(wait_for(200).await, "ready with Vault reachable");

    // Vault calls hang (the session itself stays logged in): unready after the grace, alive.
    relay.freeze(true);
    let frozen_at = std::time::Instant::now();
    assert!(wait_for(503).await, "unready while Vault calls hang");
    // Failing since the first failed probe, which may have started up to one probe interval (1 s)
    // before the freeze: never unready sooner than grace - interval.
    assert!(
        frozen_at.elapsed() >= Duration::from_secs(2),
        "not before the grace: {:?}",
        frozen_at.elapsed()
    );
    let check = running
        .health
        .check(vdbi::http::vault_readiness::CHECK)
        .unwrap();
    assert!(!check.ready, "{check:?}");
    assert_eq!(
        probe_status(health, "/live").await,
        200,
        "liveness ignores Vault"
    );
    assert_eq!(
        probe_status(health, "/healthz").await,
        200,
        "liveness ignores Vault"
    );

    relay.freeze(false);
    assert!(wait_for(200).await, "ready again once Vault answers");
    running.shutdown().await;
    relay.task.abort();
}
