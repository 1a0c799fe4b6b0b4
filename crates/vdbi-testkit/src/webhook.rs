//! Registers a vdbi webhook with the platform's kube-apiserver, for the integration tests, the
//! demo and the load-test harness: a `MutatingWebhookConfiguration` scoped to one namespace and to
//! pods labelled `vault-db-injector=true`, exactly as the Helm chart registers it (failure policy
//! `Fail`, side effects `NoneOnDryRun`, timeout 5 s).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::platform::{unique_name, Platform};
use vdbi::config::Config;

/// Turns webhook client authentication on in `c`, as an operator would: only the platform's
/// kube-apiserver (its AdmissionConfiguration presents the `VDBI_WEBHOOK_CLIENT_NAME` certificate
/// of the platform CA) may call the webhook. Panics, naming the fix, on a platform env written
/// before the platform gave kube-apiserver a webhook client certificate.
pub fn require_client_auth(p: &Platform, c: &mut Config) {
    let (Some(ca), Some(name)) = (
        p.try_var("VDBI_WEBHOOK_CLIENT_CA_FILE"),
        p.try_var("VDBI_WEBHOOK_CLIENT_NAME"),
    ) else {
        panic!("the platform has no webhook client certificate (VDBI_WEBHOOK_CLIENT_* missing from its env): run platform/vdbi-platform up");
    };
    c.webhook_client_ca_file = Some(ca.into());
    c.webhook_client_allowed_names = vec![name];
}

/// The PEM (certificate then key) of the platform's webhook client identity: what kube-apiserver
/// presents to webhooks, for harnesses that post AdmissionReviews themselves.
pub fn client_identity_pem(p: &Platform) -> Vec<u8> {
    let mut pem =
        std::fs::read(p.var("VDBI_WEBHOOK_CLIENT_CERT_FILE")).expect("webhook client cert");
    pem.extend(std::fs::read(p.var("VDBI_WEBHOOK_CLIENT_KEY_FILE")).expect("webhook client key"));
    pem
}

/// What every harness client that posts AdmissionReviews over reqwest starts from: no proxy
/// (loopback), the platform's webhook client identity presented as kube-apiserver presents it
/// (vdbi requires it). The caller adds how it trusts vdbi's certificate, timeouts and pooling.
pub fn review_client_builder(p: &Platform) -> reqwest::ClientBuilder {
    crate::platform::install_crypto_provider();
    let identity =
        reqwest::Identity::from_pem(&client_identity_pem(p)).expect("webhook client identity");
    reqwest::Client::builder().no_proxy().identity(identity)
}

/// The label the webhook selects pods by.
pub const LABEL: &str = "vault-db-injector";

/// A registered webhook configuration; [`Webhook::delete`] removes it.
pub struct Webhook {
    pub name: String,
    client: kube::Client,
}

/// Registers `url` (HTTPS, served with a certificate `ca_pem` validates) for pod CREATEs in
/// `namespace`, then waits until the apiserver actually calls it (it picks up webhook
/// configurations asynchronously). Creates the namespace's `default` ServiceAccount (no
/// controller-manager runs on the platform) for the probe pods.
pub async fn register(
    client: &kube::Client,
    url: &str,
    ca_pem: &str,
    namespace: &str,
) -> Result<Webhook, String> {
    let name = unique_name("vdbi-test");
    let mwc = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: format!("{name}.vdbi.test"),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                url: Some(url.to_string()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            failure_policy: Some("Fail".into()),
            side_effects: "NoneOnDryRun".into(),
            timeout_seconds: Some(5),
            object_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL.to_string(), "true".to_string())])),
                ..Default::default()
            }),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    namespace.to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    };
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .map_err(|e| format!("creating MutatingWebhookConfiguration: {e}"))?;
    let wh = Webhook {
        name,
        client: client.clone(),
    };
    let default_sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &default_sa)
        .await;
    // A dry-run pod vdbi must deny (an unknown `mode`): the denial proves the apiserver calls us.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut last = String::new();
    for i in 0..100 {
        let probe: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": format!("probe-{i}"),
                "labels": {LABEL: "true"},
                "annotations": {
                    "db-creds-injector.numberly.io/x.mode": "weird",
                    "db-creds-injector.numberly.io/x.role": "r",
                    "db-creds-injector.numberly.io/x.env-key-dbuser": "U",
                }
            },
            "spec": {"serviceAccountName": "default",
                "containers": [{"name": "app", "image": "busybox"}]}
        }))
        .expect("probe pod");
        match pods.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("vault-db-injector") => return Ok(wh),
            other => {
                last = format!("{other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    wh.delete().await;
    Err(format!(
        "the apiserver never called the webhook at {url}; last answer: {last}"
    ))
}

impl Webhook {
    pub async fn delete(self) {
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}
