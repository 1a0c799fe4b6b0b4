//! kube-apiserver: the mutating webhook is called on pod CREATE; pods are stored, watched and
//! deleted.

use super::*;

/// (b) A MutatingWebhookConfiguration pointing at a throwaway HTTPS server on 127.0.0.1 is called
/// by the apiserver when a pod is created, and its JSONPatch is applied to the stored pod.
#[tokio::test]
async fn mutating_webhook_is_called_on_pod_create() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "vdbi-t-webhook").await;
    ns.service_account("default").await;

    let calls = Arc::new(AtomicUsize::new(0));
    let server = WebhookServer::start(calls.clone());
    let mwc_name = unique_name("vdbi-t-webhook");
    let mwc = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(mwc_name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "label.platform-test.vdbi.local".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Fail".into()),
            timeout_seconds: Some(5),
            client_config: WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{}/mutate", server.port)),
                ca_bundle: Some(ByteString(server.cert_pem.clone().into_bytes())),
                ..Default::default()
            },
            // Only this test's namespace: other tests create pods in parallel.
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    ns.name.clone(),
                )])),
                ..Default::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..Default::default()
        }]),
    };
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc)
        .await
        .expect("create MutatingWebhookConfiguration");

    // The apiserver picks the configuration up asynchronously: dry-run until it mutates.
    let pods = ns.api::<Pod>();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let probe = pods
            .create(&dry, &pod("probe", &[("app", "probe")]))
            .await
            .expect("dry-run pod create");
        if probe
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("vdbi-test/mutated")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook not active after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before = calls.load(Ordering::SeqCst);
    let created = pods
        .create(&PostParams::default(), &pod("mutated", &[("app", "demo")]))
        .await
        .expect("create pod");
    assert!(
        calls.load(Ordering::SeqCst) > before,
        "the webhook was not called for the real create"
    );
    let stored = pods.get("mutated").await.expect("get pod");
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("vdbi-test/mutated").map(String::as_str),
        Some("true"),
        "{labels:?}"
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("demo"));
    assert_eq!(stored.metadata.uid, created.metadata.uid);

    mwcs.delete(&mwc_name, &DeleteParams::default())
        .await
        .expect("delete MutatingWebhookConfiguration");
    server.stop().await;
    ns.cleanup().await;
}

/// (c) A pod created through the API is stored, seen by a watch (ADDED) and deleted (DELETED);
/// without a kubelet an unscheduled pod is deleted at once.
#[tokio::test]
async fn pod_is_stored_watched_and_deleted() {
    let p = Platform::get();
    let client = p.kube_client().await;
    let ns = TestNamespace::create(&client, "vdbi-t-watch").await;
    ns.service_account("default").await;
    let pods = ns.api::<Pod>();

    let list = pods.list(&ListParams::default()).await.expect("list pods");
    assert!(list.items.is_empty());
    let rv = list
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .expect("watch pods")
        .boxed();

    let name = "watched";
    let created = pods
        .create(&PostParams::default(), &pod(name, &[("app", "watched")]))
        .await
        .expect("create pod");
    let uid = created.metadata.uid.clone().expect("uid");
    // The ServiceAccount admission plugin ran: default SA and its projected token volume.
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(spec.node_name.is_none());

    loop {
        match next_event(&mut events).await {
            WatchEvent::Added(p) if p.metadata.uid.as_deref() == Some(&uid) => break,
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
            _ => {}
        }
    }

    let stored = pods.get(name).await.expect("get pod");
    assert_eq!(stored.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        stored.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    pods.delete(name, &DeleteParams::default())
        .await
        .expect("delete pod");
    loop {
        match next_event(&mut events).await {
            WatchEvent::Deleted(p) if p.metadata.uid.as_deref() == Some(&uid) => break,
            WatchEvent::Error(e) => panic!("watch error event: {e:?}"),
            _ => {}
        }
    }
    match pods.get(name).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        other => panic!("pod should be gone, got {other:?}"),
    }
    ns.cleanup().await;
}

async fn next_event(
    events: &mut BoxStream<'static, kube::Result<WatchEvent<Pod>>>,
) -> WatchEvent<Pod> {
    timeout(WAIT, events.try_next())
        .await
        .expect("no watch event in time")
        .expect("watch error")
        .expect("watch ended")
}

/// A throwaway HTTPS admission webhook on 127.0.0.1 (self-signed rcgen certificate) that adds the
/// label `vdbi-test/mutated=true` and counts its calls.
struct WebhookServer {
    port: u16,
    cert_pem: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl WebhookServer {
    fn start(calls: Arc<AtomicUsize>) -> WebhookServer {
        vdbi_testkit::platform::install_crypto_provider();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed cert");
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("rustls server config");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .app_data(actix_web::web::Data::new(calls.clone()))
                        .route("/mutate", actix_web::web::post().to(mutate))
                })
                .workers(1)
                .disable_signals()
                .bind_rustls_0_23(("127.0.0.1", 0), tls)
                .expect("bind webhook server");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                server.await.expect("webhook server");
            })
        });
        let (port, handle) = rx.recv().expect("webhook server start");
        WebhookServer {
            port,
            cert_pem: cert.pem(),
            handle,
            thread,
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        tokio::task::spawn_blocking(move || self.thread.join().expect("webhook thread"))
            .await
            .unwrap();
    }
}

async fn mutate(
    calls: actix_web::web::Data<Arc<AtomicUsize>>,
    review: actix_web::web::Json<AdmissionReview<DynamicObject>>,
) -> actix_web::HttpResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    let req: AdmissionRequest<DynamicObject> = match review.into_inner().try_into() {
        Ok(req) => req,
        Err(e) => return actix_web::HttpResponse::BadRequest().body(e.to_string()),
    };
    let patch = json_patch::Patch(vec![json_patch::PatchOperation::Add(
        json_patch::AddOperation {
            path: jsonptr::PointerBuf::parse("/metadata/labels/vdbi-test~1mutated").unwrap(),
            value: json!("true"),
        },
    )]);
    let resp = AdmissionResponse::from(&req)
        .with_patch(patch)
        .expect("serialize patch");
    actix_web::HttpResponse::Ok().json(resp.into_review())
}
