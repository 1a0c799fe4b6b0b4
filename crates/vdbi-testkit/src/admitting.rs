//! The set-up the webhook tests share: a test namespace with its `app` ServiceAccount, an
//! in-process vdbi (ready), and its webhook registered with the apiserver for that namespace, so
//! the namespace's labelled pods are admitted by it.
//!
//! Used as `vdbi_testkit::admitting`.

use crate::platform::{Platform, TestNamespace, VaultRoot};
use crate::{register_webhook, start_vdbi, Options, Vdbi, Webhook};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{json, Value};

pub struct Admitting {
    pub p: Platform,
    pub root: VaultRoot,
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub vdbi: Vdbi,
    /// The namespace's pods.
    pub pods: Api<Pod>,
    webhook: Webhook,
}

impl Admitting {
    /// A namespace named after `ns_prefix`; vdbi started with the default [`Options`] as `tune`
    /// changes them.
    pub async fn start(ns_prefix: &str, tune: impl FnOnce(&mut Options)) -> Admitting {
        let mut options = Options::default();
        tune(&mut options);
        let p = Platform::get();
        let root = p.vault_root();
        let client = p.kube_client().await;
        let ns = TestNamespace::create(&client, ns_prefix).await;
        ns.service_account("app").await;
        let vdbi = start_vdbi(&p, options).await;
        vdbi.wait_ready().await;
        let webhook = register_webhook(&client, &vdbi, &ns.name).await;
        let pods = ns.api();
        Admitting {
            p,
            root,
            client,
            ns,
            vdbi,
            pods,
            webhook,
        }
    }

    /// Unregisters the webhook, deletes the namespace, stops vdbi.
    pub async fn stop(self) {
        self.webhook.delete().await;
        self.ns.cleanup().await;
        self.vdbi.running.shutdown().await;
    }
}

/// `auth/token/lookup` (root) of the token a projected issuance stored in the bookkeeping entry
/// `entry`: asserts it is the login of the ServiceAccount `<namespace>/app`; returns the lookup.
pub async fn app_login(root: &VaultRoot, entry: &Value, namespace: &str) -> Value {
    let look = root
        .request(
            reqwest::Method::POST,
            "auth/token/lookup",
            Some(&json!({"token": entry["TokenId"]})),
        )
        .await
        .ok("lookup");
    assert_eq!(look["data"]["meta"]["service_account_name"], "app");
    assert_eq!(look["data"]["meta"]["service_account_namespace"], namespace);
    look
}
