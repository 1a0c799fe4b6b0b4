//! The webhook as an attacker inside the cluster network sees it: only kube-apiserver (the
//! platform's webhook client certificate) is served; a strict envelope; bounded work per pod;
//! denials without infrastructure details; bounded metric label sets. Every forged review here
//! would have returned working credentials (or created Vault objects) before these rules.

mod common;
#[path = "common/forged.rs"]
mod forged;

use common::*;
use forged::{admin_identity, apiserver_identity, post, review, unknown_ca_identity, Answer};
use serde_json::Value;
use vdbi::testing::platform::{unique_name, Platform, TestNamespace, VaultRoot};

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
            .admission_denied
            .with_label_values(&[reason])
            .get()
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
